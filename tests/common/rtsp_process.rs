//! The tests' RTSP server in a process of its own (`agent/examples/rtsp_camera.rs`,
//! which `cargo test` builds), so a test can freeze it the hard way: SIGSTOP, as a hung
//! camera whose connections stay open and answer nothing, not even a TEARDOWN.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};

pub struct RtspProcess {
    child: Child,
    /// Kept open: the server exits at the end of its input.
    _stdin: ChildStdin,
    pub port: u16,
}

/// `target/<profile>/examples/rtsp_camera`, next to this test binary's `deps/`.
fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("examples/rtsp_camera");
    assert!(
        bin.is_file(),
        "{} is missing: `cargo test` builds it (with --test only, run `cargo build --example rtsp_camera` first)",
        bin.display()
    );
    bin
}

impl RtspProcess {
    /// A small synthetic scene (320x180 at 10 fps) on any path `/camN`.
    pub fn start() -> RtspProcess {
        let mut child = Command::new(binary())
            .args(["--width", "320", "--height", "180", "--fps", "10"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("rtsp_camera starts");
        let stdin = child.stdin.take().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("rtsp_camera says its port");
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("rtsp_camera printed {line:?}, not its port"));
        RtspProcess {
            child,
            _stdin: stdin,
            port,
        }
    }

    pub fn url(&self, i: usize) -> String {
        format!("rtsp://127.0.0.1:{}/cam{i}", self.port)
    }

    /// SIGSTOP: connections stay open, nothing is answered.
    pub fn freeze(&self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGSTOP) };
    }
}

impl Drop for RtspProcess {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGCONT) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
