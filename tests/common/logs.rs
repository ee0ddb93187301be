//! Captures every log line of the test process in memory, so a test can assert what
//! was (or was never) logged, including lines from GStreamer and tokio threads.
//! Set `EDGE_TEST_LOG=1` to echo them to stderr as well.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use edge_agent::sync::lock;

static LINES: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static INSTALLED: OnceLock<bool> = OnceLock::new();

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&LINES).extend_from_slice(buf);
        if std::env::var_os("EDGE_TEST_LOG").is_some() {
            let _ = std::io::stderr().write_all(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber (once per process, at debug level for the agent).
/// Panics if another global subscriber was installed first: the assertions on logs
/// would then prove nothing.
pub fn capture() {
    let ok = *INSTALLED.get_or_init(|| {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info,edge_agent=debug"))
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init()
            .is_ok()
    });
    assert!(
        ok,
        "another tracing subscriber was installed before logs::capture()"
    );
}

/// Everything logged so far.
pub fn text() -> String {
    String::from_utf8_lossy(&lock(&LINES)).into_owned()
}
