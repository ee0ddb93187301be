//! An in-process RTSP server for tests (gst-rtsp-server on 127.0.0.1, a free port),
//! serving the synthetic scene (H.264 or H.265), a file, or audio only. It can be
//! stopped (listening socket closed, clients cut off), restarted on the same port, and
//! frozen (connection kept, no more data) to simulate a hung camera.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use edge_agent::ingest::synthetic::Scene;
use gstreamer as gst;
use gstreamer_rtsp_server as rtsp;

use gst::glib;
use gst::prelude::*;
use rtsp::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
}

/// What the server streams.
#[derive(Clone, Debug)]
pub enum Media {
    Scene(Scene, Codec),
    /// An MP4 file with H.264 video, sent as it is (no re-encoding).
    File(PathBuf),
    /// A stream with no video at all.
    AudioOnly,
    /// A Motion-JPEG AVI (what `scripts/stationary_clip.py` writes), decoded and
    /// re-encoded as H.264 at the clip's own pace, as a camera sends it.
    Mjpeg(PathBuf),
}

impl From<Scene> for Media {
    fn from(s: Scene) -> Self {
        Media::Scene(s, Codec::H264)
    }
}

impl Media {
    fn launch(&self) -> String {
        match self {
            Media::Scene(scene, codec) => {
                let enc = match codec {
                    Codec::H264 => format!(
                        "x264enc tune=zerolatency speed-preset=ultrafast key-int-max={} ! \
                         valve name=freeze ! rtph264pay name=pay0 pt=96 config-interval=-1",
                        scene.fps
                    ),
                    Codec::H265 => format!(
                        "x265enc tune=zerolatency speed-preset=ultrafast key-int-max={} ! \
                         valve name=freeze ! rtph265pay name=pay0 pt=96 config-interval=-1",
                        scene.fps
                    ),
                };
                format!("( {} ! {enc} )", scene.launch_fragment("scene", true))
            }
            Media::File(path) => format!(
                "( filesrc location=\"{}\" ! qtdemux ! h264parse ! valve name=freeze ! \
                 rtph264pay name=pay0 pt=96 config-interval=-1 )",
                path.display()
            ),
            Media::Mjpeg(path) => format!(
                "( filesrc location=\"{}\" ! avidemux ! jpegdec ! videoconvert ! \
                 identity sync=true ! x264enc tune=zerolatency speed-preset=ultrafast \
                 key-int-max=15 ! valve name=freeze ! \
                 rtph264pay name=pay0 pt=96 config-interval=-1 )",
                path.display()
            ),
            Media::AudioOnly => {
                "( audiotestsrc is-live=true ! mulawenc ! rtppcmupay name=pay0 pt=0 )".into()
            }
        }
    }
}

pub struct RtspTestServer {
    server: rtsp::RTSPServer,
    factory: rtsp::RTSPMediaFactory,
    context: glib::MainContext,
    main_loop: glib::MainLoop,
    thread: Option<JoinHandle<()>>,
    source: Mutex<Option<glib::SourceId>>,
    mounted: Mutex<Vec<String>>,
    valves: Arc<Mutex<Vec<glib::WeakRef<gst::Element>>>>,
    port: u16,
}

impl RtspTestServer {
    /// Starts serving `media` at any path asked through [`RtspTestServer::url`].
    pub fn start(media: impl Into<Media>) -> Self {
        gst::init().expect("GStreamer initialises");
        let media = media.into();
        let context = glib::MainContext::new();
        let main_loop = glib::MainLoop::new(Some(&context), false);
        let server = rtsp::RTSPServer::new();
        server.set_address("127.0.0.1");
        server.set_service("0");
        let factory = rtsp::RTSPMediaFactory::new();
        factory.set_launch(&media.launch());
        // One encoder for every client: four cameras on one path cost one stream.
        factory.set_shared(true);
        let valves: Arc<Mutex<Vec<glib::WeakRef<gst::Element>>>> = Arc::default();
        let scene = match &media {
            Media::Scene(s, _) => Some(s.clone()),
            _ => None,
        };
        let v = valves.clone();
        factory.connect_media_configure(move |_, m| {
            let Ok(bin) = m.element().downcast::<gst::Bin>() else {
                return;
            };
            if let (Some(scene), Some(src)) = (&scene, bin.by_name("scene")) {
                scene.paint_on(&src);
            }
            if let Some(valve) = bin.by_name("freeze") {
                v.lock().unwrap().push(valve.downgrade());
            }
        });
        let source = server
            .attach(Some(&context))
            .expect("RTSP test server binds 127.0.0.1");
        let port = server.bound_port() as u16;
        let ml = main_loop.clone();
        let ctx = context.clone();
        let thread = std::thread::Builder::new()
            .name("rtsp-test-server".into())
            .spawn(move || {
                ctx.with_thread_default(|| ml.run())
                    .expect("the server context is free");
            })
            .expect("spawn the RTSP server thread");
        Self {
            server,
            factory,
            context,
            main_loop,
            thread: Some(thread),
            source: Mutex::new(Some(source)),
            mounted: Mutex::new(Vec::new()),
            valves,
            port,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rtsp://127.0.0.1:PORT{path}`, serving the media there.
    pub fn url(&self, path: &str) -> String {
        let mut mounted = self.mounted.lock().unwrap();
        if !mounted.iter().any(|p| p == path) {
            if let Some(mounts) = self.server.mount_points() {
                mounts.add_factory(path, self.factory.clone());
            }
            mounted.push(path.to_string());
        }
        format!("rtsp://127.0.0.1:{}{path}", self.port)
    }

    /// Closes the listening socket and cuts off every client, like a camera that died.
    pub fn stop(&self) {
        if let Some(id) = self.source.lock().unwrap().take() {
            if let Some(src) = self.context.find_source_by_id(&id) {
                src.destroy();
            }
        }
        // Clients are cut off on the server's own thread, where it expects it.
        let (tx, rx) = std::sync::mpsc::channel();
        let server = self.server.clone();
        self.context.invoke(move || {
            server.client_filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Remove));
            let _ = tx.send(());
        });
        let _ = rx.recv_timeout(std::time::Duration::from_secs(5));
        self.valves.lock().unwrap().clear();
    }

    /// Listens again on the same port.
    pub fn restart(&self) {
        let mut source = self.source.lock().unwrap();
        if source.is_some() {
            return;
        }
        self.server.set_service(&self.port.to_string());
        // The old socket may take a moment to be released.
        for _ in 0..50 {
            match self.server.attach(Some(&self.context)) {
                Ok(id) => {
                    *source = Some(id);
                    return;
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
            }
        }
        panic!(
            "RTSP test server could not listen again on port {}",
            self.port
        );
    }

    /// Keeps connections open but sends no more data (a hung camera), or resumes.
    pub fn freeze(&self, frozen: bool) {
        for v in self.valves.lock().unwrap().iter() {
            if let Some(valve) = v.upgrade() {
                valve.set_property("drop", frozen);
            }
        }
    }
}

impl Drop for RtspTestServer {
    fn drop(&mut self) {
        self.stop();
        self.main_loop.quit();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
