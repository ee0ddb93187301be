//! Shared by the benches that run `gst-launch-1.0` decoders as their baseline.

/// `gst-launch-1.0` arguments that receive `url` over RTSP (TCP) and decode its H.264
/// in software, up to and including `avdec_h264`: callers add `!` and their sink.
pub fn rtsp_decode_args(url: &str) -> Vec<String> {
    [
        "rtspsrc",
        &format!("location={url}"),
        "protocols=tcp",
        "latency=200",
        "!",
        "rtph264depay",
        "!",
        "h264parse",
        "!",
        "avdec_h264",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}
