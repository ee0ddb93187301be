//! Brokers for integration tests: the system RabbitMQ and Mosquitto on loopback
//! (addresses from `EDGE_TEST_AMQP_URL` / `EDGE_TEST_MQTT_URL`), private Mosquitto
//! processes that a test may stop and restart, and unique names per test.
#![allow(dead_code)]

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn amqp_url() -> String {
    std::env::var("EDGE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub fn mqtt_url() -> String {
    std::env::var("EDGE_TEST_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into())
}

/// A name no other test uses: letters, digits and '-', valid as topic, queue and id.
pub fn unique(tag: &str) -> String {
    format!("t-{tag}-{:08x}", rand::random::<u32>())
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    l.local_addr().unwrap().port()
}

/// Tests that restart or depend on the shared RabbitMQ take this lock, so a
/// `rabbitmqctl stop_app` never cuts another test's connection.
pub async fn rabbit_serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// Runs `rabbitmqctl <args>` and panics with its output on failure.
pub fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private Mosquitto on a loopback port, with persistence in a temporary directory
/// (so sessions survive a restart, as with the packaged service).
pub struct Mosquitto {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Extra configuration lines (TLS, passwords).
    extra: String,
    /// Every packet logged to `mosquitto.log` in `dir` (see [`Mosquitto::log`]).
    logging: bool,
    /// Files the configuration names (a password file).
    keep: Vec<tempfile::TempDir>,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Mosquitto {
        Self::start_with(port, String::new(), false)
    }

    /// One that logs every packet it receives, so a test sees what clients sent
    /// (a DISCONNECT, or a connection that just closed).
    pub fn start_logging() -> Mosquitto {
        Self::start_with(free_port(), String::new(), true)
    }

    /// Its log so far (empty unless started with [`Mosquitto::start_logging`]).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    fn start_with(port: u16, extra: String, logging: bool) -> Mosquitto {
        let dir = tempfile::tempdir().expect("temp dir");
        // Mosquitto started as root drops to its own user: let it write its database.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let mut m = Mosquitto {
            port,
            dir,
            child: None,
            extra,
            logging,
            keep: Vec::new(),
        };
        m.spawn();
        m
    }

    fn conf(&self) -> PathBuf {
        let conf = self.dir.path().join("mosquitto.conf");
        let log = if self.logging {
            format!(
                "log_dest file {}/mosquitto.log\nlog_type all\n",
                self.dir.path().display()
            )
        } else {
            String::new()
        };
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\npersistence true\n\
                 persistence_location {}/\nset_tcp_nodelay true\nmessage_size_limit 0\n\
                 max_queued_messages 10000\nlog_dest none\n{log}{}",
                self.port,
                self.dir.path().display(),
                if self.extra.contains("allow_anonymous") {
                    self.extra.clone()
                } else {
                    format!("allow_anonymous true\n{}", self.extra)
                }
            ),
        )
        .unwrap();
        conf
    }

    fn spawn(&mut self) {
        let conf = self.conf();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// SIGSTOP (`true`): connections stay open and nothing is answered, a hung broker;
    /// SIGCONT (`false`).
    pub fn freeze(&self, frozen: bool) {
        if let Some(c) = &self.child {
            let sig = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// Stops it with SIGTERM (it saves its sessions) and waits for the exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.freeze(false);
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A CA and a server certificate for `localhost`/127.0.0.1 made with the openssl tool.
pub struct TestPki {
    pub dir: tempfile::TempDir,
}

impl TestPki {
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().expect("temp dir");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .expect("openssl runs");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=edge test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ]);
        for f in ["ca.pem", "server.pem", "server.key"] {
            std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        TestPki { dir }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

impl Mosquitto {
    /// A private Mosquitto serving MQTT over TLS only, with the test PKI.
    pub fn start_tls(pki: &TestPki) -> Mosquitto {
        let p = pki.dir.path();
        Self::start_with(
            free_port(),
            format!(
                "cafile {}\ncertfile {}\nkeyfile {}\n",
                p.join("ca.pem").display(),
                p.join("server.pem").display(),
                p.join("server.key").display()
            ),
            false,
        )
    }
}

impl Mosquitto {
    /// A private Mosquitto that lets in only `user` with `password` (a `password_file`
    /// made by `mosquitto_passwd -b`).
    pub fn start_with_password(user: &str, password: &str) -> Mosquitto {
        let dir = tempfile::tempdir().expect("temp dir");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = dir.path().join("passwd");
        let out = Command::new("mosquitto_passwd")
            .arg("-c")
            .arg("-b")
            .arg(&file)
            .arg(user)
            .arg(password)
            .output()
            .expect("mosquitto_passwd runs");
        assert!(
            out.status.success(),
            "mosquitto_passwd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut m = Self::start_with(
            free_port(),
            format!("allow_anonymous false\npassword_file {}\n", file.display()),
            false,
        );
        m.keep.push(dir);
        m
    }
}

/// Declares `exchange` as the transport does (a durable topic exchange), in case the
/// test is first to use it.
pub async fn declare_topic_exchange(ch: &lapin::Channel, exchange: &str) {
    ch.exchange_declare(
        exchange.into(),
        lapin::ExchangeKind::Topic,
        lapin::options::ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        lapin::types::FieldTable::default(),
    )
    .await
    .unwrap();
}

/// A downstream service's view of an agent on AMQP: the agent's topology declared, an
/// exclusive queue bound to `key` on its events exchange, consumed without acks. Keep the
/// connection alive as long as the consumer is read.
pub async fn amqp_tap(
    cfg: &edge_agent::transport::TransportConfig,
    key: &str,
    tag: &str,
) -> (lapin::Connection, lapin::Consumer) {
    use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    edge_agent::transport::amqp::declare_topology(&ch, cfg)
        .await
        .unwrap();
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.queue_bind(
        q.name().clone(),
        cfg.events_exchange.as_str().into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let consumer = ch
        .basic_consume(
            q.name().clone(),
            tag.into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    (conn, consumer)
}
