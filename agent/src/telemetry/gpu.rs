//! GPU accounting where there is a GPU: utilisation per GPU and GPU memory per worker.
//!
//! - NVIDIA discrete GPUs: `nvidia-smi` (utilisation and memory per GPU, and memory per
//!   process from `--query-compute-apps`).
//! - Jetson (integrated GPU, unified memory): the load in per mille from
//!   `/sys/devices/gpu.0/load` (or `/sys/devices/platform/gpu.0/load`). There is no
//!   per-process GPU memory figure on Jetson: GPU buffers live in the same RAM, so the
//!   workers' memory is what `worker_memory_bytes` shows.
//! - No GPU: nothing is exported. A metric that reads 0 would claim an idle GPU.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::metrics::metrics;

const JETSON_LOAD: [&str; 2] = [
    "/sys/devices/gpu.0/load",
    "/sys/devices/platform/gpu.0/load",
];
const SMI_TIMEOUT: Duration = Duration::from_secs(3);

/// One GPU's figures from `nvidia-smi --query-gpu=index,utilization.gpu,memory.used
/// --format=csv,noheader,nounits`.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuUse {
    pub index: String,
    pub utilization_percent: Option<f64>,
    pub memory_used_bytes: Option<u64>,
}

const MIB: u64 = 1024 * 1024;

/// `nvidia-smi` writes `[N/A]`, `[Not Supported]` or `[Insufficient Permissions]` where
/// a figure is missing.
fn number(field: &str) -> Option<f64> {
    let f = field.trim();
    if f.starts_with('[') {
        return None;
    }
    f.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0)
}

/// Parses `--query-gpu=index,utilization.gpu,memory.used` CSV (no header, no units;
/// memory in MiB). Lines that do not have three fields are skipped.
pub fn parse_gpu_query(text: &str) -> Vec<GpuUse> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            if f.len() != 3 || f[0].trim().is_empty() {
                return None;
            }
            Some(GpuUse {
                index: f[0].trim().to_string(),
                utilization_percent: number(f[1]),
                memory_used_bytes: number(f[2]).map(|m| m as u64 * MIB),
            })
        })
        .collect()
}

/// Parses `--query-compute-apps=pid,used_memory --format=csv,noheader,nounits` into
/// (pid, bytes), summing a pid that appears on several GPUs. Missing figures skip the
/// line.
pub fn parse_compute_apps(text: &str) -> Vec<(u32, u64)> {
    let mut out: Vec<(u32, u64)> = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 2 {
            continue;
        }
        let (Ok(pid), Some(mib)) = (f[0].trim().parse::<u32>(), number(f[1])) else {
            continue;
        };
        let bytes = mib as u64 * MIB;
        match out.iter_mut().find(|(p, _)| *p == pid) {
            Some((_, b)) => *b += bytes,
            None => out.push((pid, bytes)),
        }
    }
    out
}

/// Parses a Jetson `load` file (per mille) into percent.
pub fn parse_jetson_load(text: &str) -> Option<f64> {
    let v: u32 = text.trim().parse().ok()?;
    (v <= 1000).then(|| f64::from(v) / 10.0)
}

enum Source {
    None,
    NvidiaSmi(PathBuf),
    Jetson(PathBuf),
}

pub struct GpuSampler {
    source: Source,
}

impl GpuSampler {
    /// Finds the GPU source of this machine (none on a machine without a GPU).
    pub fn detect() -> Self {
        Self::detect_in(std::env::var_os("PATH").as_deref(), &JETSON_LOAD)
    }

    /// [`GpuSampler::detect`] with the search path and the Jetson load files given.
    fn detect_in(path: Option<&std::ffi::OsStr>, jetson_load: &[&str]) -> Self {
        let source = if let Some(smi) = find_in_path(path, "nvidia-smi") {
            Source::NvidiaSmi(smi)
        } else if let Some(p) = jetson_load.iter().map(Path::new).find(|p| p.is_file()) {
            Source::Jetson(p.to_path_buf())
        } else {
            Source::None
        };
        Self { source }
    }

    /// Updates the GPU metrics; `workers` are the pids whose GPU memory is exported.
    pub async fn sample(&mut self, workers: &[u32]) {
        let m = metrics();
        match &self.source {
            Source::None => {}
            Source::Jetson(path) => {
                let load = std::fs::read_to_string(path)
                    .ok()
                    .and_then(|t| parse_jetson_load(&t));
                m.gpu_utilization.clear();
                if let Some(pct) = load {
                    m.gpu_utilization
                        .get_or_create(&vec![("gpu", "0".to_string())])
                        .set(pct);
                }
            }
            Source::NvidiaSmi(smi) => {
                let gpus = run(
                    smi,
                    &[
                        "--query-gpu=index,utilization.gpu,memory.used",
                        "--format=csv,noheader,nounits",
                    ],
                )
                .await
                .map(|t| parse_gpu_query(&t))
                .unwrap_or_default();
                m.gpu_utilization.clear();
                m.gpu_memory.clear();
                for g in &gpus {
                    let l = vec![("gpu", g.index.clone())];
                    if let Some(u) = g.utilization_percent {
                        m.gpu_utilization.get_or_create(&l).set(u);
                    }
                    if let Some(b) = g.memory_used_bytes {
                        m.gpu_memory.get_or_create(&l).set(b as i64);
                    }
                }
                let apps = run(
                    smi,
                    &[
                        "--query-compute-apps=pid,used_memory",
                        "--format=csv,noheader,nounits",
                    ],
                )
                .await
                .map(|t| parse_compute_apps(&t))
                .unwrap_or_default();
                m.worker_gpu_memory.clear();
                for (pid, bytes) in apps.into_iter().filter(|(p, _)| workers.contains(p)) {
                    m.worker_gpu_memory
                        .get_or_create(&vec![("pid", pid.to_string())])
                        .set(bytes as i64);
                }
            }
        }
    }
}

async fn run(program: &Path, args: &[&str]) -> Option<String> {
    let out = tokio::time::timeout(
        SMI_TIMEOUT,
        tokio::process::Command::new(program)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .ok()?
    .ok()?;
    if !out.status.success() {
        if super::metrics::should_log("nvidia-smi", Duration::from_secs(300)) {
            tracing::warn!(program = %program.display(), status = %out.status, stderr = %String::from_utf8_lossy(&out.stderr).trim(), "GPU query failed; GPU metrics left out.");
        }
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn find_in_path(path: Option<&std::ffi::OsStr>, name: &str) -> Option<PathBuf> {
    path.and_then(|paths| {
        std::env::split_paths(paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compute_apps_csv_gives_bytes_per_pid_and_skips_missing_figures() {
        // As printed by `nvidia-smi --query-compute-apps=pid,used_memory
        // --format=csv,noheader,nounits` (driver 535): "pid, MiB".
        let text = "12345, 858\n23456, 1024\n34567, [N/A]\n45678, [Insufficient Permissions]\n12345, 2\n\n";
        assert_eq!(
            parse_compute_apps(text),
            vec![(12345, 860 * MIB), (23456, 1024 * MIB)]
        );
        assert!(parse_compute_apps("").is_empty(), "no compute apps running");
        assert!(parse_compute_apps("No devices were found\n").is_empty());
    }

    #[test]
    fn gpu_query_csv_gives_utilisation_and_memory_per_gpu() {
        // `nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader,nounits`
        let text = "0, 37, 1234\n1, [Not Supported], 0\n";
        assert_eq!(
            parse_gpu_query(text),
            vec![
                GpuUse {
                    index: "0".into(),
                    utilization_percent: Some(37.0),
                    memory_used_bytes: Some(1234 * MIB)
                },
                GpuUse {
                    index: "1".into(),
                    utilization_percent: None,
                    memory_used_bytes: Some(0)
                },
            ]
        );
        assert!(parse_gpu_query("garbage\n").is_empty());
    }

    #[test]
    fn jetson_load_is_per_mille() {
        let rows = [
            ("0\n", Some(0.0)),
            ("234\n", Some(23.4)),
            ("1000", Some(100.0)),
            ("1001", None),
            ("", None),
            ("x", None),
        ];
        for (text, want) in rows {
            assert_eq!(parse_jetson_load(text), want, "{text:?}");
        }
    }

    fn gpu_lines(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| {
                [
                    "edge_agent_gpu_utilization_percent{",
                    "edge_agent_gpu_memory_used_bytes{",
                    "edge_agent_worker_gpu_memory_bytes{",
                ]
                .iter()
                .any(|n| l.starts_with(n))
            })
            .collect()
    }

    /// Through the real detection path: a search path without `nvidia-smi` and no
    /// Jetson load file is no GPU, and sampling it exports nothing. Then the same path
    /// with an `nvidia-smi` on it (a script printing what the real one prints) exports
    /// the figures, so the first half can fail. One test, because the metrics are one
    /// registry for the whole process.
    #[tokio::test]
    async fn without_a_gpu_no_gpu_metric_is_exported() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let missing = dir.path().join("gpu.0/load");
        let missing = missing.to_str().unwrap();
        let mut none = GpuSampler::detect_in(Some(bin.as_os_str()), &[missing]);
        assert!(matches!(none.source, Source::None));
        none.sample(&[std::process::id()]).await;
        let text = metrics().encode();
        assert!(
            gpu_lines(&text).is_empty(),
            "GPU metrics without a GPU:\n{text}"
        );

        let smi = bin.join("nvidia-smi");
        let me = std::process::id();
        std::fs::write(
            &smi,
            format!(
                "#!/bin/sh\ncase \"$1\" in\n--query-gpu=*) echo '0, 37, 1234' ;;\n*) echo '{me}, 858' ;;\nesac\n"
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&smi, std::fs::Permissions::from_mode(0o755)).unwrap();
        // A child forked by another test while the script was open for writing holds
        // it until its exec: "text file busy" for a moment.
        for _ in 0..50 {
            match std::process::Command::new(&smi).output() {
                Err(e) if e.raw_os_error() == Some(26) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => break,
            }
        }
        let mut gpu = GpuSampler::detect_in(Some(bin.as_os_str()), &[missing]);
        assert!(matches!(gpu.source, Source::NvidiaSmi(_)));
        gpu.sample(&[me]).await;
        let text = metrics().encode();
        let lines = gpu_lines(&text);
        assert_eq!(lines.len(), 3, "{text}");
        // Leave the registry as a machine without a GPU would have it.
        let m = metrics();
        m.gpu_utilization.clear();
        m.gpu_memory.clear();
        m.worker_gpu_memory.clear();
    }
}
