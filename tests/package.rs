//! What ships to the box: the systemd unit.

use std::path::Path;
use std::process::Command;

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let unit = std::fs::read_to_string(repo.join("systemd/edge-agent.service")).unwrap();
    for key in [
        "Type=notify",
        "WatchdogSec=",
        "RestartPreventExitStatus=78",
        "ExecStartPre=/usr/bin/edge-agent validate",
        "ExecReload=",
        "LoadCredential=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=",
    ] {
        assert!(unit.contains(key), "unit lacks {key}");
    }
    // verify checks that the executables exist: point them at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge-agent.service");
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
        out.status.success() && !stderr.contains("edge-agent.service:"),
        "systemd-analyze verify: {stderr}"
    );
}
