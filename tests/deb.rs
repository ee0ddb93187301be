//! The Debian packages (scripts/package-deb.sh, from `[package.metadata.deb]`) and
//! scripts/install.sh. The host package is built from the debug binary, which is fast; the
//! arm64 one when the cross build exists. Installs go into a scratch root through
//! `dpkg --root` with chrootless maintainer scripts (they honour DPKG_ROOT), so the real
//! postinst creates the user in that root's /etc/passwd and never touches this machine.

use crate::cross::{aarch64_binary, repo};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).unwrap()
}

fn host_arch() -> String {
    stdout(Command::new("dpkg").arg("--print-architecture"))
        .trim()
        .to_string()
}

/// Builds the package for `arch` from `binary` into `out`, returns the .deb's path.
fn package(arch: &str, binary: &Path, out: &Path) -> PathBuf {
    let path = stdout(
        Command::new(repo().join("scripts/package-deb.sh"))
            .args(["--arch", arch, "--compress", "none", "--binary"])
            .arg(binary)
            .arg("--out")
            .arg(out),
    );
    let deb = PathBuf::from(path.lines().last().expect("package-deb.sh prints the path"));
    assert!(deb.is_file(), "{} was not written", deb.display());
    deb
}

/// The host package of the binary under test, in a scratch directory that lives as long
/// as the returned TempDir.
fn host_package() -> (tempfile::TempDir, PathBuf) {
    let out = tempfile::tempdir().unwrap();
    let deb = package(
        &host_arch(),
        Path::new(env!("CARGO_BIN_EXE_edge-agent")),
        out.path(),
    );
    (out, deb)
}

fn field(deb: &Path, name: &str) -> String {
    stdout(Command::new("dpkg-deb").arg("--field").arg(deb).arg(name))
        .trim()
        .to_string()
}

/// `dpkg-deb --contents` as (mode, owner, path) rows.
fn contents(deb: &Path) -> Vec<(String, String, String)> {
    stdout(Command::new("dpkg-deb").arg("--contents").arg(deb))
        .lines()
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols[0].into(), cols[1].into(), cols[5].into())
        })
        .collect()
}

fn entry<'a>(rows: &'a [(String, String, String)], path: &str) -> &'a (String, String, String) {
    rows.iter()
        .find(|r| r.2 == path)
        .unwrap_or_else(|| panic!("{path} is not in the package: {rows:#?}"))
}

/// Checks what every edge-agent package must hold, whatever its architecture.
fn check_package(deb: &Path, arch: &str) {
    assert_eq!(field(deb, "Package"), "edge-agent");
    assert_eq!(field(deb, "Architecture"), arch);
    assert_eq!(
        field(deb, "Version"),
        format!("{}-1", env!("CARGO_PKG_VERSION"))
    );
    let depends = field(deb, "Depends");
    for dep in [
        "libc6 (>= 2.",
        "libgstreamer1.0-0 (>= 1.16)",
        "libgstreamer-plugins-base1.0-0 (>= 1.16)",
        "passwd",
    ] {
        assert!(depends.contains(dep), "Depends lacks {dep}: {depends}");
    }
    assert!(
        !depends.contains("$auto"),
        "$auto left unexpanded: {depends}"
    );

    let rows = contents(deb);
    assert_eq!(
        entry(&rows, "./usr/bin/edge-agent").0,
        "-rwxr-xr-x",
        "binary mode"
    );
    for path in [
        "./lib/systemd/system/edge-agent.service",
        "./lib/systemd/system/edge-agent-scaler.service",
        "./etc/edge-agent/agent.toml",
        "./usr/share/edge-agent/models/test-yolov4.onnx",
        "./usr/share/edge-agent/models/test.names",
        "./usr/share/doc/edge-agent/copyright",
    ] {
        assert_eq!(entry(&rows, path).0, "-rw-r--r--", "{path} mode");
    }
    assert!(
        rows.iter().all(|r| r.1 == "root/root"),
        "files not owned by root: {rows:#?}"
    );
    for name in example_credentials() {
        let path = format!("./{EXAMPLE_CREDENTIALS}/{name}");
        assert_eq!(entry(&rows, &path).0, "-rw-------", "{path} mode");
    }

    // Control area: the conffile and the maintainer scripts from cross/debian.
    let control = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("--control")
        .arg(deb)
        .arg(control.path()));
    assert_eq!(
        std::fs::read_to_string(control.path().join("conffiles")).unwrap(),
        "/etc/edge-agent/agent.toml\n"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let packaged = std::fs::read(control.path().join(script)).unwrap();
        let source = std::fs::read(repo().join("cross/debian").join(script)).unwrap();
        assert_eq!(
            packaged, source,
            "{script} differs from cross/debian/{script}"
        );
        let mode = std::fs::metadata(control.path().join(script))
            .unwrap()
            .mode();
        assert_eq!(mode & 0o777, 0o755, "{script} mode");
    }

    // Data: the unit and config are the repository's files, unchanged.
    let data = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("--extract")
        .arg(deb)
        .arg(data.path()));
    for (packaged, source) in [
        (
            "lib/systemd/system/edge-agent.service",
            "systemd/edge-agent.service",
        ),
        (
            "lib/systemd/system/edge-agent-scaler.service",
            "systemd/edge-agent-scaler.service",
        ),
        ("etc/edge-agent/agent.toml", "systemd/agent.toml"),
    ] {
        assert_eq!(
            std::fs::read(data.path().join(packaged)).unwrap(),
            std::fs::read(repo().join(source)).unwrap(),
            "{packaged} differs from {source}"
        );
    }
}

/// Where the package and install.sh put the fleet example's credentials.
const EXAMPLE_CREDENTIALS: &str = "usr/share/doc/edge-agent/examples/fleet/credentials";

/// The fleet example's credential files (systemd/fleet/credentials).
fn example_credentials() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo().join("systemd/fleet/credentials"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no example credentials");
    names
}

/// The example credentials as installed: root's, 0600, whatever mode the checkout has.
fn check_example_credentials(root: &Path) {
    for name in example_credentials() {
        let path = root.join(EXAMPLE_CREDENTIALS).join(&name);
        let m = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            (m.uid(), m.mode() & 0o777),
            (0, 0o600),
            "{}",
            path.display()
        );
    }
}

/// A scratch root with the files useradd, groupadd and dpkg need: a root user and group,
/// a `video` group as on Debian (render is left for the postinst to create), an empty
/// dpkg database.
fn scratch_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let p = root.path();
    for dir in [
        "etc",
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/log",
    ] {
        std::fs::create_dir_all(p.join(dir)).unwrap();
    }
    for (file, text) in [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/bash\n"),
        ("etc/group", "root:x:0:\nvideo:x:44:\n"),
        ("etc/shadow", "root:*:19000:0:99999:7:::\n"),
        ("etc/gshadow", "root:*::\nvideo:*::\n"),
        ("var/lib/dpkg/status", ""),
        ("var/lib/dpkg/available", ""),
    ] {
        std::fs::write(p.join(file), text).unwrap();
    }
    root
}

/// useradd --prefix and dpkg --root want root; elsewhere these tests skip.
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        crate::common::skip(
            "installing into a scratch root needs root (useradd --prefix, dpkg --root)",
        );
    }
    root
}

fn dpkg(root: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("dpkg");
    cmd.arg(format!("--root={}", root.display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--log=/dev/null",
        ])
        .args(args);
    run(&mut cmd)
}

fn passwd_entry(root: &Path, name: &str) -> Option<Vec<String>> {
    std::fs::read_to_string(root.join("etc/passwd"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with(&format!("{name}:")))
        .map(|l| l.split(':').map(String::from).collect())
}

fn group_members(root: &Path, group: &str) -> Vec<String> {
    let groups = std::fs::read_to_string(root.join("etc/group")).unwrap();
    let line = groups
        .lines()
        .find(|l| l.starts_with(&format!("{group}:")))
        .unwrap_or_else(|| panic!("no group {group} in {groups}"));
    line.rsplit(':')
        .next()
        .unwrap()
        .split(',')
        .filter(|m| !m.is_empty())
        .map(String::from)
        .collect()
}

/// The user and groups the postinst makes, and the directories it owns.
fn check_user(root: &Path) {
    let user = passwd_entry(root, "edge-agent").expect("postinst created no edge-agent user");
    assert_eq!(user[5], "/var/lib/edge-agent", "home");
    assert_eq!(user[6], "/usr/sbin/nologin", "shell");
    let uid: u32 = user[2].parse().unwrap();
    assert!(uid > 0 && uid < 1000, "uid {uid} is not a system uid");
    for group in ["video", "render"] {
        assert!(
            group_members(root, group).contains(&"edge-agent".to_string()),
            "edge-agent is not in {group}"
        );
    }
    let state = std::fs::metadata(root.join("var/lib/edge-agent")).unwrap();
    assert_eq!(state.uid(), uid, "/var/lib/edge-agent owner");
    assert_eq!(state.mode() & 0o777, 0o750, "/var/lib/edge-agent mode");
    let creds = std::fs::metadata(root.join("etc/edge-agent/credentials")).unwrap();
    assert_eq!(
        (creds.uid(), creds.mode() & 0o777),
        (0, 0o700),
        "credentials dir"
    );
    // systemd refuses to start a unit whose LoadCredential= file is missing: every one the
    // unit names exists (an empty root-only placeholder until the operator fills it).
    let unit = std::fs::read_to_string(repo().join("systemd/edge-agent.service")).unwrap();
    let named: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("LoadCredential="))
        .filter_map(|l| l.split_once(':').map(|(_, path)| path))
        .collect();
    assert!(!named.is_empty(), "the unit loads no credentials");
    for path in named {
        let f = root.join(path.trim_start_matches('/'));
        let m = std::fs::metadata(&f)
            .unwrap_or_else(|e| panic!("{path} named by LoadCredential= is missing: {e}"));
        assert_eq!((m.uid(), m.mode() & 0o777), (0, 0o600), "{path}");
    }
}

/// What a fresh install does with its shipped configuration: the demo camera's detector
/// is in the package and finds the demo's red square; a real camera without
/// `inference.model` stops `validate` and `run` with exit 78 naming the key, so systemd
/// never loops on it. Run from inside the scratch root, away from this checkout's model.
fn check_fresh_install(r: &Path) {
    let bin = r.join("usr/bin/edge-agent");
    let conf = r.join("etc/edge-agent");
    let img = r.join("tmp/red.jpg");
    std::fs::create_dir_all(img.parent().unwrap()).unwrap();
    std::fs::write(
        &img,
        crate::infer::jpeg_of(&crate::infer::scene(
            640,
            480,
            &[(300, 200, 64, crate::infer::RED)],
        )),
    )
    .unwrap();
    let edge_agent = |args: &[&str], camera: Option<&str>| {
        let mut cmd = Command::new(&bin);
        cmd.args(args)
            .arg("--config-dir")
            .arg(&conf)
            .current_dir(r)
            // The box's ONNX Runtime: this checkout's, found from here, not from r.
            .env("ORT_DYLIB_PATH", crate::common::detect::current_library());
        if let Some(url) = camera {
            cmd.env("EDGE_AGENT_CAMERA_URL", url);
        }
        cmd
    };
    let line = stdout(edge_agent(&["detect"], None).arg(&img));
    let d: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(d["detections"][0]["class"], "fire", "{line}");
    run(&mut edge_agent(&["validate", "--quiet"], None));
    for cmd in [&["validate"][..], &["run"][..]] {
        let out = edge_agent(cmd, Some("rtsp://192.0.2.10/stream"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{cmd:?}: {stderr}");
        assert!(
            stderr.contains("inference.model") && stderr.contains("\"cam1\" is a real camera"),
            "{cmd:?}: {stderr}"
        );
    }
}

#[test]
fn the_host_package_carries_binary_unit_config_and_maintainer_scripts() {
    let out = tempfile::tempdir().unwrap();
    let arch = host_arch();
    let deb = package(
        &arch,
        Path::new(env!("CARGO_BIN_EXE_edge-agent")),
        out.path(),
    );
    check_package(&deb, &arch);
}

#[test]
fn installing_the_package_creates_the_user_enables_the_unit_and_keeps_a_changed_config() {
    if !is_root() {
        return;
    }
    let (_out, deb) = host_package();
    let root = scratch_root();
    let r = root.path();
    let deb = deb.to_str().unwrap();

    dpkg(r, &["--install", deb]);
    check_user(r);
    check_example_credentials(r);
    assert!(
        r.join("etc/systemd/system/multi-user.target.wants/edge-agent.service")
            .symlink_metadata()
            .is_ok(),
        "the unit was not enabled"
    );
    let version = stdout(Command::new(r.join("usr/bin/edge-agent")).arg("--version"));
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    check_fresh_install(r);

    // Reinstall (the upgrade path): the postinst runs again, the admin's config stays.
    let config = r.join("etc/edge-agent/agent.toml");
    let mut changed = std::fs::read_to_string(&config).unwrap();
    changed.push_str("\n# changed on the box\n");
    std::fs::write(&config, &changed).unwrap();
    let secret = r.join("etc/edge-agent/credentials/broker");
    std::fs::write(&secret, "s3cret\n").unwrap();
    dpkg(r, &["--install", deb]);
    check_user(r);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), changed);
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "s3cret\n",
        "a filled credential was replaced"
    );
    let users = std::fs::read_to_string(r.join("etc/passwd")).unwrap();
    let entries = users.lines().filter(|l| l.starts_with("edge-agent:"));
    assert_eq!(entries.count(), 1, "{users}");

    // A GPU server enabled the scaler; the operator added a device file with a password.
    run(Command::new("systemctl")
        .arg(format!("--root={}", r.display()))
        .args(["enable", "edge-agent-scaler.service"]));
    let scaler_wants =
        r.join("etc/systemd/system/multi-user.target.wants/edge-agent-scaler.service");
    assert!(scaler_wants.symlink_metadata().is_ok());
    std::fs::write(
        r.join("etc/edge-agent/conf.d/90-device.toml"),
        "[transport]\nkind = \"mqtt\"\nmqtt_url = \"mqtt://edge:s3cret@broker:1883\"\n",
    )
    .unwrap();

    // Remove: binary and both units' enablement go, configuration stays; purge: config,
    // credentials and state go, the user stays (Debian leaves system users in place).
    dpkg(r, &["--remove", "edge-agent"]);
    assert!(!r.join("usr/bin/edge-agent").exists());
    assert!(!r
        .join("etc/systemd/system/multi-user.target.wants/edge-agent.service")
        .exists());
    assert!(
        scaler_wants.symlink_metadata().is_err(),
        "remove left the scaler unit enabled"
    );
    assert!(config.exists(), "remove deleted the configuration");
    dpkg(r, &["--purge", "edge-agent"]);
    assert!(!config.exists(), "purge kept the configuration");
    for kept in [
        "etc/edge-agent/credentials",
        "etc/edge-agent/conf.d",
        "etc/edge-agent",
    ] {
        assert!(!r.join(kept).exists(), "purge kept {kept}");
    }
    assert!(
        !r.join("var/lib/edge-agent").exists(),
        "purge kept the state"
    );
    assert!(passwd_entry(r, "edge-agent").is_some());
}

#[test]
fn the_arm64_package_carries_the_cross_built_binary() {
    let Some(bin) = aarch64_binary() else { return };
    let out = tempfile::tempdir().unwrap();
    let deb = package("arm64", &bin, out.path());
    check_package(&deb, "arm64");
    let depends = field(&deb, "Depends");
    let libc = depends
        .split(", ")
        .find_map(|d| d.strip_prefix("libc6 (>= ")?.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no libc6 version in {depends}"));
    let minor: u32 = libc.split('.').nth(1).unwrap().parse().unwrap();
    assert!(
        minor <= 31,
        "the arm64 package wants libc6 {libc}, newer than JetPack 5's 2.31"
    );
    let data = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("--extract")
        .arg(&deb)
        .arg(data.path()));
    let file = stdout(Command::new("file").arg(data.path().join("usr/bin/edge-agent")));
    assert!(file.contains("ARM aarch64"), "{file}");
}

#[test]
fn install_sh_dry_run_prints_every_step_and_changes_nothing() {
    let dest = tempfile::tempdir().unwrap();
    let out = stdout(
        Command::new(repo().join("scripts/install.sh"))
            .args(["--dry-run", "--binary", env!("CARGO_BIN_EXE_edge-agent")])
            .env_remove("DESTDIR"),
    );
    for step in [
        "+ install -D -m 0755 ",
        " /usr/bin/edge-agent",
        " /etc/systemd/system/edge-agent.service",
        " /etc/edge-agent/agent.toml",
        "cross/debian/postinst configure",
        "+ systemctl daemon-reload",
        "+ systemctl enable --now edge-agent.service",
    ] {
        assert!(out.contains(step), "dry run lacks {step:?}:\n{out}");
    }
    // With DESTDIR as well: nothing is written there.
    stdout(
        Command::new(repo().join("scripts/install.sh"))
            .args(["--dry-run", "--binary", env!("CARGO_BIN_EXE_edge-agent")])
            .env("DESTDIR", dest.path()),
    );
    assert_eq!(std::fs::read_dir(dest.path()).unwrap().count(), 0);
}

#[test]
fn install_sh_into_a_destdir_sets_up_the_box_and_never_overwrites_the_config() {
    if !is_root() {
        return;
    }
    let root = scratch_root();
    let r = root.path();
    let install = || {
        stdout(
            Command::new(repo().join("scripts/install.sh"))
                .args(["--binary", env!("CARGO_BIN_EXE_edge-agent")])
                .env("DESTDIR", r),
        )
    };
    install();
    check_user(r);
    check_example_credentials(r);
    check_fresh_install(r);
    let bin = std::fs::metadata(r.join("usr/bin/edge-agent")).unwrap();
    assert_eq!(bin.mode() & 0o777, 0o755);
    assert_eq!(
        std::fs::read(r.join("etc/systemd/system/edge-agent.service")).unwrap(),
        std::fs::read(repo().join("systemd/edge-agent.service")).unwrap()
    );
    assert!(r
        .join("etc/systemd/system/multi-user.target.wants/edge-agent.service")
        .symlink_metadata()
        .is_ok());

    let config = r.join("etc/edge-agent/agent.toml");
    std::fs::write(&config, "# the box's own\n").unwrap();
    let second = install();
    assert!(second.contains("keeping the existing"), "{second}");
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "# the box's own\n"
    );
    check_user(r);
}

/// Records `systemd` at `version` as installed in a scratch root's dpkg database (the
/// other packages' entries stay), which is what the postinst asks about the root it
/// installs into.
fn set_systemd_version(root: &Path, version: &str) {
    let status = root.join("var/lib/dpkg/status");
    let mut stanzas: Vec<String> = std::fs::read_to_string(&status)
        .unwrap()
        .split("\n\n")
        .filter(|s| !s.trim().is_empty() && !s.starts_with("Package: systemd\n"))
        .map(|s| s.trim_end().to_string())
        .collect();
    stanzas.push(format!(
        "Package: systemd\nStatus: install ok installed\nPriority: important\n\
         Section: admin\nMaintainer: test\nArchitecture: all\nVersion: {version}\n\
         Description: a stand-in for the root's systemd"
    ));
    std::fs::write(&status, stanzas.join("\n\n") + "\n").unwrap();
}

/// `edge-agent validate` of the installed configuration, run as the edge-agent user (its
/// numeric ids in the scratch root) without `CREDENTIALS_DIRECTORY`, as the unit runs it
/// on a systemd that ignores `LoadCredential=`.
fn validate_as_agent_user(r: &Path) -> Output {
    let user = passwd_entry(r, "edge-agent").unwrap();
    Command::new("setpriv")
        .arg(format!("--reuid={}", user[2]))
        .arg(format!("--regid={}", user[3]))
        .arg("--clear-groups")
        .arg("--")
        .arg(r.join("usr/bin/edge-agent"))
        .args(["validate", "--quiet", "--config-dir"])
        .arg(r.join("etc/edge-agent"))
        .current_dir(r)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap()
}

/// JetPack 5's systemd 245 has no `LoadCredential=`: the agent reads
/// /etc/edge-agent/credentials itself, so there the postinst lets the edge-agent group
/// read them (and nobody else); on a systemd with `LoadCredential=` they are root's alone,
/// and a later install after a systemd upgrade takes the group's access away again.
#[test]
fn on_systemd_245_the_agent_user_reads_the_credentials_and_on_newer_only_root_does() {
    if !is_root() {
        return;
    }
    let (_out, deb) = host_package();
    let deb = deb.to_str().unwrap();
    let root = scratch_root();
    let r = root.path();
    // The agent user must reach the files under the scratch root, as it does under /.
    std::fs::set_permissions(r, std::fs::Permissions::from_mode(0o755)).unwrap();
    set_systemd_version(r, "245.4-4ubuntu3.22");
    dpkg(r, &["--install", deb]);
    let gid: u32 = passwd_entry(r, "edge-agent").unwrap()[3].parse().unwrap();
    let creds = r.join("etc/edge-agent/credentials");
    let owner_mode = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.uid(), m.gid(), m.mode() & 0o777)
    };
    assert_eq!(owner_mode(&creds), (0, gid, 0o750), "credentials dir");
    std::fs::write(creds.join("broker"), "s3cret\n").unwrap();
    for name in ["broker", "camera-viewer"] {
        assert_eq!(owner_mode(&creds.join(name)), (0, gid, 0o640), "{name}");
    }
    std::fs::write(
        r.join("etc/edge-agent/conf.d/90-device.toml"),
        "[transport]\nkind = \"amqp\"\namqp_url = \"amqp://edge@rabbit:5672/%2f\"\npassword_file = \"broker\"\n",
    )
    .unwrap();
    let ok = validate_as_agent_user(r);
    assert!(
        ok.status.success(),
        "the agent user cannot read its credential on systemd 245: {}",
        String::from_utf8_lossy(&ok.stderr)
    );

    set_systemd_version(r, "252.39-1~deb12u2");
    dpkg(r, &["--install", deb]);
    assert_eq!(owner_mode(&creds), (0, 0, 0o700), "credentials dir");
    assert_eq!(owner_mode(&creds.join("broker")), (0, 0, 0o600), "broker");
    let refused = validate_as_agent_user(r);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(78), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
}
