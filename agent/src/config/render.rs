//! Prints the effective configuration as TOML, secrets redacted, and with `explain`
//! a comment after each value naming the file and line (or variable) that set it.

use std::fmt::Write;

use super::tree::{Node, Seg};
use super::Config;

/// Fails only where a value has no TOML form (a configuration that loaded always has
/// one, but a bad value must be an error, not a panic).
pub fn render(config: &Config, tree: &Node, explain: bool) -> Result<String, toml::ser::Error> {
    let value = toml::Value::try_from(config)?;
    let mut out = String::new();
    if let toml::Value::Table(t) = &value {
        write_table(&mut out, &[], &mut Vec::new(), t, tree, explain, false);
    }
    Ok(out)
}

fn write_table(
    out: &mut String,
    header: &[String],
    path: &mut Vec<Seg>,
    t: &toml::Table,
    tree: &Node,
    explain: bool,
    array_elem: bool,
) {
    if !header.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        let name = header.join(".");
        if array_elem {
            let _ = write!(out, "[[{name}]]");
        } else {
            let _ = write!(out, "[{name}]");
        }
        if explain {
            if let Some(n) = tree.get(path) {
                let _ = write!(out, "  # {}", n.origin);
            }
        }
        out.push('\n');
    }
    let is_table_array = |v: &toml::Value| matches!(v, toml::Value::Array(a) if !a.is_empty() && a.iter().all(|x| x.is_table()));
    for (k, v) in t {
        if v.is_table() || is_table_array(v) {
            continue;
        }
        path.push(Seg::Key(k.clone()));
        let _ = write!(out, "{} = {}", key(k), v);
        if explain {
            let from = tree
                .get(path)
                .map(|n| n.origin.to_string())
                .unwrap_or_else(|| "default".into());
            let _ = write!(out, "  # {from}");
        }
        out.push('\n');
        path.pop();
    }
    for (k, v) in t {
        let mut h = header.to_vec();
        h.push(key(k));
        path.push(Seg::Key(k.clone()));
        match v {
            toml::Value::Table(sub) => write_table(out, &h, path, sub, tree, explain, false),
            toml::Value::Array(a) if is_table_array(v) => {
                for (i, item) in a.iter().enumerate() {
                    path.push(Seg::Index(i));
                    if let toml::Value::Table(sub) = item {
                        write_table(out, &h, path, sub, tree, explain, true);
                    }
                    path.pop();
                }
            }
            _ => {}
        }
        path.pop();
    }
}

fn key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        format!("{k:?}")
    }
}
