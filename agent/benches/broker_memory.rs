//! Benchmark (not a test): the agent's memory under a burst of frames through its
//! embedded MQTT broker, with the broker's commit log at the new default
//! (`transport.embedded_log_size` = 16 MiB per topic filter) against the old fixed
//! 4 x 16 MiB, side by side in one run.
//!
//! Each case starts the real `edge-agent run` (no camera, embedded broker on a known
//! port), subscribes to its frames topic as a worker would, publishes a burst of frames
//! (default 800 of 100 KB, 80 MB) as fast as the broker acknowledges them and reads
//! back what the broker still holds, then samples the agent's RSS
//! (/proc/PID/smaps_rollup, as the latency bench does) and its peak (VmHWM). Frames
//! the commit log dropped before the subscriber read them are counted: the price of
//! the bound (the agent publishes such frames again after `redeliver_after`).
//!
//! `cargo bench -p edge-agent --bench broker_memory`. Environment: BENCH_FRAMES
//! (default 800), BENCH_FRAME_KB (default 100).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

#[path = "common/procfs.rs"]
mod procfs;
use procfs::kib_field;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// (RSS, peak RSS) in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    (kib_field(&rollup, "Rss:"), kib_field(&status, "VmHWM:"))
}

struct Case {
    name: &'static str,
    log_size: usize,
}

struct Result {
    read: usize,
    idle: u64,
    after: u64,
    peak: u64,
    secs: f64,
}

async fn burst(case: &Case, frames: usize, frame_bytes: usize) -> Result {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("edge-bench-broker-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{}.toml", case.log_size));
    std::fs::write(
        &file,
        format!(
            "[device]\nid = \"bench\"\n[transport]\nkind = \"embedded\"\nembedded_port = {port}\n\
             mqtt_url = \"mqtt://bench:bench@127.0.0.1\"\n\
             embedded_log_size = {}\n[telemetry]\nmetrics_listen = \"\"\n",
            case.log_size
        ),
    )
    .unwrap();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .args(["run", "--config"])
        .arg(&file)
        .env("EDGE_AGENT_LOG_FORMAT", "json")
        .env("RUST_LOG", "info,rumqttd=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("edge-agent starts");
    let pid = agent.id();
    // Ready once it says it runs (the broker is up before that).
    let stderr = agent.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            if line.contains("Embedded MQTT broker listening") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("embedded broker listening");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (idle, _) = rss_kib(pid);

    let topic = "edge/bench/frames";
    let mut opts = MqttOptions::new("bench-sub", "127.0.0.1", port);
    opts.set_credentials("bench", "bench");
    opts.set_max_packet_size(4 << 20, 4 << 20);
    let (sub, mut sub_loop) = AsyncClient::new(opts, 64);
    sub.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    let (got_tx, mut got_rx) = tokio::sync::mpsc::channel::<()>(1024);
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut subscribed = Some(subscribed_tx);
        while let Ok(ev) = sub_loop.poll().await {
            match ev {
                Event::Incoming(Packet::SubAck(_)) => {
                    if let Some(s) = subscribed.take() {
                        let _ = s.send(());
                    }
                }
                Event::Incoming(Packet::Publish(_)) => {
                    let _ = got_tx.send(()).await;
                }
                _ => {}
            }
        }
    });
    subscribed_rx.await.unwrap();
    let mut opts = MqttOptions::new("bench-pub", "127.0.0.1", port);
    opts.set_credentials("bench", "bench");
    opts.set_max_packet_size(4 << 20, 4 << 20);
    opts.set_inflight(100);
    let (publisher, mut pub_loop) = AsyncClient::new(opts, 256);
    tokio::spawn(async move { while pub_loop.poll().await.is_ok() {} });
    let payload = vec![0x5a_u8; frame_bytes];
    let start = Instant::now();
    // Reads until every frame is back or none came for 3 s: frames the log no longer
    // held when the subscriber got to them are gone (the agent would publish them again
    // after `redeliver_after`).
    let reader = tokio::spawn(async move {
        let mut read = 0;
        while read < frames {
            match tokio::time::timeout(Duration::from_secs(3), got_rx.recv()).await {
                Ok(Some(())) => read += 1,
                _ => break,
            }
        }
        read
    });
    for _ in 0..frames {
        publisher
            .publish(topic, QoS::AtLeastOnce, false, payload.clone())
            .await
            .unwrap();
    }
    let read = reader.await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (after, peak) = rss_kib(pid);
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let _ = agent.wait();
    let _ = std::fs::remove_dir_all(&dir);
    Result {
        read,
        idle,
        after,
        peak,
        secs,
    }
}

fn main() {
    let frames = env_or("BENCH_FRAMES", 800);
    let kb = env_or("BENCH_FRAME_KB", 100);
    let cases = [
        Case {
            name: "old fixed log (4 x 16 MiB)",
            log_size: 64 << 20,
        },
        Case {
            name: "new default `embedded_log_size` (16 MiB)",
            log_size: 16 << 20,
        },
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let results: Vec<Result> = cases
        .iter()
        .map(|c| {
            eprintln!("broker memory: {}...", c.name);
            rt.block_on(burst(c, frames, kb * 1024))
        })
        .collect();
    let mib = |k: u64| k as f64 / 1024.0;
    println!(
        "A burst of {frames} frames of {kb} KB ({:.0} MB) through the agent's embedded broker, \
         read back by one subscriber; agent RSS in MiB.\n",
        (frames * kb) as f64 / 1000.0
    );
    println!("| broker commit log | frames read back | idle RSS | RSS after the burst | peak RSS | burst time |");
    println!("|---|---|---|---|---|---|");
    for (c, r) in cases.iter().zip(&results) {
        println!(
            "| {} | {}/{frames} | {:.1} | {:.1} | {:.1} | {:.2} s |",
            c.name,
            r.read,
            mib(r.idle),
            mib(r.after),
            mib(r.peak),
            r.secs
        );
    }
    let (old, new) = (&results[0], &results[1]);
    println!(
        "\nRSS growth over idle: {:.1} MiB with the old log, {:.1} MiB with the new default \
         ({:.2}x less).",
        mib(old.after.saturating_sub(old.idle)),
        mib(new.after.saturating_sub(new.idle)),
        old.after.saturating_sub(old.idle) as f64
            / new.after.saturating_sub(new.idle).max(1) as f64
    );
}
