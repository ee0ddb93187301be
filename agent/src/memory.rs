//! The process's malloc policy (glibc), set once at start for every command.
//!
//! Why (issue 17, `scripts/soak`): every camera (re)connection builds a new GStreamer
//! pipeline, whose streaming, decoder and RTSP threads are new threads. glibc gives busy
//! threads their own malloc arenas (up to 8 per core) and rarely hands an arena's freed
//! pages back, so agent RSS stepped up after each camera drop although every pipeline was
//! freed (GStreamer's leaks tracer counted as many pipelines, elements and pools removed as
//! added). Two arenas keep the decoder and streaming threads from spreading their buffers
//! over many heaps, and a trim after each pipeline teardown returns what it freed.
//!
//! `MALLOC_ARENA_MAX` or a `glibc.malloc.arena_max` tunable in `GLIBC_TUNABLES` in the
//! environment still wins. Elsewhere than glibc both calls do nothing.

/// Arenas for the whole process: the main one and one more for the other threads.
pub const ARENA_MAX: i32 = 2;

/// The arena limit to set, or `None` when the environment already sets one (an operator
/// or a test tuning glibc keeps the last word).
pub fn arena_limit(malloc_arena_max: Option<&str>, glibc_tunables: Option<&str>) -> Option<i32> {
    (!threshold_set("arena_max", malloc_arena_max, glibc_tunables)).then_some(ARENA_MAX)
}

/// Whether `GLIBC_TUNABLES` (`glibc_tunables`) sets `glibc.malloc.<name>`.
fn tunable_set(glibc_tunables: Option<&str>, name: &str) -> bool {
    let tunable = format!("glibc.malloc.{name}=");
    glibc_tunables.is_some_and(|t| t.split(':').any(|kv| kv.trim_start().starts_with(&tunable)))
}

/// Limits malloc arenas (see the module text). Call first thing in `main`, before any
/// thread starts: threads that already have an arena keep it.
pub fn limit_arenas() {
    let env = |k: &str| std::env::var(k).ok();
    if let Some(n) = arena_limit(
        env("MALLOC_ARENA_MAX").as_deref(),
        env("GLIBC_TUNABLES").as_deref(),
    ) {
        set_arena_max(n);
    }
}

/// Allocations at least this large get their own `mmap` in a worker (glibc's default
/// starts at 128 KiB and moves up only as such blocks are freed).
pub const WORKER_MMAP_THRESHOLD: i32 = 32 << 20;
/// Free memory at the top of a worker's heap that malloc keeps rather than returns.
pub const WORKER_TRIM_THRESHOLD: i32 = 64 << 20;

/// Whether the environment already sets malloc's `name` setting (its own variable,
/// `env_value`, such as `MALLOC_ARENA_MAX`, or the `glibc.malloc.<name>` tunable): then
/// it keeps the last word.
pub fn threshold_set(name: &str, env_value: Option<&str>, glibc_tunables: Option<&str>) -> bool {
    env_value.is_some_and(|v| !v.trim().is_empty()) || tunable_set(glibc_tunables, name)
}

/// A worker's heap: blocks up to [`WORKER_MMAP_THRESHOLD`] come from the heap and up to
/// [`WORKER_TRIM_THRESHOLD`] of freed memory stays there. Call first thing in the worker,
/// before its threads start; call [`release_free_memory`] once the model is loaded.
///
/// Why: creating a session allocates the model's bytes, weights, layouts and prepacked
/// copies as many blocks of a few hundred KiB to a few MiB, and frees many of them again.
/// With glibc's defaults most of those are fresh `mmap`s, each page faulted and zeroed,
/// and unmapped again on free; from the heap the freed ones are reused. Measured here
/// (ONNX Runtime 1.32, medians of alternating starts): `edge-agent detect` created
/// YOLOv4-tiny's session in 45 ms against 71 ms with glibc's defaults; workers started
/// alone against Mosquitto, against glibc's starting thresholds held fixed, in 38
/// against 60 ms (model loaded 66 against 87 ms), and YOLOv4 416's in 298 against
/// 483 ms. The trim after the load hands back what the load freed, so a ready worker
/// holds what it held before (67 and 298 MiB RSS); without it, 79 and 418 MiB. The
/// agent keeps glibc's thresholds.
pub fn worker_heap() {
    let env = |k: &str| std::env::var(k).ok();
    let tunables = env("GLIBC_TUNABLES");
    for (name, var, option, value) in [
        (
            "mmap_threshold",
            "MALLOC_MMAP_THRESHOLD_",
            M_MMAP_THRESHOLD,
            WORKER_MMAP_THRESHOLD,
        ),
        (
            "trim_threshold",
            "MALLOC_TRIM_THRESHOLD_",
            M_TRIM_THRESHOLD,
            WORKER_TRIM_THRESHOLD,
        ),
    ] {
        if !threshold_set(name, env(var).as_deref(), tunables.as_deref()) {
            set_option(option, value);
        }
    }
}

/// The glibc tunable that makes malloc ask for transparent huge pages (glibc 2.35 and
/// later; older ones ignore it, as do kernels with huge pages off).
pub const HUGE_PAGES: &str = "glibc.malloc.hugetlb=1";

/// The `GLIBC_TUNABLES` a worker starts with when `EDGE_AGENT_WORKER_HUGE_PAGES=1`: the
/// agent's own (`agent`) with [`HUGE_PAGES`] added, or `None` (inherit them unchanged)
/// when they already say how malloc should use huge pages.
///
/// Opt-in, because it measured slower: the idea was that a cold start touches every
/// page of the weights once and fewer, larger pages fault less. In the latency bench a
/// YOLOv4-tiny worker was ready in 159 ms with them against 118 ms without, and with
/// [`worker_heap`] its session took 39-50 ms with them against 38-40 ms without
/// (YOLOv4 416: 449 against 298 ms; ONNX Runtime 1.32, this machine).
pub fn worker_tunables(agent: Option<&str>) -> Option<String> {
    let agent = agent.map(str::trim).filter(|t| !t.is_empty());
    match agent {
        Some(t) if tunable_set(Some(t), "hugetlb") => None,
        Some(t) => Some(format!("{t}:{HUGE_PAGES}")),
        None => Some(HUGE_PAGES.to_string()),
    }
}

/// Returns freed heap pages to the system (all arenas). Cheap enough after rare events
/// such as a pipeline teardown; not for a per-frame path.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it takes each arena's lock itself.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
use libc::{M_ARENA_MAX, M_MMAP_THRESHOLD, M_TRIM_THRESHOLD};
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
const M_ARENA_MAX: i32 = 0;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
const M_MMAP_THRESHOLD: i32 = 0;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
const M_TRIM_THRESHOLD: i32 = 0;

fn set_arena_max(n: i32) {
    set_option(M_ARENA_MAX, n);
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_option(option: i32, value: i32) {
    // SAFETY: mallopt has no preconditions; these options only steer future
    // allocations (M_ARENA_MAX bounds future arenas, the thresholds future blocks).
    unsafe {
        libc::mallopt(option, value);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_option(_: i32, _: i32) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_arena_limit_is_set_unless_the_environment_sets_one() {
        let rows = [
            (None, None, Some(ARENA_MAX)),
            (Some(""), None, Some(ARENA_MAX)),
            (Some("4"), None, None),
            (None, Some("glibc.malloc.arena_max=8"), None),
            (
                None,
                Some("glibc.malloc.tcache_count=0:glibc.malloc.arena_max=1"),
                None,
            ),
            (None, Some("glibc.malloc.arena_test=2"), Some(ARENA_MAX)),
        ];
        for (env, tunables, want) in rows {
            assert_eq!(arena_limit(env, tunables), want, "{env:?} {tunables:?}");
        }
    }

    #[test]
    fn a_threshold_the_environment_sets_is_left_alone() {
        let rows = [
            (None, None, false),
            (Some(" "), None, false),
            (Some("1048576"), None, true),
            (None, Some("glibc.malloc.mmap_threshold=4096"), true),
            (
                None,
                Some("glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=4096"),
                true,
            ),
            (None, Some("glibc.malloc.trim_threshold=4096"), false),
        ];
        for (env, tunables, set) in rows {
            assert_eq!(
                threshold_set("mmap_threshold", env, tunables),
                set,
                "{env:?} {tunables:?}"
            );
        }
    }

    #[test]
    fn workers_get_huge_pages_unless_the_agents_tunables_say_otherwise() {
        let rows = [
            (None, Some("glibc.malloc.hugetlb=1")),
            (Some(""), Some("glibc.malloc.hugetlb=1")),
            (
                Some("glibc.malloc.arena_max=1"),
                Some("glibc.malloc.arena_max=1:glibc.malloc.hugetlb=1"),
            ),
            (Some("glibc.malloc.hugetlb=0"), None),
            (
                Some("glibc.malloc.arena_max=1:glibc.malloc.hugetlb=2"),
                None,
            ),
        ];
        for (agent, want) in rows {
            assert_eq!(worker_tunables(agent).as_deref(), want, "{agent:?}");
        }
    }
}
