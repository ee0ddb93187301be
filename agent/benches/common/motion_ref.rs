//! Shared by the benches that run `scripts/motion_ref.py` (the OpenCV reference).

use edge_agent::motion::MotionConfig;

/// The detector settings the reference needs, from the same config.
pub fn params(cfg: &MotionConfig) -> String {
    serde_json::json!({
        "blur": cfg.blur,
        "threshold": cfg.threshold.get(),
        "background_rate": cfg.background_rate.get(),
        "dilate_radius": cfg.dilate_radius.get(),
        "min_area": cfg.min_area.get(),
        "max_area": cfg.max_area.get(),
        "global_change": cfg.global_change.get(),
        "global_spread": cfg.global_spread.get(),
        "cell_change": cfg.cell_change.get(),
        "start_frames": cfg.start_frames.get(),
        "quiet_period_s": cfg.quiet_period.get().as_secs_f64(),
    })
    .to_string()
}
