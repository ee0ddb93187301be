//! Hardware decode that falls back, through the `edge-agent run` binary. This machine has
//! no Jetson decoder, so the test names a GStreamer element that exists and fails at run
//! time as the "hardware" one (EDGE_AGENT_TEST_HW_DECODER=identity: it passes H.264 on,
//! and the converter after it cannot negotiate). Two failed runs in a row must move the
//! camera to software decode, say why in /health and count it in /metrics.

use std::time::{Duration, Instant};

use edge_agent::ingest::synthetic::Scene;

use crate::common::agent::{http_get, metric, Agent};
use crate::common::rtsp_server::RtspTestServer;

#[test]
fn a_failing_hardware_decoder_falls_back_to_software_after_two_failures_and_says_why() {
    let srv = RtspTestServer::start(Scene::sized(320, 180, 15));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[device]
id = "decoder-test"

[[cameras]]
id = "gate"
url = "{}"
decode = "auto"
stall_timeout = "3s"
backoff = {{ min = "100ms", max = "500ms" }}

[transport]
kind = "embedded"

[telemetry]
metrics_listen = "127.0.0.1:0"
"#,
            srv.url("/gate")
        ),
    )
    .unwrap();
    let agent = Agent::start(
        &["--config".as_ref(), file.as_os_str()],
        &[("EDGE_AGENT_TEST_HW_DECODER", "identity")],
    );
    let addr = agent.metrics_addr(Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(60);
    let gate = loop {
        let health: serde_json::Value =
            serde_json::from_str(&http_get(&addr, "/health")).unwrap_or_default();
        let gate = health["cameras"]["gate"].clone();
        if gate["state"] == "Streaming" && !gate["decoder_fallback"].is_null() {
            break gate;
        }
        assert!(
            Instant::now() < deadline,
            "no fallback to software decode: {health}\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Streaming on avdec after exactly the two failed hardware runs.
    assert_eq!(gate["decoder"], "avdec_h264", "{gate}");
    assert_eq!(gate["restarts"], 2, "{gate}");
    let why = gate["decoder_fallback"].as_str().unwrap();
    assert!(
        why.contains("hardware decoder failed 2 times in a row"),
        "{why}"
    );
    let metrics = http_get(&addr, "/metrics");
    let fallbacks = metrics
        .lines()
        .find(|l| {
            l.starts_with("edge_agent_decoder_fallbacks_total{") && l.contains("camera=\"gate\"")
        })
        .unwrap_or_else(|| panic!("no fallback counted:\n{metrics}"));
    assert_eq!(
        metric(fallbacks, "edge_agent_decoder_fallbacks_total"),
        Some(1.0)
    );
    drop(agent);
}
