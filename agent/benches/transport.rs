//! Escalation benchmarks (run with `cargo bench -p edge-agent --bench transport`).
//!
//! 1. JPEG per 640x360 frame: jpeg-encoder / zune-jpeg (what the agent uses) against
//!    libjpeg-turbo through GStreamer's jpegenc / jpegdec, the baseline; ratio printed.
//! 2. Transports: frames/s and p50/p99 publish-to-consume latency for 100 KB frames on
//!    the embedded broker, Mosquitto (the system one with its default config, and a
//!    private one with `set_tcp_nodelay true`) and RabbitMQ, through the same
//!    `AgentTransport`/`WorkerTransport` API the agent and workers use. Ratios are against the embedded broker.
//!
//! Environment: EDGE_TEST_MQTT_URL, EDGE_TEST_AMQP_URL (loopback defaults);
//! EDGE_BENCH_FRAMES (throughput run, default 1000).

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use edge_agent::clock::unix_ns_now;
use edge_agent::image::{decode_jpeg, encode_rgb};
use edge_agent::transport::{AgentTransport, TransportConfig, TransportKind, WorkerTransport};
use edge_agent::values::{IntIn, SecretUrl};
use edge_agent::wire::frame::{FrameHeader, FrameMessage, VERSION};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

const W: u32 = 640;
const H: u32 = 360;
const QUALITY: u8 = 85;

/// A frame with edges, gradients and texture, so JPEG sizes are camera-like.
fn test_frame() -> Vec<u8> {
    let mut v = Vec::with_capacity((W * H * 3) as usize);
    let mut seed = 0x1234_5678u32;
    for y in 0..H {
        for x in 0..W {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = (seed >> 27) as u8;
            let block = if ((x / 40) + (y / 40)) % 2 == 0 {
                60
            } else {
                0
            };
            v.push(
                ((x * 255 / W) as u8)
                    .wrapping_add(noise)
                    .wrapping_add(block),
            );
            v.push(((y * 255 / H) as u8).wrapping_add(noise));
            v.push((((x + y) % 256) as u8).wrapping_add(block));
        }
    }
    v
}

fn time_per_iter(iters: u32, mut f: impl FnMut()) -> Duration {
    f(); // warm-up
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed() / iters
}

/// Runs `n` buffers through an appsrc ! ... ! appsink pipeline, returns time per buffer.
fn gst_per_buffer(desc: &str, caps: gst::Caps, input: &[u8], n: u32) -> (Duration, usize) {
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time ! {desc} ! appsink name=sink sync=false"
    ))
    .expect("pipeline")
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    src.set_caps(Some(&caps));
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut out_len = 0;
    let mut run = |count: u32| {
        let t = Instant::now();
        for i in 0..count {
            let mut buf = gst::Buffer::from_slice(input.to_vec());
            buf.get_mut()
                .unwrap()
                .set_pts(gst::ClockTime::from_mseconds(i as u64 * 40));
            src.push_buffer(buf).unwrap();
            let sample = sink.pull_sample().unwrap_or_else(|_| {
                let err = pipeline
                    .bus()
                    .and_then(|b| b.pop_filtered(&[gst::MessageType::Error]));
                panic!("{desc}: no sample: {err:?}")
            });
            out_len = sample.buffer().unwrap().size();
        }
        t.elapsed()
    };
    run(3);
    let per = run(n) / n;
    let _ = src.end_of_stream();
    pipeline.set_state(gst::State::Null).unwrap();
    (per, out_len)
}

fn jpeg_bench() {
    gst::init().expect("GStreamer");
    let rgb = test_frame();
    let n = 100;
    let jpeg = encode_rgb(&rgb, W, H, QUALITY).unwrap();
    let enc = time_per_iter(n, || {
        std::hint::black_box(encode_rgb(&rgb, W, H, QUALITY).unwrap());
    });
    let enc444 = time_per_iter(n, || {
        let mut out = Vec::with_capacity(256 * 1024);
        let mut e = jpeg_encoder::Encoder::new(&mut out, QUALITY);
        e.set_sampling_factor(jpeg_encoder::SamplingFactor::F_1_1);
        e.encode(&rgb, W as u16, H as u16, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        std::hint::black_box(out);
    });
    let dec = time_per_iter(n, || {
        std::hint::black_box(decode_jpeg(&jpeg).unwrap());
    });
    let raw_caps = gst::Caps::builder("video/x-raw")
        .field("format", "RGB")
        .field("width", W as i32)
        .field("height", H as i32)
        .field("framerate", gst::Fraction::new(25, 1))
        .build();
    let (gst_enc, gst_len) = gst_per_buffer(
        &format!("jpegenc quality={QUALITY}"),
        raw_caps.clone(),
        &rgb,
        n,
    );
    let (gst_enc420, gst_len420) = gst_per_buffer(
        &format!("videoconvert ! video/x-raw,format=I420 ! jpegenc quality={QUALITY}"),
        raw_caps,
        &rgb,
        n,
    );
    let jpeg_caps = gst::Caps::builder("image/jpeg")
        .field("width", W as i32)
        .field("height", H as i32)
        .field("framerate", gst::Fraction::new(25, 1))
        .field("parsed", true)
        .build();
    let (gst_dec_i420, _) = gst_per_buffer("jpegdec", jpeg_caps.clone(), &jpeg, n);
    let (gst_dec, _) = gst_per_buffer(
        "jpegdec ! videoconvert ! video/x-raw,format=RGB",
        jpeg_caps,
        &jpeg,
        n,
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("\nJPEG, {W}x{H} RGB, quality {QUALITY}, {n} iterations, one thread");
    println!(
        "{:<54} {:>10} {:>10} {:>12}",
        "", "ms/frame", "bytes", "vs baseline"
    );
    println!(
        "{:<54} {:>10.2} {:>10} {:>12}",
        "encode 4:4:4 libjpeg-turbo (gst jpegenc, baseline)",
        ms(gst_enc),
        gst_len,
        "1.00x"
    );
    println!(
        "{:<54} {:>10.2} {:>10} {:>11.2}x",
        "encode 4:4:4 jpeg-encoder 0.7 (simd)",
        ms(enc444),
        "",
        gst_enc.as_secs_f64() / enc444.as_secs_f64()
    );
    println!(
        "{:<54} {:>10.2} {:>10} {:>12}",
        "encode 4:2:0 libjpeg-turbo (videoconvert+jpegenc, base)",
        ms(gst_enc420),
        gst_len420,
        "1.00x"
    );
    println!(
        "{:<54} {:>10.2} {:>10} {:>11.2}x",
        "encode 4:2:0 jpeg-encoder 0.7 (simd, in use)",
        ms(enc),
        jpeg.len(),
        gst_enc420.as_secs_f64() / enc.as_secs_f64()
    );
    println!(
        "{:<54} {:>10.2} {:>10} {:>11.2}x",
        "decode libjpeg-turbo to I420 (gst jpegdec)",
        ms(gst_dec_i420),
        "",
        gst_dec.as_secs_f64() / gst_dec_i420.as_secs_f64()
    );
    println!(
        "{:<54} {:>10.2} {:>10} {:>12}",
        "decode libjpeg-turbo to RGB (+videoconvert, baseline)",
        ms(gst_dec),
        "",
        "1.00x"
    );
    println!(
        "{:<54} {:>10.2} {:>10} {:>11.2}x",
        "decode zune-jpeg 0.5 to RGB",
        ms(dec),
        "",
        gst_dec.as_secs_f64() / dec.as_secs_f64()
    );
    println!("(ratio > 1: faster than libjpeg-turbo; GStreamer figures include a pipeline hop)");
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private Mosquitto with Nagle off on its side.
struct Mosquitto {
    child: Child,
    _dir: tempfile::TempDir,
    port: u16,
}

impl Mosquitto {
    fn start() -> Option<Mosquitto> {
        let dir = tempfile::tempdir().ok()?;
        let port = free_port();
        let conf = dir.path().join("m.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n\
                 max_queued_messages 100000\nlog_dest none\n"
            ),
        )
        .ok()?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Mosquitto {
            child,
            _dir: dir,
            port,
        })
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn frame(seq: u64, jpeg: &Bytes) -> FrameMessage {
    FrameMessage {
        header: FrameHeader {
            version: VERSION,
            device: "bench".into(),
            camera: "cam-1".into(),
            event_id: "cam-1".into(),
            seq,
            captured: unix_ns_now(),
            width: W,
            height: H,
            source_width: 0,
            source_height: 0,
            regions: Vec::new(),
            boxes: vec![],
            stamps: vec![],
            cold_start: false,
        },
        jpeg: jpeg.clone(),
    }
}

/// A 100 KB JPEG-shaped payload (the transport does not decode it).
fn payload_100k() -> Bytes {
    let mut v = vec![0x5Au8; 100 * 1024];
    v[0] = 0xFF;
    v[1] = 0xD8;
    let n = v.len();
    v[n - 2] = 0xFF;
    v[n - 1] = 0xD9;
    Bytes::from(v)
}

struct Figures {
    fps: f64,
    p50_ms: f64,
    p99_ms: f64,
    paced_p50_ms: f64,
    paced_p99_ms: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Publishes `n` frames (paced at `rate` per second, or as fast as possible) and
/// returns (elapsed from first publish to last consume, sorted latencies in ms).
async fn run_once(
    agent: &AgentTransport,
    frames: &mut edge_agent::transport::Frames,
    n: u64,
    rate: Option<f64>,
    seq0: u64,
) -> (Duration, Vec<f64>) {
    let jpeg = payload_100k();
    let start = Instant::now();
    let mut lat = Vec::with_capacity(n as usize);
    let consume = async {
        while (lat.len() as u64) < n {
            let d = tokio::time::timeout(Duration::from_secs(30), frames.next())
                .await
                .expect("frames keep coming")
                .expect("transport open");
            let now = unix_ns_now();
            lat.push(now.saturating_sub(d.msg.header.captured) as f64 / 1e6);
            d.ack().await.unwrap();
        }
        start.elapsed()
    };
    let publish = async {
        for i in 0..n {
            if let Some(r) = rate {
                let due = start + Duration::from_secs_f64(i as f64 / r);
                tokio::time::sleep_until(due.into()).await;
            } else if i % 16 == 0 {
                tokio::task::yield_now().await;
            }
            agent.publish_frame(frame(seq0 + i, &jpeg)).unwrap();
        }
    };
    let (elapsed, ()) = tokio::join!(consume, publish);
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (elapsed, lat)
}

async fn bench_transport(name: &str, cfg: TransportConfig, n: u64) -> Option<Figures> {
    let agent = match AgentTransport::connect(&cfg, "bench", &Default::default()).await {
        Ok(a) => a,
        Err(e) => {
            println!("{name}: skipped ({e})");
            return None;
        }
    };
    let mut wcfg = cfg.clone();
    if let Some(addr) = agent.broker_addr() {
        wcfg.embedded_port = IntIn::new(addr.port() as i64).unwrap();
    }
    let worker = WorkerTransport::connect(&wcfg, "bench", &Default::default())
        .await
        .ok()?;
    let mut frames = worker.frames().ok()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(agent.is_connected() && worker.is_connected()) {
        if Instant::now() > deadline {
            println!("{name}: skipped (broker not reachable)");
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Warm-up, then a flat-out run (throughput, latency under load), then a paced
    // run at 25 frames/s (latency of a lone frame).
    run_once(&agent, &mut frames, 20, None, 0).await;
    let (elapsed, lat) = run_once(&agent, &mut frames, n, None, 1000).await;
    let (_, paced) = run_once(&agent, &mut frames, 100, Some(25.0), 100_000).await;
    let dropped = agent.stats().get("dropped.frame_overflow");
    assert_eq!(
        dropped, 0,
        "{name}: the burst must fit the buffer (raise buffer_size)"
    );
    Some(Figures {
        fps: n as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
        paced_p50_ms: percentile(&paced, 0.5),
        paced_p99_ms: percentile(&paced, 0.99),
    })
}

fn base(kind: TransportKind) -> TransportConfig {
    let tag = format!("{:08x}", rand::random::<u32>());
    let mut c = TransportConfig {
        kind,
        topic_prefix: format!("bench-{tag}"),
        frames_queue: format!("bench-frames-{tag}"),
        events_exchange: format!("bench-events-{tag}"),
        ..TransportConfig::default()
    };
    c.buffer_size = IntIn::new(2048).unwrap();
    c.redeliver_max = IntIn::new(0).unwrap();
    c.prefetch = IntIn::new(32).unwrap();
    c.max_queue_length = IntIn::new(100_000).unwrap();
    c
}

async fn transport_bench() {
    let n: u64 = std::env::var("EDGE_BENCH_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mqtt_url =
        std::env::var("EDGE_TEST_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into());
    let amqp_url = std::env::var("EDGE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let private = Mosquitto::start();
    let mut rows: Vec<(String, Figures)> = Vec::new();

    if let Some(f) = bench_transport("embedded", base(TransportKind::Embedded), n).await {
        rows.push(("embedded rumqttd".into(), f));
    }
    let mut c = base(TransportKind::Mqtt);
    c.mqtt_url = SecretUrl::parse(&mqtt_url).unwrap();
    if let Some(f) = bench_transport("mosquitto", c, n).await {
        rows.push(("mosquitto (system, default config)".into(), f));
    }
    if let Some(m) = &private {
        let mut c = base(TransportKind::Mqtt);
        c.mqtt_url = SecretUrl::parse(&format!("mqtt://127.0.0.1:{}", m.port)).unwrap();
        if let Some(f) = bench_transport("mosquitto nodelay", c, n).await {
            rows.push(("mosquitto (private, set_tcp_nodelay)".into(), f));
        }
    }
    let mut c = base(TransportKind::Amqp);
    c.amqp_url = SecretUrl::parse(&amqp_url).unwrap();
    let amqp_cfg = c.clone();
    if let Some(f) = bench_transport("rabbitmq", c, n).await {
        rows.push(("rabbitmq (confirms, persistent)".into(), f));
    }
    cleanup_amqp(&amqp_url, &amqp_cfg).await;

    println!(
        "\nTransports: 100 KB frames, {n} published flat out, then 100 paced at 25/s; \
         QoS 1 / publisher confirms, publish window 32, prefetch 32, one worker"
    );
    println!(
        "{:<38} {:>9} {:>8} {:>10} {:>10} {:>11} {:>11}",
        "", "frames/s", "vs emb.", "p50 ms", "p99 ms", "paced p50", "paced p99"
    );
    let base_fps = rows.first().map(|r| r.1.fps).unwrap_or(f64::NAN);
    for (name, f) in &rows {
        println!(
            "{:<38} {:>9.0} {:>7.2}x {:>10.2} {:>10.2} {:>11.2} {:>11.2}",
            name,
            f.fps,
            f.fps / base_fps,
            f.p50_ms,
            f.p99_ms,
            f.paced_p50_ms,
            f.paced_p99_ms
        );
    }
    println!("(flat-out latency includes queueing behind earlier frames)");
}

async fn cleanup_amqp(url: &str, cfg: &TransportConfig) {
    let Ok(conn) = lapin::Connection::connect(url, Default::default()).await else {
        return;
    };
    if let Ok(ch) = conn.create_channel().await {
        edge_agent::transport::amqp::delete_topology(&ch, cfg, "bench").await;
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs it quickly.
    let quick =
        std::env::args().any(|a| a == "--test") || !std::env::args().any(|a| a == "--bench");
    if quick {
        println!("transport bench: skipped outside `cargo bench`");
        return;
    }
    jpeg_bench();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(transport_bench());
}
