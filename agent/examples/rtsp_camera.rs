//! Test support for `scripts/soak` (not shipped): the tests' in-process gst-rtsp-server
//! as a process. Serves the synthetic scene on any path (`rtsp://127.0.0.1:PORT/anything`),
//! prints `port PORT` on stdout once listening, then obeys one command per line on stdin:
//!
//! - `stop`: close the socket and cut every client off (the cameras drop)
//! - `restart`: listen again on the same port
//! - `freeze` / `thaw`: keep connections but send no data / resume
//! - `quit` (or end of input): exit
//!
//! `cargo run --release -p edge-agent --example rtsp_camera -- [--period S] [--move S]
//! [--fps N] [--width W --height H]`: the object moves for `--move` seconds at the start
//! of every `--period` seconds (defaults 20 and 3), so every camera sees bursts of motion.

// The scene takes a list of frame windows; one window is what we want here.
#![allow(clippy::single_range_in_vec_init)]
// It exits on a bad argument, before anything runs: nothing to clean up.
#![allow(clippy::disallowed_methods)]

#[path = "../../tests/common/rtsp_server.rs"]
#[allow(dead_code)]
mod rtsp_server;

use std::io::{BufRead, Write};

use edge_agent::ingest::synthetic::Scene;
use rtsp_server::{Codec, Media, RtspTestServer};

fn main() {
    let mut period = 20u64;
    let mut moving = 3u64;
    let (mut fps, mut width, mut height) = (15u32, 640u32, 360u32);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| -> u64 {
            let v = args.next().unwrap_or_default();
            v.parse().unwrap_or_else(|_| {
                eprintln!("rtsp_camera: {name} needs a whole number, got {v:?}");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--period" => period = value("--period").max(1),
            "--move" => moving = value("--move"),
            "--fps" => fps = value("--fps").clamp(1, 60) as u32,
            "--width" => width = value("--width").clamp(16, 3840) as u32 & !1,
            "--height" => height = value("--height").clamp(16, 2160) as u32 & !1,
            other => {
                eprintln!("rtsp_camera: unknown argument {other:?}");
                std::process::exit(2);
            }
        }
    }
    let f = fps as u64;
    let scene = Scene {
        period: period * f,
        moves: if moving == 0 {
            vec![]
        } else {
            vec![f..(f + moving * f).min(period * f)]
        },
        ..Scene::sized(width, height, fps)
    };
    let server = RtspTestServer::start(Media::Scene(scene, Codec::H264));
    // Paths are mounted on demand by url(); mount a generous set up front.
    for i in 0..16 {
        let _ = server.url(&format!("/cam{i}"));
    }
    println!("port {}", server.port());
    let _ = std::io::stdout().flush();
    for line in std::io::stdin().lock().lines().map_while(Result::ok) {
        match line.trim() {
            "stop" => server.stop(),
            "restart" => server.restart(),
            "freeze" => server.freeze(true),
            "thaw" => server.freeze(false),
            "quit" => break,
            "" => {}
            other => eprintln!("rtsp_camera: unknown command {other:?}"),
        }
        println!("ok {}", line.trim());
        let _ = std::io::stdout().flush();
    }
}
