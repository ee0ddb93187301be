//! The merged configuration tree: every value remembers the file and line (or the
//! environment variable) that set it, so errors and `validate --explain` can name them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use toml::de::{DeTable, DeValue};

use crate::values::secret::redact_url;

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// A file name as given, or `env NAME`.
    pub source: Arc<str>,
    pub line: Option<usize>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.source),
            None => f.write_str(&self.source),
        }
    }
}

/// One configuration problem, located.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub origin: Option<Origin>,
    /// Key path such as `cameras[gate].motion.threshold`; empty for a whole file.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(o) = &self.origin {
            write!(f, "{o}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        // Messages may quote what was written (a TOML line, a URL): the one place
        // every configuration error is printed redacts it.
        f.write_str(&crate::values::secret::redact_text(&self.message))
    }
}

/// Every problem found, reported together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} configuration error{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    pub origin: Origin,
    pub kind: Kind,
}

#[derive(Clone, Debug)]
pub enum Kind {
    Table(BTreeMap<String, Node>),
    Array(Vec<Node>),
    Scalar(toml::Value),
}

/// One step of a key path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl Node {
    pub fn empty_table(origin: Origin) -> Node {
        Node {
            origin,
            kind: Kind::Table(BTreeMap::new()),
        }
    }

    /// Parses a TOML file into a tree; syntax errors and duplicate camera ids are
    /// returned as located errors.
    pub fn parse(name: &str, text: &str) -> Result<Node, Vec<ConfigError>> {
        let source: Arc<str> = Arc::from(name);
        let lines = LineIndex::new(text);
        let table = DeTable::parse(text).map_err(|e| {
            let line = e.span().map(|s| lines.line(s.start));
            vec![ConfigError {
                origin: Some(Origin {
                    source: source.clone(),
                    line,
                }),
                key: String::new(),
                message: format!("TOML syntax error: {}", e.message().trim()),
            }]
        })?;
        let mut errors = Vec::new();
        let origin = Origin {
            source: source.clone(),
            line: None,
        };
        let root = convert_table(table.get_ref(), &source, &lines, origin, &mut errors);
        check_duplicate_ids(&root, &mut errors);
        if errors.is_empty() {
            Ok(root)
        } else {
            Err(errors)
        }
    }

    pub fn table(&self) -> Option<&BTreeMap<String, Node>> {
        match &self.kind {
            Kind::Table(t) => Some(t),
            _ => None,
        }
    }

    /// Plain TOML, for serde.
    pub fn to_value(&self) -> toml::Value {
        match &self.kind {
            Kind::Scalar(v) => v.clone(),
            Kind::Array(a) => toml::Value::Array(a.iter().map(Node::to_value).collect()),
            Kind::Table(t) => {
                toml::Value::Table(t.iter().map(|(k, v)| (k.clone(), v.to_value())).collect())
            }
        }
    }

    /// Overlays `over` onto `self`: tables merge key by key, the root `cameras` array
    /// merges by `id`, anything else is replaced.
    pub fn merge(&mut self, over: Node) {
        self.merge_at(over, 0, None);
    }

    fn merge_at(&mut self, over: Node, depth: usize, key: Option<&str>) {
        match (&mut self.kind, over.kind) {
            (Kind::Table(base), Kind::Table(top)) => {
                for (k, v) in top {
                    match base.get_mut(&k) {
                        Some(existing) => existing.merge_at(v, depth + 1, Some(&k)),
                        None => {
                            base.insert(k, v);
                        }
                    }
                }
            }
            (Kind::Array(base), Kind::Array(top)) if depth == 1 && key == Some("cameras") => {
                for mut cam in top {
                    let id = camera_id(&cam).map(str::to_string);
                    let exists = id
                        .as_deref()
                        .is_some_and(|id| base.iter().any(|b| camera_id(b) == Some(id)));
                    if let (true, Kind::Table(t)) = (exists, &mut cam.kind) {
                        // The id only matches the camera; it does not set anything.
                        t.remove("id");
                    }
                    match id
                        .and_then(|id| base.iter_mut().find(|b| camera_id(b) == Some(id.as_str())))
                    {
                        Some(existing) => existing.merge_at(cam, depth + 1, None),
                        None => base.push(cam),
                    }
                }
            }
            (_, kind) => {
                self.kind = kind;
                self.origin = over.origin;
            }
        }
    }

    pub fn get(&self, path: &[Seg]) -> Option<&Node> {
        let mut node = self;
        for seg in path {
            node = match (&node.kind, seg) {
                (Kind::Table(t), Seg::Key(k)) => t.get(k)?,
                (Kind::Array(a), Seg::Index(i)) => a.get(*i)?,
                _ => return None,
            };
        }
        Some(node)
    }

    pub fn get_mut(&mut self, path: &[Seg]) -> Option<&mut Node> {
        let mut node = self;
        for seg in path {
            node = match (&mut node.kind, seg) {
                (Kind::Table(t), Seg::Key(k)) => t.get_mut(k)?,
                (Kind::Array(a), Seg::Index(i)) => a.get_mut(*i)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// Removes the node at `path`; false when there is none.
    pub fn remove(&mut self, path: &[Seg]) -> bool {
        let Some((last, parent)) = path.split_last() else {
            return false;
        };
        match (self.get_mut(parent).map(|p| &mut p.kind), last) {
            (Some(Kind::Table(t)), Seg::Key(k)) => t.remove(k).is_some(),
            (Some(Kind::Array(a)), Seg::Index(i)) if *i < a.len() => {
                a.remove(*i);
                true
            }
            _ => false,
        }
    }

    /// The origin of the deepest node that exists along `path`.
    pub fn origin_of(&self, path: &[Seg]) -> Option<Origin> {
        let mut node = self;
        let mut best = None;
        for seg in path {
            let next = match (&node.kind, seg) {
                (Kind::Table(t), Seg::Key(k)) => t.get(k),
                (Kind::Array(a), Seg::Index(i)) => a.get(*i),
                _ => None,
            };
            match next {
                Some(n) => {
                    node = n;
                    if n.origin.line.is_some() || best.is_none() {
                        best = Some(n.origin.clone());
                    }
                }
                None => break,
            }
        }
        best
    }

    /// Writes a key path for people: camera elements by id (`cameras[gate]`).
    pub fn display_path(&self, path: &[Seg]) -> String {
        let mut out = String::new();
        let mut node = Some(self);
        for seg in path {
            match seg {
                Seg::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                    node = node.and_then(|n| n.get(std::slice::from_ref(seg)));
                }
                Seg::Index(i) => {
                    let child = node.and_then(|n| n.get(std::slice::from_ref(seg)));
                    match child.and_then(camera_id) {
                        Some(id) => out.push_str(&format!("[{id}]")),
                        None => out.push_str(&format!("[{i}]")),
                    }
                    node = child;
                }
            }
        }
        out
    }

    /// Replaces `${VAR}` and `${VAR:-default}` in every string; `$${` is a literal `${`.
    pub fn interpolate(
        &mut self,
        vars: &dyn Fn(&str) -> Option<String>,
        path: &mut Vec<Seg>,
        root_errors: &mut Vec<(Vec<Seg>, Origin, String)>,
    ) {
        match &mut self.kind {
            Kind::Scalar(toml::Value::String(s)) if s.contains('$') => {
                match interpolate_str(s, vars) {
                    Ok(v) => *s = v,
                    Err(msg) => root_errors.push((path.clone(), self.origin.clone(), msg)),
                }
            }
            Kind::Scalar(_) => {}
            Kind::Array(a) => {
                for (i, n) in a.iter_mut().enumerate() {
                    path.push(Seg::Index(i));
                    n.interpolate(vars, path, root_errors);
                    path.pop();
                }
            }
            Kind::Table(t) => {
                for (k, n) in t.iter_mut() {
                    path.push(Seg::Key(k.clone()));
                    n.interpolate(vars, path, root_errors);
                    path.pop();
                }
            }
        }
    }
}

fn camera_id(node: &Node) -> Option<&str> {
    match node.table()?.get("id")?.kind {
        Kind::Scalar(toml::Value::String(ref s)) => Some(s),
        _ => None,
    }
}

fn check_duplicate_ids(root: &Node, errors: &mut Vec<ConfigError>) {
    let Some(Kind::Array(cams)) = root.table().and_then(|t| t.get("cameras")).map(|n| &n.kind)
    else {
        return;
    };
    let mut seen: BTreeMap<&str, &Origin> = BTreeMap::new();
    for cam in cams {
        if let Some(id) = camera_id(cam) {
            if let Some(first) = seen.insert(id, &cam.origin) {
                errors.push(ConfigError {
                    origin: Some(cam.origin.clone()),
                    key: format!("cameras[{id}]"),
                    message: format!(
                        "duplicate camera id {id:?} (first defined at line {})",
                        first
                            .line
                            .map(|l| l.to_string())
                            .unwrap_or_else(|| "?".into())
                    ),
                });
            }
        }
    }
}

pub(crate) fn interpolate_str(
    s: &str,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    interpolate_quoting(s, vars).map_err(|(at, message)| {
        if in_userinfo(s, at) {
            // The `${...}` may be part of a password written inline: neither it nor the
            // variable name it seems to hold may reach an error message.
            "a ${...} in the user info of a URL cannot be resolved (an unset variable, \
             or a password holding \"${\": write it as \"$${\"); the text is not shown"
                .to_string()
        } else {
            message
        }
    })
}

/// Whether byte `at` of `s` may lie in a URL's `user:password@` part: after a `://`
/// and before an `@` (a password written inline may hold anything, spaces included).
fn in_userinfo(s: &str, at: usize) -> bool {
    s[..at].contains("://") && s[at..].contains('@')
}

/// [`interpolate_str`], with the byte where a failure starts.
fn interpolate_quoting(
    s: &str,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<String, (usize, String)> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        let at = s.len() - rest.len() + pos;
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(stripped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = stripped;
        } else if let Some(body_start) = after.strip_prefix("${") {
            let end = body_start
                .find('}')
                .ok_or_else(|| (at, format!("unterminated ${{...}} in {:?}", redact_url(s))))?;
            let body = &body_start[..end];
            let (name, default) = match body.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (body, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err((
                    at,
                    format!("invalid variable name {name:?} in {:?}", redact_url(s)),
                ));
            }
            match (vars(name), default) {
                (Some(v), _) if !(v.is_empty() && default.is_some()) => out.push_str(&v),
                (_, Some(d)) => out.push_str(d),
                (Some(v), None) => out.push_str(&v),
                (None, None) => {
                    return Err((at, format!("environment variable {name} is not set (write ${{{name}:-default}} to give a default)")))
                }
            }
            rest = &body_start[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { starts }
    }
    fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset)
    }
}

fn convert_table(
    t: &DeTable<'_>,
    src: &Arc<str>,
    lines: &LineIndex,
    origin: Origin,
    errors: &mut Vec<ConfigError>,
) -> Node {
    let mut map = BTreeMap::new();
    for (k, v) in t.iter() {
        let line = lines.line(k.span().start);
        let o = Origin {
            source: src.clone(),
            line: Some(line),
        };
        map.insert(
            k.get_ref().to_string(),
            convert(v.get_ref(), src, lines, o, errors),
        );
    }
    Node {
        origin,
        kind: Kind::Table(map),
    }
}

fn convert(
    v: &DeValue<'_>,
    src: &Arc<str>,
    lines: &LineIndex,
    origin: Origin,
    errors: &mut Vec<ConfigError>,
) -> Node {
    let scalar = |v: toml::Value, origin: Origin| Node {
        origin,
        kind: Kind::Scalar(v),
    };
    match v {
        DeValue::String(s) => scalar(toml::Value::String(s.to_string()), origin),
        DeValue::Integer(i) => {
            let digits: String = i.as_str().chars().filter(|&c| c != '_').collect();
            let (neg, body) = match digits.strip_prefix('-') {
                Some(b) => (true, b.to_string()),
                None => (false, digits.trim_start_matches('+').to_string()),
            };
            let body = if i.radix() != 10 {
                body.get(2..).unwrap_or("").to_string()
            } else {
                body
            };
            match i64::from_str_radix(&body, i.radix()) {
                Ok(n) => scalar(toml::Value::Integer(if neg { -n } else { n }), origin),
                Err(e) => {
                    errors.push(ConfigError {
                        origin: Some(origin.clone()),
                        key: String::new(),
                        message: format!("bad integer {}: {e}", i.as_str()),
                    });
                    scalar(toml::Value::Integer(0), origin)
                }
            }
        }
        DeValue::Float(f) => {
            let text: String = f.as_str().chars().filter(|&c| c != '_').collect();
            let n = match text.trim_start_matches('+') {
                "inf" => f64::INFINITY,
                "-inf" => f64::NEG_INFINITY,
                "nan" | "-nan" => f64::NAN,
                other => other.parse().unwrap_or(f64::NAN),
            };
            scalar(toml::Value::Float(n), origin)
        }
        DeValue::Boolean(b) => scalar(toml::Value::Boolean(*b), origin),
        DeValue::Datetime(d) => scalar(toml::Value::Datetime(*d), origin),
        DeValue::Array(a) => {
            let items = a
                .iter()
                .map(|item| {
                    let o = Origin {
                        source: src.clone(),
                        line: Some(lines.line(item.span().start)),
                    };
                    convert(item.get_ref(), src, lines, o, errors)
                })
                .collect();
            Node {
                origin,
                kind: Kind::Array(items),
            }
        }
        DeValue::Table(t) => convert_table(t, src, lines, origin, errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("cam.local".into()),
            "EMPTY" => Some(String::new()),
            "PW" => Some("pw".into()),
            _ => None,
        }
    }

    #[test]
    fn interpolation_handles_defaults_escapes_and_missing_variables() {
        const IN_USERINFO: &str = "a ${...} in the user info of a URL cannot be resolved (an unset variable, or a password holding \"${\": write it as \"$${\"); the text is not shown";
        let rows: [(&str, Result<&str, &str>); 11] = [
            ("rtsp://${HOST}/s", Ok("rtsp://cam.local/s")),
            ("${MISSING:-fallback}", Ok("fallback")),
            ("${EMPTY:-fallback}", Ok("fallback")),
            ("$${HOST} costs $5", Ok("${HOST} costs $5")),
            ("${MISSING}", Err("environment variable MISSING is not set (write ${MISSING:-default} to give a default)")),
            ("${HOST", Err("unterminated ${...} in \"${HOST\"")),
            ("${BAD-NAME}", Err("invalid variable name \"BAD-NAME\" in \"${BAD-NAME}\"")),
            // A `${` in a password written inline: neither it nor its "name" is shown.
            ("rtsp://u:p'q${se-cret}@h/s", Err(IN_USERINFO)),
            ("rtsp://u:p${secret@h/s", Err(IN_USERINFO)),
            ("rtsp://u:${PW}@h/s", Ok("rtsp://u:pw@h/s")),
            ("rtsp://u:p@h/${BAD-NAME}", Err("invalid variable name \"BAD-NAME\" in \"rtsp://u:***@h/${BAD-NAME}\"")),
        ];
        for (input, want) in rows {
            let got = interpolate_str(input, &env);
            assert_eq!(
                got.as_deref(),
                want.map_err(|s| s.to_string()).as_deref(),
                "input {input}"
            );
        }
    }

    #[test]
    fn values_remember_their_line() {
        let node = Node::parse(
            "a.toml",
            "[device]\nid = \"x\"\n\n[[cameras]]\nid = \"gate\"\nurl = \"rtsp://h/s\"\n",
        )
        .unwrap();
        let path = [
            Seg::Key("cameras".into()),
            Seg::Index(0),
            Seg::Key("url".into()),
        ];
        assert_eq!(node.origin_of(&path).unwrap().to_string(), "a.toml:6");
        assert_eq!(node.display_path(&path), "cameras[gate].url");
    }
}
