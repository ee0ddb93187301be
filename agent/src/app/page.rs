//! What the page on the telemetry listener shows of the running agent
//! ([`crate::telemetry::page`]): each camera's state, configuration (motion masks and
//! zones, in fractions of the frame), newest motion boxes, newest frame and recent
//! incidents with their snapshots (read back from the broker and kept in memory, or
//! from `events.snapshot_dir`). Nothing here is a secret: no URL, no password, no
//! token.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use serde_json::{json, Value};

use crate::camera::CameraView;
use crate::results::RecentIncidents;
use crate::sync::lock;
use crate::telemetry::page::{snapshot_id_ok, PageSource, RgbFrame};

/// The running cameras (refreshed by the main loop on reload) and their incidents.
pub(super) struct AgentPage {
    device: String,
    views: Arc<Mutex<Vec<CameraView>>>,
    recent: Arc<RecentIncidents>,
    /// `events.snapshot_dir`: where the workers also write snapshots, for those no
    /// longer in memory.
    snapshot_dir: Option<PathBuf>,
}

impl AgentPage {
    pub fn new(
        device: &str,
        views: Arc<Mutex<Vec<CameraView>>>,
        recent: Arc<RecentIncidents>,
        snapshot_dir: Option<PathBuf>,
    ) -> AgentPage {
        AgentPage {
            device: device.to_string(),
            views,
            recent,
            snapshot_dir,
        }
    }
}

impl PageSource for AgentPage {
    fn cameras(&self) -> Value {
        let views = lock(&self.views).clone();
        let cameras: Vec<Value> = views
            .iter()
            .filter_map(|v| {
                let mut c = camera(v)?;
                c["incidents"] = json!(self.recent.of(v.cfg.id.as_str()));
                Some(c)
            })
            .collect();
        json!({ "device": self.device, "cameras": cameras })
    }

    fn frame(&self, camera: &str) -> Option<RgbFrame> {
        let handle = lock(&self.views)
            .iter()
            .find(|v| v.cfg.id.as_str() == camera)?
            .handle
            .upgrade()?;
        let c = handle.latest_colour()?;
        Some(RgbFrame {
            width: c.width,
            height: c.height,
            rgb: c.rgb,
        })
    }

    fn snapshot(&self, id: &str) -> Option<Bytes> {
        // Checked here too: the id becomes a file name below.
        if !snapshot_id_ok(id) {
            return None;
        }
        if let Some(jpeg) = self.recent.snapshots().get(id) {
            return Some(jpeg);
        }
        let dir = self.snapshot_dir.as_ref()?;
        std::fs::read(dir.join(format!("{id}.jpg")))
            .ok()
            .map(Bytes::from)
    }
}

/// One camera as the page draws it; `None` once it stopped.
fn camera(v: &CameraView) -> Option<Value> {
    let s = v.handle.upgrade()?.status();
    let motion = v.motion.borrow().clone();
    let boxes: Vec<[f32; 4]> = motion.boxes.iter().map(|b| [b.x, b.y, b.w, b.h]).collect();
    let at_ms = motion.at.and_then(|t| {
        t.duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as u64)
    });
    // A zone in pixels is drawn once the camera's size is known.
    let zones: serde_json::Map<String, Value> = v
        .cfg
        .zones
        .iter()
        .filter_map(|(name, z)| {
            let points = z.shape().fractions(s.source_size.unwrap_or((0, 0)))?;
            Some((name.clone(), json!(points)))
        })
        .collect();
    Some(json!({
        "id": v.cfg.id.as_str(),
        "state": format!("{:?}", s.state),
        "decoder": s.decoder,
        "frames": s.frames,
        "restarts": s.restarts,
        "last_reason": s.last_reason,
        "source_size": s.source_size.map(|(w, h)| [w, h]),
        "motion": { "boxes": boxes, "at_ms": at_ms },
        "masks": v.cfg.motion.masks,
        "zones": zones,
    }))
}
