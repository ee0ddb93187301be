//! Hand-written SVG figures for the benches: a page, axes with "nice" steps, escaping.
#![allow(dead_code)] // each bench uses its own part

use std::fmt::Write;

pub const SVG_W: f64 = 720.0;
pub const SVG_H: f64 = 360.0;
pub const ML: f64 = 70.0;
pub const MR: f64 = 20.0;
pub const MT: f64 = 40.0;
pub const MB: f64 = 50.0;

pub fn svg_open(title: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{SVG_W}\" height=\"{SVG_H}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{}</text>\n",
        SVG_W / 2.0,
        xml(title)
    )
}

pub fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A "nice" axis maximum and step.
pub fn nice(max: f64) -> (f64, f64) {
    let max = max.max(1e-9);
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

pub fn axes(svg: &mut String, xmax: f64, xstep: f64, ymax: f64, ystep: f64, xl: &str, yl: &str) {
    let (pw, ph) = (SVG_W - ML - MR, SVG_H - MT - MB);
    let mut y = 0.0;
    while y <= ymax + 1e-9 {
        let py = MT + ph - y / ymax * ph;
        let _ = writeln!(
            svg,
            "<line x1=\"{ML}\" x2=\"{}\" y1=\"{py:.1}\" y2=\"{py:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            ML + pw,
            ML - 6.0,
            py + 4.0,
            y
        );
        y += ystep;
    }
    let mut x = 0.0;
    while x <= xmax + 1e-9 {
        let px = ML + x / xmax * pw;
        let _ = writeln!(
            svg,
            "<line x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"{}\" y2=\"{}\" stroke=\"#999\"/>\
             <text x=\"{px:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            MT + ph,
            MT + ph + 5.0,
            MT + ph + 18.0,
            x
        );
        x += xstep;
    }
    let _ = writeln!(
        svg,
        "<rect x=\"{ML}\" y=\"{MT}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#333\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\
         <text transform=\"translate(16,{}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        ML + pw / 2.0,
        SVG_H - 10.0,
        xml(xl),
        MT + ph / 2.0,
        xml(yl)
    );
}
