//! Layered loading: config directory (`agent.toml`, then `conf.d/*.toml` by name), then
//! each `--config` file in order, then `EDGE_AGENT__SECTION__KEY` variables; `${VAR}`
//! interpolation; secrets from files; and validation that gathers every error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::tree::{ConfigError, ConfigErrors, Kind, Node, Origin, Seg};
use super::Config;
use crate::transport::TransportKind;

/// Prefix of environment overrides: `EDGE_AGENT__TRANSPORT__KIND=amqp`,
/// `EDGE_AGENT__CAMERAS__GATE__MOTION__THRESHOLD=30`.
pub const ENV_PREFIX: &str = "EDGE_AGENT__";

/// Where configuration comes from.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub dir: Option<PathBuf>,
    pub files: Vec<PathBuf>,
    /// The process environment (overrides, interpolation, `CREDENTIALS_DIRECTORY`).
    pub env: Vec<(String, String)>,
}

impl Sources {
    pub fn from_process(dir: Option<PathBuf>, files: Vec<PathBuf>) -> Self {
        Self {
            dir,
            files,
            env: std::env::vars().collect(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.dir.is_none() && self.files.is_empty()
    }
}

/// A loaded configuration and the tree that says where each value came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub tree: Node,
    /// The files read, in order.
    pub files: Vec<PathBuf>,
}

/// Reads every source in order and validates the result.
pub fn load(sources: &Sources) -> Result<Loaded, ConfigErrors> {
    let mut errors = Vec::new();
    let mut paths = Vec::new();
    if let Some(dir) = &sources.dir {
        match config_dir_files(dir) {
            Ok(p) => paths.extend(p),
            Err(e) => errors.push(e),
        }
    }
    paths.extend(sources.files.iter().cloned());
    let mut texts = Vec::new();
    for p in &paths {
        match std::fs::read_to_string(p) {
            Ok(t) => texts.push((p.display().to_string(), t)),
            Err(e) => errors.push(ConfigError {
                origin: Some(Origin {
                    source: Arc::from(p.display().to_string()),
                    line: None,
                }),
                key: String::new(),
                message: format!("cannot read file: {e}"),
            }),
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    // With a config directory, the files its unit's LoadCredential= lines name
    // (DIR/credentials/NAME) are read directly where systemd gives no
    // CREDENTIALS_DIRECTORY (systemd 245 on JetPack 5, or a run by hand).
    let dirs = sources
        .dir
        .iter()
        .map(|d| d.join("credentials"))
        .chain(base_dir(&paths))
        .collect();
    let mut loaded = load_texts_in(&texts, &sources.env, dirs)?;
    loaded.files = paths;
    Ok(loaded)
}

fn base_dir(paths: &[PathBuf]) -> Option<PathBuf> {
    paths.last().and_then(|p| p.parent()).map(Path::to_path_buf)
}

fn config_dir_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let err = |message: String| ConfigError {
        origin: Some(Origin {
            source: Arc::from(dir.display().to_string()),
            line: None,
        }),
        key: String::new(),
        message,
    };
    if !dir.is_dir() {
        return Err(err("config directory not found".into()));
    }
    let mut files = Vec::new();
    let main = dir.join("agent.toml");
    if main.is_file() {
        files.push(main);
    }
    let confd = dir.join("conf.d");
    if confd.is_dir() {
        let mut extra: Vec<PathBuf> = std::fs::read_dir(&confd)
            .map_err(|e| err(format!("cannot list conf.d: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
            .collect();
        extra.sort();
        files.extend(extra);
    }
    if files.is_empty() {
        return Err(err(
            "no agent.toml and no conf.d/*.toml in config directory".into(),
        ));
    }
    Ok(files)
}

/// Loads named TOML texts (in override order) with the given environment; relative
/// secret files are looked up in `$CREDENTIALS_DIRECTORY`, then in `base`.
pub fn load_texts(
    texts: &[(String, String)],
    env: &[(String, String)],
    base: Option<PathBuf>,
) -> Result<Loaded, ConfigErrors> {
    load_texts_in(texts, env, base.into_iter().collect())
}

/// [`load_texts`] with the directories searched for relative secret files after
/// `$CREDENTIALS_DIRECTORY`, in order.
fn load_texts_in(
    texts: &[(String, String)],
    env: &[(String, String)],
    secret_dirs: Vec<PathBuf>,
) -> Result<Loaded, ConfigErrors> {
    let mut errors = Vec::new();
    let mut tree = Node::empty_table(Origin {
        source: Arc::from("default"),
        line: None,
    });
    for (name, text) in texts {
        match Node::parse(name, text) {
            Ok(node) => tree.merge(node),
            Err(e) => errors.extend(e),
        }
    }
    match env_overlay(env) {
        Ok(Some(overlay)) => tree.merge(overlay),
        Ok(None) => {}
        Err(e) => errors.extend(e),
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }

    let vars: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let lookup = |name: &str| vars.get(name).map(|v| v.to_string());
    let mut bad = Vec::new();
    tree.interpolate(&lookup, &mut Vec::new(), &mut bad);
    for (path, origin, message) in bad {
        errors.push(ConfigError {
            origin: Some(origin),
            key: tree.display_path(&path),
            message,
        });
    }

    let dirs: Vec<PathBuf> = vars
        .get("CREDENTIALS_DIRECTORY")
        .map(PathBuf::from)
        .into_iter()
        .chain(secret_dirs)
        .collect();
    finish(tree, errors, Some(&dirs))
}

/// Loads a configuration written by [`super::resolved_text`]: the agent's own, handed
/// to a worker. Every value in it is final, so nothing is layered on it: no environment
/// override, no `${VAR}`, no secret file (the URLs carry their passwords).
pub fn load_resolved(name: &str, text: &str) -> Result<Loaded, ConfigErrors> {
    match Node::parse(name, text) {
        Ok(tree) => finish(tree, Vec::new(), None),
        Err(e) => Err(ConfigErrors(e)),
    }
}

/// Deserialises and checks a merged tree; `secrets` (the directories relative secret
/// files are looked up in, in order) reads the secret files.
fn finish(
    mut tree: Node,
    mut errors: Vec<ConfigError>,
    secrets: Option<&[PathBuf]>,
) -> Result<Loaded, ConfigErrors> {
    let config = deserialize_all(&mut tree, &mut errors);
    let Some(mut config) = config else {
        return Err(ConfigErrors(errors));
    };
    // Cross-field checks only make sense on sections that parsed as written.
    if errors.is_empty() {
        for (key, message) in config.check() {
            let path = parse_display_path(&key, &tree);
            errors.push(ConfigError {
                origin: tree.origin_of(&path),
                key,
                message,
            });
        }
        if let Some(dirs) = secrets {
            apply_secrets(&mut config, &tree, dirs, &mut errors);
            apply_page_token(&mut config, &tree, dirs, &mut errors);
        }
    }
    if errors.is_empty() {
        Ok(Loaded {
            config,
            tree,
            files: Vec::new(),
        })
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Deserialises the tree; on each error, records it, removes the offending value and
/// tries again, so one run reports every bad key rather than the first.
fn deserialize_all(tree: &mut Node, errors: &mut Vec<ConfigError>) -> Option<Config> {
    let mut seen_paths = Vec::new();
    for _ in 0..200 {
        let value = tree.to_value();
        let err = match serde_path_to_error::deserialize::<_, Config>(value) {
            Ok(c) => return if errors.is_empty() { Some(c) } else { None },
            Err(e) => e,
        };
        let mut path: Vec<Seg> = err
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                serde_path_to_error::Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        let raw = err.inner().message().trim().to_string();
        let mut message = raw.clone();
        if let Some(field) = between(&raw, "unknown field `", "`") {
            if path.last() != Some(&Seg::Key(field.to_string())) {
                path.push(Seg::Key(field.to_string()));
            }
            message = match raw.split_once(", expected") {
                Some((_, rest)) => format!("unknown key {field:?}; expected{rest}"),
                None => format!("unknown key {field:?}"),
            };
        }
        let missing = between(&raw, "missing field `", "`").map(str::to_string);
        if let Some(field) = &missing {
            message = format!("missing required key {field:?}");
        }
        let key = {
            let mut full = path.clone();
            if let Some(f) = &missing {
                full.push(Seg::Key(f.clone()));
            }
            tree.display_path(&full)
        };
        // A value removed after its own error then shows up as missing: say it once.
        let full_missing = missing
            .as_ref()
            .map(|f| [path.clone(), vec![Seg::Key(f.clone())]].concat());
        if !full_missing
            .as_ref()
            .is_some_and(|m| seen_paths.contains(m))
        {
            errors.push(ConfigError {
                origin: tree.origin_of(&path),
                key,
                message,
            });
        }
        if seen_paths.contains(&path) {
            return None;
        }
        seen_paths.push(path.clone());
        // Remove what failed so the rest can be checked; a missing key takes its
        // table with it, and a missing section gets a placeholder.
        let removed = if path.is_empty() {
            match missing.as_deref() {
                Some("device") => {
                    let placeholder =
                        Node::parse("placeholder", "[device]\nid = \"placeholder\"\n")
                            .expect("valid placeholder");
                    tree.merge(placeholder);
                    true
                }
                _ => false,
            }
        } else {
            tree.remove(&path)
        };
        if !removed {
            return None;
        }
    }
    None
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = s.find(start)? + start.len();
    let to = s[from..].find(end)? + from;
    Some(&s[from..to])
}

/// Turns `cameras[gate].motion.threshold` back into a tree path.
fn parse_display_path(key: &str, tree: &Node) -> Vec<Seg> {
    let mut path = Vec::new();
    for part in key.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((n, rest)) => (n, Some(rest.trim_end_matches(']'))),
            None => (part, None),
        };
        path.push(Seg::Key(name.to_string()));
        if let Some(idx) = index {
            let by_id = tree.get(&path).and_then(|n| match &n.kind {
                Kind::Array(a) => a.iter().position(|c| {
                    c.table().and_then(|t| t.get("id")).map(|n| n.to_value())
                        == Some(toml::Value::String(idx.to_string()))
                }),
                _ => None,
            });
            path.push(Seg::Index(by_id.or_else(|| idx.parse().ok()).unwrap_or(0)));
        }
    }
    path
}

/// Builds a tree from `EDGE_AGENT__...` variables. Values are read as TOML scalars or
/// arrays when they parse as such (`30`, `true`, `["cpu"]`), else as strings.
fn env_overlay(env: &[(String, String)]) -> Result<Option<Node>, Vec<ConfigError>> {
    let mut vars: Vec<&(String, String)> = env
        .iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    if vars.is_empty() {
        return Ok(None);
    }
    vars.sort();
    let mut root = Node::empty_table(Origin {
        source: Arc::from("env"),
        line: None,
    });
    let mut errors = Vec::new();
    for (name, raw) in vars {
        let origin = Origin {
            source: Arc::from(format!("env {name}")),
            line: None,
        };
        let segs: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(|s| s.to_ascii_lowercase())
            .collect();
        if segs.iter().any(String::is_empty) || (segs[0] == "cameras" && segs.len() < 3) {
            errors.push(ConfigError {
                origin: Some(origin),
                key: String::new(),
                message: "expected EDGE_AGENT__SECTION__KEY or EDGE_AGENT__CAMERAS__ID__KEY".into(),
            });
            continue;
        }
        let value = env_value(raw);
        let leaf = Node {
            origin: origin.clone(),
            kind: Kind::Scalar(value),
        };
        let mut node = leaf;
        let (cam, keys) = if segs[0] == "cameras" {
            (Some(&segs[1]), &segs[2..])
        } else {
            (None, &segs[..])
        };
        for k in keys.iter().rev() {
            node = Node {
                origin: origin.clone(),
                kind: Kind::Table(BTreeMap::from([(k.clone(), node)])),
            };
        }
        if let Some(id) = cam {
            if let Kind::Table(t) = &mut node.kind {
                t.insert(
                    "id".into(),
                    Node {
                        origin: origin.clone(),
                        kind: Kind::Scalar(toml::Value::String(id.clone())),
                    },
                );
            }
            node = Node {
                origin: origin.clone(),
                kind: Kind::Table(BTreeMap::from([(
                    "cameras".to_string(),
                    Node {
                        origin,
                        kind: Kind::Array(vec![node]),
                    },
                )])),
            };
        }
        root.merge(node);
    }
    if errors.is_empty() {
        Ok(Some(root))
    } else {
        Err(errors)
    }
}

fn env_value(raw: &str) -> toml::Value {
    let t = raw.trim();
    let looks_typed = t == "true"
        || t == "false"
        || t.starts_with('[')
        || t.parse::<i64>().is_ok()
        || t.parse::<f64>().is_ok();
    if looks_typed {
        if let Ok(v) = toml::de::DeValue::parse(t) {
            let node = Node::parse("env", &format!("v = {t}")).ok();
            if let (Some(node), false) = (node, v.get_ref().is_table()) {
                if let Some(n) = node.table().and_then(|m| m.get("v")) {
                    return n.to_value();
                }
            }
        }
    }
    toml::Value::String(raw.to_string())
}

/// Reads `password_file` secrets into the URLs that need them.
fn apply_secrets(
    config: &mut Config,
    tree: &Node,
    dirs: &[PathBuf],
    errors: &mut Vec<ConfigError>,
) {
    for (i, cam) in config.cameras.iter_mut().enumerate() {
        let Some(file) = cam.password_file.clone() else {
            continue;
        };
        let path = [
            Seg::Key("cameras".into()),
            Seg::Index(i),
            Seg::Key("password_file".into()),
        ];
        let result = read_secret(&file, dirs).and_then(|pw| cam.url.with_password(&pw));
        match result {
            Ok(url) => cam.url = url,
            Err(message) => errors.push(ConfigError {
                origin: tree.origin_of(&path),
                key: tree.display_path(&path),
                message,
            }),
        }
    }
    if let Some(file) = config.uplink.password_file.clone() {
        let path = [Seg::Key("uplink".into()), Seg::Key("password_file".into())];
        let u = &mut config.uplink;
        let result = read_secret(&file, dirs).and_then(|pw| match &u.url {
            Some(url) => url.with_password(&pw).map(|url| u.url = Some(url)),
            None => Err("a password_file needs uplink.url".into()),
        });
        if let Err(message) = result {
            errors.push(ConfigError {
                origin: tree.origin_of(&path),
                key: tree.display_path(&path),
                message,
            });
        }
    }
    if let Some(file) = config.scaling.remote_password_file.clone() {
        let path = [
            Seg::Key("scaling".into()),
            Seg::Key("remote_password_file".into()),
        ];
        let s = &mut config.scaling;
        let result = match &s.remote_url {
            None => Err("a password_file needs scaling.remote_url".into()),
            Some(url) => read_secret(&file, dirs)
                .and_then(|pw| url.with_password(&pw))
                .map(|url| s.remote_url = Some(url)),
        };
        if let Err(message) = result {
            errors.push(ConfigError {
                origin: tree.origin_of(&path),
                key: tree.display_path(&path),
                message,
            });
        }
    }
    if let Some(file) = config.transport.password_file.clone() {
        let path = [
            Seg::Key("transport".into()),
            Seg::Key("password_file".into()),
        ];
        let t = &mut config.transport;
        // The password belongs to the broker in use: the other URL may well have no
        // user name, and must not make a valid MQTT setup fail (or the reverse).
        let result = read_secret(&file, dirs).and_then(|pw| match t.kind {
            TransportKind::Mqtt => t.mqtt_url.with_password(&pw).map(|u| t.mqtt_url = u),
            TransportKind::Amqp => t.amqp_url.with_password(&pw).map(|u| t.amqp_url = u),
            TransportKind::Embedded => Err(
                "the embedded broker takes no password: set kind = \"mqtt\" or \"amqp\", \
                 or remove password_file"
                    .into(),
            ),
        });
        match result {
            Ok(()) => {}
            Err(message) => errors.push(ConfigError {
                origin: tree.origin_of(&path),
                key: tree.display_path(&path),
                message,
            }),
        }
    }
}

/// Reads `telemetry.page_token_file` into the page's token.
fn apply_page_token(
    config: &mut Config,
    tree: &Node,
    dirs: &[PathBuf],
    errors: &mut Vec<ConfigError>,
) {
    let Some(file) = config.telemetry.page_token_file.clone() else {
        return;
    };
    match read_secret(&file, dirs) {
        Ok(token) => {
            config.telemetry.page_token = Some(crate::telemetry::config::PageToken::new(token))
        }
        Err(message) => {
            let path = [
                Seg::Key("telemetry".into()),
                Seg::Key("page_token_file".into()),
            ];
            errors.push(ConfigError {
                origin: tree.origin_of(&path),
                key: tree.display_path(&path),
                message,
            })
        }
    }
}

/// Finds a secret file: absolute as given; relative in `dirs` in order
/// (`$CREDENTIALS_DIRECTORY`, then the config directory's `credentials/`, then beside the
/// last config file), then as given.
fn read_secret(file: &Path, dirs: &[PathBuf]) -> Result<String, String> {
    let mut tried = Vec::new();
    let candidates: Vec<PathBuf> = if file.is_absolute() {
        vec![file.to_path_buf()]
    } else {
        dirs.iter()
            .map(|d| d.join(file))
            .chain([file.to_path_buf()])
            .collect()
    };
    for c in candidates {
        match std::fs::read_to_string(&c) {
            Ok(s) => {
                let s = s.trim_end_matches(['\n', '\r']).to_string();
                if s.is_empty() {
                    return Err(format!("secret file {} is empty", c.display()));
                }
                return Ok(s);
            }
            Err(e) => tried.push(format!("{} ({e})", c.display())),
        }
    }
    Err(format!(
        "cannot read secret file; tried {}",
        tried.join(", ")
    ))
}
