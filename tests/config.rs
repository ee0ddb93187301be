//! The `validate` command as an operator uses it: shipped configs pass, a bad file
//! fails with exit code 78 naming file, line and key.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

fn edge_agent() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_edge-agent"));
    c.current_dir(repo());
    for (k, _) in std::env::vars() {
        if k.starts_with("EDGE_AGENT") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn the_shipped_default_config_directory_validates() {
    let out = edge_agent()
        .args(["validate", "--config-dir", "systemd"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[device]") && text.contains("[[cameras]]"),
        "{text}"
    );
}

#[test]
fn the_fleet_example_validates_for_each_device_with_secrets_redacted() {
    for device in ["90-device-north-01.toml", "90-device-north-02.toml"] {
        let out = edge_agent()
            .env(
                "CREDENTIALS_DIRECTORY",
                repo().join("systemd/fleet/credentials"),
            )
            .args(["validate", "--explain"])
            .args([
                "-c",
                "systemd/fleet/00-fleet.toml",
                "-c",
                "systemd/fleet/50-site-north.toml",
            ])
            .args(["-c", &format!("systemd/fleet/{device}")])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{device}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !text.contains("example-camera-password") && !text.contains("example-broker-password"),
            "{text}"
        );
        // The site's central broker, for the uplink and the offload link, both with
        // the password from the credential file, redacted.
        for key in ["url", "remote_url"] {
            assert!(
                text.contains(&format!(
                    "{key} = \"amqps://edge:***@rabbit.north.example:5671/%2f\""
                )),
                "{key}: {text}"
            );
        }
        assert!(
            text.contains("kind = \"embedded\""),
            "frames stay home: {text}"
        );
        assert!(
            text.contains("# systemd/fleet/50-site-north.toml:"),
            "explain names the site file: {text}"
        );
    }
}

#[test]
fn a_bad_file_fails_with_exit_code_78_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("site.toml");
    std::fs::write(
        &bad,
        "[device]\nid = \"box\"\n\n[[cameras]]\nid = \"gate\"\nurl = \"rtsp://admin:pw@cam/s\"\nmotion.threshold = 300\n\n[transport]\nkind = \"smoke-signals\"\n",
    )
    .unwrap();
    let out = edge_agent()
        .args(["validate", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    let name = bad.display().to_string();
    assert!(
        err.contains(&format!(
            "{name}:7: cameras[gate].motion.threshold: must be 1..=255, got 300"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{name}:10: transport.kind: unknown variant `smoke-signals`"
        )),
        "{err}"
    );
    assert!(!err.contains(":pw@"), "{err}");
}

#[test]
fn environment_overrides_apply_and_are_explained() {
    let out = edge_agent()
        .env("EDGE_AGENT__SCALING__MAX_WORKERS", "4")
        .args(["validate", "--explain", "--config-dir", "systemd"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("max_workers = 4  # env EDGE_AGENT__SCALING__MAX_WORKERS"),
        "{text}"
    );
}

/// Every `--flag` written inside backticks in `text`.
fn flags_in(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .flat_map(|code| code.split_whitespace())
        .filter(|w| w.starts_with("--"))
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_string()
        })
        .collect()
}

fn help_of(args: &[&str]) -> String {
    let out = edge_agent().args(args).arg("--help").output().unwrap();
    assert!(out.status.success(), "{args:?} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The commands and flags README documents, taken from README itself (the command
/// table, the line on what every command takes, the motion tuning paragraph), so a
/// command or flag README promises and the binary lacks fails here.
#[test]
fn version_and_help_describe_the_commands() {
    let out = edge_agent().arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("edge-agent "));
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    // `| `edge-agent validate [--explain]` | ... |` rows.
    let commands: Vec<(String, Vec<String>)> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `edge-agent "))
        .map(|rest| {
            let cell = &rest[..rest.find('`').unwrap()];
            let cmd = cell.split_whitespace().next().unwrap().to_string();
            let flags = flags_in(&format!("`{cell}`"));
            (cmd, flags)
        })
        .collect();
    let names: Vec<&str> = commands.iter().map(|(c, _)| c.as_str()).collect();
    for want in [
        "run", "worker", "scaler", "validate", "motion", "detect", "prepare",
    ] {
        assert!(
            names.contains(&want),
            "README's command table lacks {want}: {names:?}"
        );
    }
    let top = help_of(&[]);
    let every = readme
        .split("\n\n")
        .find(|p| p.starts_with("Every command takes"))
        .expect("README says what every command takes");
    let common = flags_in(every);
    // `--config`, `--config-dir` and the global `--log-format`.
    for f in ["--config", "--config-dir", "--log-format"] {
        assert!(common.iter().any(|c| c == f), "{f} not in {every}");
    }
    let tuning = readme
        .split("\n\n")
        .find(|p| p.starts_with("Tuning on a recording:"))
        .expect("README's motion tuning paragraph");
    let motion = flags_in(tuning);
    assert!(motion.len() >= 5, "{motion:?}");
    for (cmd, flags) in &commands {
        assert!(
            top.lines().any(|l| {
                let l = l.trim_start();
                l.strip_prefix(cmd.as_str())
                    .is_some_and(|r| r.starts_with(char::is_whitespace))
            }),
            "help lists no command {cmd}: {top}"
        );
        let sub = help_of(&[cmd]);
        let extra: &[String] = if cmd == "motion" { &motion } else { &[] };
        for flag in flags.iter().chain(&common).chain(extra) {
            assert!(
                sub.split(|c: char| c.is_whitespace() || c == ',')
                    .any(|w| w == flag),
                "`edge-agent {cmd} --help` lacks {flag}: {sub}"
            );
        }
    }
}

/// Without systemd's `CREDENTIALS_DIRECTORY` (systemd 245 on JetPack 5 ignores the unit's
/// `LoadCredential=`, and so does a run by hand), a relative `password_file` is read from
/// the config directory's `credentials/`: the very file the unit's `LoadCredential=` names,
/// whatever `conf.d/` holds.
#[test]
fn without_credentials_directory_password_file_is_read_from_the_config_dirs_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path();
    std::fs::create_dir_all(conf.join("conf.d")).unwrap();
    std::fs::create_dir_all(conf.join("credentials")).unwrap();
    std::fs::write(
        conf.join("agent.toml"),
        "[device]\nid = \"box\"\n\n[transport]\nkind = \"amqp\"\namqp_url = \"amqp://edge@rabbit:5672/%2f\"\npassword_file = \"broker\"\n",
    )
    .unwrap();
    std::fs::write(
        conf.join("conf.d/50-site.toml"),
        "[device]\nsite = \"north\"\n",
    )
    .unwrap();
    let validate = || {
        edge_agent()
            .env_remove("CREDENTIALS_DIRECTORY")
            .args(["validate", "--config-dir"])
            .arg(conf)
            .output()
            .unwrap()
    };

    let out = validate();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    let wanted = conf.join("credentials/broker").display().to_string();
    assert!(
        err.contains("transport.password_file") && err.contains(&wanted),
        "the error names {wanted}: {err}"
    );

    std::fs::write(conf.join("credentials/broker"), "from-the-config-dir\n").unwrap();
    let out = validate();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("amqp://edge:***@rabbit:5672/%2f") && !text.contains("from-the-config-dir"),
        "{text}"
    );
}

#[test]
fn validate_warns_on_stderr_of_a_password_sent_unencrypted_to_another_host() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(
        &file,
        "[device]\nid = \"box\"\n\n[transport]\nkind = \"amqp\"\namqp_url = \"amqp://edge:pl41n-s3cret@rabbit.lan:5672/%2f\"\n",
    )
    .unwrap();
    let out = edge_agent()
        .arg("validate")
        .arg("-c")
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: transport.amqp_url: the password goes unencrypted to rabbit.lan (amqp://edge:***@rabbit.lan:5672/%2f)"),
        "{err}"
    );
    assert!(
        !err.contains("pl41n-s3cret") && !text.contains("pl41n-s3cret"),
        "{err}\n{text}"
    );
    assert!(
        text.contains("[transport]"),
        "the configuration is still printed: {text}"
    );
}
