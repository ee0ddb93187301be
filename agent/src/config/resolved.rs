//! The agent's configuration as one final text for its workers, and what a reload
//! (SIGHUP) may change while the agent runs.
//!
//! Workers never read the configuration files: the agent hands them its own resolved
//! configuration on stdin, so a file edited and not yet reloaded cannot reach a new
//! worker, and agent and workers never run on different settings.
//!
//! A reload applies `cameras`, `inference` and `scaling` (but `scaling.remote_*`, the
//! remote queue and its link, built at start); everything else is kept as it runs, and
//! the keys that differ in the files are reported as needing a restart.

use super::Config;

/// Whether a reload applies the key (dotted path, `cameras` whole) while running.
fn live(key: &str) -> bool {
    let section = key.split(['.', '[']).next().unwrap_or(key);
    match section {
        "cameras" | "inference" => true,
        "events" => key == "events.clips" || key.starts_with("events.clips."),
        // The offload link is built at start.
        "scaling" => !key.starts_with("scaling.remote_"),
        _ => false,
    }
}

/// The configuration the agent runs after a reload: the new cameras, inference,
/// scaling and clip settings, and everything else as it runs now.
pub fn apply_live(running: &Config, new: &Config) -> Config {
    let mut out = running.clone();
    out.cameras = new.cameras.clone();
    out.inference = new.inference.clone();
    out.events.clips = new.events.clips.clone();
    let r = &running.scaling;
    out.scaling = crate::scale::ScalingConfig {
        remote_queue: r.remote_queue.clone(),
        remote_url: r.remote_url.clone(),
        remote_password_file: r.remote_password_file.clone(),
        remote_ca_file: r.remote_ca_file.clone(),
        remote_cert_file: r.remote_cert_file.clone(),
        remote_key_file: r.remote_key_file.clone(),
        remote_exchange: r.remote_exchange.clone(),
        ..new.scaling.clone()
    };
    out
}

/// The keys that differ between what runs and the new configuration and that a reload
/// does not apply, in key order. Secrets count (a new broker password needs a
/// restart) but only the key names come out.
pub fn restart_needed(running: &Config, new: &Config) -> Vec<String> {
    differing_keys(running, new)
        .into_iter()
        .filter(|k| !live(k))
        .collect()
}

/// Whether workers started with `before` run differently from ones started with
/// `after`: the settings a worker uses that a reload applies.
pub fn workers_differ(before: &Config, after: &Config) -> bool {
    before.inference != after.inference || before.scaling.grace_period != after.scaling.grace_period
}

/// The complete configuration as TOML, secrets included, for [`super::load::load_resolved`]
/// in a worker. Secret files are already read into the URLs, so their paths go; a
/// worker never opens a camera, so camera passwords go too. Never log it. Fails only
/// where a value has no TOML form: an error for the caller, not a panic.
pub fn resolved_text(config: &Config) -> Result<String, toml::ser::Error> {
    let mut c = config.clone();
    c.transport.password_file = None;
    c.uplink.password_file = None;
    c.scaling.remote_password_file = None;
    for cam in &mut c.cameras {
        cam.password_file = None;
        cam.url = cam.url.redacted();
    }
    crate::values::secret::reveal(|| toml::to_string(&c))
}

/// Dotted keys whose values differ (a key present on one side only included);
/// arrays compare whole.
fn differing_keys(a: &Config, b: &Config) -> Vec<String> {
    let (a, b) =
        crate::values::secret::reveal(|| (toml::Value::try_from(a), toml::Value::try_from(b)));
    let (Ok(a), Ok(b)) = (a, b) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    diff(&a, &b, "", &mut out);
    out
}

fn diff(a: &toml::Value, b: &toml::Value, prefix: &str, out: &mut Vec<String>) {
    match (a, b) {
        (toml::Value::Table(ta), toml::Value::Table(tb)) => {
            let mut keys: Vec<&String> = ta.keys().chain(tb.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match (ta.get(k), tb.get(k)) {
                    (Some(x), Some(y)) => diff(x, y, &path, out),
                    _ => out.push(path),
                }
            }
        }
        _ if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::{load_resolved, load_texts};

    const BASE: &str = "[device]\nid = \"box\"\n[[cameras]]\nid = \"gate\"\nurl = \"demo://gate\"\n[transport]\nkind = \"amqp\"\namqp_url = \"amqp://edge@rabbit:5672/%2f\"\npassword_file = \"broker\"\n";

    /// `BASE` with `extra` layered over it, as a second file.
    fn load(extra: &str, dir: &std::path::Path) -> Config {
        load_texts(
            &[
                ("base.toml".into(), BASE.into()),
                ("extra.toml".into(), extra.into()),
            ],
            &[],
            Some(dir.to_path_buf()),
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .config
    }

    #[test]
    fn the_resolved_text_reads_back_as_the_same_configuration_with_its_secrets() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("broker"), "s3cr${et}%\n").unwrap();
        let text = "[inference]\nconfidence = 0.4\nclass_thresholds = { car = 0.6 }\n[scaling]\nmin_workers = 1\ngrace_period = \"7s\"\n";
        let running = load(text, dir.path());
        let out = resolved_text(&running).unwrap();
        assert!(!out.contains("password_file"), "{out}");
        let back = load_resolved("from the agent", &out)
            .unwrap_or_else(|e| panic!("{e}\n{out}"))
            .config;
        let mut want = running.clone();
        want.transport.password_file = None;
        assert_eq!(back, want);
        // The password as the broker client gets it, `${` and all: no interpolation.
        assert!(back
            .transport
            .amqp_url
            .expose()
            .contains(":s3cr%24%7Bet%7D%25@"));
        // Anywhere else it stays redacted.
        assert!(!format!("{running:?}").contains("s3cr"));
        assert!(!toml::Value::try_from(&running)
            .unwrap()
            .to_string()
            .contains("s3cr"));
    }

    #[test]
    fn a_reload_applies_cameras_inference_and_scaling_and_reports_the_rest_by_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("broker"), "one").unwrap();
        let running = load("", dir.path());
        let rows: [(&str, &[&str]); 8] = [
            ("", &[]),
            (
                "[events]\nsnapshot_quality = 37\n[events.clips]\nenabled = true\npost_capture = \"9s\"\n",
                &["events.snapshot_quality"],
            ),
            (
                "[[cameras]]\nid = \"door\"\nurl = \"demo://door\"\n[inference]\nconfidence = 0.3\n[scaling]\nmax_workers = 3\ngrace_period = \"3s\"\n",
                &[],
            ),
            (
                "[device]\nid = \"other\"\nsite = \"north\"\n[telemetry]\nheartbeat_interval = \"5s\"\n",
                &["device.id", "device.site", "telemetry.heartbeat_interval"],
            ),
            (
                "[transport]\nframes_queue = \"elsewhere\"\n[events]\nsnapshot_quality = 37\n",
                &["events.snapshot_quality", "transport.frames_queue"],
            ),
            ("[scaling]\nremote_queue = \"remote\"\n", &["scaling.remote_queue"]),
            (
                "[scaling]\nremote_queue = \"remote\"\nremote_url = \"amqp://pool/%2f\"\n",
                &["scaling.remote_queue", "scaling.remote_url"],
            ),
            ("[scaling]\nmin_workers = 1\n", &[]),
        ];
        for (extra, want) in rows {
            let new = load(extra, dir.path());
            let got = restart_needed(&running, &new);
            assert_eq!(got, want, "extra: {extra}");
            // Exactly what is reported is what the running configuration keeps.
            let after = apply_live(&running, &new);
            assert_eq!(restart_needed(&after, &new), want, "extra: {extra}");
            assert_eq!(differing_keys(&after, &new), want, "extra: {extra}");
        }
        // A new broker password is a transport change, named without its value.
        std::fs::write(dir.path().join("broker"), "two").unwrap();
        let new = load("", dir.path());
        assert_eq!(restart_needed(&running, &new), ["transport.amqp_url"]);
    }

    #[test]
    fn workers_are_replaced_only_for_settings_they_use() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("broker"), "one").unwrap();
        let running = load("", dir.path());
        let with = |extra: &str| load(extra, dir.path());
        assert!(!workers_differ(&running, &with("")));
        assert!(!workers_differ(
            &running,
            &with("[scaling]\nmax_workers = 4\n")
        ));
        assert!(workers_differ(
            &running,
            &with("[inference]\nconfidence = 0.9\n")
        ));
        assert!(workers_differ(
            &running,
            &with("[scaling]\ngrace_period = \"2s\"\n")
        ));
    }
}
