//! Table-driven tests of bad configurations (each with the exact error it must give),
//! layering, camera merge by id, interpolation, secrets from files and redaction.

use super::load::load_texts;
use super::render::render;
use super::*;

const BASE: &str =
    "[device]\nid = \"box-1\"\n\n[[cameras]]\nid = \"gate\"\nurl = \"rtsp://cam/stream\"\n";

fn load(files: &[(&str, &str)], env: &[(&str, &str)]) -> Result<Loaded, ConfigErrors> {
    let owned = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    load_texts(&owned(files), &owned(env), None)
}

fn errors_of(files: &[(&str, &str)], env: &[(&str, &str)]) -> Vec<String> {
    match load(files, env) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn ok(files: &[(&str, &str)], env: &[(&str, &str)]) -> Loaded {
    load(files, env).unwrap_or_else(|e| panic!("config should load: {e}"))
}

#[test]
fn bad_configs_give_the_exact_located_error() {
    let cam = |extra: &str| {
        format!("[device]\nid = \"box-1\"\n\n[[cameras]]\nid = \"gate\"\nurl = \"rtsp://cam/s\"\n{extra}")
    };
    let rows: Vec<(String, &str)> = vec![
        (cam("motion.threshold = 300\n"), "site.toml:7: cameras[gate].motion.threshold: must be 1..=255, got 300"),
        (cam("motion.threshold = 0\n"), "site.toml:7: cameras[gate].motion.threshold: must be 1..=255, got 0"),
        (cam("[transport]\nembedded_log_size = 4096\n"), "site.toml:8: transport.embedded_log_size: must be 1048576..=1073741824, got 4096"),
        (cam("[scaling]\nworker_ready_timeout = \"0s\"\n"), "site.toml:8: scaling.worker_ready_timeout: must be greater than 0"),
        (cam("[transport]\nframe_ttl = \"0s\"\n"), "site.toml:8: transport.frame_ttl: must be at least 1s, got 0s"),
        (cam("[scaling]\ncooldown_period = \"300000000000y\"\n"), "site.toml:8: scaling.cooldown_period: duration \"300000000000y\" is longer than the 30 days allowed"),
        (
            cam("colour = true\n"),
            "site.toml:7: cameras[gate].colour: unknown key \"colour\"; expected one of `id`, `url`, `password_file`, `enabled`, `decode`, `protocol`, `latency`, `analysis_width`, `analysis_fps`, `detect_width`, `ring_frames`, `stall_timeout`, `backoff`, `frame_limit`, `motion`, `escalation`, `idle_decode`, `zones`, `objects`, `clips`",
        ),
        (cam("decode = \"gpu\"\n"), "site.toml:7: cameras[gate].decode: unknown variant `gpu`, expected one of `auto`, `software`, `nvidia`"),
        (cam("analysis_fps = \"fast\"\n"), "site.toml:7: cameras[gate].analysis_fps: invalid type: string \"fast\", expected i64"),
        (
            cam("stall_timeout = \"10 parsecs\"\n"),
            "site.toml:7: cameras[gate].stall_timeout: invalid duration \"10 parsecs\": unknown time unit \"parsecs\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations) (write e.g. \"500ms\" or \"5s\")",
        ),
        (
            cam("[[cameras]]\nid = \"gate\"\nurl = \"rtsp://other/s\"\n"),
            "site.toml:7: cameras[gate]: duplicate camera id \"gate\" (first defined at line 4)",
        ),
        (
            "[device]\nid = \"box-1\"\n[[cameras]]\nid = \"gate\"\nurl = \"rtsp://u:a b)c@cam/s\"\n".into(),
            "site.toml:5: cameras[gate].url: a URL may not hold spaces or control characters (write a space as %20, or put the password in password_file), got \"rtsp://u:***@cam/s\"",
        ),
        (
            "[device]\nid = \"box-1\"\n[[cameras]]\nid = \"gate\"\nurl = \"ftp://cam/s\"\n".into(),
            "site.toml:5: cameras[gate].url: URL scheme \"ftp\" is not allowed here (expected one of rtsp, rtsps, rtspt, file, http, https, demo), got \"ftp://cam/s\"",
        ),
        (
            "[device]\nid = \"box-1\"\n[[cameras]]\nid = \"gate\"\n".into(),
            "site.toml:3: cameras[gate].url: missing required key \"url\"",
        ),
        (
            "[device]\nid = \"box 1\"\n".into(),
            "site.toml:2: device.id: may hold only letters, digits, '-' and '_', got \"box 1\"",
        ),
        ("[[cameras]]\nid = \"gate\"\nurl = \"rtsp://cam/s\"\n".into(), "device: missing required key \"device\""),
        (
            format!("{BASE}[transport]\nkind = \"amqp\"\namqp_url = \"mqtt://broker\"\n"),
            "site.toml:9: transport.amqp_url: URL scheme \"mqtt\" is not allowed here (expected one of amqp, amqps), got \"mqtt://broker\"",
        ),
        (
            format!("{BASE}[transport]\nkind = \"kafka\"\n"),
            "site.toml:8: transport.kind: unknown variant `kafka`, expected one of `embedded`, `mqtt`, `amqp`",
        ),
        (
            format!("{BASE}[inference]\nconfidence = 1.5\n"),
            "site.toml:8: inference.confidence: must be 0.0..=1.0, got 1.5",
        ),
        (
            format!("{BASE}[inference]\nproviders = [\"cpu\", \"npu\"]\n"),
            "site.toml:8: inference.providers[1]: unknown variant `npu`, expected one of `tensorrt`, `cuda`, `cpu`",
        ),
        (
            format!("{BASE}[scaling]\nmin_workers = 3\nmax_workers = 2\n"),
            "site.toml:8: scaling.min_workers: must not exceed max_workers (2), got 3",
        ),
        (
            format!("{BASE}[scaling]\nremote_queue = \"centre\"\n"),
            "site.toml:8: scaling.remote_queue: offloading to \"centre\" needs scaling.remote_url (the GPU pool's AMQP broker) or transport.kind = \"amqp\" (the remote queue on the same broker), got \"embedded\"",
        ),
        (
            format!("{BASE}[transport]\nkind = \"amqp\"\n[scaling]\nremote_queue = \"edge.frames\"\n"),
            "site.toml:10: scaling.remote_queue: must differ from transport.frames_queue, both are \"edge.frames\"",
        ),
        (
            format!("{BASE}[scaling]\nremote_url = \"amqp://centre/%2f\"\n"),
            "site.toml:8: scaling.remote_url: needs scaling.remote_queue (where offloaded frames go)",
        ),
        (
            format!("{BASE}[scaling]\nremote_queue = \"pool\"\nremote_url = \"amqps://centre/%2f\"\nremote_cert_file = \"c.pem\"\n"),
            "site.toml:10: scaling.remote_cert_file: needs remote_key_file as well (mutual TLS)",
        ),
        (
            format!("{BASE}[scaling]\nremote_queue = \"pool\"\nremote_url = \"mqtt://centre\"\n"),
            "site.toml:9: scaling.remote_url: URL scheme \"mqtt\" is not allowed here (expected one of amqp, amqps), got \"mqtt://centre\"",
        ),
        (
            format!("{BASE}[transport]\nkind = \"amqp\"\n[scaling]\nremote_queue = \"pool\"\nremote_exchange = \"pool\"\n"),
            "site.toml:11: scaling.remote_exchange: needs scaling.remote_url (without it the remote queue is on the frames transport's broker)",
        ),
        (
            format!("{BASE}[transport]\nkind = \"amqp\"\n[scaling]\nremote_queue = \"pool\"\nremote_password_file = \"pool\"\n"),
            "site.toml:11: scaling.remote_password_file: a password_file needs scaling.remote_url",
        ),
        (
            format!("{BASE}[transport]\nkind = \"amqp\"\n[scaling]\nremote_queue = \"a b\"\n"),
            "site.toml:10: scaling.remote_queue: must be non-empty without '#', '+' or spaces, got \"a b\"",
        ),
        (
            format!("{BASE}[telemetry]\nmetrics_listen = \"everywhere\"\n"),
            "site.toml:8: telemetry.metrics_listen: must be host:port such as \"127.0.0.1:9464\", got \"everywhere\"",
        ),
        (
            cam("motion.min_area = 0.5\nmotion.max_area = 0.1\n"),
            "site.toml:7: cameras[gate].motion.min_area: must not exceed max_area (0.1), got 0.5",
        ),
        (
            cam("backoff = { min = \"10s\", max = \"1s\" }\n"),
            "site.toml:7: cameras[gate].backoff.min: must not exceed backoff.max (1s), got 10s",
        ),
        ("[device\nid = 1\n".into(), "site.toml:1: TOML syntax error: unclosed table, expected `]`"),
        (
            "[device]\nid = \"box-1\"\n[[cameras]]\nid = \"gate\"\nurl = \"rtsp://${CAM_HOST}/s\"\n".into(),
            "site.toml:5: cameras[gate].url: environment variable CAM_HOST is not set (write ${CAM_HOST:-default} to give a default)",
        ),
        (
            format!("{BASE}[inference]\nmodel = \"/nonexistent/yolov4.onnx\"\n"),
            "site.toml:8: inference.model: file not found: /nonexistent/yolov4.onnx",
        ),
        (
            format!("{BASE}[inference]\ninput_size = 400\n"),
            "site.toml:8: inference.input_size: must be a multiple of 32 (YOLO stride), got 400",
        ),
        (
            cam("[cameras.zones.road]\npoints = [[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0]]\n"),
            "site.toml:8: cameras[gate].zones.road.points: the polygon crosses itself: edge 0 ([0.0, 0.0] to [1.0, 1.0]) crosses edge 2 ([1.0, 0.0] to [0.0, 1.0]); list the points in order around the area",
        ),
        (
            cam("[cameras.zones.road]\npoints = [[0.0, 0.5], [1.2, 0.5], [1.0, 1.0]]\n"),
            "site.toml:8: cameras[gate].zones.road.points: point [1.2, 0.5] is outside the frame: fractions are 0.0..=1.0 (use points_px for pixels)",
        ),
        (
            cam("[cameras.zones.road]\npoints_px = [[0, 360], [-5, 360], [1280, 720]]\n"),
            "site.toml:8: cameras[gate].zones.road.points_px: point [-5, 360] is outside the frame: pixels are 0 or more",
        ),
        (
            cam("[cameras.zones.road]\npoints = [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0]]\n[cameras.objects.fire]\nrequired_zones = [\"raod\"]\n"),
            "site.toml:10: cameras[gate].objects.fire.required_zones: unknown zone \"raod\": camera \"gate\" defines [\"road\"]",
        ),
        (
            cam("[events.clips]\nenabled = true\npre_capture = \"2m\"\n"),
            "site.toml:9: events.clips.pre_capture: must be at most 60s (it is held in memory per camera), got 2m",
        ),
        (
            cam("[events.clips]\nmax_bytes = \"12 parsecs\"\n"),
            "site.toml:8: events.clips.max_bytes: invalid size \"12 parsecs\": unknown unit \"parsecs\" (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)",
        ),
        (
            cam("[cameras.clips]\nenable = false\n"),
            "site.toml:8: cameras[gate].clips.enable: unknown key \"enable\"; expected `enabled`",
        ),
        (
            cam("[events.tracks.classes.fire]\nrequired_zones = [\"road\"]\n"),
            "site.toml:8: events.tracks.classes.fire.required_zones: unknown zone \"road\" on camera \"gate\" (its zones: []); define it there, or set cameras.objects.fire.required_zones for that camera",
        ),
        (
            cam("[cameras.objects.fire]\nmin_area = 500\nmax_area = 100\n"),
            "site.toml:8: cameras[gate].objects.fire.min_area: must not exceed max_area (100), got 500",
        ),
        (
            cam("[cameras.zones.road]\npoints = [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0]]\nobjects.fire.threshold = 0.7\n"),
            "site.toml:9: cameras[gate].zones.road.objects.fire.threshold: is a track setting: set it per class globally ([events.tracks.classes.NAME]) or per camera ([cameras.objects.NAME]), not per zone",
        ),
    ];
    assert!(rows.len() >= 15);
    for (text, want) in &rows {
        let got = errors_of(&[("site.toml", text)], &[]);
        assert_eq!(got, vec![want.to_string()], "config:\n{text}");
    }
}

#[test]
fn every_error_is_reported_at_once() {
    let text = "[device]\nid = \"box-1\"\n\n[[cameras]]\nid = \"gate\"\nurl = \"rtsp://cam/s\"\nmotion.threshold = 300\nbogus = 1\n\n[[cameras]]\nid = \"yard\"\nurl = \"rtsp://cam/y\"\ndecode = \"gpu\"\n\n[scaling]\npolling_interval = \"soon\"\n";
    let got = errors_of(&[("site.toml", text)], &[]);
    let keys: Vec<&str> = got
        .iter()
        .map(|e| e.split(": ").nth(1).unwrap_or(""))
        .collect();
    assert_eq!(got.len(), 4, "{got:#?}");
    for key in [
        "cameras[gate].bogus",
        "cameras[gate].motion.threshold",
        "cameras[yard].decode",
        "scaling.polling_interval",
    ] {
        assert!(keys.contains(&key), "missing {key} in {got:#?}");
    }
}

const FLEET: &str = "[device]\nid = \"unset\"\n\n[transport]\nkind = \"mqtt\"\nmqtt_url = \"mqtt://fleet-broker:1883\"\n\n[scaling]\nmax_workers = 2\ncooldown_period = \"60s\"\n";
const SITE: &str = "[device]\nsite = \"north\"\n\n[transport]\nmqtt_url = \"mqtt://north-broker:1883\"\n\n[[cameras]]\nid = \"gate\"\nurl = \"rtsp://gate.north/stream\"\nmotion.threshold = 30\n\n[[cameras]]\nid = \"yard\"\nurl = \"rtsp://yard.north/stream\"\n";
const DEVICE: &str = "[device]\nid = \"north-07\"\n\n[[cameras]]\nid = \"gate\"\nmotion.threshold = 40\n\n[[cameras]]\nid = \"dock\"\nurl = \"rtsp://dock.north/stream\"\n";

#[test]
fn layers_override_in_order_fleet_site_device_env() {
    let files = [
        ("fleet.toml", FLEET),
        ("site.toml", SITE),
        ("device.toml", DEVICE),
    ];
    let l = ok(&files, &[("EDGE_AGENT__SCALING__MAX_WORKERS", "3")]);
    let c = &l.config;
    assert_eq!(c.device.id.as_str(), "north-07");
    assert_eq!(c.device.site.as_deref(), Some("north"));
    assert_eq!(c.transport.kind, crate::transport::TransportKind::Mqtt);
    assert_eq!(c.transport.mqtt_url.expose(), "mqtt://north-broker:1883");
    assert_eq!(
        c.scaling.max_workers.get(),
        3,
        "env overrides the fleet file"
    );
    assert_eq!(
        c.scaling.cooldown_period.get().as_secs(),
        60,
        "fleet value survives"
    );
    let explained = render(c, &l.tree, true).unwrap();
    assert!(
        explained.contains("max_workers = 3  # env EDGE_AGENT__SCALING__MAX_WORKERS"),
        "{explained}"
    );
    assert!(
        explained.contains("cooldown_period = \"1m\"  # fleet.toml:10"),
        "{explained}"
    );
    assert!(
        explained.contains("id = \"north-07\"  # device.toml:2"),
        "{explained}"
    );
    assert!(
        explained.contains("min_workers = 0  # default"),
        "{explained}"
    );
}

#[test]
fn cameras_merge_by_id_across_layers() {
    let files = [
        ("fleet.toml", FLEET),
        ("site.toml", SITE),
        ("device.toml", DEVICE),
    ];
    let c = ok(&files, &[("EDGE_AGENT__CAMERAS__YARD__ENABLED", "false")]).config;
    let ids: Vec<&str> = c.cameras.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["gate", "yard", "dock"]);
    let gate = &c.cameras[0];
    assert_eq!(
        gate.url.expose(),
        "rtsp://gate.north/stream",
        "the site's url is kept"
    );
    assert_eq!(
        gate.motion.threshold.get(),
        40,
        "the device overrides one key"
    );
    assert!(!c.cameras[1].enabled, "env reaches a camera by id");
    assert!(c.cameras[2].enabled);
}

#[test]
fn strings_are_interpolated_from_the_environment() {
    let text = "[device]\nid = \"${DEVICE_ID}\"\nsite = \"${SITE:-nowhere}\"\n[[cameras]]\nid = \"gate\"\nurl = \"rtsp://${CAM_HOST}:554/s\"\n";
    let c = ok(
        &[("a.toml", text)],
        &[("DEVICE_ID", "box-9"), ("CAM_HOST", "10.1.2.3")],
    )
    .config;
    assert_eq!(c.device.id.as_str(), "box-9");
    assert_eq!(c.device.site.as_deref(), Some("nowhere"));
    assert_eq!(c.cameras[0].url.expose(), "rtsp://10.1.2.3:554/s");
}

#[test]
fn secrets_come_from_files_and_credentials_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gate-password"), "s3cr3t!\n").unwrap();
    std::fs::write(dir.path().join("broker"), "brokerpw").unwrap();
    let text = "[device]\nid = \"box\"\n[[cameras]]\nid = \"gate\"\nurl = \"rtsp://admin@gate/s\"\npassword_file = \"gate-password\"\n[transport]\nkind = \"amqp\"\namqp_url = \"amqp://edge@rabbit:5672/%2f\"\npassword_file = \"broker\"\n";
    let creds = dir.path().display().to_string();
    let l = ok(&[("a.toml", text)], &[("CREDENTIALS_DIRECTORY", &creds)]);
    assert_eq!(
        l.config.cameras[0].url.expose(),
        "rtsp://admin:s3cr3t!@gate/s"
    );
    assert_eq!(
        l.config.transport.amqp_url.expose(),
        "amqp://edge:brokerpw@rabbit:5672/%2f"
    );
    let printed = render(&l.config, &l.tree, false).unwrap();
    assert!(
        !printed.contains("s3cr3t") && !printed.contains("brokerpw"),
        "{printed}"
    );
    assert!(printed.contains("rtsp://admin:***@gate/s"), "{printed}");
    assert!(
        !format!("{:?}", l.config).contains("s3cr3t"),
        "Debug redacts too"
    );

    let missing = errors_of(&[("a.toml", "[device]\nid = \"box\"\n[[cameras]]\nid = \"gate\"\nurl = \"rtsp://admin@gate/s\"\npassword_file = \"/nonexistent/pw\"\n")], &[]);
    assert_eq!(missing.len(), 1);
    assert!(
        missing[0].starts_with(
            "a.toml:6: cameras[gate].password_file: cannot read secret file; tried /nonexistent/pw"
        ),
        "{missing:?}"
    );
}

/// Passwords with URL-special characters survive the trip into the URL and back out
/// as the brokers' clients read it; `password_file` goes to the broker in use only.
#[test]
fn broker_password_files_keep_every_character_and_go_to_the_broker_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let pw = "p+a&s%25s @w:o/rd#?é";
    std::fs::write(dir.path().join("broker"), format!("{pw}\n")).unwrap();
    let creds = dir.path().display().to_string();
    let env = [("CREDENTIALS_DIRECTORY", creds.as_str())];
    let head = "[device]\nid = \"box\"\n[[cameras]]\nid = \"gate\"\nurl = \"rtsp://gate/s\"\n";
    // MQTT: the AMQP URL has no user name and must not matter.
    let mqtt = format!("{head}[transport]\nkind = \"mqtt\"\nmqtt_url = \"mqtt://edge@broker:1883\"\npassword_file = \"broker\"\n");
    let t = ok(&[("a.toml", &mqtt)], &env).config.transport;
    let u = url::Url::parse(t.mqtt_url.expose()).unwrap();
    assert_eq!(u.username(), "edge");
    let decoded = percent_encoding::percent_decode_str(u.password().unwrap())
        .decode_utf8()
        .unwrap();
    assert_eq!(decoded, pw, "{}", t.mqtt_url.expose());
    assert_eq!(t.amqp_url.expose(), "amqp://127.0.0.1:5672/%2f");
    // AMQP: lapin's own URI parser reads the same password back.
    let amqp = format!("{head}[transport]\nkind = \"amqp\"\namqp_url = \"amqp://edge@rabbit:5672/%2f\"\nmqtt_url = \"mqtt://other@broker\"\npassword_file = \"broker\"\n");
    let t = ok(&[("a.toml", &amqp)], &env).config.transport;
    let uri: lapin::uri::AMQPUri = t.amqp_url.expose().parse().unwrap();
    assert_eq!(uri.authority.userinfo.password, pw);
    assert_eq!(t.mqtt_url.expose(), "mqtt://other@broker");
    // The embedded broker takes none: a setting that would do nothing is an error.
    let embedded = format!("{head}[transport]\npassword_file = \"broker\"\n");
    assert_eq!(
        errors_of(&[("a.toml", &embedded)], &env),
        vec!["a.toml:7: transport.password_file: the embedded broker takes no password: set kind = \"mqtt\" or \"amqp\", or remove password_file".to_string()]
    );
}

#[test]
fn passwords_in_urls_never_reach_the_printed_config() {
    let text = "[device]\nid = \"box\"\n[[cameras]]\nid = \"gate\"\nurl = \"rtsp://admin:hunter2@gate/s\"\n[transport]\nmqtt_url = \"mqtts://u:topsecret@broker:8883\"\n";
    let l = ok(&[("a.toml", text)], &[]);
    for explain in [false, true] {
        let out = render(&l.config, &l.tree, explain).unwrap();
        assert!(
            !out.contains("hunter2") && !out.contains("topsecret"),
            "{out}"
        );
        assert!(out.contains("mqtts://u:***@broker:8883"), "{out}");
    }
}

#[test]
fn the_embedded_demo_and_a_minimal_config_are_complete() {
    let demo = Config::from_toml_str("demo.toml", DEMO_TOML).unwrap();
    assert_eq!(demo.cameras.len(), 1);
    let minimal = Config::from_toml_str("m.toml", BASE).unwrap();
    assert_eq!(
        minimal.transport.kind,
        crate::transport::TransportKind::Embedded
    );
    assert_eq!(minimal.scaling.min_workers.get(), 0);
    assert_eq!(minimal.cameras[0].analysis_width.get(), 320);
    assert_eq!(minimal.cameras[0].analysis_fps.get(), 15);
}

#[test]
fn printed_config_loads_back_to_the_same_config() {
    let files = [
        ("fleet.toml", FLEET),
        ("site.toml", SITE),
        ("device.toml", DEVICE),
    ];
    let c = ok(&files, &[]).config;
    let printed = render(&c, &ok(&files, &[]).tree, false).unwrap();
    let again = Config::from_toml_str("printed.toml", &printed)
        .unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert_eq!(again, c);
}

/// Bounded fuzzing with a seeded generator: real configuration files, mutated line by
/// line and character by character, never make the loader panic, and every error it
/// reports names the file (and line) and, past TOML syntax, the key.
#[test]
fn mutated_configs_never_panic_and_every_error_names_file_and_key() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    let seeds = [
        include_str!("../../../systemd/fleet/00-fleet.toml"),
        include_str!("../../../systemd/fleet/50-site-north.toml"),
        include_str!("../../../systemd/fleet/90-device-north-01.toml"),
        include_str!("../../../systemd/agent.toml"),
        super::DEMO_TOML,
    ];
    let values = [
        "-1",
        "0",
        "1e309",
        "nan",
        "99999999999999999999",
        "\"\"",
        "\"x y#\"",
        "true",
        "[]",
        "{}",
        "\"${NOPE}\"",
        "\"10q\"",
        "[[1]]",
        "\"rtsp://a:b@\"",
    ];
    let junk = [
        '=', '[', ']', '"', '#', '\n', '.', '{', ',', '\\', 'é', '\0',
    ];
    let mut rng = StdRng::seed_from_u64(0xc0f1_9000);
    let mut failed = 0;
    for round in 0..400 {
        let base = seeds[round % seeds.len()];
        let mut lines: Vec<String> = base.lines().map(str::to_string).collect();
        for _ in 0..rng.random_range(1..4) {
            let i = rng.random_range(0..lines.len());
            match rng.random_range(0..6) {
                0 => {
                    lines.remove(i);
                }
                1 => {
                    let l = lines[i].clone();
                    lines.insert(i, l);
                }
                2 => {
                    let j = rng.random_range(0..lines.len());
                    lines.swap(i, j);
                }
                3 => {
                    // A value replaced by one of the awkward ones.
                    if let Some((k, _)) = lines[i].split_once('=') {
                        lines[i] = format!("{k}= {}", values[rng.random_range(0..values.len())]);
                    }
                }
                4 => {
                    let chars: Vec<char> = lines[i].chars().collect();
                    let at = rng.random_range(0..=chars.len());
                    let c = junk[rng.random_range(0..junk.len())];
                    lines[i] = chars[..at].iter().chain([&c]).chain(&chars[at..]).collect();
                }
                _ => {
                    // A key nobody knows.
                    if let Some((_, v)) = lines[i].split_once('=') {
                        lines[i] = format!("colour ={v}");
                    }
                }
            }
        }
        let text = lines.join("\n");
        let Err(errors) = load(&[("site.toml", &text)], &[]) else {
            continue;
        };
        failed += 1;
        for e in &errors.0 {
            // A key missing from every file has no place to name, only its key.
            if let Some(origin) = &e.origin {
                assert_eq!(&*origin.source, "site.toml", "{e}\n--- config:\n{text}");
            }
            assert!(
                !e.key.is_empty() || e.origin.as_ref().is_some_and(|o| o.line.is_some()),
                "neither key nor file line: {e}\n--- config:\n{text}"
            );
        }
    }
    // The mutations mostly break something (the checks above ran on those).
    assert!(
        failed > 200,
        "only {failed} of 400 mutated configs were rejected"
    );
}

/// Any printable password, written inline in a camera URL or read from its
/// `password_file`, never appears in what is printed: `validate` output, `Debug`, the
/// URL as logged ("Camera starting"), a GStreamer error quoting the URL as it was
/// opened, configuration errors, or what a worker gets on stdin.
#[test]
fn no_printable_password_reaches_printed_text_inline_or_from_a_file() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    // Printable ASCII, space included, and a few letters beyond it.
    let alphabet: Vec<char> = (' '..='~').chain(['é', 'ß', '€']).collect();
    let mut rng = StdRng::seed_from_u64(26);
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().display().to_string();
    for round in 0..400 {
        let len = rng.random_range(8..20);
        let pw: String = (0..len)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())])
            .collect();
        let pw = if pw.trim() != pw {
            // A password file's edges are trimmed; the test's is the trimmed one.
            format!("x{}x", pw.trim())
        } else {
            pw
        };
        let inline = round % 2 == 0;
        let text = if inline {
            let url = format!("rtsp://admin:{pw}@cam.local/s");
            let quoted = toml::Value::String(url).to_string();
            format!("[device]\nid = \"box\"\n[[cameras]]\nid = \"gate\"\nurl = {quoted}\n")
        } else {
            std::fs::write(dir.path().join("gate"), format!("{pw}\n")).unwrap();
            "[device]\nid = \"box\"\n[[cameras]]\nid = \"gate\"\nurl = \"rtsp://admin@cam.local/s\"\npassword_file = \"gate\"\n".to_string()
        };
        let mut printed = Vec::new();
        match load(&[("a.toml", &text)], &[("CREDENTIALS_DIRECTORY", &creds)]) {
            Ok(l) => {
                let url = &l.config.cameras[0].url;
                printed.push(render(&l.config, &l.tree, false).unwrap());
                printed.push(render(&l.config, &l.tree, true).unwrap());
                printed.push(format!("{:?}", l.config));
                printed.push(format!("Camera starting. url={url}"));
                printed.push(crate::values::secret::redact_text(&format!(
                    "Could not open resource {} for reading and writing.",
                    url.expose()
                )));
                printed.push(resolved_text(&l.config).unwrap());
            }
            Err(e) => printed.push(e.to_string()),
        }
        let encoded = url::form_urlencoded::byte_serialize(pw.as_bytes()).collect::<String>();
        for out in printed {
            assert!(
                !out.contains(&pw) && !out.contains(&encoded),
                "round {round}, inline {inline}: password {pw:?} printed in:\n{out}"
            );
        }
    }
}

#[test]
fn the_readme_road_camera_example_loads() {
    let readme = include_str!("../../../README.md");
    let start = readme
        .find("[[cameras]]\nid = \"a40-km12\"")
        .expect("the road camera example is in the README");
    let block = &readme[start..start + readme[start..].find("```").unwrap()];
    let text = format!("[device]\nid = \"box-1\"\n\n{block}");
    let c = ok(&[("site.toml", &text)], &[]).config;
    let cam = &c.cameras[0];
    assert_eq!(
        cam.zones.keys().collect::<Vec<_>>(),
        ["carriageway", "hard_shoulder"]
    );
    assert_eq!(
        cam.objects["fire"].required_zones.as_deref(),
        Some(&["carriageway".to_string()][..])
    );
}

#[test]
fn bad_uplink_sections_give_the_exact_located_error() {
    let rows: Vec<(String, &str)> = vec![
        (
            format!("{BASE}[uplink]\nkind = \"mqtt\"\n"),
            "site.toml:7: uplink.url: is required with kind = \"mqtt\"",
        ),
        (
            format!("{BASE}[uplink]\nkind = \"amqp\"\nurl = \"mqtt://central\"\n"),
            "site.toml:9: uplink.url: scheme \"mqtt\" does not match kind = \"amqp\"",
        ),
        (
            format!("{BASE}[uplink]\nkind = \"mqtt\"\nurl = \"rtsp://central\"\n"),
            "site.toml:9: uplink.url: URL scheme \"rtsp\" is not allowed here (expected one of mqtt, mqtts, tcp, ssl, amqp, amqps), got \"rtsp://central\"",
        ),
        (
            format!("{BASE}[uplink]\nkind = \"mqtt\"\nurl = \"mqtts://central\"\ncert_file = \"c.pem\"\n"),
            "site.toml:10: uplink.cert_file: needs key_file as well (mutual TLS)",
        ),
        (
            format!("{BASE}[uplink]\nkind = \"kafka\"\n"),
            "site.toml:8: uplink.kind: unknown variant `kafka`, expected one of `none`, `mqtt`, `amqp`",
        ),
        (
            format!("{BASE}[uplink.spool]\nmax_bytes = 10\n"),
            "site.toml:8: uplink.spool.max_bytes: must be 4096..=1099511627776, got 10",
        ),
        (
            format!("{BASE}[uplink.spool]\nmax_age = \"0s\"\n"),
            "site.toml:8: uplink.spool.max_age: must be at least 1s, got 0s",
        ),
    ];
    for (text, want) in rows {
        let got = errors_of(&[("site.toml", &text)], &[]);
        assert_eq!(got, [want], "{text}");
    }
    let fine = ok(
        &[(
            "site.toml",
            &format!("{BASE}[uplink]\nkind = \"amqp\"\nurl = \"amqps://edge@central/%2f\"\n"),
        )],
        &[],
    );
    assert_eq!(fine.config.uplink.kind, crate::uplink::UplinkKind::Amqp);
}
