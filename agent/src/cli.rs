//! Command line: `run`, `worker`, `scaler`, `validate`, `motion`, `detect`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::telemetry::LogFormat;

#[derive(Parser, Debug)]
#[command(
    name = "edge-agent",
    version,
    about = "On-device video-event agent: RTSP ingest, CPU motion gating, scale-to-zero YOLOv4 workers.",
    long_about = "edge-agent ingests RTSP cameras, detects motion on the CPU, and only on motion escalates \
frames to YOLOv4 ONNX workers that it starts on demand and stops when idle. Detections and events are \
published over MQTT or AMQP.\n\nWith no --config and no --config-dir, `run` starts a self-contained demo."
)]
pub struct Cli {
    /// Log format: readable text or one JSON object per line. Level from RUST_LOG.
    #[arg(long, global = true, value_enum, env = "EDGE_AGENT_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone, Default)]
pub struct ConfigArgs {
    /// A configuration file; give it several times to layer (later files override earlier ones).
    #[arg(long = "config", short = 'c', value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// A configuration directory: agent.toml, then conf.d/*.toml in name order.
    #[arg(long, value_name = "DIR", env = "EDGE_AGENT_CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,
    /// Read the complete configuration from stdin, as the agent hands its own to the
    /// workers it starts: taken as it is (no layering, environment overrides, `${VAR}`
    /// or secret files), and the files and directory above are not read.
    #[arg(long, hide = true)]
    pub config_stdin: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the agent: cameras, motion, escalation, local workers, events and telemetry.
    Run {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Run one inference worker: consume frames, detect, publish results (started by the scaler).
    Worker {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Scale workers from a shared remote AMQP queue (for a GPU server serving many boxes).
    Scaler {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Check the configuration and print the effective result with secrets redacted.
    /// Exits 78 (EX_CONFIG) listing every error with file, line and key.
    Validate {
        #[command(flatten)]
        config: ConfigArgs,
        /// Show after each value which file and line (or environment variable) set it.
        #[arg(long)]
        explain: bool,
        /// Print nothing when the configuration is valid.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Replay a file or URL through ingest and the motion detector; print one JSON line per motion event.
    ///
    /// Event lines carry `width` and `height`: the analysis frame their boxes are in.
    Motion {
        /// A file path or URL (file://, rtsp://).
        source: String,
        #[command(flatten)]
        config: ConfigArgs,
        /// Camera whose motion settings to use.
        #[arg(long)]
        camera: Option<String>,
        /// Write a few annotated frames (mask, changed pixels, boxes) as PNG here.
        #[arg(long, value_name = "DIR")]
        debug_dir: Option<PathBuf>,
        /// With --debug-dir: write every analysed frame whose index is in A..B (B
        /// excluded; `A..` runs to the end) instead of a few chosen ones.
        #[arg(long, value_name = "A..B", value_parser = parse_frame_range, requires = "debug_dir")]
        debug_frames: Option<std::ops::Range<u64>>,
        /// Also print one JSON line per analysed frame: {"frame", "pts_ms", "width",
        /// "height", "boxes", "global_change", "event"}; `frame` counts decoded frames
        /// of the source from 0.
        #[arg(long)]
        frames: bool,
        /// Write the analysed grey frames, raw (GRAY8, no header), to FILE: other
        /// detectors can then be scored on the very same pixels.
        #[arg(long, value_name = "FILE")]
        grey_out: Option<PathBuf>,
    },
    /// Build the TensorRT engine, timing cache and EP-context model of `inference.model`
    /// once, so workers started from zero load them instead of building (the agent runs
    /// this at start when ONNX Runtime has TensorRT). Prints one JSON line.
    Prepare {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Run the worker's detection pipeline on image files; print one JSON line per image.
    Detect {
        #[command(flatten)]
        config: ConfigArgs,
        /// Image files (JPEG or PNG).
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
}

/// `A..B` (B excluded) or `A..` (to the end) as a range of frame indices.
pub fn parse_frame_range(s: &str) -> Result<std::ops::Range<u64>, String> {
    let bad = || format!("expected a frame range A..B or A.. (e.g. 100..200), got {s:?}");
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    let a: u64 = a.trim().parse().map_err(|_| bad())?;
    let b: u64 = match b.trim() {
        "" => u64::MAX,
        b => b.parse().map_err(|_| bad())?,
    };
    if b <= a {
        return Err(format!(
            "the frame range {s:?} is empty (B must be above A)"
        ));
    }
    Ok(a..b)
}
