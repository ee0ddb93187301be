//! What the benches read of processes in /proc: an agent's worker children and memory
//! figures (smaps_rollup, status).
#![allow(dead_code)] // each bench uses its own part

/// Worker processes of the agent: its children whose command line says `worker`.
pub fn workers_of(pid: u32) -> Vec<u32> {
    let mut kids = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return kids;
    };
    for entry in dir.flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let ppid: u32 = after
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if ppid != pid {
            continue;
        }
        let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        if cmd.split(|&b| b == 0).any(|a| a == b"worker") {
            kids.push(p);
        }
    }
    kids
}

/// (RSS, PSS) in KiB from smaps_rollup; zeros when the process is gone.
pub fn mem_kib(pid: u32) -> (u64, u64) {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
        return (0, 0);
    };
    (kib_field(&s, "Rss:"), kib_field(&s, "Pss:"))
}

/// One `Name:  N kB` field of a /proc/PID file (`smaps_rollup`, `status`); 0 when absent.
pub fn kib_field(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
}

/// CPU seconds (user + system) of a process so far; 0 once it is gone.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at state, field 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15: indices 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Resident memory in KiB (VmRSS of /proc/PID/status); 0 once the process is gone.
pub fn rss_kib(pid: u32) -> u64 {
    kib_field(
        &std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default(),
        "VmRSS:",
    )
}

/// RSS and PSS in KiB per mapped file of a process, from /proc/PID/smaps, largest RSS
/// first: shared libraries by file name, the executable by its name, and everything
/// anonymous (heap, thread stacks, allocator arenas) as `anonymous`.
pub fn rss_by_mapping(pid: u32) -> Vec<(String, u64, u64)> {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return Vec::new();
    };
    let mut by: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    let mut current = String::new();
    for line in s.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or("");
        // A mapping's header: "start-end perms offset dev inode [path]".
        if first.contains('-') && !first.ends_with(':') {
            let path = f.nth(4).unwrap_or("");
            current = match path {
                "" | "[heap]" | "[stack]" => "anonymous".into(),
                p if p.starts_with('[') => p.into(),
                p => p.rsplit('/').next().unwrap_or(p).to_string(),
            };
        } else if first == "Rss:" || first == "Pss:" {
            let kib: u64 = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            let e = by.entry(current.clone()).or_default();
            if first == "Rss:" {
                e.0 += kib;
            } else {
                e.1 += kib;
            }
        }
    }
    let mut v: Vec<(String, u64, u64)> = by.into_iter().map(|(k, (r, p))| (k, r, p)).collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.1));
    v
}
