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

use super::config::{InferenceConfig, Provider};
use super::layout::TensorDecl;
use super::InferError;

/// Finds `libonnxruntime.so`: `inference.ort_library`, then `ORT_DYLIB_PATH`, then a
/// project virtualenv (`.venv/lib/python3*/site-packages/onnxruntime/capi/`) under the
/// current directory, its ancestors, or the executable's ancestors.
pub fn find_library(configured: Option<&Path>) -> Result<PathBuf, InferError> {
    let mut searched = Vec::new();
    if let Some(p) = configured {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        searched.push(format!("inference.ort_library = {} (missing)", p.display()));
    }
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) if Path::new(&p).is_file() => return Ok(PathBuf::from(p)),
        Some(p) => searched.push(format!(
            "ORT_DYLIB_PATH = {} (missing)",
            Path::new(&p).display()
        )),
        None => searched.push("ORT_DYLIB_PATH (not set)".into()),
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    let mut seen = std::collections::HashSet::new();
    for root in roots {
        if !seen.insert(root.clone()) {
            continue;
        }
        let lib = root.join(".venv/lib");
        searched.push(format!(
            "{}/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*",
            lib.display()
        ));
        if let Some(found) = venv_library(&lib) {
            return Ok(found);
        }
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

/// The process-wide ONNX Runtime environment (ONNX Runtime allows one per process and
/// loads the library once: the first caller's library wins).
pub fn environment(cfg: &InferenceConfig) -> Result<Environment, InferError> {
    static ENV: OnceLock<Mutex<Option<Environment>>> = OnceLock::new();
    let slot = ENV.get_or_init(|| Mutex::new(None));
    let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(env) = guard.as_ref() {
        return Ok(env.clone());
    }
    let path = find_library(cfg.ort_library.as_deref())?;
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
    tracing::info!(library = %path.display(), took = ?started.elapsed(), "ONNX Runtime loaded.");
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
}

pub fn provider_name(p: Provider) -> &'static str {
    match p {
        Provider::Tensorrt => "tensorrt",
        Provider::Cuda => "cuda",
        Provider::Cpu => "cpu",
    }
}

fn base_builder(env: &Environment, cfg: &InferenceConfig) -> Result<SessionBuilder, String> {
    let mut b = Session::builder(env)
        .map_err(|e| e.to_string())?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| e.to_string())?;
    let threads = cfg.threads.as_usize();
    if threads > 0 {
        b = b.with_intra_threads(threads).map_err(|e| e.to_string())?;
    }
    Ok(b)
}

fn with_provider(
    b: SessionBuilder,
    p: Provider,
    cfg: &InferenceConfig,
) -> Result<SessionBuilder, String> {
    match p {
        Provider::Cpu => Ok(b),
        #[cfg(feature = "cuda")]
        Provider::Cuda => b
            .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
            .map_err(|e| e.to_string()),
        #[cfg(not(feature = "cuda"))]
        Provider::Cuda => Err("not compiled in (build with --features cuda)".into()),
        #[cfg(feature = "tensorrt")]
        Provider::Tensorrt => {
            let mut trt = ort::ep::TensorRT::default().with_fp16(cfg.fp16);
            if let Some(dir) = &cfg.engine_cache {
                trt = trt
                    .with_engine_cache(true)
                    .with_engine_cache_path(dir.display())
                    .with_timing_cache(true)
                    .with_timing_cache_path(dir.display());
            }
            b.with_execution_providers([trt.build().error_on_failure()])
                .map_err(|e| e.to_string())
        }
        #[cfg(not(feature = "tensorrt"))]
        Provider::Tensorrt => {
            let _ = cfg;
            Err("not compiled in (build with --features tensorrt)".into())
        }
    }
}

/// Opens `model` on the first provider of `cfg.providers` that works.
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
        let built = base_builder(&env, cfg)
            .and_then(|b| with_provider(b, p, cfg))
            .map_err(|e| (e, false))
            .and_then(|mut b| b.commit_from_file(model).map_err(|e| (e.to_string(), true)));
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
                return Ok(describe(session, p));
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
    Err(InferError::NoProvider {
        path: model.to_path_buf(),
        attempts,
    })
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
    }
}
