//! Builds the stages from config, wires them and runs until shutdown. Maps errors to
//! exit codes: 78 for configuration errors, 1 for anything else.

use crate::cli::{Cli, Command, ConfigArgs};
use crate::config::{self, render::render, ConfigErrors, Loaded, Sources, EXIT_CONFIG};
use crate::telemetry::{logging, LogFormat};

/// Exit code of a command that a later part of the product fills in.
pub const EXIT_UNAVAILABLE: i32 = 69;

pub fn main(cli: Cli) -> i32 {
    let format = cli.log_format.or_else(env_log_format).unwrap_or_default();
    logging::init(format);
    match cli.command {
        Command::Validate {
            config,
            explain,
            quiet,
        } => validate(&config, explain, quiet),
        Command::Run { config } => with_config(&config, true, |_loaded| not_yet("run")),
        Command::Worker { config } => with_config(&config, false, |_loaded| not_yet("worker")),
        Command::Scaler { config } => with_config(&config, false, |_loaded| not_yet("scaler")),
        Command::Motion { config, .. } => with_config(&config, true, |_loaded| not_yet("motion")),
        Command::Detect { config, images } => with_config(&config, true, |loaded| {
            crate::infer::detect::detect_command(&loaded.config, &images)
        }),
    }
}

fn env_log_format() -> Option<LogFormat> {
    match std::env::var("EDGE_AGENT__TELEMETRY__LOG_FORMAT")
        .ok()?
        .as_str()
    {
        "json" => Some(LogFormat::Json),
        "text" => Some(LogFormat::Text),
        _ => None,
    }
}

fn not_yet(what: &str) -> i32 {
    eprintln!("edge-agent {what}: not built yet; see the project's open issues.");
    EXIT_UNAVAILABLE
}

/// Loads configuration from the command line's sources; with none and `demo_ok`,
/// the embedded demo.
pub fn load_config(args: &ConfigArgs, demo_ok: bool) -> Result<Loaded, ConfigErrors> {
    let sources = Sources::from_process(args.config_dir.clone(), args.files.clone());
    if sources.is_empty() && demo_ok {
        tracing::info!("No configuration given: running the embedded demo.");
        return config::load::load_texts(
            &[("demo.toml (embedded)".into(), config::DEMO_TOML.into())],
            &sources.env,
            None,
        );
    }
    config::load(&sources)
}

fn with_config(args: &ConfigArgs, demo_ok: bool, f: impl FnOnce(Loaded) -> i32) -> i32 {
    match load_config(args, demo_ok) {
        Ok(loaded) => f(loaded),
        Err(errors) => {
            eprint!("{errors}");
            EXIT_CONFIG
        }
    }
}

fn validate(args: &ConfigArgs, explain: bool, quiet: bool) -> i32 {
    with_config(args, false, |loaded| {
        if !quiet {
            if !loaded.files.is_empty() {
                let files: Vec<String> = loaded
                    .files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect();
                println!(
                    "# edge-agent {}: effective configuration from {}",
                    crate::VERSION,
                    files.join(", ")
                );
            }
            print!("{}", render(&loaded.config, &loaded.tree, explain));
        }
        0
    })
}
