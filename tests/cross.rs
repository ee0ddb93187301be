//! The aarch64 build. cross/build-aarch64.sh takes minutes, so CI decides whether to run it
//! before the tests; when its binary exists, these tests run the script's own checks on it
//! (`--check`: `file` says aarch64, no GLIBC symbol version above 2.31, `--version`,
//! `validate` and the demo camera's pipeline through `motion` under qemu-aarch64-static on
//! a Debian 11 arm64 root). Without the binary they say that they skipped and why, unless
//! `EDGE_AGENT_REQUIRE_ALL=1` (set by `.ci/run`, which builds it first) or
//! `EDGE_AGENT_REQUIRE_CROSS=1`: then a missing binary fails them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub(crate) fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// The target directory these tests were built in (which follows `CARGO_TARGET_DIR`):
/// .../target/debug/edge-agent -> .../target.
fn target_dir() -> &'static Path {
    let bin = Path::new(env!("CARGO_BIN_EXE_edge-agent"));
    bin.parent()
        .and_then(Path::parent)
        .expect("the binary is in <target>/<profile>/")
}

/// The cross-built binary in that target directory, or `None` with a message saying why
/// the caller skips.
pub(crate) fn aarch64_binary() -> Option<PathBuf> {
    let bin = target_dir().join("aarch64-unknown-linux-gnu/release/edge-agent");
    if bin.is_file() {
        Some(bin)
    } else {
        assert_ne!(
            std::env::var("EDGE_AGENT_REQUIRE_CROSS").as_deref(),
            Ok("1"),
            "EDGE_AGENT_REQUIRE_CROSS=1 but there is no aarch64 build at {}",
            bin.display()
        );
        crate::common::skip(&format!(
            "no aarch64 build at {} (run cross/build-aarch64.sh first)",
            bin.display()
        ));
        None
    }
}

fn build_script(args: &[&str], max_glibc: Option<&str>) -> Output {
    let mut cmd = Command::new(repo().join("cross/build-aarch64.sh"));
    // The script looks for its sysroot in the target dir, next to the binary it built.
    cmd.args(args).env("CARGO_TARGET_DIR", target_dir());
    if let Some(v) = max_glibc {
        cmd.env("EDGE_AGENT_MAX_GLIBC", v);
    }
    cmd.output().expect("cross/build-aarch64.sh runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_aarch64_binary_is_arm64_needs_glibc_2_31_at_most_and_runs_under_qemu() {
    let Some(bin) = aarch64_binary() else { return };
    let out = build_script(&["--check", bin.to_str().unwrap()], None);
    let log = text(&out);
    eprintln!("{log}");
    assert!(out.status.success(), "checks failed:\n{log}");
    assert!(log.contains("ARM aarch64"), "{log}");
    assert!(log.contains("highest GLIBC version needed: 2."), "{log}");
    assert!(
        log.contains(&format!("edge-agent {}", env!("CARGO_PKG_VERSION"))),
        "--version under qemu printed no version:\n{log}"
    );
    assert!(log.contains("validate exited 0"), "{log}");
    assert!(
        log.contains("qemu: edge-agent motion demo://moving-square"),
        "the GStreamer pipeline did not run under qemu:\n{log}"
    );
    assert!(
        log.contains("libgstreamer-1.0.so.0"),
        "not linked to GStreamer:\n{log}"
    );
}

#[test]
fn the_glibc_check_fails_and_names_the_symbols_when_the_binary_needs_more_than_allowed() {
    let Some(bin) = aarch64_binary() else { return };
    let max = build_script(&["--max-glibc", bin.to_str().unwrap()], None);
    let max = String::from_utf8_lossy(&max.stdout).trim().to_string();
    assert!(
        max.starts_with("2."),
        "no GLIBC version read from {}: {max:?}",
        bin.display()
    );
    // aarch64 glibc starts at 2.17: any Rust binary with std needs more than that.
    let out = build_script(&["--check", bin.to_str().unwrap()], Some("2.17"));
    let log = text(&out);
    assert!(
        !out.status.success(),
        "a 2.17 limit passed a binary needing {max}:\n{log}"
    );
    assert!(
        log.contains(&format!("needs GLIBC_{max}, newer than 2.17")),
        "{log}"
    );
    assert!(
        log.contains(&format!("@GLIBC_{max}")),
        "the symbols behind GLIBC_{max} are not named:\n{log}"
    );
}

#[test]
fn the_glibc_reader_reports_the_host_binarys_needs() {
    // Runs without the cross build: the same reader on the binary under test.
    let out = build_script(&["--max-glibc", env!("CARGO_BIN_EXE_edge-agent")], None);
    assert!(out.status.success(), "{}", text(&out));
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut parts = v.split('.').map(|p| p.parse::<u32>());
    let (Some(Ok(2)), Some(Ok(minor))) = (parts.next(), parts.next()) else {
        panic!("not a glibc version: {v:?}")
    };
    // The oldest symbol versions are 2.2.5 (x86-64) and 2.17 (aarch64); std's thread-local
    // destructors alone (__cxa_thread_atexit_impl) need 2.18.
    assert!(minor >= 18, "implausible GLIBC_{v}");
}

/// ONNX Runtime on the Jetson's architecture: the aarch64 binary's `detect` under qemu,
/// on the Debian 11 root (glibc 2.31, libstdc++ of GCC 10) with the aarch64 library of
/// the PyPI wheel, finds the same boxes as this build with the x86-64 library of the
/// same version on the same images (MLAS has other kernels on each: float noise only).
#[test]
fn the_aarch64_binary_detects_the_same_as_the_host_build_under_qemu() {
    use crate::common::detect;
    let Some(bin) = aarch64_binary() else { return };
    let sysroot = target_dir().join("sysroot-bullseye-arm64");
    assert!(
        sysroot
            .join("usr/lib/aarch64-linux-gnu/libstdc++.so.6")
            .exists(),
        "no libstdc++ in {}: run cross/build-aarch64.sh (cross/sysroot.sh) again",
        sysroot.display()
    );
    let arm_lib = detect::ort_library("1.19.2", "aarch64");
    let host_lib = detect::ort_library("1.19.2", "x86_64");
    let dir = tempfile::tempdir().unwrap();
    // Emulated inference is slow: one picture of each kind (squares, busy texture).
    let all = detect::images(dir.path());
    let images = [all[0].clone(), all[2].clone()];
    let mut compared = 0;
    for (i, model) in detect::models().iter().enumerate() {
        let mut qemu = Command::new("timeout");
        qemu.arg("300")
            .arg("qemu-aarch64-static")
            .arg(&bin)
            .env("QEMU_LD_PREFIX", &sysroot)
            .env("HOME", dir.path())
            .env("XDG_CACHE_HOME", dir.path())
            .env("GST_REGISTRY_FORK", "no")
            .env_remove("ORT_DYLIB_PATH");
        let arm = detect::run(
            qemu,
            &detect::config(dir.path(), &format!("arm-{i}.toml"), model, &arm_lib),
            &images,
        );
        assert!(arm.iter().all(|l| l["provider"] == "cpu"), "{arm:?}");
        let host = detect::run(
            Command::new(env!("CARGO_BIN_EXE_edge-agent")),
            &detect::config(dir.path(), &format!("host-{i}.toml"), model, &host_lib),
            &images,
        );
        compared += detect::assert_same(&format!("model {i}, aarch64 vs x86-64"), &arm, &host);
    }
    assert!(compared >= 4, "only {compared} detections compared");
}
