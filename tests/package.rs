//! What ships: the systemd units, checked by systemd's own tools, and the Kubernetes
//! worker's manifest.

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

/// The Kubernetes worker runs as a non-root user with no capabilities, no privilege
/// escalation, the runtime's default seccomp profile and a read-only root, and every
/// place it writes (its engine cache from the ConfigMap's agent.toml, /tmp, $HOME) is a
/// writable emptyDir mount.
#[test]
fn the_kubernetes_worker_runs_unprivileged_on_a_read_only_root() {
    use yaml_rust2::{Yaml, YamlLoader};
    let path = repo().join("systemd/k8s/worker-deployment.yaml");
    let docs = YamlLoader::load_from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"].as_str() == Some(k))
            .unwrap_or_else(|| panic!("no {k} in {}", path.display()))
    };
    let agent_toml = kind("ConfigMap")["data"]["agent.toml"].as_str().unwrap();
    let config: toml::Table = agent_toml.parse().unwrap();
    let engine_cache = config["inference"]["engine_cache"].as_str().unwrap();

    let pod = &kind("Deployment")["spec"]["template"]["spec"];
    let pod_sc = &pod["securityContext"];
    let containers = pod["containers"].as_vec().unwrap();
    assert!(!containers.is_empty());
    // A container's own securityContext wins over the pod's.
    let setting = |c: &Yaml, key: &str| -> Yaml {
        let own = &c["securityContext"][key];
        if own.is_badvalue() {
            pod_sc[key].clone()
        } else {
            own.clone()
        }
    };
    let empty_dirs: Vec<&str> = pod["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .filter(|v| !v["emptyDir"].is_badvalue())
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for c in containers {
        let name = c["name"].as_str().unwrap();
        assert_eq!(setting(c, "runAsNonRoot").as_bool(), Some(true), "{name}");
        let uid = setting(c, "runAsUser").as_i64();
        assert!(uid.is_some_and(|u| u > 0), "{name}: runAsUser {uid:?}");
        assert_eq!(
            setting(c, "allowPrivilegeEscalation").as_bool(),
            Some(false),
            "{name}"
        );
        assert_eq!(
            setting(c, "readOnlyRootFilesystem").as_bool(),
            Some(true),
            "{name}"
        );
        let dropped = &c["securityContext"]["capabilities"]["drop"];
        assert!(
            dropped
                .as_vec()
                .is_some_and(|d| d.iter().any(|x| x.as_str() == Some("ALL"))),
            "{name}: capabilities.drop lacks ALL"
        );
        assert_eq!(
            setting(c, "seccompProfile")["type"].as_str(),
            Some("RuntimeDefault"),
            "{name}"
        );
        let home = c["env"]
            .as_vec()
            .and_then(|env| env.iter().find(|e| e["name"].as_str() == Some("HOME")))
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("{name}: no HOME: the image's is on the read-only root"));
        for written in [engine_cache, "/tmp", home] {
            let mount = c["volumeMounts"]
                .as_vec()
                .unwrap()
                .iter()
                .find(|m| Path::new(written).starts_with(m["mountPath"].as_str().unwrap()))
                .unwrap_or_else(|| panic!("{name}: {written} is on the read-only root"));
            assert!(
                empty_dirs.contains(&mount["name"].as_str().unwrap())
                    && mount["readOnly"].as_bool() != Some(true),
                "{name}: {written} is not on a writable emptyDir"
            );
        }
    }
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}
