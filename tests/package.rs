//! What ships to the box: the systemd unit.

use std::path::Path;
use std::process::Command;

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    verify(
        "edge-agent.service",
        &["ExecStart=/usr/bin/edge-agent run", "ExecReload="],
    );
}

#[test]
fn the_scaler_unit_passes_systemd_analyze_verify() {
    verify(
        "edge-agent-scaler.service",
        &["ExecStart=/usr/bin/edge-agent scaler"],
    );
}

fn verify(name: &str, extra: &[&str]) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let unit = std::fs::read_to_string(repo.join("systemd").join(name)).unwrap();
    for key in [
        "Type=notify",
        "WatchdogSec=",
        "RestartPreventExitStatus=78",
        "ExecStartPre=/usr/bin/edge-agent validate",
        "LoadCredential=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=",
    ]
    .iter()
    .chain(extra)
    {
        assert!(unit.contains(key), "{name} lacks {key}");
    }
    // verify checks that the executables exist: point them at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(
        &path,
        unit.replace("/usr/bin/edge-agent", env!("CARGO_BIN_EXE_edge-agent")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze must be installed (scripts/setup.sh --test installs systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains(&format!("{name}:")),
        "systemd-analyze verify {name}: {stderr}"
    );
}
