//! What ships to the box: the systemd units, checked by systemd's own tools.

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
    let unit = std::fs::read_to_string(repo().join("systemd").join(name)).unwrap();
    for key in [
        "Type=notify",
        "WatchdogSec=",
        "RestartPreventExitStatus=78",
        "ExecStartPre=/usr/bin/edge-agent validate",
        "LoadCredential=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=",
        "SystemCallFilter=@system-service",
        "SystemCallErrorNumber=EPERM",
        "ProtectKernelLogs=yes",
        "ProtectProc=invisible",
        "LimitCORE=0",
        "RemoveIPC=yes",
        "DevicePolicy=closed",
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

/// The highest `systemd-analyze security` exposure either unit may have, times ten as
/// `--threshold` takes it: 1.6 today (3.6 before the hardening of issue 26). A setting
/// dropped or loosened raises the score and fails here; lower this when a unit improves.
const MAX_EXPOSURE: u32 = 16;

#[test]
fn the_systemd_units_stay_at_or_below_their_security_exposure() {
    for name in ["edge-agent.service", "edge-agent-scaler.service"] {
        let path = repo().join("systemd").join(name);
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(format!("--threshold={MAX_EXPOSURE}"))
            .arg(&path)
            .output()
            .expect("systemd-analyze must be installed (scripts/setup.sh --test installs systemd)");
        let text = String::from_utf8_lossy(&out.stdout);
        let overall = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("{name}: no overall exposure in:\n{text}"));
        assert!(
            out.status.success(),
            "{name}: {overall} is above {}.{}; what it lacks:\n{}",
            MAX_EXPOSURE / 10,
            MAX_EXPOSURE % 10,
            text.lines()
                .filter(|l| l.starts_with('\u{2717}'))
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// The scaler runs the same binary and the same workers as the agent: its sandbox is the
/// agent's, line for line, so hardening one unit cannot leave the other behind.
#[test]
fn the_scaler_unit_is_hardened_exactly_as_the_agent_unit() {
    let hardening = |name: &str| {
        let unit = std::fs::read_to_string(repo().join("systemd").join(name)).unwrap();
        let start = unit.find("# Hardening.").expect("a # Hardening. section");
        let end = unit[start..].find("\n[").map_or(unit.len(), |e| start + e);
        unit[start..end].to_string()
    };
    assert_eq!(
        hardening("edge-agent-scaler.service"),
        hardening("edge-agent.service")
    );
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}
