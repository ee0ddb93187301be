//! Uplink benchmarks (`cargo bench -p edge-agent --bench uplink`; `scripts/bench --only
//! uplink`), on Mosquitto and RabbitMQ, each in the same run:
//!
//! 1. Events per second through the disk spool (each event committed and fsynced, sent,
//!    removed on the broker's confirmation: the agent's `Events::publish`) against the
//!    baseline, the same events published on the same uplink connection without the
//!    spool (`UplinkTransport::publish_event_then`, the same window of unconfirmed
//!    messages, every confirmation awaited).
//! 2. The time to replay 10,000 spooled events: a spool filled while no broker was
//!    there, opened by `Events::start`, until the last is confirmed and removed.
//!
//! Environment: EDGE_TEST_MQTT_URL, EDGE_TEST_AMQP_URL (loopback defaults);
//! EDGE_BENCH_UPLINK_EVENTS (events per throughput run, default 2000),
//! EDGE_BENCH_UPLINK_REPLAY (default 10000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use edge_agent::transport::{
    AgentTransport, TransportConfig, TransportError, TransportKind, UplinkTransport,
};
use edge_agent::uplink::spool::Spool;
use edge_agent::uplink::{Events, UplinkConfig};
use edge_agent::values::SecretUrl;
use futures::stream::{FuturesOrdered, StreamExt};
use tokio_util::sync::CancellationToken;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A motion event as the agent sends it (about 330 bytes of JSON).
fn event(i: usize) -> Bytes {
    Bytes::from(format!(
        "{{\"version\":1,\"state\":\"{}\",\"device\":\"bench\",\"id\":\"m{i:08}\",\"camera\":\"gate\",\
         \"start\":1765000000000,\"end\":{},\"boxes\":[[0.12,0.25,0.31,0.40],[0.55,0.10,0.70,0.33]],\
         \"union\":[0.12,0.10,0.70,0.40],\"frames\":{},\"score\":0.4321,\"zones\":[\"drive\",\"door\"]}}",
        if i.is_multiple_of(2) { "start" } else { "end" },
        if i.is_multiple_of(2) { "null".to_string() } else { format!("{}", 1765000000000u64 + i as u64) },
        i % 97
    ))
}

struct Broker {
    name: &'static str,
    cfg: UplinkConfig,
}

fn brokers(exchange: &str) -> Vec<Broker> {
    let mqtt = env_or("EDGE_TEST_MQTT_URL", "mqtt://127.0.0.1:1883");
    let amqp = env_or(
        "EDGE_TEST_AMQP_URL",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
    );
    let parse = |s: String| -> UplinkConfig { toml::from_str(&s).expect("uplink config") };
    vec![
        Broker {
            name: "Mosquitto (MQTT QoS 1)",
            cfg: parse(format!(
                "kind = \"mqtt\"\nurl = \"{mqtt}\"\ntopic_prefix = \"bench-uplink\"\n"
            )),
        },
        Broker {
            name: "RabbitMQ (AMQP, publisher confirms, durable queue)",
            cfg: parse(format!(
                "kind = \"amqp\"\nurl = \"{amqp}\"\nexchange = \"{exchange}\"\n"
            )),
        },
    ]
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The baseline: `n` events on the uplink connection, no spool, the forwarder's window.
async fn direct(cfg: &UplinkConfig, n: usize) -> Duration {
    let cancel = CancellationToken::new();
    let t = UplinkTransport::connect(&cfg.transport().unwrap(), "bench", &cancel)
        .await
        .expect("uplink connects");
    wait_for("the uplink", Duration::from_secs(30), || t.is_connected()).await;
    let window = (t.capacity() / 2).clamp(1, 128);
    let start = Instant::now();
    let mut inflight = FuturesOrdered::new();
    for i in 0..n {
        if inflight.len() >= window {
            let r: Result<(), TransportError> = inflight.next().await.unwrap();
            r.expect("confirmed");
        }
        inflight.push_back(t.publish_event_then("gate", "motion", event(i)).unwrap());
    }
    while let Some(r) = inflight.next().await {
        let r: Result<(), TransportError> = r;
        r.expect("confirmed");
    }
    let took = start.elapsed();
    t.close(Duration::from_secs(5)).await;
    cancel.cancel();
    took
}

async fn events_on(
    cfg: &UplinkConfig,
    dir: &std::path::Path,
    cancel: &CancellationToken,
) -> Events {
    let mut cfg = cfg.clone();
    cfg.spool.dir = Some(dir.to_path_buf());
    // Not used with an uplink (events go up); any transport will do.
    let local = TransportConfig {
        kind: TransportKind::Mqtt,
        mqtt_url: SecretUrl::parse(&env_or("EDGE_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")).unwrap(),
        ..TransportConfig::default()
    };
    let local = Arc::new(
        AgentTransport::connect(&local, "bench", cancel)
            .await
            .unwrap(),
    );
    Events::start(&cfg, local, "bench", cancel)
        .await
        .expect("events start")
}

fn field(e: &Events, path: &[&str]) -> u64 {
    let mut v = e.health();
    for p in path {
        v = v[*p].clone();
    }
    v.as_u64().unwrap_or(0)
}

/// Through the spool: (until every publish returned (committed), until every event
/// was confirmed and removed).
async fn spooled(cfg: &UplinkConfig, n: usize) -> (Duration, Duration) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cancel = CancellationToken::new();
    let events = events_on(cfg, dir.path(), &cancel).await;
    wait_for("the uplink", Duration::from_secs(30), || {
        events.health()["connected"] == true
    })
    .await;
    let start = Instant::now();
    for i in 0..n {
        events.publish("gate", "motion", event(i)).expect("spooled");
        // Let the forwarder run between appends, as events come in the agent.
        if i % 16 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let committed = start.elapsed();
    wait_for("every event confirmed", Duration::from_secs(300), || {
        field(&events, &["sent"]) >= n as u64 && field(&events, &["spool", "messages"]) == 0
    })
    .await;
    let took = start.elapsed();
    events.close(Duration::from_secs(5)).await;
    cancel.cancel();
    (committed, took)
}

/// A spool of `n` events written with no broker, then opened by the uplink: (time to
/// write it, time from `Events::start` until the last event is confirmed and removed).
async fn replay(cfg: &UplinkConfig, n: usize) -> (Duration, Duration) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let fill = Instant::now();
    {
        let (spool, _) = Spool::open(dir.path(), cfg.spool_limits()).unwrap();
        // Now, not a fixed date: older than `spool.max_age`, they would all be evicted.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        for i in 0..n {
            spool
                .append_with("gate", "motion", now_ms, |id| {
                    edge_agent::uplink::with_message_id(&event(i), id)
                })
                .unwrap();
        }
    }
    let filled = fill.elapsed();
    let cancel = CancellationToken::new();
    let start = Instant::now();
    let events = events_on(cfg, dir.path(), &cancel).await;
    wait_for("the spool replayed", Duration::from_secs(600), || {
        field(&events, &["spool", "messages"]) == 0
    })
    .await;
    let took = start.elapsed();
    let h = events.health();
    assert_eq!(field(&events, &["sent"]), n as u64, "{h}");
    events.close(Duration::from_secs(5)).await;
    cancel.cancel();
    (filled, took)
}

/// A durable queue bound to the bench's exchange, so RabbitMQ confirms after routing
/// each persistent message to a queue (an unroutable message is confirmed at once).
async fn rabbit_queue(exchange: &str) -> Option<(lapin::Connection, String)> {
    use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    let url = env_or(
        "EDGE_TEST_AMQP_URL",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
    );
    let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .ok()?;
    let ch = conn.create_channel().await.ok()?;
    ch.exchange_declare(
        exchange.into(),
        lapin::ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .ok()?;
    let q = format!("{exchange}.central");
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .ok()?;
    ch.queue_bind(
        q.as_str().into(),
        exchange.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .ok()?;
    Some((conn, q))
}

async fn rabbit_cleanup(conn: lapin::Connection, exchange: &str, queue: &str) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    if let Ok(ch) = conn.create_channel().await {
        let _ = ch
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await;
        let _ = ch
            .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = conn.close(200, "OK".into()).await;
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() {
    let n = count("EDGE_BENCH_UPLINK_EVENTS", 2000);
    let replay_n = count("EDGE_BENCH_UPLINK_REPLAY", 10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let exchange = format!("bench-uplink-{:08x}", rand::random::<u32>());
        let rabbit = rabbit_queue(&exchange).await;
        let fs = std::process::Command::new("df")
            .args(["--output=fstype", env!("CARGO_TARGET_TMPDIR")])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().nth(1).unwrap_or("?").trim().to_string())
            .unwrap_or_else(|_| "?".into());
        println!(
            "{n} motion events of {} bytes each, on the loopback; the spool (redb, each append \
             fsynced) on {fs} under `target/`. Baseline: the same events on the same uplink \
             connection without the spool, the same window of unconfirmed messages. \
             Replay: a spool of {replay_n} events written while no broker was there, from \
             `Events::start` until the last is confirmed and removed.",
            event(1).len()
        );
        println!();
        println!("| broker | without spool (events/s) | through the spool (events/s) | ratio | spool commits alone (events/s) | replay of {replay_n} (s) | replay (events/s) | writing them (s) |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for b in brokers(&exchange) {
            if b.cfg.kind == edge_agent::uplink::UplinkKind::Amqp && rabbit.is_none() {
                println!("| {} | (RabbitMQ not reachable) | | | | | | |", b.name);
                continue;
            }
            let base = direct(&b.cfg, n).await;
            let (committed, through) = spooled(&b.cfg, n).await;
            let (filled, replayed) = replay(&b.cfg, replay_n).await;
            println!(
                "| {} | {:.0} | {:.0} | {:.2} | {:.0} | {:.2} | {:.0} | {:.2} |",
                b.name,
                rate(n, base),
                rate(n, through),
                rate(n, through) / rate(n, base),
                rate(n, committed),
                replayed.as_secs_f64(),
                rate(replay_n, replayed),
                filled.as_secs_f64(),
            );
        }
        if let Some((conn, q)) = rabbit {
            rabbit_cleanup(conn, &exchange, &q).await;
        }
    });
}
