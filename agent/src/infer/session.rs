//! ONNX Runtime: finding and loading the library once per process, and opening a
//! session on the first execution provider from the configured list that works.
//!
//! GPU providers are registered with `error_on_failure`, so a provider that cannot
//! start is reported and the next one tried, instead of ONNX Runtime silently running
//! everything on the CPU under a GPU provider's name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;

use super::cache;
use super::config::{InferenceConfig, Provider};
use super::layout::TensorDecl;
use super::InferError;

/// Finds `libonnxruntime.so` in explicit places only: `inference.ort_library`, then
/// `ORT_DYLIB_PATH`, then the checkout's own virtualenv
/// (`.venv/lib/python3*/site-packages/onnxruntime/capi/`) when this executable was
/// built there (see [`checkout_of`]), then where Jetson builds install it
/// (jetson-containers: `/usr/local/lib`) and the system library dir. Never the working
/// directory nor its ancestors: a library planted in `/tmp/.venv` would be loaded by
/// whoever runs the agent from `/tmp`, root included.
pub fn find_library(configured: Option<&Path>) -> Result<PathBuf, InferError> {
    search_library(
        configured,
        std::env::var_os("ORT_DYLIB_PATH"),
        std::env::current_exe().ok().as_deref(),
    )
}

/// The checkout an executable was built in: the parent of the `target` directory that
/// holds it (`target/{debug,release}/`, `target/<triple>/release/`, test binaries in
/// `target/debug/deps/`), or none for an installed one.
fn checkout_of(exe: &Path) -> Option<&Path> {
    exe.ancestors()
        .skip(1)
        .take(4)
        .find(|d| d.file_name().is_some_and(|n| n == "target"))
        .and_then(Path::parent)
}

fn search_library(
    configured: Option<&Path>,
    env: Option<std::ffi::OsString>,
    exe: Option<&Path>,
) -> Result<PathBuf, InferError> {
    let mut searched = Vec::new();
    if let Some(p) = configured {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        searched.push(format!("inference.ort_library = {} (missing)", p.display()));
    }
    match env {
        Some(p) if Path::new(&p).is_file() => return Ok(PathBuf::from(p)),
        Some(p) => searched.push(format!(
            "ORT_DYLIB_PATH = {} (missing)",
            Path::new(&p).display()
        )),
        None => searched.push("ORT_DYLIB_PATH (not set)".into()),
    }
    if let Some(root) = exe.and_then(checkout_of) {
        let lib = root.join(".venv/lib");
        searched.push(format!(
            "{}/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*",
            lib.display()
        ));
        if let Some(found) = venv_library(&lib) {
            return Ok(found);
        }
    }
    let system = [
        "/usr/local/lib/libonnxruntime.so".to_string(),
        format!(
            "/usr/lib/{}-linux-gnu/libonnxruntime.so",
            std::env::consts::ARCH
        ),
    ];
    for p in system {
        if Path::new(&p).is_file() {
            return Ok(PathBuf::from(p));
        }
        searched.push(p);
    }
    Err(InferError::OrtNotFound { searched })
}

fn venv_library(lib: &Path) -> Option<PathBuf> {
    let mut pythons: Vec<PathBuf> = std::fs::read_dir(lib)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| e.path())
        .collect();
    pythons.sort();
    for py in pythons.iter().rev() {
        let capi = py.join("site-packages/onnxruntime/capi");
        let Ok(entries) = std::fs::read_dir(&capi) else {
            continue;
        };
        let mut libs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libonnxruntime.so"))
                    && p.is_file()
            })
            .collect();
        // The versioned file (libonnxruntime.so.1.32.0) sorts last.
        libs.sort();
        if let Some(l) = libs.pop() {
            return Some(l);
        }
    }
    None
}

/// The oldest ONNX Runtime this build accepts: `ort`'s `api-17` floor (JetPack 5 and 6
/// boxes ship 1.16 to 1.25).
pub const MIN_ORT_VERSION: &str = "1.17";

static ORT_VERSION: OnceLock<String> = OnceLock::new();

/// The version of the ONNX Runtime library this process loaded, once it is loaded.
pub fn loaded_version() -> Option<&'static str> {
    ORT_VERSION.get().map(String::as_str)
}

/// `OrtGetApiBase()->GetVersionString()` of the library at `path`, read without
/// initialising anything, so an old or foreign library is refused with a clear reason.
pub fn library_version(path: &Path) -> Result<String, InferError> {
    #[repr(C)]
    struct OrtApiBase {
        get_api: unsafe extern "C" fn(u32) -> *const std::ffi::c_void,
        get_version_string: unsafe extern "C" fn() -> *const std::ffi::c_char,
    }
    let load = |reason: String| InferError::OrtLoad {
        path: path.to_path_buf(),
        reason,
    };
    // SAFETY: loading runs the library's initialisers; that is what loading ONNX Runtime
    // means, and `ort` loads the same file right after (dlopen shares the handle).
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| load(e.to_string()))?;
    // SAFETY: the symbol's type is the C API's `const OrtApiBase* OrtGetApiBase(void)`.
    let base = unsafe {
        let getter = lib
            .get::<unsafe extern "C" fn() -> *const OrtApiBase>(b"OrtGetApiBase\0")
            .map_err(|_| {
                load("it does not export OrtGetApiBase: not an ONNX Runtime library".into())
            })?;
        getter()
    };
    if base.is_null() {
        return Err(load("OrtGetApiBase returned nothing".into()));
    }
    // SAFETY: `base` points to the library's static OrtApiBase; the version string is a
    // static NUL-terminated string of the library, copied before `lib` is dropped.
    let version = unsafe {
        let s = ((*base).get_version_string)();
        if s.is_null() {
            return Err(load("GetVersionString returned nothing".into()));
        }
        std::ffi::CStr::from_ptr(s).to_string_lossy().into_owned()
    };
    // Kept loaded: `ort` opens the same library next, and unloading ONNX Runtime is
    // not something it supports.
    std::mem::forget(lib);
    Ok(version)
}

/// Whether `version` ("1.19.2") is at least [`MIN_ORT_VERSION`]. A version that does
/// not parse is refused.
fn at_least_minimum(version: &str) -> bool {
    let parse = |v: &str| -> Option<(u32, u32)> {
        let mut it = v.trim().split('.');
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    };
    match (parse(version), parse(MIN_ORT_VERSION)) {
        (Some(found), Some(min)) => found >= min,
        _ => false,
    }
}

/// The process-wide ONNX Runtime environment (ONNX Runtime allows one per process and
/// loads the library once: the first caller's library wins).
pub fn environment(cfg: &InferenceConfig) -> Result<Environment, InferError> {
    static ENV: OnceLock<Mutex<Option<Environment>>> = OnceLock::new();
    let slot = ENV.get_or_init(|| Mutex::new(None));
    let mut guard = crate::sync::lock(slot);
    if let Some(env) = guard.as_ref() {
        return Ok(env.clone());
    }
    let path = find_library(cfg.ort_library.as_deref())?;
    // Checked here rather than by `ort`, so the error names the version and the floor.
    let version = library_version(&path)?;
    if !at_least_minimum(&version) {
        return Err(InferError::OrtTooOld {
            path,
            found: version,
            minimum: MIN_ORT_VERSION,
        });
    }
    let _ = ORT_VERSION.set(version.clone());
    let started = std::time::Instant::now();
    let env = ort::init_from(&path)
        .map_err(|e| InferError::OrtLoad {
            path: path.clone(),
            reason: e.to_string(),
        })?
        .with_name("edge-agent")
        .build()
        .map_err(|e| InferError::OrtLoad {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    tracing::info!(lifecycle = "runtime_loaded", library = %path.display(), %version, took = ?started.elapsed(), "ONNX Runtime loaded.");
    *guard = Some(env.clone());
    Ok(env)
}

/// An open session, the provider that runs it, and the model's declared interface.
pub struct Opened {
    pub session: Session,
    pub provider: Provider,
    pub inputs: Vec<TensorDecl>,
    pub outputs: Vec<TensorDecl>,
    pub metadata: HashMap<String, String>,
    /// Finding the provider's cache for the model (hashing it, unless known).
    pub cache_key_in: std::time::Duration,
    /// Creating the session that opened.
    pub session_in: std::time::Duration,
}

pub fn provider_name(p: Provider) -> &'static str {
    match p {
        Provider::Tensorrt => "tensorrt",
        Provider::Cuda => "cuda",
        Provider::Cpu => "cpu",
    }
}

fn base_builder(env: &Environment, cfg: &InferenceConfig) -> Result<SessionBuilder, String> {
    builder_at(env, cfg, GraphOptimizationLevel::All)
}

fn builder_at(
    env: &Environment,
    cfg: &InferenceConfig,
    level: GraphOptimizationLevel,
) -> Result<SessionBuilder, String> {
    let mut b = Session::builder(env)
        .map_err(|e| e.to_string())?
        .with_optimization_level(level)
        .map_err(|e| e.to_string())?;
    // ONNX Runtime 1.19's GatherSliceToSplitFusion breaks darknet-exported YOLOv4-tiny
    // ("two nodes with same node name"); 1.19 and 1.20 are what JetPack 6.1 boxes run.
    // The fusion is an optional rewrite, so it is off on every version.
    b = b
        .with_config_entry(
            "optimization.disable_specified_optimizers",
            "GatherSliceToSplitFusion",
        )
        .map_err(|e| e.to_string())?;
    let threads = cfg.threads.as_usize();
    if threads > 0 {
        b = b.with_intra_threads(threads).map_err(|e| e.to_string())?;
    }
    Ok(b)
}

/// The TensorRT cache directory for `model`, locked for this process while the session
/// is created; None (with a log line) when the cache is off or unusable.
#[cfg(feature = "tensorrt")]
fn tensorrt_cache(model: &Path, cfg: &InferenceConfig) -> Option<(PathBuf, cache::BuildLock)> {
    // Only asked once the library lists TensorRT (`provider_missing`): no hashing for
    // the CPU wheels.
    let root = cache::root(cfg.engine_cache.as_deref())?;
    let hash = match cache::known_model_hash(&root, model) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(model = %model.display(), error = %e, "Cannot hash the model; TensorRT runs without an engine cache.");
            return None;
        }
    };
    let dir = cache::key_dir(
        &root,
        model,
        hash,
        loaded_version().unwrap_or("unknown"),
        cache::tensorrt_version(),
        cache::gpu_name().as_deref(),
    );
    match cache::BuildLock::acquire(&dir) {
        Ok(lock) => Some((dir, lock)),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "Cannot use the TensorRT engine cache; every start builds the engine.");
            None
        }
    }
}

/// The EP-context model ONNX Runtime writes next to the engine: a worker that loads it
/// skips parsing and partitioning the original model. TensorRT's EP-context options are
/// used only from ONNX Runtime 1.18 on (older ones may reject them and lose TensorRT).
#[cfg(feature = "tensorrt")]
fn ep_context_model(dir: &Path) -> Option<PathBuf> {
    let v = loaded_version()?;
    let minor: u32 = v.split('.').nth(1)?.parse().ok()?;
    (minor >= 18).then(|| dir.join("model_ctx.onnx"))
}

/// Heuristic convolution-algorithm search: the first frames do not wait for an
/// exhaustive benchmark of every algorithm (seconds per layer shape on a Jetson).
#[cfg(feature = "cuda")]
fn cuda_provider() -> ort::ep::CUDA {
    ort::ep::CUDA::default()
        .with_conv_algorithm_search(ort::ep::cuda::ConvAlgorithmSearch::Heuristic)
}

fn with_provider(
    b: SessionBuilder,
    p: Provider,
    cfg: &InferenceConfig,
    trt_dir: Option<&Path>,
    model: &Path,
) -> Result<SessionBuilder, String> {
    match p {
        Provider::Cpu => Ok(b),
        #[cfg(feature = "cuda")]
        Provider::Cuda => b
            .with_execution_providers([cuda_provider().build().error_on_failure()])
            .map_err(|e| e.to_string()),
        #[cfg(not(feature = "cuda"))]
        Provider::Cuda => Err(NO_CUDA.into()),
        #[cfg(feature = "tensorrt")]
        Provider::Tensorrt => {
            let mut trt = ort::ep::TensorRT::default().with_fp16(cfg.fp16);
            // A symbolic batch (or side) gets a fixed range, so the engine is built once,
            // at session creation, for every batch size up to max_batch.
            let profile = super::model_input::read(model)
                .filter(|i| i.dims.iter().any(Option::is_none))
                .and_then(|i| i.profile(cfg.max_batch.as_usize(), cfg.input_size.as_usize()));
            if let Some((min, opt, max)) = profile {
                trt = trt
                    .with_profile_min_shapes(min)
                    .with_profile_opt_shapes(opt)
                    .with_profile_max_shapes(max);
            }
            if let Some(dir) = trt_dir {
                trt = trt
                    .with_engine_cache(true)
                    .with_engine_cache_path(dir.display())
                    .with_timing_cache(true)
                    .with_timing_cache_path(dir.display());
                if let Some(ctx) = ep_context_model(dir).filter(|c| !c.is_file()) {
                    trt = trt
                        .with_dump_ep_context_model(true)
                        .with_ep_context_file_path(ctx.display());
                }
            }
            // Nodes TensorRT does not take run on CUDA rather than the CPU (ONNX
            // Runtime's advice for the TensorRT provider); CUDA is optional here.
            let eps = vec![
                trt.build().error_on_failure(),
                #[cfg(feature = "cuda")]
                cuda_provider().build(),
            ];
            b.with_execution_providers(eps).map_err(|e| e.to_string())
        }
        #[cfg(not(feature = "tensorrt"))]
        Provider::Tensorrt => {
            let _ = (cfg, trt_dir, model);
            Err(NO_TENSORRT.into())
        }
    }
}

/// Opens `model` on the first provider of `cfg.providers` that works (the CPU only
/// when `inference.require_gpu` is off).
pub fn open(model: &Path, cfg: &InferenceConfig) -> Result<Opened, InferError> {
    if !model.is_file() {
        return Err(InferError::ModelMissing {
            path: model.to_path_buf(),
            hint: String::new(),
        });
    }
    let env = environment(cfg)?;
    let mut attempts = Vec::new();
    for &p in &cfg.providers {
        if p == Provider::Cpu && cfg.require_gpu {
            attempts.push("cpu: not tried (inference.require_gpu = true)".to_string());
            continue;
        }
        if let Some(reason) = provider_missing(p) {
            tracing::info!(provider = provider_name(p), %reason, "Execution provider unavailable.");
            attempts.push(format!("{}: {reason}", provider_name(p)));
            continue;
        }
        // Held until the session exists: the engine is built (or loaded) under it.
        #[cfg(feature = "tensorrt")]
        let trt_cache = (p == Provider::Tensorrt)
            .then(|| tensorrt_cache(model, cfg))
            .flatten();
        #[cfg(not(feature = "tensorrt"))]
        let trt_cache: Option<(PathBuf, ())> = None;
        let trt_dir = trt_cache.as_ref().map(|(d, _)| d.as_path());
        let keyed = std::time::Instant::now();
        let cpu = (p == Provider::Cpu).then(|| cpu_cache(model, cfg));
        let cache_key_in = keyed.elapsed();
        let created = std::time::Instant::now();
        let built = match cpu {
            Some(Some((dir, _lock))) => commit_cpu_cached(&env, cfg, &dir, model),
            Some(None) => commit(&env, cfg, p, None, model),
            None => commit(&env, cfg, p, trt_dir, model),
        };
        let session_in = created.elapsed();
        match built {
            Ok(session) => {
                if !attempts.is_empty() {
                    tracing::warn!(
                        model = %model.display(),
                        provider = provider_name(p),
                        skipped = %attempts.join("; "),
                        "Preferred execution providers unavailable; using a later one."
                    );
                }
                if let Some(dir) = trt_dir {
                    tracing::info!(cache = %dir.display(), "TensorRT engine cache in use.");
                }
                let mut opened = describe(session, p);
                (opened.cache_key_in, opened.session_in) = (cache_key_in, session_in);
                return Ok(opened);
            }
            // A model that does not parse fails the same way on every provider.
            Err((reason, true)) if p == Provider::Cpu || is_model_error(&reason) => {
                return Err(InferError::ModelInvalid {
                    path: model.to_path_buf(),
                    reason,
                })
            }
            Err((reason, _)) => {
                tracing::info!(provider = provider_name(p), %reason, "Execution provider unavailable.");
                attempts.push(format!("{}: {reason}", provider_name(p)));
            }
        }
    }
    let path = model.to_path_buf();
    Err(if cfg.require_gpu {
        InferError::GpuRequired { path, attempts }
    } else {
        InferError::NoProvider { path, attempts }
    })
}

#[cfg(not(feature = "cuda"))]
const NO_CUDA: &str = "not compiled in (build with --features cuda)";
#[cfg(not(feature = "tensorrt"))]
const NO_TENSORRT: &str = "not compiled in (build with --features tensorrt)";

/// Why provider `p` cannot run here, known without touching the model: not compiled
/// in, or the loaded ONNX Runtime library does not list it (the CPU wheels). Asked before
/// the provider is set up, because setting TensorRT up reads the whole model for its
/// input profile: on a CPU-only box that read was about 30 ms of every worker's cold
/// start (YOLOv4-tiny, 24 MB) for a provider that then failed. A library that lists a
/// provider it cannot start (its CUDA libraries missing) still fails at registration,
/// as before.
fn provider_missing(p: Provider) -> Option<String> {
    #[cfg(any(feature = "cuda", feature = "tensorrt"))]
    let listed = |available: ort::Result<bool>, name: &str| match available {
        Ok(false) => Some(format!(
            "the ONNX Runtime library ({}) has no {name} execution provider",
            loaded_version().unwrap_or("unknown version")
        )),
        // Listed, or the library could not say: registration decides.
        _ => None,
    };
    match p {
        Provider::Cpu => None,
        #[cfg(feature = "cuda")]
        Provider::Cuda => {
            use ort::ep::ExecutionProvider;
            listed(ort::ep::CUDA::is_available(), "CUDA")
        }
        #[cfg(not(feature = "cuda"))]
        Provider::Cuda => Some(NO_CUDA.into()),
        #[cfg(feature = "tensorrt")]
        Provider::Tensorrt => {
            use ort::ep::ExecutionProvider;
            listed(ort::ep::TensorRT::is_available(), "TensorRT")
        }
        #[cfg(not(feature = "tensorrt"))]
        Provider::Tensorrt => Some(NO_TENSORRT.into()),
    }
}

/// The CPU provider's cache directory for `model`, locked while the session is created.
fn cpu_cache(model: &Path, cfg: &InferenceConfig) -> Option<(PathBuf, cache::BuildLock)> {
    let root = cache::root(cfg.engine_cache.as_deref())?;
    let hash = cache::known_model_hash(&root, model).ok()?;
    let dir = cache::cpu_key_dir(
        &root,
        model,
        hash,
        loaded_version().unwrap_or("unknown"),
        &cache::cpu_name(),
    );
    match cache::BuildLock::acquire(&dir) {
        Ok(lock) => Some((dir, lock)),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "Cannot use the optimised-model cache.");
            None
        }
    }
}

/// A CPU session from the optimised model cached in `dir`, loaded with the graph
/// optimisations already applied (YOLOv4-416: about a third of the session creation
/// time: 0.53 s against 1.79 s measured with Python's onnxruntime 1.32 here); without
/// one, from the model, saving the optimised graph.
fn commit_cpu_cached(
    env: &Environment,
    cfg: &InferenceConfig,
    dir: &Path,
    model: &Path,
) -> Result<Session, (String, bool)> {
    let optimised = dir.join("optimized.onnx");
    if optimised.is_file() {
        let loaded = builder_at(env, cfg, GraphOptimizationLevel::Disable)
            .map_err(|e| (e, false))?
            .commit_from_file(&optimised);
        match loaded {
            Ok(s) => {
                tracing::debug!(model = %optimised.display(), "Loaded the cached optimised model.");
                return Ok(s);
            }
            Err(e) => {
                tracing::warn!(model = %optimised.display(), error = %e, "Cached optimised model did not load; optimising the model again.");
                let _ = std::fs::remove_file(&optimised);
            }
        }
    }
    // Written beside, then renamed: a reader never sees half a model.
    let partial = dir.join(format!("optimized.onnx.{}.part", std::process::id()));
    let session = base_builder(env, cfg)
        .and_then(|b| {
            b.with_optimized_model_path(&partial)
                .map_err(|e| e.to_string())
        })
        .map_err(|e| (e, false))?
        .commit_from_file(model)
        .map_err(|e| (e.to_string(), true));
    match &session {
        Ok(_) => {
            if let Err(e) = std::fs::rename(&partial, &optimised) {
                tracing::warn!(model = %optimised.display(), error = %e, "Cannot keep the optimised model.");
                let _ = std::fs::remove_file(&partial);
            }
        }
        Err(_) => {
            let _ = std::fs::remove_file(&partial);
        }
    }
    session
}

/// One provider's session: from the cached EP-context model when there is one (falling
/// back to the model itself if it does not load), else from the model. The error's flag
/// says whether the provider was set up and the model then failed to load.
fn commit(
    env: &Environment,
    cfg: &InferenceConfig,
    p: Provider,
    trt_dir: Option<&Path>,
    model: &Path,
) -> Result<Session, (String, bool)> {
    let build = || {
        base_builder(env, cfg)
            .and_then(|b| with_provider(b, p, cfg, trt_dir, model))
            .map_err(|e| (e, false))
    };
    #[cfg(feature = "tensorrt")]
    if let Some(ctx) = trt_dir.and_then(ep_context_model).filter(|c| c.is_file()) {
        match build()?.commit_from_file(&ctx) {
            Ok(s) => {
                tracing::info!(model = %ctx.display(), "Loaded the cached EP-context model.");
                return Ok(s);
            }
            Err(e) => {
                tracing::warn!(model = %ctx.display(), error = %e, "Cached EP-context model did not load; using the model itself.");
            }
        }
    }
    build()?
        .commit_from_file(model)
        .map_err(|e| (e.to_string(), true))
}

fn is_model_error(reason: &str) -> bool {
    [
        "Protobuf parsing failed",
        "INVALID_PROTOBUF",
        "INVALID_GRAPH",
        "No graph",
    ]
    .iter()
    .any(|m| reason.contains(m))
}

fn describe(session: Session, provider: Provider) -> Opened {
    let decl = |o: &ort::value::Outlet| TensorDecl {
        name: o.name().to_string(),
        dims: o
            .dtype()
            .tensor_shape()
            .map(|s| s.to_vec())
            .unwrap_or_default(),
    };
    let inputs = session.inputs().iter().map(decl).collect();
    let outputs = session.outputs().iter().map(decl).collect();
    let mut metadata = HashMap::new();
    if let Ok(meta) = session.metadata() {
        for key in [
            "yolo.anchors",
            "yolo.scale_x_y",
            "yolo.layout",
            "edge_agent.labels",
        ] {
            if let Some(v) = meta.custom(key) {
                metadata.insert(key.to_string(), v);
            }
        }
    }
    Opened {
        session,
        provider,
        inputs,
        outputs,
        metadata,
        cache_key_in: std::time::Duration::ZERO,
        session_in: std::time::Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_below_the_floor_or_unreadable_are_refused() {
        for (v, ok) in [
            ("1.17.0", true),
            ("1.19.2", true),
            ("1.32.0", true),
            ("2.0.0", true),
            ("1.16.3", false),
            ("1.9.0", false),
            ("0.99", false),
            ("", false),
            ("1", false),
            ("one.seventeen", false),
        ] {
            assert_eq!(at_least_minimum(v), ok, "{v:?}");
        }
    }

    #[test]
    fn a_file_that_is_not_onnx_runtime_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("libonnxruntime.so");
        std::fs::write(&f, b"not a library").unwrap();
        let e = library_version(&f).unwrap_err().to_string();
        assert!(e.contains(&f.display().to_string()), "{e}");
    }

    /// A directory holding `.venv/lib/python3.11/.../libonnxruntime.so.9.9.9`.
    fn planted() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let capi = dir
            .path()
            .join(".venv/lib/python3.11/site-packages/onnxruntime/capi");
        std::fs::create_dir_all(&capi).unwrap();
        let lib = capi.join("libonnxruntime.so.9.9.9");
        std::fs::write(&lib, b"planted").unwrap();
        (dir, lib)
    }

    #[test]
    fn a_venv_planted_above_the_executable_or_the_working_directory_is_not_loaded() {
        let (dir, planted) = planted();
        // An installed executable below the planted directory (as /tmp/x/edge-agent
        // below /tmp/.venv), and the working directory there too: neither counts.
        let exe = dir.path().join("bin/edge-agent");
        let cwd = std::env::current_dir().unwrap();
        for exe in [Some(exe.as_path()), None] {
            match search_library(None, None, exe) {
                Ok(found) => assert_ne!(found, planted, "exe {exe:?}, cwd {cwd:?}"),
                Err(InferError::OrtNotFound { searched }) => {
                    let dir = dir.path().display().to_string();
                    assert!(searched.iter().all(|s| !s.contains(&dir)), "{searched:?}");
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn the_checkouts_own_venv_is_used_when_the_executable_was_built_there() {
        let (dir, planted) = planted();
        for exe in [
            "target/release/edge-agent",
            "target/debug/edge-agent",
            "target/aarch64-unknown-linux-gnu/release/edge-agent",
            "target/debug/deps/integration-0123",
        ] {
            let exe = dir.path().join(exe);
            let found = search_library(None, None, Some(&exe)).unwrap();
            assert_eq!(found, planted, "{}", exe.display());
        }
        // Configuration, then the environment, come first.
        let other = dir.path().join("configured.so");
        std::fs::write(&other, b"x").unwrap();
        let exe = dir.path().join("target/release/edge-agent");
        assert_eq!(
            search_library(Some(&other), None, Some(&exe)).unwrap(),
            other
        );
        let env = Some(other.clone().into_os_string());
        assert_eq!(search_library(None, env, Some(&exe)).unwrap(), other);
    }
}
