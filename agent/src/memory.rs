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
    let tuned = glibc_tunables.is_some_and(|t| {
        t.split(':')
            .any(|kv| kv.trim_start().starts_with("glibc.malloc.arena_max="))
    });
    let set = malloc_arena_max.is_some_and(|v| !v.trim().is_empty());
    (!set && !tuned).then_some(ARENA_MAX)
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

/// The glibc tunable that makes malloc ask for transparent huge pages (glibc 2.35 and
/// later; older ones ignore it, as do kernels with huge pages off).
pub const HUGE_PAGES: &str = "glibc.malloc.hugetlb=1";

/// The `GLIBC_TUNABLES` a worker starts with: the agent's own (`agent`) with
/// [`HUGE_PAGES`] added, or `None` (inherit them unchanged) when they already say how
/// malloc should use huge pages.
///
/// Why: a worker's cold start creates its session, which allocates the model's weights
/// and their prepacked copies (tens to hundreds of MB) and touches every page once; in
/// 4 KiB pages that is a fault per page. With huge pages (the kernel's transparent ones,
/// in `madvise` mode as on Debian and JetPack) session creation took about a third less
/// CPU for YOLOv4-tiny (ONNX Runtime 1.32, BENCHMARKS.md, "Escalation latency"). A
/// worker's memory is gone at idle, so the larger pages cost nothing there. The agent
/// itself keeps small pages: it is what stays at idle.
pub fn worker_tunables(agent: Option<&str>) -> Option<String> {
    let agent = agent.map(str::trim).filter(|t| !t.is_empty());
    match agent {
        Some(t)
            if t.split(':')
                .any(|kv| kv.trim_start().starts_with("glibc.malloc.hugetlb=")) =>
        {
            None
        }
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
fn set_arena_max(n: i32) {
    // SAFETY: mallopt has no preconditions; M_ARENA_MAX only bounds future arenas.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, n);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_: i32) {}

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
