//! Builds the stages from config, wires them and runs until shutdown. Maps errors to
//! exit codes: 78 for configuration errors, 1 for anything else.

mod clips;
mod detect;
mod local_workers;
mod page;
mod run;
mod scaffold;
mod scaler;
mod worker_process;

use crate::cli::{Cli, Command, ConfigArgs};
use crate::config::{self, render::render, ConfigErrors, Loaded, Sources, EXIT_CONFIG};
use crate::telemetry::{logging, LogFormat};

pub fn main(cli: Cli) -> i32 {
    // The log format: `--log-format` (or EDGE_AGENT_LOG_FORMAT) wins, else
    // `telemetry.log_format` of the loaded configuration, so logging starts only once
    // the configuration is read; commands without one start it at once.
    let flag = cli.log_format;
    let plain = || logging::init(flag.unwrap_or_default());
    match cli.command {
        Command::Validate {
            config,
            explain,
            quiet,
        } => {
            plain();
            validate(&config, explain, quiet)
        }
        Command::Run { config } if config.config_stdin => {
            plain();
            eprintln!("--config-stdin is for the workers the agent starts: `run` reads its files again on SIGHUP, so give --config or --config-dir.");
            EXIT_CONFIG
        }
        Command::Run { config } => {
            with_config(&config, true, flag, |loaded| run::run(loaded, &config))
        }
        Command::Worker { config } => with_config(&config, true, flag, worker_process::run),
        Command::Scaler { config } => with_config(&config, false, flag, scaler::run),
        Command::Motion {
            source,
            config,
            camera,
            debug_dir,
            debug_frames,
            frames,
            grey_out,
        } => {
            plain();
            let opts = crate::motion::tool::ReplayOptions {
                debug_dir,
                debug_frames,
                frame_lines: frames,
                grey_out,
            };
            motion_command(&source, &config, camera.as_deref(), &opts)
        }
        Command::Prepare { config } => with_config(&config, true, flag, |loaded| {
            detect::prepare_command(&loaded.config.inference)
        }),
        Command::Detect { config, images } => with_config(&config, true, flag, |loaded| {
            detect::detect_command(&loaded.config, &images)
        }),
    }
}

/// Loads configuration from the command line's sources; with none and `demo_ok`,
/// the embedded demo.
pub fn load_config(args: &ConfigArgs, demo_ok: bool) -> Result<Loaded, ConfigErrors> {
    if args.config_stdin {
        return config_from_stdin();
    }
    let sources = Sources::from_process(args.config_dir.clone(), args.files.clone());
    if sources.is_empty() && demo_ok {
        return config::load::load_texts(
            &[("demo.toml (embedded)".into(), config::DEMO_TOML.into())],
            &sources.env,
            None,
        );
    }
    config::load(&sources)
}

/// The configuration the agent wrote on this worker's stdin (`--config-stdin`).
fn config_from_stdin() -> Result<Loaded, ConfigErrors> {
    use std::io::Read;
    const NAME: &str = "the agent's configuration (stdin)";
    let mut text = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut text) {
        return Err(ConfigErrors(vec![config::ConfigError {
            origin: None,
            key: String::new(),
            message: format!("cannot read {NAME}: {e}"),
        }]));
    }
    config::load_resolved(NAME, &text)
}

/// Loads the configuration, starts logging in the format it asks for (unless the
/// command line chose one) and runs `f`.
fn with_config(
    args: &ConfigArgs,
    demo_ok: bool,
    flag: Option<LogFormat>,
    f: impl FnOnce(Loaded) -> i32,
) -> i32 {
    match load_config(args, demo_ok) {
        Ok(loaded) => {
            logging::init(flag.unwrap_or(loaded.config.telemetry.log_format));
            if loaded.files.is_empty() {
                tracing::info!("No configuration given: running the embedded demo.");
            }
            f(loaded)
        }
        Err(errors) => {
            eprint!("{errors}");
            EXIT_CONFIG
        }
    }
}

fn validate(args: &ConfigArgs, explain: bool, quiet: bool) -> i32 {
    with_config(args, false, None, |loaded| {
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
            match render(&loaded.config, &loaded.tree, explain) {
                Ok(text) => print!("{text}"),
                Err(e) => {
                    eprintln!("edge-agent: the configuration cannot be printed as TOML: {e}");
                    return EXIT_CONFIG;
                }
            }
        }
        // After the configuration, on stderr: stdout stays a valid TOML file.
        for (key, message) in loaded.config.warnings() {
            eprintln!("edge-agent: warning: {key}: {message}");
        }
        0
    })
}

/// `edge-agent motion SOURCE`: replays a file or URL through the same ingest pipeline
/// and detector as the agent and prints one JSON line per motion event (and with
/// `--frames` one per analysed frame). For files, event times are positions in the file
/// (counted from the Unix epoch, so `1970-01-01T00:00:03.200Z` is 3.2 s in).
fn motion_command(
    source: &str,
    args: &ConfigArgs,
    camera: Option<&str>,
    opts: &crate::motion::tool::ReplayOptions,
) -> i32 {
    match motion_replay(source, args, camera, opts) {
        Ok(code) => code,
        Err(e) => {
            eprintln!(
                "edge-agent motion: {}",
                crate::values::secret::redact_text(&format!("{e:#}"))
            );
            1
        }
    }
}

fn motion_replay(
    source: &str,
    args: &ConfigArgs,
    camera: Option<&str>,
    opts: &crate::motion::tool::ReplayOptions,
) -> anyhow::Result<i32> {
    use anyhow::Context;

    use crate::camera::CameraConfig;
    use crate::values::{CameraSchemes, SecretUrl};

    let url = if source.contains("://") {
        source.to_string()
    } else {
        let path =
            std::fs::canonicalize(source).with_context(|| format!("cannot open {source}"))?;
        format!("file://{}", path.display())
    };
    let url = SecretUrl::<CameraSchemes>::parse(&url).map_err(anyhow::Error::msg)?;
    // The camera's settings from the configuration, or defaults.
    let mut cam: CameraConfig = if args.files.is_empty() && args.config_dir.is_none() {
        let text = format!(
            "[device]\nid = \"motion-tool\"\n[[cameras]]\nid = \"{}\"\nurl = \"demo://x\"\n",
            camera.unwrap_or("replay")
        );
        match config::Config::from_toml_str("defaults", &text) {
            Ok(c) => c.cameras.into_iter().next().context("default camera")?,
            Err(e) => {
                eprint!("{e}");
                return Ok(EXIT_CONFIG);
            }
        }
    } else {
        let loaded = match load_config(args, false) {
            Ok(l) => l,
            Err(e) => {
                eprint!("{e}");
                return Ok(EXIT_CONFIG);
            }
        };
        let cams = loaded.config.cameras;
        match camera {
            Some(id) => cams
                .into_iter()
                .find(|c| c.id.as_str() == id)
                .with_context(|| format!("no camera {id:?} in the configuration"))?,
            None if cams.len() == 1 => cams.into_iter().next().context("one camera")?,
            None => anyhow::bail!(
                "the configuration has {} cameras: choose one with --camera ID",
                cams.len()
            ),
        }
    };
    cam.url = url;
    let is_file = cam.url.scheme() == "file";
    let id = cam.id.to_string();
    let motion = cam.motion.clone();
    let fps = cam.analysis_fps.as_u32();

    let rt = tokio::runtime::Runtime::new().context("tokio runtime")?;
    let summary = rt.block_on(async move {
        let shutdown = crate::shutdown::Shutdown::new();
        crate::shutdown::install_signal_handlers(shutdown.clone());
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let ingest = tokio::spawn(crate::ingest::replay(
            cam.source(),
            true,
            tx,
            shutdown.clone(),
        ));
        let stdout = std::io::stdout();
        let mut replay = crate::motion::tool::Replay::new(&motion, fps, &id, stdout.lock(), opts)?;
        while let Some(f) = rx.recv().await {
            let at = match (is_file, f.pts) {
                (true, Some(pts)) => std::time::UNIX_EPOCH + pts,
                _ => f.captured,
            };
            replay.set_fps(f.fps);
            replay.frame(f.seq, f.pts, at, f.width, f.height, &f.data)?;
        }
        let ingest = ingest
            .await
            .context("ingest task")?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let seen = replay.finish()?;
        anyhow::Ok((ingest, seen))
    })?;
    let (ingest, seen) = summary;
    eprintln!(
        "edge-agent motion: {} frames decoded, {} analysed, {} motion events, {} global changes ignored{}",
        ingest.frames,
        seen.frames,
        seen.events,
        seen.global_changes,
        opts.debug_dir.as_ref().map(|d| format!(", {} debug frames in {}", seen.debug_frames, d.display())).unwrap_or_default()
    );
    Ok(0)
}

/// Runs a long-lived command on its own multi-threaded runtime (`threads`: worker
/// threads, or one per core); its error is logged redacted, as `stopped`, and exits 1.
///
/// The runtime is left with a short bound: dropping it would wait for every blocking
/// task, and one stuck on a frozen camera or broker would keep the process alive after
/// its stop. `main` then exits the process, whatever threads are left.
fn run_on_runtime<F>(name: &str, threads: Option<usize>, stopped: &str, main: F) -> i32
where
    F: std::future::Future<Output = anyhow::Result<i32>>,
{
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        builder.worker_threads(n);
    }
    let rt = match builder.enable_all().thread_name(name).build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "Cannot start the async runtime.");
            return 1;
        }
    };
    let code = match rt.block_on(main) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %crate::values::secret::redact_text(&format!("{e:#}")), "{stopped}");
            1
        }
    };
    rt.shutdown_timeout(RUNTIME_EXIT_BOUND);
    code
}

/// How long leaving the runtime may wait for its tasks after the command returned.
const RUNTIME_EXIT_BOUND: std::time::Duration = std::time::Duration::from_millis(500);
