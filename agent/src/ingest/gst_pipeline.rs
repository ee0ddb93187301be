//! Building one camera's GStreamer pipeline and handling its samples.
//!
//! ```text
//! rtsp://   rtspsrc ─ rtph26xdepay ─ h26xparse ─ decoder ─┐
//! file://…  uridecodebin (stops at H.264/H.265) ─ parse ─ decoder ─┤─ videoconvert ─ appsink
//! demo://   synthetic scene (raw I420) ──────────────────────────┘   (passthrough for
//!                                                                     I420/NV12 output)
//! ```
//! The decoder is `avdec_h26x` (software) or `nvv4l2decoder ! nvvidconv` (Jetson). The
//! appsink callback takes the luma plane of each sampled frame, downscales it for
//! motion and keeps a reference to the decoded frame for colour frames on demand.
//! Nothing here blocks a streaming thread in live mode, and nothing panics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use gstreamer as gst;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use gst::prelude::*;
use gst_video::prelude::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::frames::{downscale_plane, scaled_size, GreyFrame, Kept, Sampler};
use super::synthetic::Scene;
use super::{Decode, FrameLimit, IdleDecode, IngestError, RtspProtocol, Shared, SourceConfig};
use crate::telemetry::metrics;
use crate::values::secret::redact_text;

/// How frames leave the pipeline.
#[derive(Clone, Debug)]
pub(crate) enum Mode {
    /// A camera: paced by the source, grey frames at the analysis rate, dropped (and
    /// counted) when motion is behind.
    Live,
    /// A file run as fast as possible, waiting for motion rather than dropping; every
    /// frame delivered unless `sample` is set.
    Replay { sample: bool },
}

/// The decoder family that will decode a camera's H.264/H.265.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DecoderKind {
    Software,
    Nvidia,
}

impl DecoderKind {
    fn family(self) -> &'static str {
        match self {
            DecoderKind::Software => "software (avdec)",
            DecoderKind::Nvidia => "nvidia (nvv4l2decoder)",
        }
    }

    pub(crate) fn describe(self, codec: Codec) -> &'static str {
        match (self, codec) {
            (DecoderKind::Software, Codec::H264) => "avdec_h264",
            (DecoderKind::Software, Codec::H265) => "avdec_h265",
            (DecoderKind::Nvidia, _) => "nvv4l2decoder",
        }
    }
}

/// `auto` takes the Jetson decoder when both of its elements exist.
pub(crate) fn resolve_decoder(decode: Decode, nvidia_present: bool) -> Option<DecoderKind> {
    match decode {
        Decode::Software => Some(DecoderKind::Software),
        Decode::Nvidia if nvidia_present => Some(DecoderKind::Nvidia),
        Decode::Nvidia => None,
        Decode::Auto if nvidia_present => Some(DecoderKind::Nvidia),
        Decode::Auto => Some(DecoderKind::Software),
    }
}

/// Test-only: a gst-launch fragment used as the "hardware" decoder in place of
/// `nvv4l2decoder ! nvvidconv`, so the fallback can be tested where no Jetson decoder
/// exists (e.g. `identity`, which passes H.264 on and fails to negotiate at run time).
pub(crate) const TEST_HW_DECODER_ENV: &str = "EDGE_AGENT_TEST_HW_DECODER";

fn test_hw_decoder() -> Option<String> {
    std::env::var(TEST_HW_DECODER_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())
}

fn nvidia_present() -> bool {
    if test_hw_decoder().is_some() {
        return true;
    }
    gst::ElementFactory::find("nvv4l2decoder").is_some()
        && gst::ElementFactory::find("nvvidconv").is_some()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Codec {
    H264,
    H265,
}

impl Codec {
    /// From RTP `encoding-name` or from a caps name.
    fn from_name(name: &str) -> Option<Codec> {
        match name.to_ascii_uppercase().as_str() {
            "H264" | "VIDEO/X-H264" => Some(Codec::H264),
            "H265" | "VIDEO/X-H265" => Some(Codec::H265),
            _ => None,
        }
    }
}

/// State of one pipeline run: what the supervisor watches, set from GStreamer threads.
pub(crate) struct Attempt {
    /// The first reason this run ended; later ones are ignored.
    fault: Mutex<Option<IngestError>>,
    pub(crate) notify: tokio::sync::Notify,
    pub(crate) frames: AtomicU64,
    started: Instant,
    /// Milliseconds after `started` of the last frame.
    last_frame_ms: AtomicU64,
    /// Streams the source offered, for "not video" errors.
    streams_seen: Mutex<Vec<String>>,
    video_linked: AtomicBool,
    /// Source size once known.
    pub(crate) size: Mutex<Option<(u32, u32)>>,
    /// The decoder element actually linked, once the codec is known.
    pub(crate) decoder: Mutex<Option<String>>,
    /// Ends a replay's wait on a full motion queue.
    pub(crate) cancel: CancellationToken,
}

impl Attempt {
    pub(crate) fn new() -> Self {
        Self {
            fault: Mutex::new(None),
            notify: tokio::sync::Notify::new(),
            frames: AtomicU64::new(0),
            started: Instant::now(),
            last_frame_ms: AtomicU64::new(0),
            streams_seen: Mutex::new(Vec::new()),
            video_linked: AtomicBool::new(false),
            size: Mutex::new(None),
            decoder: Mutex::new(None),
            cancel: CancellationToken::new(),
        }
    }

    pub(crate) fn fail(&self, err: IngestError) {
        let mut f = lock(&self.fault);
        if f.is_none() {
            *f = Some(err);
        }
        drop(f);
        self.notify.notify_one();
    }

    pub(crate) fn take_fault(&self) -> Option<IngestError> {
        lock(&self.fault).take()
    }

    /// Time since the last frame (or since the start when none came yet).
    pub(crate) fn since_last_frame(&self) -> Duration {
        let last = Duration::from_millis(self.last_frame_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_frame_ms.store(ms, Ordering::Relaxed);
    }

    fn saw_stream(&self, what: String) {
        lock(&self.streams_seen).push(what);
    }

    fn streams(&self) -> String {
        let s = lock(&self.streams_seen);
        if s.is_empty() {
            "nothing".into()
        } else {
            s.join(", ")
        }
    }
}

pub(crate) use crate::sync::lock;

pub(crate) struct Built {
    pub(crate) pipeline: gst::Pipeline,
    pub(crate) decoder: String,
    /// The pipeline decodes on the hardware decoder.
    pub(crate) hardware: bool,
}

/// Builds (but does not start) the pipeline of one camera.
pub(crate) fn build(
    cfg: &SourceConfig,
    mode: Mode,
    shared: &Arc<Shared>,
    attempt: &Arc<Attempt>,
    tx: mpsc::Sender<GreyFrame>,
    allow_hw: bool,
) -> Result<Built, IngestError> {
    let id = shared.id.clone();
    let build_err = |e: &dyn std::fmt::Display| build_error(&id, e);
    gst::init().map_err(|e| build_err(&e))?;
    let scheme = cfg.url.scheme().to_ascii_lowercase();
    // The synthetic scene is raw video: no decoder to choose.
    let kind = if scheme == "demo" {
        DecoderKind::Software
    } else {
        // After repeated hardware failures `auto` means software for a while; an
        // explicit `nvidia` stays on the hardware decoder.
        let decode = match cfg.decode {
            Decode::Auto if !allow_hw => Decode::Software,
            d => d,
        };
        resolve_decoder(decode, nvidia_present()).ok_or_else(|| IngestError::NoNvidiaDecoder {
            camera: id.to_string(),
        })?
    };
    let live = matches!(mode, Mode::Live);
    let sync = live && !scheme.starts_with("rtsp");

    let pipeline = gst::Pipeline::with_name(&format!("camera-{id}"));
    let convert = make(&id, "videoconvert")?;
    let appsink = gst_app::AppSink::builder()
        .name("sink")
        .caps(
            &gst_video::VideoCapsBuilder::new()
                .format_list([
                    gst_video::VideoFormat::I420,
                    gst_video::VideoFormat::Nv12,
                    gst_video::VideoFormat::Yv12,
                    gst_video::VideoFormat::Nv21,
                    gst_video::VideoFormat::Y42b,
                    gst_video::VideoFormat::Y444,
                    gst_video::VideoFormat::Gray8,
                ])
                .build(),
        )
        .max_buffers(2)
        // A camera never waits for us; a replay waits for motion instead of losing frames.
        .drop(live)
        .sync(sync)
        .enable_last_sample(false)
        .build();
    pipeline
        .add_many([&convert, appsink.upcast_ref()])
        .map_err(|e| build_err(&e))?;
    convert.link(&appsink).map_err(|e| build_err(&e))?;

    let decoder = if scheme == "demo" {
        let scene = Scene::from_demo_url(cfg.url.expose());
        let frames = (!live).then_some(scene.period);
        let src = scene.source(live, frames).map_err(|e| build_err(&e))?;
        pipeline.add(&src).map_err(|e| build_err(&e))?;
        src.link(&convert).map_err(|e| build_err(&e))?;
        attempt.video_linked.store(true, Ordering::Relaxed);
        "none (synthetic scene)".to_string()
    } else if scheme.starts_with("rtsp") {
        add_rtsp_source(cfg, &pipeline, &convert, kind, shared, attempt)?;
        kind.family().to_string()
    } else {
        add_uri_source(cfg, &pipeline, &convert, kind, shared, attempt)?;
        kind.family().to_string()
    };

    // Before the key-frame gate: the clip needs the delta frames the gate drops.
    super::encoded::install(&pipeline, shared.encoded.clone());
    if cfg.idle_decode == IdleDecode::Keyframes {
        install_keyframe_gate(&pipeline, shared.idle.clone());
    }
    install_sample_handler(&appsink, cfg, mode, kind, shared, attempt, tx);
    install_bus_handler(&pipeline, shared, attempt);
    Ok(Built {
        pipeline,
        decoder,
        hardware: kind == DecoderKind::Nvidia && scheme != "demo",
    })
}

/// Idle decode: while `idle` is set, only key frames leave the H.264/H.265 parser for
/// the decoder. The gate opens and closes at key frames only, so the decoder never gets
/// a delta frame whose reference it did not see (no corrupt frames, no false motion).
/// Parsers are added as the stream's codec becomes known, hence the element-added hook.
fn install_keyframe_gate(pipeline: &gst::Pipeline, idle: Arc<AtomicBool>) {
    super::encoded::on_parser_src(pipeline, move |pad| {
        let idle = idle.clone();
        let skipping = AtomicBool::new(false);
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let Some(buf) = info.buffer() else {
                return gst::PadProbeReturn::Ok;
            };
            if !buf.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                skipping.store(idle.load(Ordering::Relaxed), Ordering::Relaxed);
                return gst::PadProbeReturn::Ok;
            }
            if skipping.load(Ordering::Relaxed) {
                gst::PadProbeReturn::Drop
            } else {
                gst::PadProbeReturn::Ok
            }
        });
    });
}

/// A pipeline-building failure of `camera`; GStreamer messages may quote the URL.
fn build_error(camera: &str, e: impl std::fmt::Display) -> IngestError {
    IngestError::Build {
        camera: camera.to_string(),
        message: redact_text(&e.to_string()),
    }
}

fn make(camera: &str, factory: &str) -> Result<gst::Element, IngestError> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| IngestError::MissingElement {
            camera: camera.to_string(),
            element: factory.to_string(),
        })
}

/// parse ─ decoder (─ nvvidconv ─ system-memory caps), added to the pipeline, linked,
/// in the pipeline's state. Returns (first, last).
fn add_decoder(
    camera: &str,
    pipeline: &gst::Pipeline,
    kind: DecoderKind,
    codec: Codec,
    depay: bool,
    attempt: &Attempt,
) -> Result<(gst::Element, gst::Element), IngestError> {
    let mut chain = Vec::new();
    if depay {
        chain.push(make(
            camera,
            match codec {
                Codec::H264 => "rtph264depay",
                Codec::H265 => "rtph265depay",
            },
        )?);
    }
    let parse = make(
        camera,
        match codec {
            Codec::H264 => "h264parse",
            Codec::H265 => "h265parse",
        },
    )?;
    // SPS/PPS (and VPS) before every IDR frame: a decoder that starts mid-stream, or
    // is restarted, gets its parameters with the next keyframe (nvv4l2decoder needs it).
    parse.set_property("config-interval", -1i32);
    chain.push(parse);
    match kind {
        DecoderKind::Software => chain.push(make(
            camera,
            match codec {
                Codec::H264 => "avdec_h264",
                Codec::H265 => "avdec_h265",
            },
        )?),
        DecoderKind::Nvidia if test_hw_decoder().is_some() => {
            let desc = test_hw_decoder().unwrap_or_default();
            let bin = gst::parse::bin_from_description(&desc, true)
                .map_err(|e| build_error(camera, format!("{TEST_HW_DECODER_ENV}={desc}: {e}")))?;
            chain.push(bin.upcast());
        }
        DecoderKind::Nvidia => {
            chain.push(make(camera, "nvv4l2decoder")?);
            chain.push(make(camera, "nvvidconv")?);
            let filter = make(camera, "capsfilter")?;
            // System memory so the luma plane can be read directly.
            filter.set_property(
                "caps",
                gst_video::VideoCapsBuilder::new()
                    .format_list([gst_video::VideoFormat::Nv12, gst_video::VideoFormat::I420])
                    .build(),
            );
            chain.push(filter);
        }
    }
    let err = |e: &dyn std::fmt::Display| build_error(camera, e);
    pipeline.add_many(&chain).map_err(|e| err(&e))?;
    gst::Element::link_many(&chain).map_err(|e| err(&e))?;
    for e in &chain {
        e.sync_state_with_parent().map_err(|e| err(&e))?;
    }
    let first = chain[0].clone();
    let last = chain[chain.len() - 1].clone();
    *lock(&attempt.decoder) = Some(kind.describe(codec).to_string());
    Ok((first, last))
}

fn add_rtsp_source(
    cfg: &SourceConfig,
    pipeline: &gst::Pipeline,
    convert: &gst::Element,
    kind: DecoderKind,
    shared: &Arc<Shared>,
    attempt: &Arc<Attempt>,
) -> Result<(), IngestError> {
    let id = shared.id.clone();
    let src = make(&id, "rtspsrc")?;
    src.set_property("name", "rtspsrc");
    src.set_property("location", cfg.url.expose());
    src.set_property(
        "latency",
        cfg.latency.get().as_millis().min(u32::MAX as u128) as u32,
    );
    src.set_property_from_str(
        "protocols",
        match cfg.protocol {
            RtspProtocol::Tcp => "tcp",
            RtspProtocol::Udp => "udp",
        },
    );
    pipeline.add(&src).map_err(|e| build_error(&id, e))?;

    // Set up only the first H.264/H.265 video stream; remember what else was offered.
    let chosen = Arc::new(AtomicBool::new(false));
    let a = attempt.clone();
    src.connect("select-stream", false, move |args| {
        let caps = args.get(2).and_then(|v| v.get::<gst::Caps>().ok());
        let s = caps.as_ref().and_then(|c| c.structure(0));
        let media = s.and_then(|s| s.get::<&str>("media").ok()).unwrap_or("?");
        let enc = s
            .and_then(|s| s.get::<&str>("encoding-name").ok())
            .unwrap_or("?");
        a.saw_stream(format!("{media}/{enc}"));
        let take = media == "video"
            && Codec::from_name(enc).is_some()
            && !chosen.swap(true, Ordering::Relaxed);
        Some(take.to_value())
    });

    let weak = pipeline.downgrade();
    let conv = convert.clone();
    let a = attempt.clone();
    src.connect_pad_added(move |_src, pad| {
        let Some(pipeline) = weak.upgrade() else {
            return;
        };
        let caps = pad.current_caps().or_else(|| Some(pad.query_caps(None)));
        let s = caps.as_ref().and_then(|c| c.structure(0));
        let media = s.and_then(|s| s.get::<&str>("media").ok()).unwrap_or("");
        let enc = s
            .and_then(|s| s.get::<&str>("encoding-name").ok())
            .unwrap_or("");
        let codec = match (media, Codec::from_name(enc)) {
            ("video", Some(c)) => c,
            _ => return,
        };
        if a.video_linked.swap(true, Ordering::Relaxed) {
            return;
        }
        let linked =
            add_decoder(&id, &pipeline, kind, codec, true, &a).and_then(|(first, last)| {
                last.link(&conv).map_err(|e| build_error(&id, e))?;
                let sink = first
                    .static_pad("sink")
                    .ok_or_else(|| build_error(&id, "depayloader without a sink pad"))?;
                pad.link(&sink).map_err(|e| {
                    build_error(&id, format!("linking the RTSP video stream: {e:?}"))
                })?;
                Ok(())
            });
        if let Err(e) = linked {
            a.fail(e);
        }
    });
    Ok(())
}

fn add_uri_source(
    cfg: &SourceConfig,
    pipeline: &gst::Pipeline,
    convert: &gst::Element,
    kind: DecoderKind,
    shared: &Arc<Shared>,
    attempt: &Arc<Attempt>,
) -> Result<(), IngestError> {
    let id = shared.id.clone();
    let src = make(&id, "uridecodebin")?;
    src.set_property("name", "uridecodebin");
    src.set_property("uri", cfg.url.expose());
    // Stop at H.264/H.265 so the decoder is ours to choose; other video is decoded by
    // uridecodebin. Non-video streams are not decoded at all (autoplug-continue below).
    src.set_property(
        "caps",
        "video/x-h264; video/x-h265; video/x-raw(ANY)"
            .parse::<gst::Caps>()
            .unwrap_or_else(|_| gst::Caps::new_any()),
    );
    src.connect("autoplug-continue", false, |args| {
        let caps = args.get(2).and_then(|v| v.get::<gst::Caps>().ok());
        let name = caps
            .as_ref()
            .and_then(|c| c.structure(0))
            .map(|s| s.name().to_string())
            .unwrap_or_default();
        let stop = ["audio/", "text/", "subpicture/", "closedcaption/"]
            .iter()
            .any(|p| name.starts_with(p));
        Some((!stop).to_value())
    });
    pipeline.add(&src).map_err(|e| build_error(&id, e))?;

    let weak = pipeline.downgrade();
    let conv = convert.clone();
    let a = attempt.clone();
    let camera = id.clone();
    src.connect_pad_added(move |_src, pad| {
        let Some(pipeline) = weak.upgrade() else {
            return;
        };
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let name = caps
            .structure(0)
            .map(|s| s.name().to_string())
            .unwrap_or_default();
        a.saw_stream(name.clone());
        let result = if name.starts_with("video/") && !a.video_linked.swap(true, Ordering::Relaxed)
        {
            link_uri_video(&camera, &pipeline, pad, &name, &conv, kind, &a)
        } else {
            // Not ours: consume it so it never holds up the demuxer.
            link_to_fakesink(&camera, &pipeline, pad)
        };
        if let Err(e) = result {
            a.fail(e);
        }
    });
    let a = attempt.clone();
    let camera = id.clone();
    src.connect_no_more_pads(move |_| {
        if !a.video_linked.load(Ordering::Relaxed) {
            a.fail(IngestError::NotVideo {
                camera: camera.to_string(),
                found: a.streams(),
            });
        }
    });
    Ok(())
}

fn link_uri_video(
    camera: &str,
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    name: &str,
    conv: &gst::Element,
    kind: DecoderKind,
    attempt: &Attempt,
) -> Result<(), IngestError> {
    let err = |m: String| build_error(camera, m);
    let target = match Codec::from_name(name) {
        Some(codec) => {
            let (first, last) = add_decoder(camera, pipeline, kind, codec, false, attempt)?;
            last.link(conv).map_err(|e| err(e.to_string()))?;
            first
        }
        None if name == "video/x-raw" => conv.clone(),
        None => {
            return Err(IngestError::Unsupported {
                camera: camera.to_string(),
                what: name.to_string(),
            })
        }
    };
    let sink = target
        .static_pad("sink")
        .ok_or_else(|| err("no sink pad".into()))?;
    pad.link(&sink)
        .map_err(|e| err(format!("linking the video stream: {e:?}")))?;
    Ok(())
}

fn link_to_fakesink(
    camera: &str,
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
) -> Result<(), IngestError> {
    let sink = make(camera, "fakesink")?;
    sink.set_property("sync", false);
    sink.set_property("async", false);
    let err = |m: String| build_error(camera, m);
    pipeline.add(&sink).map_err(|e| err(e.to_string()))?;
    sink.sync_state_with_parent()
        .map_err(|e| err(e.to_string()))?;
    let sp = sink
        .static_pad("sink")
        .ok_or_else(|| err("fakesink without a sink pad".into()))?;
    pad.link(&sp).map_err(|e| err(format!("{e:?}")))?;
    Ok(())
}

/// Per-pipeline state of the sample callback.
struct SampleState {
    sampler: Sampler,
    /// Frames a second the sampler lets through (0: every frame).
    analysis_fps: u32,
    info: Option<(gst::Caps, gst_video::VideoInfo)>,
    limit: FrameLimit,
    /// The stream's frames are beyond `limit`: the attempt has failed.
    refused: bool,
}

#[allow(clippy::too_many_arguments)]
fn install_sample_handler(
    appsink: &gst_app::AppSink,
    cfg: &SourceConfig,
    mode: Mode,
    kind: DecoderKind,
    shared: &Arc<Shared>,
    attempt: &Arc<Attempt>,
    tx: mpsc::Sender<GreyFrame>,
) {
    let every_frame = matches!(mode, Mode::Replay { sample: false });
    let live = matches!(mode, Mode::Live);
    let analysis_fps = if every_frame {
        0
    } else {
        cfg.analysis_fps.as_u32()
    };
    let mut state = SampleState {
        sampler: Sampler::new(analysis_fps),
        analysis_fps,
        info: None,
        limit: cfg.frame_limit,
        refused: false,
    };
    let analysis_width = cfg.analysis_width.as_u32();
    // The Jetson decoder's buffers come from a small pool: copy kept frames so the ring
    // can never starve it. Software decoders' buffers are only referenced.
    let copy_kept = kind == DecoderKind::Nvidia;
    let shared = shared.clone();
    let attempt = attempt.clone();

    // Buffers reaching the appsink, to count what its queue drops (pulled vs arrived).
    if let Some(pad) = appsink.static_pad("sink") {
        let s = shared.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            s.sink_in.fetch_add(1, Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        });
    }

    appsink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                let grey = on_sample(
                    &shared,
                    &attempt,
                    &mut state,
                    sample,
                    analysis_width,
                    copy_kept,
                );
                let Some(grey) = grey else {
                    if state.refused {
                        return Err(gst::FlowError::Error);
                    }
                    return Ok(gst::FlowSuccess::Ok);
                };
                if live {
                    deliver_live(&shared, &tx, grey);
                    Ok(gst::FlowSuccess::Ok)
                } else {
                    deliver_waiting(&shared, &attempt, &tx, grey)
                }
            })
            .build(),
    );
}

/// Counts the frame, keeps it in the ring when sampled and returns the grey frame.
fn on_sample(
    shared: &Shared,
    attempt: &Attempt,
    state: &mut SampleState,
    sample: gst::Sample,
    analysis_width: u32,
    copy_kept: bool,
) -> Option<GreyFrame> {
    let captured = SystemTime::now();
    shared.sink_pulled.fetch_add(1, Ordering::Relaxed);
    shared.frames.fetch_add(1, Ordering::Relaxed);
    shared.frames_metric.inc();
    attempt.touch();
    let seq = shared.seq.fetch_add(1, Ordering::Relaxed);

    let buffer = sample.buffer()?;
    let caps = sample.caps()?;
    let fresh = match &state.info {
        Some((c, _)) => c.as_ptr() != caps.as_ptr() && c != caps,
        None => true,
    };
    if fresh {
        let info = gst_video::VideoInfo::from_caps(caps).ok()?;
        // Checked once per caps, before a frame of that size is copied or scaled.
        if let Err(reason) = state.limit.check(info.width(), info.height()) {
            state.refused = true;
            attempt.fail(IngestError::FrameSize {
                camera: shared.id.to_string(),
                reason,
            });
            return None;
        }
        *lock(&attempt.size) = Some((info.width(), info.height()));
        state.info = Some((caps.to_owned(), info));
    }
    if attempt.frames.fetch_add(1, Ordering::Relaxed) == 0 {
        // Status is right before the first frame can reach anyone.
        let decoder = lock(&attempt.decoder).clone();
        let mut status = lock(&shared.status);
        status.source_size = *lock(&attempt.size);
        if decoder.is_some() {
            status.decoder = decoder;
        }
        drop(status);
        attempt.notify.notify_one();
    }

    let pts = buffer.pts().map(|t| Duration::from_nanos(t.nseconds()));
    let t = pts.unwrap_or_else(|| attempt.started.elapsed());
    if !state.sampler.take(t) {
        shared.sampled_out.fetch_add(1, Ordering::Relaxed);
        return None;
    }

    let (_, info) = state.info.as_ref()?;
    let (gw, gh) = scaled_size(info.width(), info.height(), analysis_width);
    let data = {
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, info).ok()?;
        let stride = frame.plane_stride()[0].max(0) as usize;
        let plane = frame.plane_data(0).ok()?;
        downscale_plane(plane, stride, info.width(), info.height(), gw, gh)
    };
    let fps = analysis_rate(state.analysis_fps, info.fps());

    let kept = if copy_kept {
        gst::Sample::builder()
            .buffer(&buffer.copy_deep().ok()?)
            .caps(&caps.to_owned())
            .build()
    } else {
        sample.clone()
    };
    lock(&shared.ring).push(Kept {
        seq,
        captured,
        frame: kept,
    });
    shared.delivered.fetch_add(1, Ordering::Relaxed);
    Some(GreyFrame {
        camera: shared.id.clone(),
        seq,
        captured,
        pts,
        width: gw,
        height: gh,
        fps,
        data,
    })
}

/// The analysis rate of a source that states none: the rate the motion detector's
/// per-frame weights are stated at (`motion::config::TUNED_FPS`, which a test checks).
pub const UNKNOWN_RATE_FPS: u32 = 5;

/// Frames a second reaching motion: the sampler's rate, or the source's where that is
/// known and lower (every frame: the source's); unknown (variable rate, 0/1) and no
/// sampler rate: 5 fps, the rate the detector was tuned at.
fn analysis_rate(sampler_fps: u32, source: gst::Fraction) -> u32 {
    let (n, d) = (source.numer(), source.denom());
    let source = (n > 0 && d > 0).then(|| ((f64::from(n) / f64::from(d)).round() as u32).max(1));
    match (sampler_fps, source) {
        (0, Some(s)) => s,
        (0, None) => UNKNOWN_RATE_FPS,
        (a, Some(s)) => a.min(s),
        (a, None) => a,
    }
}

/// Live: never block the streaming thread; a full motion queue drops the frame.
fn deliver_live(shared: &Shared, tx: &mpsc::Sender<GreyFrame>, grey: GreyFrame) {
    match tx.try_send(grey) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            shared.queue_full.fetch_add(1, Ordering::Relaxed);
            shared.queue_full_metric.inc();
            if metrics::should_log(
                &format!("ingest-queue-full-{}", shared.id),
                Duration::from_secs(10),
            ) {
                tracing::warn!(camera = %shared.id, "Motion queue full: dropping grey frames.");
            }
        }
        // Nobody listens any more (shutting down): the frame has nowhere to go.
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}

/// Replay: wait for motion to take the frame, unless the run is cancelled.
fn deliver_waiting(
    shared: &Shared,
    attempt: &Attempt,
    tx: &mpsc::Sender<GreyFrame>,
    grey: GreyFrame,
) -> Result<gst::FlowSuccess, gst::FlowError> {
    let sent = futures::executor::block_on(async {
        tokio::select! {
            r = tx.send(grey) => r.is_ok(),
            _ = attempt.cancel.cancelled() => false,
        }
    });
    if sent {
        Ok(gst::FlowSuccess::Ok)
    } else {
        tracing::debug!(camera = %shared.id, "Replay stopped while delivering a frame.");
        Err(gst::FlowError::Flushing)
    }
}

/// Turns bus messages into faults of the attempt. Messages are handled on the thread
/// that posts them and then dropped, so the bus never queues anything.
fn install_bus_handler(pipeline: &gst::Pipeline, shared: &Arc<Shared>, attempt: &Arc<Attempt>) {
    let Some(bus) = pipeline.bus() else { return };
    let camera = shared.id.clone();
    let a = attempt.clone();
    bus.set_sync_handler(move |_, msg| {
        use gst::MessageView;
        match msg.view() {
            MessageView::Error(e) => {
                let src = msg
                    .src()
                    .map(|s| s.name().to_string())
                    .unwrap_or_else(|| "pipeline".into());
                let debug = e
                    .debug()
                    .map(|d| d.lines().last().unwrap_or_default().trim().to_string())
                    .filter(|d| !d.is_empty());
                let message = match debug {
                    Some(d) => format!("{src}: {} ({d})", e.error()),
                    None => format!("{src}: {}", e.error()),
                };
                let err = if !a.video_linked.load(Ordering::Relaxed)
                    && !lock(&a.streams_seen).is_empty()
                {
                    // The source connected but offered nothing we can decode.
                    IngestError::NotVideo {
                        camera: camera.to_string(),
                        found: a.streams(),
                    }
                } else {
                    IngestError::Pipeline {
                        camera: camera.to_string(),
                        message: redact_text(&message),
                    }
                };
                a.fail(err);
            }
            MessageView::Eos(_) => a.fail(IngestError::EndOfStream {
                camera: camera.to_string(),
            }),
            MessageView::Warning(w)
                if metrics::should_log(
                    &format!("ingest-warn-{camera}"),
                    Duration::from_secs(10),
                ) =>
            {
                let text = redact_text(&w.error().to_string());
                tracing::warn!(camera = %camera, warning = %text, "Camera pipeline warning.");
            }
            _ => {}
        }
        gst::BusSyncReply::Drop
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_analysis_rate_is_the_lower_of_the_setting_and_the_source() {
        // (sampler fps, source rate, rate motion sees)
        let rows = [
            (15, gst::Fraction::new(30, 1), 15),
            (15, gst::Fraction::new(10, 1), 10),
            (15, gst::Fraction::new(30000, 1001), 15),
            (15, gst::Fraction::new(25, 2), 13),
            (15, gst::Fraction::new(0, 1), 15),
            (0, gst::Fraction::new(25, 1), 25),
            (0, gst::Fraction::new(0, 1), 5),
            (5, gst::Fraction::new(1, 2), 1),
        ];
        for (sampler, source, want) in rows {
            assert_eq!(
                analysis_rate(sampler, source),
                want,
                "{sampler} fps from a {source} source"
            );
        }
    }

    #[test]
    fn decoder_choice_follows_the_setting_and_what_is_installed() {
        let rows = [
            (Decode::Auto, true, Some(DecoderKind::Nvidia)),
            (Decode::Auto, false, Some(DecoderKind::Software)),
            (Decode::Software, true, Some(DecoderKind::Software)),
            (Decode::Nvidia, true, Some(DecoderKind::Nvidia)),
            (Decode::Nvidia, false, None),
        ];
        for (d, present, want) in rows {
            assert_eq!(resolve_decoder(d, present), want, "{d:?} nvidia={present}");
        }
    }

    #[test]
    fn codecs_are_recognised_from_rtp_and_caps_names() {
        assert_eq!(Codec::from_name("H264"), Some(Codec::H264));
        assert_eq!(Codec::from_name("video/x-h265"), Some(Codec::H265));
        assert_eq!(Codec::from_name("JPEG"), None);
    }
}
