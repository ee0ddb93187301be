//! Where TensorRT keeps what it built, so a worker started from zero loads an engine
//! instead of building one (minutes on a Jetson).
//!
//! One directory per (model content, ONNX Runtime version, TensorRT version, GPU): a
//! changed model, an upgraded runtime or a moved SD card never loads a stale engine,
//! since none of them can find the old directory. Inside it ONNX Runtime writes the
//! engine, the timing cache and the EP-context model. Building happens under an
//! exclusive lock on the directory, so two workers (or `edge-agent prepare` and a
//! worker) never build the same engine at once: the second waits and then loads it.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The cache root when `inference.engine_cache` is unset: the systemd unit's state
/// directory (`StateDirectory=edge-agent` sets `STATE_DIRECTORY`), else the user's cache.
pub fn default_root() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
        // systemd may pass several directories separated by ':'; ours is the first.
        let first = dir.to_string_lossy().split(':').next()?.to_string();
        return Some(PathBuf::from(first).join("engines"));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("edge-agent/engines"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|h| PathBuf::from(h).join(".cache/edge-agent/engines"))
}

/// The cache root from the setting: unset → [`default_root`], empty → no cache.
pub fn root(configured: Option<&Path>) -> Option<PathBuf> {
    match configured {
        Some(p) if p.as_os_str().is_empty() => None,
        Some(p) => Some(p.to_path_buf()),
        None => default_root(),
    }
}

/// A 64-bit FNV-1a-style hash of the model file over little-endian 8-byte words (and
/// the length): stable across builds and platforms (unlike std's hasher), and fast
/// enough (memory speed) that a 250 MB model costs a fraction of a CPU session creation.
pub fn model_hash(model: &Path) -> std::io::Result<u64> {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut f = File::open(model)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut len: u64 = 0;
    let mut carry: Vec<u8> = Vec::with_capacity(8);
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        len += n as u64;
        let mut data = &buf[..n];
        // Complete a word left over from the last read.
        while !carry.is_empty() && !data.is_empty() {
            carry.push(data[0]);
            data = &data[1..];
            if carry.len() == 8 {
                h = (h ^ u64::from_le_bytes(carry[..].try_into().unwrap_or_default()))
                    .wrapping_mul(PRIME);
                carry.clear();
            }
        }
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            h = (h ^ u64::from_le_bytes(w.try_into().unwrap_or_default())).wrapping_mul(PRIME);
        }
        carry.extend_from_slice(words.remainder());
    }
    for &b in &carry {
        h = (h ^ u64::from(b)).wrapping_mul(PRIME);
    }
    if len > 0 {
        h = (h ^ len).wrapping_mul(PRIME);
    }
    Ok(h)
}

/// [`model_hash`], without reading the model again while it has not changed since a
/// worker last hashed it (a cold start that reads and hashes a 250 MB model spends tens
/// of milliseconds on it). The hash is kept in `root/hashes/` beside the file's identity
/// when it was read: device, inode, size, modification and change times. Writing the
/// file or setting its times moves its change time, which nobody can set back, so a
/// kept hash does not outlive the content it was computed from. File times tick
/// coarsely (milliseconds), so a model changed in the same tick as it was read could
/// keep its identity: as git does with its index, no note is kept for a file changed
/// less than [`SETTLED`] before (the identity is read before the content).
pub fn known_model_hash(root: &Path, model: &Path) -> std::io::Result<u64> {
    known_hash_at(root, model, std::time::SystemTime::now())
}

/// How long ago a model must have last changed for its hash to be kept.
pub const SETTLED: std::time::Duration = std::time::Duration::from_secs(2);

fn known_hash_at(root: &Path, model: &Path, now: std::time::SystemTime) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(model)?;
    let stamp = format!(
        "{} {} {} {}.{:09} {}.{:09}",
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec()
    );
    let path = std::fs::canonicalize(model)?;
    let name = fnv(path.as_os_str().as_encoded_bytes());
    let memo = root.join("hashes").join(format!("{name:016x}"));
    let kept = std::fs::read_to_string(&memo).ok().and_then(|t| {
        let (s, h) = t.trim_end().rsplit_once(' ')?;
        (s == stamp).then(|| u64::from_str_radix(h, 16).ok())?
    });
    if let Some(h) = kept {
        return Ok(h);
    }
    let hash = model_hash(model)?;
    // The change time follows every write and every time set, the modification time
    // included; a time before 1970 counts as just now (no note).
    let changed = u64::try_from(meta.ctime())
        .ok()
        .map(|s| std::time::UNIX_EPOCH + std::time::Duration::new(s, meta.ctime_nsec() as u32))
        .unwrap_or(now);
    if changed + SETTLED < now {
        // Best effort: without the note the next start hashes the model again.
        let _ = write_replacing(&memo, format!("{stamp} {hash:016x}\n").as_bytes());
    }
    Ok(hash)
}

/// 64-bit FNV-1a of `bytes`.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Writes `path` beside it and renames it into place: a reader sees the old note or the
/// new one, never half of one (two workers may write it at once).
fn write_replacing(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let part = path.with_extension(format!("{}.part", std::process::id()));
    std::fs::write(&part, data)?;
    std::fs::rename(&part, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&part);
    })
}

/// The CPU's name for the CPU provider's cache key: an optimised model may hold layout
/// rewrites for this CPU's vector width (ONNX Runtime's NCHWc), so it is not portable.
pub fn cpu_name() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|t| {
        t.lines().find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).trim().to_string())
        })
    });
    let model = model
        .or_else(|| std::fs::read_to_string("/proc/device-tree/model").ok())
        .map(|m| m.trim_end_matches('\0').trim().to_string())
        .unwrap_or_default();
    format!("{} {model}", std::env::consts::ARCH)
}

/// The CPU provider's directory for one model on this runtime and CPU, under `root`.
pub fn cpu_key_dir(root: &Path, model: &Path, hash: u64, ort: &str, cpu: &str) -> PathBuf {
    let stem = model
        .file_stem()
        .map(|s| slug(&s.to_string_lossy()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "model".into());
    root.join(format!("{stem}-{hash:016x}"))
        .join(format!("ort{}-cpu-{}", slug(ort), slug(cpu)))
}

/// TensorRT's own version number (`getInferLibVersion()`: 8601 for 8.6.1, 100300 for
/// 10.3.0), from the library the TensorRT provider will load; None when absent.
pub fn tensorrt_version() -> Option<i32> {
    for name in ["libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so"] {
        // SAFETY: loading libnvinfer runs its initialisers, as the TensorRT provider's
        // own load of the same library does.
        let Ok(lib) = (unsafe { libloading::Library::new(name) }) else {
            continue;
        };
        // SAFETY: `int32_t getInferLibVersion() noexcept` is TensorRT's C entry point.
        let v = unsafe {
            lib.get::<unsafe extern "C" fn() -> i32>(b"getInferLibVersion\0")
                .ok()
                .map(|f| f())
        };
        // Unloading libnvinfer while ONNX Runtime may load it next gains nothing.
        std::mem::forget(lib);
        if v.is_some() {
            return v;
        }
    }
    None
}

/// The GPU's name: the NVIDIA driver's first GPU on a desktop or server, the board's
/// model on a Jetson (whose GPU is part of the SoC).
pub fn gpu_name() -> Option<String> {
    if let Ok(dirs) = std::fs::read_dir("/proc/driver/nvidia/gpus") {
        let mut infos: Vec<PathBuf> = dirs
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("information"))
            .collect();
        infos.sort();
        for info in infos {
            if let Ok(text) = std::fs::read_to_string(&info) {
                if let Some(m) = text.lines().find_map(|l| l.strip_prefix("Model:")) {
                    return Some(m.trim().to_string());
                }
            }
        }
    }
    std::fs::read_to_string("/proc/device-tree/model")
        .ok()
        .map(|m| m.trim_end_matches('\0').trim().to_string())
        .filter(|m| !m.is_empty())
}

/// Lower-case letters, digits, '.' and '-' only, so any name is one path component.
fn slug(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || c == '.' {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// The directory for one model on this runtime and GPU, under `root`.
pub fn key_dir(
    root: &Path,
    model: &Path,
    hash: u64,
    ort: &str,
    trt: Option<i32>,
    gpu: Option<&str>,
) -> PathBuf {
    let stem = model
        .file_stem()
        .map(|s| slug(&s.to_string_lossy()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "model".into());
    let trt = trt.map_or_else(|| "none".to_string(), |v| v.to_string());
    let gpu = gpu.map(slug).filter(|g| !g.is_empty());
    root.join(format!("{stem}-{hash:016x}")).join(format!(
        "ort{}-trt{trt}-{}",
        slug(ort),
        gpu.as_deref().unwrap_or("gpu-unknown")
    ))
}

/// An exclusive lock on a cache directory, held while an engine is built or loaded;
/// released on drop (and by the kernel if the process dies).
pub struct BuildLock {
    _file: File,
}

impl BuildLock {
    /// Creates `dir` and blocks until this process holds its lock.
    pub fn acquire(dir: &Path) -> std::io::Result<BuildLock> {
        std::fs::create_dir_all(dir)?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(".lock"))?;
        loop {
            // SAFETY: flock on a descriptor this function owns.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(BuildLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_changes_with_model_runtime_tensorrt_and_gpu() {
        let root = Path::new("/var/lib/edge-agent/engines");
        let model = Path::new("/opt/models/YOLOv4 416.onnx");
        let orin = Some("NVIDIA Jetson AGX Orin");
        let key = |hash, ort, trt, gpu| key_dir(root, model, hash, ort, trt, gpu);
        let base = key(0xab, "1.19.2", Some(8601), orin);
        assert_eq!(
            base,
            Path::new(
                "/var/lib/edge-agent/engines/yolov4-416-00000000000000ab/ort1.19.2-trt8601-nvidia-jetson-agx-orin"
            )
        );
        let others = [
            key(0xac, "1.19.2", Some(8601), orin),
            key(0xab, "1.20.0", Some(8601), orin),
            key(0xab, "1.19.2", Some(100300), orin),
            key(0xab, "1.19.2", Some(8601), Some("NVIDIA Jetson Orin Nano")),
            key(0xab, "1.19.2", None, None),
        ];
        for o in &others {
            assert_ne!(o, &base);
        }
        assert!(others[4].ends_with("ort1.19.2-trtnone-gpu-unknown"));
        assert!(
            cpu_key_dir(root, model, 0xab, "1.19.2", "x86_64 Some CPU @ 2GHz")
                .ends_with("yolov4-416-00000000000000ab/ort1.19.2-cpu-x86-64-some-cpu-2ghz")
        );
    }

    #[test]
    fn an_empty_setting_turns_the_cache_off_and_a_path_is_kept() {
        assert_eq!(root(Some(Path::new(""))), None);
        assert_eq!(
            root(Some(Path::new("/data/engines"))),
            Some(PathBuf::from("/data/engines"))
        );
    }

    #[test]
    fn the_model_hash_follows_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.onnx");
        std::fs::write(&a, b"model one").unwrap();
        let h1 = model_hash(&a).unwrap();
        std::fs::write(&a, b"model two").unwrap();
        assert_ne!(model_hash(&a).unwrap(), h1);
        // Across the 1 MiB read boundary, a word split between two reads still counts.
        let mut big = vec![7u8; (1 << 20) + 13];
        std::fs::write(&a, &big).unwrap();
        let h2 = model_hash(&a).unwrap();
        big[(1 << 20) + 2] = 8;
        std::fs::write(&a, &big).unwrap();
        assert_ne!(model_hash(&a).unwrap(), h2);
        big.push(0);
        std::fs::write(&a, &big).unwrap();
        assert_ne!(model_hash(&a).unwrap(), h2);
        // FNV-1a 64 of the empty input is its offset basis.
        std::fs::write(&a, b"").unwrap();
        assert_eq!(model_hash(&a).unwrap(), 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn a_kept_model_hash_is_used_only_while_the_file_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("engines");
        let a = dir.path().join("a.onnx");
        std::fs::write(&a, b"model one").unwrap();
        let h1 = known_model_hash(&root, &a).unwrap();
        assert_eq!(h1, model_hash(&a).unwrap());
        assert!(
            !root.join("hashes").exists(),
            "no note for a model changed just now"
        );
        // From here on, as if the model had been written a while ago.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        let known_model_hash = |root: &Path, a: &Path| known_hash_at(root, a, later);
        assert_eq!(known_model_hash(&root, &a).unwrap(), h1);
        let notes: Vec<_> = std::fs::read_dir(root.join("hashes")).unwrap().collect();
        assert_eq!(notes.len(), 1, "one note per model");
        // The note is what the next start reads: a wrong hash in it shows it was used.
        let note = notes[0].as_ref().unwrap().path();
        let text = std::fs::read_to_string(&note).unwrap();
        let (stamp, _) = text.trim_end().rsplit_once(' ').unwrap();
        std::fs::write(&note, format!("{stamp} 00000000000000aa\n")).unwrap();
        assert_eq!(
            known_model_hash(&root, &a).unwrap(),
            0xaa,
            "the note is used"
        );
        // New content with the modification time set back: the identity still moves.
        let mtime = std::fs::metadata(&a).unwrap().modified().unwrap();
        std::fs::write(&a, b"model two, longer").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&a)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_eq!(
            known_model_hash(&root, &a).unwrap(),
            model_hash(&a).unwrap(),
            "changed content is hashed again"
        );
        assert_ne!(model_hash(&a).unwrap(), h1);
        // A note that does not parse is no note.
        std::fs::write(&note, b"garbage").unwrap();
        assert_eq!(
            known_model_hash(&root, &a).unwrap(),
            model_hash(&a).unwrap()
        );
    }

    #[test]
    fn a_second_lock_on_the_same_directory_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let first = BuildLock::acquire(dir.path()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let d = dir.path().to_path_buf();
        let t = std::thread::spawn(move || {
            let _second = BuildLock::acquire(&d).unwrap();
            tx.send(()).unwrap();
        });
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        t.join().unwrap();
    }
}
