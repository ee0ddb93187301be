//! The Grafana dashboard `systemd/grafana/edge-agent.json` against what a running agent
//! exports: it imports anywhere (a `${DS_PROMETHEUS}` datasource input, every query on
//! it), every panel has queries, every query is PromQL that `promtool` parses, and every
//! metric a query names is one the agent's `/metrics` really has (a misspelt or removed
//! metric fails here instead of drawing an empty panel on a box).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Families the agent registers that no panel shows, and why. Every other family must
/// be on the dashboard, so a new metric gets a panel or a line here.
const NOT_ON_THE_DASHBOARD: &[(&str, &str)] = &[
    // Counted inside the worker processes, whose registries nobody scrapes: always
    // empty in the agent's /metrics (workers, providers and timings come to the agent
    // as `edge_agent_workers`, `edge_agent_worker_providers` and the stage latencies).
    (
        "edge_agent_inferences",
        "counted in worker processes, not scraped",
    ),
    (
        "edge_agent_provider",
        "set in worker processes, not scraped",
    ),
    (
        "edge_agent_requeued",
        "counted in worker processes (frames handed back), not scraped",
    ),
];

fn dashboard() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/grafana/edge-agent.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every panel, rows' nested panels included (a collapsed row holds its panels).
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// Every PromQL expression: panel targets and query variables, with where it is.
fn queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?");
            let refid = t["refId"].as_str().unwrap_or("?");
            out.push((
                format!("panel {title:?} {refid}"),
                t["expr"].as_str().unwrap_or("").to_string(),
            ));
        }
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .unwrap_or("");
            out.push((
                format!("variable {}", v["name"].as_str().unwrap_or("?")),
                q.to_string(),
            ));
        }
    }
    out
}

/// A Grafana query as PromQL: `label_values(EXPR, label)` is its first argument (the
/// one-argument form names a label only), Grafana's variables become values.
fn as_promql(query: &str) -> String {
    let q = query.trim();
    let q = match q
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
    {
        Some(args) => match split_top_level(args).as_slice() {
            [expr, _label] => expr.trim().to_string(),
            _ => String::new(),
        },
        None => q.to_string(),
    };
    [
        ("$__rate_interval", "5m"),
        ("$__interval", "1m"),
        ("$__range", "1h"),
        ("${instance}", ".*"),
        ("$instance", ".*"),
        ("${camera}", ".*"),
        ("$camera", ".*"),
    ]
    .iter()
    .fold(q, |q, (var, value)| q.replace(var, value))
}

/// Splits at commas outside brackets and strings.
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start, mut quote) = (Vec::new(), 0i32, 0, None);
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'' | '`') => quote = Some(c),
            (None, '(' | '{' | '[') => depth += 1,
            (None, ')' | '}' | ']') => depth -= 1,
            (None, ',') if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// Words after which a parenthesised list holds label names.
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Words of PromQL that are not metric names when they stand alone.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
    "start",
    "end",
    // Aggregations, which may stand before `by (...)` instead of `(`.
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// The metric names a PromQL expression selects: identifiers that are not functions
/// (followed by `(`), keywords, label names (inside `{}` or the list after `by`,
/// `without`, `on`, `ignoring`, `group_left`, `group_right`), strings, numbers or
/// durations.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let (mut i, mut braces, mut brackets) = (0, 0i32, 0i32);
    // After a grouping keyword, the next parenthesised list holds labels.
    let (mut label_list_next, mut in_label_list) = (false, false);
    let ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let ident_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '"' | '\'' | '`' => {
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '{' => braces += 1,
            '}' => braces -= 1,
            '[' => brackets += 1,
            ']' => brackets -= 1,
            '(' => in_label_list = std::mem::take(&mut label_list_next),
            ')' => in_label_list = false,
            // A number or a duration (5m, 1h30m, 1e3, 0x1f): one token.
            _ if c.is_ascii_digit()
                || (c == '.' && chars.get(i).is_some_and(char::is_ascii_digit)) =>
            {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            _ if ident_start(c) => {
                let start = i - 1;
                while i < chars.len() && ident_char(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace()).copied();
                let lower = word.to_ascii_lowercase();
                if GROUPING.contains(&lower.as_str()) {
                    label_list_next = true;
                } else if braces > 0 || brackets > 0 || in_label_list || next == Some('(') {
                    // A label, a duration's unit, a list of labels, a function.
                } else if !KEYWORDS.contains(&lower.as_str()) {
                    names.insert(word);
                }
            }
            _ => {}
        }
    }
    names
}

/// The series names Prometheus stores from a `/metrics` exposition (text 0.0.4 or
/// OpenMetrics): each family's samples by its type (`_total` for counters; `_bucket`,
/// `_sum`, `_count` for histograms), plus every sample name present.
fn exported_series(exposition: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut families, mut series) = (BTreeSet::new(), BTreeSet::new());
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let base = name.strip_suffix("_total").unwrap_or(name).to_string();
            let samples: Vec<String> = match kind.trim() {
                "counter" => vec![format!("{base}_total"), format!("{base}_created")],
                "histogram" | "gaugehistogram" => ["_bucket", "_sum", "_count", "_created"]
                    .iter()
                    .map(|s| format!("{name}{s}"))
                    .collect(),
                "summary" => ["", "_sum", "_count", "_created"]
                    .iter()
                    .map(|s| format!("{name}{s}"))
                    .collect(),
                "info" => vec![format!("{name}_info")],
                _ => vec![name.to_string()],
            };
            families.insert(base);
            series.extend(samples);
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            series.insert(line[..end].to_string());
        }
    }
    (families, series)
}

/// Names each query selects that are not in `series`, as "where: name" lines.
fn unknown_names(queries: &[(String, String)], series: &BTreeSet<String>) -> Vec<String> {
    queries
        .iter()
        .flat_map(|(place, q)| {
            metric_names(&as_promql(q))
                .into_iter()
                .filter(|n| !series.contains(n))
                .map(move |n| format!("{place}: {n}"))
        })
        .collect()
}

/// The family a series name belongs to (its type suffix taken off).
fn family_of(name: &str) -> &str {
    ["_bucket", "_sum", "_count", "_total", "_created", "_info"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

/// The agent's registry as `/metrics` serves it (text format), with one child in every
/// family: a family without children is left out of the exposition.
fn registry_exposition() -> String {
    use edge_agent::telemetry::metrics::{metrics, Labels};
    let m = metrics();
    let l: Labels = vec![("grafana_check", "grafana-check".to_string())];
    for f in [
        &m.frames,
        &m.dropped,
        &m.camera_restarts,
        &m.decoder_fallbacks,
        &m.motion_events,
        &m.escalations,
        &m.published,
        &m.incidents,
        &m.rejected,
        &m.inferences,
        &m.offloaded,
        &m.abandoned,
        &m.prewarm_starts,
        &m.false_starts,
        &m.filtered,
        &m.clip_errors,
        &m.requeued,
        &m.storage_removed,
        &m.verifications,
        &m.crops_whole,
    ] {
        drop(f.get_or_create(&l));
    }
    for f in [
        &m.camera_up,
        &m.provider,
        &m.worker_providers,
        &m.worker_memory,
        &m.worker_gpu_memory,
        &m.gpu_memory,
        &m.camera_idle,
        &m.tracks,
        &m.preroll_bytes,
    ] {
        drop(f.get_or_create(&l));
    }
    drop(m.gpu_utilization.get_or_create(&l));
    drop(m.stage_latency.get_or_create(&l));
    m.encode_text()
}

#[test]
fn metric_names_are_found_in_promql_and_labels_functions_and_strings_are_not() {
    let cases: &[(&str, &[&str])] = &[
        (
            r#"histogram_quantile(0.95, sum by (le, stage) (rate(edge_agent_stage_latency_seconds_bucket{instance=~"$instance", stage="cold_start"}[$__rate_interval])))"#,
            &["edge_agent_stage_latency_seconds_bucket"],
        ),
        (
            "sum(rate(a_total[5m] offset 1h)) by (camera) / on (camera) group_left(reason) b",
            &["a_total", "b"],
        ),
        (
            r#"label_replace(up{job="x"}, "dst", "$1 edge_agent_fake", "src", "(.*)") or vector(0)"#,
            &["up"],
        ),
        (
            "60 * sum without (pid) (x:recorded:rate5m) > bool 1e3 and y unless z",
            &["x:recorded:rate5m", "y", "z"],
        ),
        (r#"{__name__="by_name"}"#, &[]),
    ];
    for (expr, want) in cases {
        let got = metric_names(expr);
        let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        assert_eq!(got, want, "{expr}");
    }
    assert_eq!(
        as_promql(r#"label_values(edge_agent_camera_up{instance=~"$instance"}, camera)"#),
        r#"edge_agent_camera_up{instance=~".*"}"#
    );
    assert_eq!(as_promql("label_values(instance)"), "");
}

#[test]
fn a_query_naming_a_metric_the_agent_does_not_export_is_reported() {
    let exposition = "# HELP edge_agent_frames_total Frames.\n# TYPE edge_agent_frames_total counter\n\
                      edge_agent_frames_total{camera=\"a\"} 3\n\
                      # HELP edge_agent_stage_latency_seconds Latency.\n# TYPE edge_agent_stage_latency_seconds histogram\n\
                      # HELP edge_agent_workers Workers.\n# TYPE edge_agent_workers gauge\nedge_agent_workers 0\n";
    let (_, series) = exported_series(exposition);
    let queries = [
        ("ok".to_string(), "sum(rate(edge_agent_frames_total[5m]))".to_string()),
        (
            "histogram".to_string(),
            "histogram_quantile(0.5, sum by (le) (rate(edge_agent_stage_latency_seconds_bucket[5m])))"
                .to_string(),
        ),
        ("misspelt".to_string(), "sum(edge_agent_worker)".to_string()),
        // A counter has no sample without its suffix in Prometheus.
        ("no suffix".to_string(), "rate(edge_agent_frames[5m])".to_string()),
    ];
    assert_eq!(
        unknown_names(&queries, &series),
        [
            "misspelt: edge_agent_worker",
            "no suffix: edge_agent_frames"
        ]
    );
}

#[test]
fn grafana_dashboard_imports_anywhere_and_queries_only_metrics_the_agent_exports() {
    let d = dashboard();

    // Structure: a datasource input, and every query on it.
    let inputs = d["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs.iter().any(|i| i["name"] == "DS_PROMETHEUS"
            && i["type"] == "datasource"
            && i["pluginId"] == "prometheus"),
        "no DS_PROMETHEUS datasource input: {inputs:?}"
    );
    assert!(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion {}",
        d["schemaVersion"]
    );
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()), "no uid");
    let on_input = |ds: &Value| ds["uid"] == "${DS_PROMETHEUS}" && ds["type"] == "prometheus";
    let mut ids = BTreeSet::new();
    let mut charts = 0;
    for p in panels(&d) {
        let title = p["title"].as_str().unwrap_or("?");
        let id = p["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel {title:?} has no id"));
        assert!(ids.insert(id), "panel id {id} twice");
        assert!(p["gridPos"]["w"].is_u64(), "panel {title:?} has no gridPos");
        if p["type"] == "row" {
            continue;
        }
        charts += 1;
        assert!(
            on_input(&p["datasource"]),
            "panel {title:?}: {}",
            p["datasource"]
        );
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        assert!(!targets.is_empty(), "panel {title:?} has no targets");
        for t in targets {
            assert!(
                on_input(&t["datasource"]),
                "panel {title:?}: {}",
                t["datasource"]
            );
            assert!(
                t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                "panel {title:?}: a target without expr"
            );
        }
    }
    assert!(charts >= 10, "only {charts} panels");
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            assert!(on_input(&v["datasource"]), "variable {}", v["name"]);
        }
    }
    let queries = queries(&d);

    // Every query parses as PromQL (promtool's parser, as a recording rule each).
    let mut rules = String::from("groups:\n- name: dashboard\n  rules:\n");
    for (i, (_, q)) in queries.iter().enumerate() {
        let expr = as_promql(q);
        if !expr.is_empty() {
            rules += &format!(
                "  - record: dashboard:query{i}\n    expr: {}\n",
                serde_json::to_string(&expr).unwrap()
            );
        }
    }
    let rules_dir = tempfile::tempdir().unwrap();
    let file = rules_dir.path().join("dashboard-rules.yml");
    std::fs::File::create(&file)
        .and_then(|mut f| f.write_all(rules.as_bytes()))
        .unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("promtool runs (Debian package prometheus: scripts/setup.sh --test)");
    assert!(
        out.status.success(),
        "promtool check rules on the dashboard's queries: {}{}\n{rules}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every metric named is one the agent exports: first what a running agent (the
    // shipped demo configuration, plus a camera that cannot connect, so restarts are
    // counted; a real camera needs inference.model named) serves on /metrics; a family that has no sample yet there (GPU figures
    // without a GPU, fallbacks, offloads ...) is not in its exposition at all, so for those
    // the agent's own registry, with one child in every family, encoded as /metrics
    // encodes it.
    let dir = tempfile::tempdir().unwrap();
    let extra = dir.path().join("gone-camera.toml");
    std::fs::write(
        &extra,
        "[inference]\nmodel = \"models/generated/test-yolov4.onnx\"\nlabels = \"models/test.names\"\n\n\
         [[cameras]]\nid = \"gone\"\nurl = \"rtsp://127.0.0.1:1/none\"\n",
    )
    .unwrap();
    let extra = extra.to_string_lossy().into_owned();
    let agent = crate::common::agent::Agent::command(
        &["run", "--config", "systemd/agent.toml", "--config", &extra],
        &[],
    );
    agent.metrics_addr(Duration::from_secs(30));
    // Wait for a restart and the demo's first incident (motion, escalation, a worker
    // from zero, detections); what is still missing then is checked against the
    // registry below.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut exposition = agent.get("/metrics");
    while !(exposition.contains("edge_agent_camera_restarts_total{")
        && exposition.contains("edge_agent_incidents_total{"))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(500));
        exposition = agent.get("/metrics");
    }
    agent.stop();
    let (live_families, live) = exported_series(&exposition);
    assert!(
        live_families.contains("edge_agent_frames"),
        "not the agent's /metrics:\n{exposition}"
    );
    let (families, registered) = exported_series(&registry_exposition());
    let unknown = unknown_names(&queries, &live.union(&registered).cloned().collect());
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics the agent does not export:\n{}\n\nexported: {registered:?}",
        unknown.join("\n")
    );
    let not_live: BTreeSet<String> = queries
        .iter()
        .flat_map(|(_, q)| metric_names(&as_promql(q)))
        .filter(|n| !live.contains(n))
        .collect();
    eprintln!("dashboard metrics without a sample in the running agent (checked against its registry): {not_live:?}");

    // Every family the agent exports is on the dashboard, or listed as left out.
    let shown: BTreeSet<String> = queries
        .iter()
        .flat_map(|(_, q)| metric_names(&as_promql(q)))
        .map(|n| family_of(&n).to_string())
        .collect();
    let missing: Vec<&String> = families
        .iter()
        .filter(|f| !shown.contains(*f) && !NOT_ON_THE_DASHBOARD.iter().any(|(n, _)| n == f))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics on no panel (add a panel, or a line with the reason to NOT_ON_THE_DASHBOARD): {missing:?}"
    );
}
