#!/usr/bin/env python3
"""Verdicts and memory plot of one `scripts/soak` run (called by it; can be re-run).

    soak_report.py OUT_DIR --alive 0|1 --agent-exit N [--benchmarks FILE --figures DIR]

Reads OUT_DIR/{settings.json, memory.csv, metrics-final.txt, agent.log, timeline,
orphans.txt} and, when the agent ran under heaptrack (`scripts/soak --wrap "heaptrack -o
OUT_DIR/heap"`), OUT_DIR/heap*.zst; writes OUT_DIR/report.md and OUT_DIR/memory.png (when
matplotlib is installed). With --benchmarks, also replaces the `<!-- bench:soak -->`
section of FILE (appends it when missing; what follows a `<!-- soak:notes -->` line inside
it, a person's reading of the runs, is kept) and copies the plot and its CSV to DIR as
soak-memory.*. Exits 1 when a verdict fails.

The live heap (bytes malloc'd and not yet freed, from heaptrack) tells a leak or a
growing structure, which raises it, from the allocator keeping freed pages, which raises
RSS and anonymous memory only.

Memory rule (issue 17): after the warm-up (10 minutes of an hour's run), agent RSS may
grow at most 5 %. Windows of two camera-drop cycles (5 minutes by default; RSS falls while
the cameras are down) right after the warm-up and at the end, the same statistic of each
compared: the end window's mean at most 1.05 x the baseline window's mean, and the end
window's highest sample at most 1.05 x the baseline window's highest. The highest sample
of the whole run after the warm-up is reported beside them: a burst that comes back down
(frames redelivered at once after a broker restart) is not growth, and a rule on it
judged the load of one minute, not the trend. 2-minute windows are a cross-check.

With an uplink (`scripts/soak --uplink-every S`, issue 27), OUT_DIR/central.txt holds what
the central subscriber received (`<unix time> <topic> <payload>` a line) and the verdict
"nothing lost on the uplink" is added (see `uplink_verdict`); the section written into
FILE is then `soak_uplink`.
"""
import argparse
import collections
import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

GROWTH_LIMIT = 0.05
# Windows of two camera-drop cycles: RSS falls while the cameras are down (their pipelines
# are freed), so a window must hold whole cycles for its mean and peak to compare.
CYCLES_PER_WINDOW = 2
# Frames given up on by the transport, each counted with its reason.
FRAME_DROP_REASONS = ("frame_overflow", "frame_oversized", "unanswered_evicted", "unanswered_expired")


def mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def parse_metrics(text):
    """[(name, {label: value}, value)] of a Prometheus text exposition."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$", line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        try:
            out.append((m.group(1), labels, float(m.group(4))))
        except ValueError:
            pass
    return out


def total(series, name, **want):
    return sum(v for n, l, v in series if n == name and all(l.get(k) == w for k, w in want.items()))


def memory_verdict(t, rss, warmup_s, window_s):
    """Growth after the warm-up: mean against mean and peak against peak, over windows of
    `window_s` right after the warm-up and at the end of the run."""
    if not t or t[-1] <= warmup_s:
        return None
    win = min(window_s, (t[-1] - warmup_s) / 2)
    base = [r for x, r in zip(t, rss) if warmup_s <= x < warmup_s + win]
    end = [r for x, r in zip(t, rss) if x > t[-1] - win]
    after = [(x, r) for x, r in zip(t, rss) if x >= warmup_s]
    peak_t, peak = max(after, key=lambda p: p[1])
    b = mean(base)
    mt, mr = mean([x for x, _ in after]), mean([r for _, r in after])
    var = sum((x - mt) ** 2 for x, _ in after) or 1.0
    slope_h = sum((x - mt) * (r - mr) for x, r in after) / var * 3600
    growth, end_peak_growth = mean(end) / b - 1, max(end) / max(base) - 1
    return {
        "win": win,
        "base": b,
        "base_peak": max(base),
        "end": mean(end),
        "peak": peak,
        "peak_t": peak_t,
        "growth": growth,
        "end_peak": max(end),
        "end_peak_growth": end_peak_growth,
        "peak_growth": peak / max(base) - 1,
        "slope_h": slope_h,
        # Against the mean instead: how far the highest sample is above the baseline.
        "peak_over_mean": peak / b - 1,
        "flat": growth <= GROWTH_LIMIT and end_peak_growth <= GROWTH_LIMIT,
    }


def uplink_verdict(out, log_lines, series):
    """What the agent spooled against what the central subscriber received.

    Expected: every motion transition (lifecycle motion_started/motion_ended: camera,
    event id, state) and every incident event published (lifecycle incident: camera,
    incident, state; as many as were logged) the agent logged. Received: the distinct
    message ids in central.txt. Lost: an expected event not received, a gap in the
    spool's sequence numbers (per epoch, from 0 or the first seen to the highest), an
    uplink drop counted, or a spool not empty after the drain. Order: per camera, the
    first copies of the messages in spool order. Duplicates: only under one message_id,
    with the same content.

    Snapshots go up through the spool too, each under a sequence number of its own, but
    their payload is the JPEG (no JSON, so no message_id to read): every snapshot leaves
    a gap in the JSON messages' sequence. They are counted by their topic
    (`.../snapshots/{id}`, distinct ids), and the gaps must equal them: a lost JSON
    message or a lost snapshot would each leave one gap more than the snapshots
    received."""
    expected = collections.Counter()
    for v in log_lines:
        f = v.get("fields", v)
        lc = f.get("lifecycle")
        if lc in ("motion_started", "motion_ended"):
            expected[(f.get("camera"), "motion", f.get("event"), "start" if lc == "motion_started" else "end")] += 1
        elif lc == "incident":
            expected[(f.get("camera"), "incident", f.get("incident"), f.get("state"))] += 1
    first, contents, dup_same, dup_other, arrivals, bad = {}, {}, 0, 0, 0, 0
    by_camera = collections.defaultdict(list)
    path = out / "central.txt"
    snapshots = set()
    for line in (path.read_text(errors="replace").splitlines() if path.exists() else []):
        parts = line.split(" ", 2)
        if len(parts) < 3:
            continue
        at, topic, payload = parts
        if "/snapshots/" in topic and re.fullmatch(r"[0-9]+(\.[0-9]+)?", at):
            snapshots.add(topic)
            continue
        try:
            m = json.loads(payload)
        except ValueError:
            continue
        if not isinstance(m, dict) or "message_id" not in m:
            continue  # status, health: state, not spooled
        arrivals += 1
        mid = m.pop("message_id")
        content = json.dumps(m, sort_keys=True)
        if mid in contents:
            if contents[mid] == content:
                dup_same += 1
            else:
                dup_other += 1
            continue
        contents[mid] = content
        epoch, _, seq = mid.rpartition("-")
        try:
            seq = int(seq, 16)
        except ValueError:
            bad += 1
            continue
        if "incident" in m:
            key = (m.get("camera"), "incident", m.get("incident"), m.get("state"))
        else:
            key = (m.get("camera"), "motion", m.get("id"), m.get("state"))
        first[mid] = (key, epoch, seq)
        by_camera[m.get("camera")].append((epoch, seq))
    received = collections.Counter(k for k, _, _ in first.values())
    missing = expected - received
    seqs = collections.defaultdict(set)
    for _, epoch, seq in first.values():
        seqs[epoch].add(seq)
    gaps = sum(max(s) - min(s) + 1 - len(s) for s in seqs.values())
    unaccounted = gaps - len(snapshots)
    out_of_order = sum(1 for cam in by_camera.values() for a, b in zip(cam, cam[1:]) if a[0] == b[0] and b[1] <= a[1])
    drops = {l.get("reason"): int(v) for n, l, v in series if n == "edge_agent_dropped_total" and l.get("place") == "uplink" and v}
    depth = total(series, "edge_agent_uplink_spool_messages")
    sent = int(total(series, "edge_agent_uplink_sent_total"))
    ok = (not missing and unaccounted == 0 and not drops and depth == 0 and out_of_order == 0
          and dup_other == 0 and bad == 0 and sum(expected.values()) > 0)
    return {
        "ok": ok, "expected": sum(expected.values()), "received": len(first), "arrivals": arrivals,
        "dup_same": dup_same, "dup_other": dup_other, "missing": sum(missing.values()),
        "missing_examples": list(missing)[:5], "gaps": gaps, "snapshots": len(snapshots), "unaccounted": unaccounted, "epochs": len(seqs), "out_of_order": out_of_order,
        "drops": drops, "depth": depth, "sent": sent, "bad": bad,
    }


def live_heap(out):
    """(times in s, live heap in MiB, leaked at exit in MiB) from heaptrack's data file in
    `out`, or None when the agent did not run under heaptrack."""
    files = sorted(out.glob("heap*.zst")) + sorted(out.glob("heap*.gz"))
    if not files or not shutil.which("heaptrack_print"):
        return None
    massif = out / "heap.massif"
    run = subprocess.run(["heaptrack_print", "-f", str(files[0]), "-p", "0", "-a", "0", "-T", "0",
                          "-M", str(massif), "--massif-detailed-freq", "0"],
                         capture_output=True, text=True)
    if run.returncode != 0 or not massif.exists():
        print(f"soak_report: heaptrack_print failed: {run.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    leaked = re.search(r"total memory leaked: ([\d.]+)([KMG]?)", run.stdout)
    scale = {"": 1 / 1048576, "K": 1 / 1024, "M": 1, "G": 1024}
    leaked_mib = float(leaked.group(1)) * scale[leaked.group(2)] if leaked else float("nan")
    # Snapshots come at every change; keep one mean per 5 s, the memory samples' period.
    bins = collections.defaultdict(list)
    at = None
    for line in massif.read_text().splitlines():
        if line.startswith("time="):
            at = float(line[5:])
        elif line.startswith("mem_heap_B=") and at is not None:
            bins[int(at // 5) * 5].append(int(line[11:]) / 1048576)
    t = sorted(bins)
    return t, [mean(bins[k]) for k in t], leaked_mib


def plot(path, t, cols, events, warmup_s, mv, heap=None):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("soak_report: matplotlib is not installed; no memory plot", file=sys.stderr)
        return False
    mins = [x / 60 for x in t]
    fig, ax = plt.subplots(figsize=(10, 4.8), dpi=110)
    ax.plot(mins, cols["rss"], label="agent RSS", color="tab:blue", lw=1.4)
    ax.plot(mins, cols["anon"], label="agent anonymous", color="tab:cyan", lw=1, alpha=0.8)
    ax.plot(mins, cols["wrss"], label="workers RSS (sum)", color="tab:gray", lw=0.8, alpha=0.6)
    if heap:
        ax.plot([x / 60 for x in heap[0]], heap[1], label="agent live heap (heaptrack)", color="tab:olive", lw=0.8)
    ax.axvspan(0, warmup_s / 60, color="0.92", label="warm-up")
    if mv:
        ax.axhline(mv["base"], color="tab:green", lw=0.8, ls="--", label=f"baseline {mv['base']:.1f} MiB")
        ax.axhline(mv["base"] * (1 + GROWTH_LIMIT), color="tab:red", lw=0.8, ls="--", label="baseline + 5 %")
    styles = {"cameras stop": ("tab:orange", "camera drop"), "broker stop": ("tab:purple", "broker restart"),
              "worker kill": ("tab:red", "worker SIGKILL"), "uplink stop": ("tab:green", "uplink cut")}
    seen = set()
    for at, what in events:
        if what not in styles:
            continue
        colour, label = styles[what]
        ax.axvline(at / 60, color=colour, lw=0.6, alpha=0.5, ymax=0.06 if what != "cameras stop" else 1,
                   label=None if what in seen else label)
        seen.add(what)
    ax.set_xlabel("minutes")
    ax.set_ylabel("MiB")
    ax.set_ylim(bottom=0)
    ax.set_title("edge-agent soak: memory every 5 s")
    ax.legend(loc="lower right", fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--alive", type=int, required=True)
    ap.add_argument("--agent-exit", type=int, required=True)
    ap.add_argument("--benchmarks")
    ap.add_argument("--figures")
    a = ap.parse_args()
    out = Path(a.out)
    s = json.loads((out / "settings.json").read_text())

    rows = list(csv.DictReader(open(out / "memory.csv")))
    t = [float(r["t_s"]) for r in rows]
    mib = lambda key: [int(r.get(key) or 0) / 1024 for r in rows]
    cols = {"rss": mib("agent_rss_kib"), "anon": mib("agent_anon_kib"), "wrss": mib("workers_rss_kib")}
    threads = [int(r.get("agent_threads") or 0) for r in rows]
    tot_pss = [(int(r["agent_pss_kib"]) + int(r["workers_pss_kib"])) / 1024 for r in rows]
    window_s = CYCLES_PER_WINDOW * s["drop_every_s"]
    mv = memory_verdict(t, cols["rss"], s["warmup_s"], window_s)
    av = memory_verdict(t, cols["anon"], s["warmup_s"], window_s)
    # The same with 2-minute windows, as a cross-check (not a verdict).
    m2 = memory_verdict(t, cols["rss"], s["warmup_s"], 120)
    heap = live_heap(out)
    if heap and t:
        # heaptrack goes on through the drain and the shutdown; keep the sampled run.
        keep = [i for i, x in enumerate(heap[0]) if x <= t[-1]]
        heap = ([heap[0][i] for i in keep], [heap[1][i] for i in keep], heap[2])
    hv = memory_verdict(heap[0], heap[1], s["warmup_s"], window_s) if heap else None

    series = parse_metrics((out / "metrics-final.txt").read_text())
    escalated = int(total(series, "edge_agent_escalations_total"))
    drops = {r: int(total(series, "edge_agent_dropped_total", place="transport", reason=r)) for r in FRAME_DROP_REASONS}
    dropped = sum(drops.values())
    other_drops = {f"{l.get('place')}/{l.get('reason')}": int(v) for n, l, v in series
                   if n == "edge_agent_dropped_total" and v and not (l.get("place") == "transport" and l.get("reason") in FRAME_DROP_REASONS)}
    backlog = total(series, "edge_agent_backlog")
    motion = int(total(series, "edge_agent_motion_events_total"))
    restarts = collections.Counter()
    for n, l, v in series:
        if n == "edge_agent_camera_restarts_total":
            restarts[l.get("reason", "?")] += int(v)

    answered, started, warns = set(), 0, collections.Counter()
    log_lines = []
    for line in open(out / "agent.log", errors="replace"):
        try:
            v = json.loads(line)
        except ValueError:
            continue
        log_lines.append(v)
        f = v.get("fields", v)
        m = f.get("message", "")
        if m == "Detections received.":
            answered.add((f.get("camera", v.get("camera")), f.get("seq", v.get("seq"))))
        elif m == "Worker started.":
            started += 1
        if v.get("level") in ("WARN", "ERROR"):
            warns[m] += 1
    unaccounted = escalated - len(answered) - dropped
    ok_frames = unaccounted <= 0 and backlog == 0 and escalated > 0

    events = []
    for line in (out / "timeline").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3:
            events.append((int(parts[0]), " ".join(parts[1:3])))
    count = collections.Counter(w for _, w in events)
    orphans = [l for l in (out / "orphans.txt").read_text().splitlines() if l.strip()] if (out / "orphans.txt").exists() else ["(orphans.txt missing)"]
    alive = a.alive == 1
    clean_exit = a.agent_exit == 0

    png = out / "memory.png"
    # Timeline stamps are Unix seconds; memory.csv counts from the run's start.
    t0 = start_of_run(events)
    rel_events = [(at - t0, w) for at, w in events]
    have_png = plot(png, t, cols, rel_events, s["warmup_s"], mv, heap)

    m_ok = bool(mv and mv["flat"])
    uplink = s.get("uplink_every_s", 0) > 0
    uv = uplink_verdict(out, log_lines, series) if uplink else None
    verdicts = {
        "memory flat (RSS windows +5 % at most after the warm-up)": m_ok,
        "nothing lost": ok_frames,
        "no orphaned processes": not orphans,
        "agent alive to the end, clean exit on SIGTERM": alive and clean_exit,
    }
    if uv:
        verdicts["nothing lost on the uplink"] = uv["ok"]
    ok = all(verdicts.values())

    def mem_row(name, v):
        if not v:
            return f"| {name} | (run shorter than the warm-up) | | | | | | | | | |"
        return (f"| {name} | {v['base']:.1f} | {v['end']:.1f} | {v['growth'] * 100:+.1f} % | {v['base_peak']:.1f} "
                f"| {v['end_peak']:.1f} | {v['end_peak_growth'] * 100:+.1f} % "
                f"| {v['peak']:.1f} (min {v['peak_t'] / 60:.1f}), {v['peak_growth'] * 100:+.1f} % "
                f"| {v['peak_over_mean'] * 100:+.1f} % | {v['slope_h']:+.2f} | {'flat' if v['flat'] else 'GROWING'} |")

    w = s["warmup_s"] / 60
    win = (mv["win"] if mv else window_s) / 60
    rep = f"""{s['minutes']} min planned ({t[-1] / 60 if t else 0:.1f} min sampled), started {s['started_utc']} on commit {s['commit']}{' (+ uncommitted changes)' if s.get('dirty') else ''}, {s.get('profile', 'release')} build, {s['machine']} (shared, loaded).
{s['cameras']} RTSP cameras (640x360 15 fps H.264, object moving 3 s every 20 s), private Mosquitto (transport mqtt),
YOLOv4-tiny 416 random weights on the CPU, scale to zero (max 2 workers, cooldown 10 s).

Trouble injected: all cameras dropped {count['cameras stop']} times (server down 10 s, every {s['drop_every_s']} s),
broker stopped {count['broker stop']} times (5 s, every {s['broker_every_s']} s), {count['worker kill']} workers SIGKILLed (every {s['kill_every_s']} s){uplink_trouble(s, count)}.
Camera restarts by reason: {dict(restarts) or 'none'}; motion events {motion}; workers started {started}.

**Memory**, agent RSS and anonymous memory in MiB, sampled every 5 s ({len(rows)} samples). Rule (issue 17: at most 5 %
growth after the first {w:.0f} minutes): the baseline window is minutes {w:.0f}-{w + win:.0f}, right after the warm-up, the end
window the last {win:.0f} minutes, each {CYCLES_PER_WINDOW} camera-drop cycles long (RSS falls while the cameras are down, so
windows hold whole cycles); the end window's mean may be at most 5 % above the baseline window's mean, and the end window's
highest sample at most 5 % above the baseline window's highest. The run's highest sample after the warm-up is shown beside
them, not judged: a burst that comes back down is not growth.

| | baseline mean | end mean | growth | baseline max | end max | max growth | highest after warm-up, over baseline max | highest over baseline mean | slope (MiB/h) | verdict |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|
{mem_row('agent RSS', mv)}
{mem_row('agent anonymous', av)}
{mem_row('agent live heap (heaptrack)', hv) if heap else ''}

{heap_note(heap, hv)}

Cross-check with 2-minute windows (minutes {w:.0f}-{w + 2:.0f} against the last 2): agent RSS mean {fmt_pct(m2, 'growth')}, highest sample
{fmt_pct(m2, 'peak_over_mean')} over the baseline mean (that figure includes the camera-drop cycle's swing).

RSS at {w:.0f} min: {nearest(t, cols['rss'], s['warmup_s']):.1f} MiB, at the end: {cols['rss'][-1] if rows else 0:.1f} MiB; agent threads
{min(threads) if threads else 0}-{max(threads) if threads else 0}; peak total PSS (agent + workers) {max(tot_pss) if tot_pss else 0:.0f} MiB.

**Frames**

| escalated (accepted) | answered (distinct camera/seq) | dropped with a reason | unaccounted | backlog after drain | verdict |
|---:|---:|---:|---:|---:|---|
| {escalated} | {len(answered)} | {dropped} ({', '.join(f'{k} {v}' for k, v in drops.items() if v) or 'none'}) | {max(unaccounted, 0)} | {backlog:.0f} | {'nothing lost' if ok_frames else 'LOST FRAMES'} |

{uplink_table(uv)}Other drop counters (not escalated frames): {other_drops or 'none'}.
Warnings and errors in the agent log (message: count): {dict(warns.most_common(10)) or 'none'}.

**Verdicts**: {'; '.join(f"{k}: {'yes' if v else 'NO'}" for k, v in verdicts.items())}.
Orphans after the agent exited: {'; '.join(orphans) if orphans else 'none'}.
"""
    (out / "report.md").write_text("# Soak report\n\n" + rep)
    print(rep)

    if a.benchmarks:
        fig_dir = Path(a.figures)
        fig_dir.mkdir(parents=True, exist_ok=True)
        link = ""
        if have_png:
            link = "\n![agent memory over the soak](agent/benches/figures/soak-memory.png)\n(data: `agent/benches/figures/soak-memory.csv`)\n"
        name = "soak_uplink" if uplink else "soak"
        fig = name.replace("_", "-") + "-memory"
        link = link.replace("soak-memory", fig)
        if have_png:
            shutil.copy(png, fig_dir / f"{fig}.png")
        shutil.copy(out / "memory.csv", fig_dir / f"{fig}.csv")
        if uplink:
            title = (f"Soak: {s['minutes']} minutes with the uplink cut every {s['uplink_every_s']} s, "
                     "camera drops, broker restarts and worker SIGKILLs")
            how = (f"`scripts/soak --minutes {s['minutes']} --uplink-every {s['uplink_every_s']} "
                   f"--uplink-down {s['uplink_down_s']}` (issues 17 and 27; not part of `scripts/bench`).")
        else:
            title = f"Soak: {s['minutes']} minutes with camera drops, broker restarts and worker SIGKILLs"
            how = f"`scripts/soak --minutes {s['minutes']}` (issue 17; not part of `scripts/bench`)."
        section = f"<!-- bench:{name} -->\n## {title}\n\n{how}\n\n{rep}{link}\n<!-- /bench:{name} -->"
        bm = Path(a.benchmarks)
        text = bm.read_text() if bm.exists() else ""
        pat = re.compile(rf"<!-- bench:{name} -->.*?<!-- /bench:{name} -->", re.S)
        old = pat.search(text)
        notes = re.search(rf"^<!-- {name}:notes -->\n.*?(?=<!-- /bench:{name} -->)", old.group(0), re.S | re.M) if old else None
        if notes:
            section = section.replace(f"\n<!-- /bench:{name} -->", "\n" + notes.group(0) + f"<!-- /bench:{name} -->")
        text = pat.sub(lambda _: section, text) if pat.search(text) else text.rstrip("\n") + "\n\n" + section + "\n"
        bm.write_text(text)
        print(f"soak_report: wrote the {name} section of {bm}", file=sys.stderr)
    sys.exit(0 if ok else 1)


def uplink_trouble(s, count):
    if not s.get("uplink_every_s"):
        return ""
    return (f", the uplink's central broker stopped {count['uplink stop']} times "
            f"({s['uplink_down_s']} s, every {s['uplink_every_s']} s)")


def uplink_table(uv):
    if not uv:
        return ""
    missing = f"{uv['missing']} (e.g. {uv['missing_examples']})" if uv["missing"] else "0"
    return f"""**Uplink events** (motion transitions, incidents, clip notices and snapshots through the disk spool to the central Mosquitto)

| logged by the agent | received (distinct message_id) | copies received | duplicates (same id, same content) | same id, other content | missing | gaps in spool seq | snapshots received (distinct) | gaps not snapshots | out of order per camera | uplink drops | spool after drain | sent (metric) | verdict |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|
| {uv['expected']} | {uv['received']} | {uv['arrivals']} | {uv['dup_same']} | {uv['dup_other']} | {missing} | {uv['gaps']} | {uv['snapshots']} | {uv['unaccounted']} | {uv['out_of_order']} | {uv['drops'] or 'none'} | {uv['depth']:.0f} | {uv['sent']} | {'nothing lost' if uv['ok'] else 'LOST OR DISORDERED'} |

Received: {uv['received']} JSON messages and {uv['snapshots']} snapshots, {uv['received'] + uv['snapshots']} in all, against {uv['sent']} the agent counted sent (confirmed by the central broker and removed from the spool).

"""


def start_of_run(events):
    """Unix time of memory.csv's t=0, written by scripts/soak into the timeline."""
    for at, w in events:
        if w == "run start":
            return at
    return min((at for at, _ in events), default=0)


def heap_note(heap, hv):
    if not heap:
        return "(The agent did not run under heaptrack: no live-heap row.)"
    return (f"Live heap: bytes allocated and not yet freed, from heaptrack (5-s means of its snapshots); it ran "
            f"{'flat' if hv and hv['flat'] else 'NOT flat'} while RSS and anonymous memory also count pages the allocator "
            f"keeps. Left allocated at exit: {heap[2]:.2f} MiB (GStreamer's and GLib's one-time registries and types; "
            f"`heaptrack_print -l` on the run's data lists them).")


def fmt_pct(v, key):
    return f"{v[key] * 100:+.1f} %" if v else "n/a"


def nearest(t, ys, at):
    if not t:
        return 0.0
    i = min(range(len(t)), key=lambda k: abs(t[k] - at))
    return ys[i]


if __name__ == "__main__":
    main()
