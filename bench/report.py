#!/usr/bin/env python3
"""Writes docs/benchmarks.md (and the chart) from bench.py's results.json.

    report.py RESULTS.json --md OUT.md [--png OUT.png [--plot-python PY]]
              [--results-path PATH-SHOWN-IN-THE-DOC]

Standard library only; the chart is drawn by bench/plot.py with matplotlib
when --plot-python names an interpreter that has it, else by bench/pngplot.py.
Exits non-zero when the results say a step failed, so a broken harness is
noticed even when only the report is regenerated.
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
KD = "kubedf"
NE = "node_exporter"


# ---------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------


def ms(x):
    if x is None:
        return "–"
    if x < 0.1:
        return f"{x * 1000:.0f} µs"
    if x < 10:
        return f"{x:.2f} ms"
    if x < 100:
        return f"{x:.1f} ms"
    return f"{x:,.0f} ms"


def sec(x):
    return "–" if x is None else ms(x * 1e3)


def nbytes(x):
    if x is None:
        return "–"
    if x < 10_000:
        return f"{x:,.0f} B"
    if x < 10_000_000:
        return f"{x / 1000:,.1f} KB"
    return f"{x / 1e6:,.1f} MB"


def mib(kib):
    return "–" if kib is None else f"{kib / 1024:.1f} MiB"


def num(x, digits=0):
    return "–" if x is None else f"{x:,.{digits}f}"


def ratio(k, n):
    """kubedf / node_exporter, with the factor spelled out."""
    if k is None or n is None or n == 0:
        return "–"
    if k == 0:
        return "0"
    r = k / n
    if r < 1:
        return f"{r:.3g} (1/{1 / r:,.{0 if 1 / r >= 10 else 1}f})"
    return f"{r:.3g}"


def get(d, *path):
    for p in path:
        if d is None:
            return None
        d = d.get(p) if isinstance(d, dict) else None
    return d


# ---------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------


def factor_target(name, k, n, want, unit_fmt):
    """kubedf at least `want` times lower than node_exporter."""
    if k is None or n is None:
        return (name, "–", "–", "–", "not measured")
    if k == 0:
        verdict = "not measurable: both below one clock tick" if n == 0 else "**met** (kubedf below one clock tick in total)"
        return (name, unit_fmt(k), unit_fmt(n), ratio(k, n), verdict)
    f = n / k
    if f >= want:
        verdict = f"**met** ({f:,.1f}x lower)"
    elif f < 1:
        verdict = f"**missed**: kubedf {1 / f:,.2f}x higher, needs {want}x lower"
    else:
        verdict = f"**missed**: {f:,.1f}x lower, needs {want}x ({want / f:.2f}x short)"
    return (name, unit_fmt(k), unit_fmt(n), ratio(k, n), verdict)


def half_target(name, k, n, unit_fmt):
    if k is None or n is None:
        return (name, "–", "–", "–", "not measured")
    r = k / n
    if r <= 0.5:
        verdict = f"**met** ({r:.0%} of node_exporter's)"
    else:
        verdict = f"**missed**: {r:.0%} of node_exporter's, needs at most 50% ({r / 0.5:.2f}x too much)"
    return (name, unit_fmt(k), unit_fmt(n), ratio(k, n), verdict)


def targets(r, scr, nmax):
    rows = []
    s = scr.get(nmax)
    for enc in ("plain", "gzip"):
        rows.append(
            factor_target(
                f"sequential scrape p99 at {nmax:,} volumes, {enc}: ≥10x lower",
                get(s, "seq", enc, KD, "p99_ms"),
                get(s, "seq", enc, NE, "p99_ms"),
                10,
                ms,
            )
        )
    for enc in ("plain", "gzip"):
        rows.append(
            factor_target(
                f"scrape p99 under wrk -c 8 at {nmax:,} volumes, {enc}: ≥10x lower",
                get(s, "wrk", enc, KD, "p99_ms"),
                get(s, "wrk", enc, NE, "p99_ms"),
                10,
                ms,
            )
        )
    for enc in ("plain", "gzip"):
        rows.append(
            factor_target(
                f"CPU per scrape (sequential) at {nmax:,} volumes, {enc}: ≥10x lower",
                get(s, "seq", enc, KD, "cpu_ms_per_scrape"),
                get(s, "seq", enc, NE, "cpu_ms_per_scrape"),
                10,
                ms,
            )
        )
    u = get(s, "uncached")
    for enc in ("plain", "gzip"):
        rows.append(
            factor_target(
                f"scrape p99 at {nmax:,} volumes, {enc}, kubedf rendering every scrape: ≥10x lower",
                get(u, enc, KD, "p99_ms"),
                get(u, enc, NE, "p99_ms"),
                10,
                ms,
            )
        )
    for enc in ("plain", "gzip"):
        rows.append(
            factor_target(
                f"CPU per scrape at {nmax:,} volumes, {enc}, kubedf rendering every scrape: ≥10x lower",
                get(u, enc, KD, "cpu_ms_per_scrape"),
                get(u, enc, NE, "cpu_ms_per_scrape"),
                10,
                ms,
            )
        )
    for enc in ("plain", "gzip"):
        rows.append(
            factor_target(
                f"CPU per request under wrk at {nmax:,} volumes, {enc}: ≥10x lower",
                get(s, "wrk", enc, KD, "cpu_ms_per_request"),
                get(s, "wrk", enc, NE, "cpu_ms_per_request"),
                10,
                ms,
            )
        )
    rows.append(
        half_target(
            f"RSS after load at {nmax:,} volumes: at most half",
            get(s, "mem", "after_load", KD, "VmRSS"),
            get(s, "mem", "after_load", NE, "VmRSS"),
            mib,
        )
    )
    rows.append(
        half_target(
            f"peak RSS (VmHWM) after load at {nmax:,} volumes: at most half",
            get(s, "mem", "after_load", KD, "VmHWM"),
            get(s, "mem", "after_load", NE, "VmHWM"),
            mib,
        )
    )
    hung = step(r, "hung mount")
    if hung:
        deltas = hung_deltas(hung)
        worst = max((d for d in deltas[KD].values() if d is not None), default=None, key=abs)
        timed_out = any(x is None for x in deltas[KD].values())
        if timed_out:
            verdict = "**missed**: a kubedf scrape timed out"
        elif worst is None:
            verdict = "not measured"
        elif abs(worst) < 10:
            verdict = f"**met** (worst change {worst:+.2f} ms)"
        else:
            verdict = f"**missed**: {worst:+.2f} ms, limit ±10 ms ({abs(worst) - 10:.2f} ms over)"
        ne_worst = deltas[NE]
        ne_txt = ", ".join(f"#{i}: {'timed out' if v is None else f'{v:+.1f} ms'}" for i, v in ne_worst.items())
        kd_txt = ", ".join(f"#{i}: {'timed out' if v is None else f'{v:+.2f} ms'}" for i, v in deltas[KD].items())
        rows.append(
            (
                f"a hung mount (N={hung['n']}) changes scrape latency by <10 ms from the 1st scrape on (scrapes 1, 2, 10 vs control)",
                kd_txt,
                ne_txt,
                "–",
                verdict,
            )
        )
    else:
        rows.append(("a hung mount changes scrape latency by <10 ms", "–", "–", "–", "not measured"))
    walk = step(r, "walk")
    if walk:
        same = walk["identical"] and walk.get("kubedf_metrics") is not None
        variants = [(walk.get("walk_threads", 1), walk["walk_wall"])]
        if walk.get("walk_threads", 1) != 1 and "walk1_wall" in walk:
            variants.append((1, walk["walk1_wall"]))
        for threads, wall in variants:
            f = walk["kubelet_wall"] / wall
            if not same:
                verdict = "**missed**: results differ"
            elif f >= 2:
                verdict = f"**met** ({f:.1f}x faster, identical bytes and inodes)"
            else:
                verdict = f"**missed**: {f:.2f}x faster, needs 2x ({2 / f:.2f}x short)"
            what = "kubedf's default" if threads == walk.get("walk_threads", 1) else "for comparison"
            rows.append(
                (
                    f"usage walk ≥2x faster (wall) than du + find, identical results ({walk['files']:,} files), "
                    f"{threads} thread{'s' if threads != 1 else ''} ({what})",
                    sec(wall),
                    f"{sec(walk['kubelet_wall'])} (du + find)",
                    ratio(wall, walk["kubelet_wall"]),
                    verdict,
                )
            )
    rss = step(r, "walk RSS")
    if rss:
        d = rss["delta_kib"]
        t = rss["target_kib"]
        verdict = f"**met** (+{mib(d)})" if d <= t else f"**missed**: +{mib(d)}, limit +{mib(t)} ({mib(d - t)} over)"
        rows.append(
            (
                f"peak RSS walking {rss['dirs']:,} directories under {rss['names']} nested {rss['name_len']}-character "
                "names (a hostPath PV): within 8 MiB of kubedf's RSS at rest",
                f"{mib(rss['peak_kib'])} (at rest {mib(rss['idle_rss_kib'])})",
                "–",
                "–",
                verdict,
            )
        )
    render = step(r, "render")
    if render and "render/10000" in render:
        m = render["render/10000"]["mean_ms"]
        verdict = f"**met** ({m:.2f} ms)" if m < 5 else f"**missed**: {m:.2f} ms, limit 5 ms ({m - 5:.2f} ms, {m / 5 - 1:.0%} over)"
        rows.append(("rendering 10,000 PVCs' series: < 5 ms (criterion mean)", ms(m), "–", "–", verdict))
    return rows


def hung_deltas(hung):
    """scrape i -> hung minus control latency (ms), None when the hung one timed out."""
    out = {}
    for kind in (KD, NE):
        d = {}
        ctl = {s["i"]: s for s in get(hung, "control", kind, "scrapes") or []}
        hg = {s["i"]: s for s in get(hung, "hung", kind, "scrapes") or []}
        for i in (1, 2, 10):
            a, b = ctl.get(i), hg.get(i)
            if a is None or b is None:
                continue
            if b["timed_out"] or a["timed_out"]:
                d[i] = None
            else:
                d[i] = b["ms"] - a["ms"]
        out[kind] = d
    return out


def step(r, name):
    s = r["steps"].get(name)
    return s["result"] if s and s.get("ok") else None


def missing(r, name):
    return "Not run (`--only`)." if name not in r["steps"] else "Not measured: the step failed (see above)."


# ---------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        out.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(out)


def scrape_table(s):
    rows = []

    def row(name, fmt, *path):
        k = get(s, *path[:-1], KD, path[-1]) if path[-1] else None
        n = get(s, *path[:-1], NE, path[-1]) if path[-1] else None
        rows.append((name, fmt(k), fmt(n), ratio(k, n)))

    row("series per scrape", lambda x: num(x), "seq", "plain", "series")
    row("bytes per scrape, plain", nbytes, "seq", "plain", "bytes")
    row("bytes per scrape, gzip", nbytes, "seq", "gzip", "bytes")
    for enc in ("plain", "gzip"):
        row(f"sequential latency p50, {enc}", ms, "seq", enc, "p50_ms")
        row(f"sequential latency p99, {enc}", ms, "seq", enc, "p99_ms")
    for enc in ("plain", "gzip"):
        row(f"CPU per scrape (sequential), {enc}", ms, "seq", enc, "cpu_ms_per_scrape")
    for enc in ("plain", "gzip"):
        row(f"wrk -c 8: requests/s, {enc}", lambda x: num(x, 1), "wrk", enc, "rps")
        row(f"wrk -c 8: latency p50, {enc}", ms, "wrk", enc, "p50_ms")
        row(f"wrk -c 8: latency p99, {enc}", ms, "wrk", enc, "p99_ms")
        row(f"wrk -c 8: CPU per request, {enc}", ms, "wrk", enc, "cpu_ms_per_request")
    row("RSS when ready", mib, "mem", "start", "VmRSS")
    row("RSS after load", mib, "mem", "after_load", "VmRSS")
    row("peak RSS (VmHWM) after load", mib, "mem", "after_load", "VmHWM")
    return table(["", KD, NE, "kubedf / node_exporter"], rows)


def hung_section(hung, cfg):
    lines = []
    lines.append(
        f"{hung['n']} tmpfs volumes plus one more: a tmpfs in the control run, a FUSE mount whose statfs never "
        f"answers (`hangfs --hang statfs`) in the hung run. Each exporter is started on its own (with a fresh hangfs), "
        f"and scrape *i* is sent {hung['pace_s']:g} s × (*i*−1) after its port opens (or right after scrape *i*−1 "
        f"when that took longer), each on a new connection with a {hung['timeout_s']:g} s client timeout. kubedf runs "
        f"with `--volume-stats-timeout {hung['volume_stats_timeout']}`; node_exporter with its defaults "
        f"(`--collector.filesystem.mount-timeout 5s`)."
    )
    lines.append("")
    rows = []
    scr = {}
    for variant in ("control", "hung"):
        for kind in (KD, NE):
            scr[(variant, kind)] = {s["i"]: s for s in get(hung, variant, kind, "scrapes") or []}

    def cell(s, kind):
        if s is None:
            return "–"
        if s["timed_out"]:
            return "**timed out**"
        extra = f"{s['volumes']} vol."
        if kind == KD and s.get("errors"):
            extra += ", " + "+".join(s["errors"])
        if kind == NE and s.get("device_errors"):
            extra += f", {s['device_errors']} device_error"
        return f"{ms(s['ms'])} ({extra})"

    n_scrapes = max((len(v) for v in scr.values()), default=0)
    for i in range(1, n_scrapes + 1):
        kc, kh = scr[("control", KD)].get(i), scr[("hung", KD)].get(i)
        nc, nh = scr[("control", NE)].get(i), scr[("hung", NE)].get(i)
        at_k = f"{kh['at']:.1f}" if kh else "–"
        at_n = f"{nh['at']:.1f}" if nh else "–"
        mark = "**" if i in (1, 2, 10) else ""
        rows.append((f"{mark}{i}{mark}", at_k, cell(kc, KD), cell(kh, KD), at_n, cell(nc, NE), cell(nh, NE)))
    lines.append(
        table(
            ["scrape", "kubedf sent at (s)", "kubedf control", "kubedf hung", "node_exporter sent at (s)", "node_exporter control", "node_exporter hung"],
            rows,
        )
    )
    lines.append("")
    ex = []
    for kind in (KD, NE):
        for variant in ("control", "hung"):
            d = get(hung, variant, kind) or {}
            how = d.get("sigterm", "exited" if d.get("sigterm_exit_seconds") is not None else "running")
            if how == "exited":
                txt = f"exited in {sec(d.get('sigterm_exit_seconds'))}"
            elif how == "threads blocked":
                txt = (
                    f"main thread exited in {sec(d.get('main_thread_exit_seconds'))}, but a thread blocked in statfs "
                    "kept the process from finishing"
                )
            else:
                txt = f"**not gone {hung.get('sigterm_grace_s', 5):g} s later**"
            left = d.get("threads_left") or {}
            if left:
                txt += " (threads left: " + ", ".join(f"{n} × {k}" for k, n in sorted(left.items())) + ")"
            if how != "exited" and d.get("exited_after_release") is not None:
                txt += "; gone as soon as hangfs was stopped and failed the parked statfs"
            ex.append(f"{kind} {variant}: {txt}")
    lines.append("After the scrapes, SIGTERM (while the hung run's hangfs still holds the statfs): " + "; ".join(ex) + ".")
    lines.append("")
    lines.append(
        "A thread blocked in statfs on a FUSE (or NFS hard) mount sleeps uninterruptibly in the kernel "
        "(`request_wait_answer`) and is freed by no signal, so no process with such a thread can finish exiting "
        "before the call returns; what an exporter controls is whether its other threads stop and its port closes."
    )
    return "\n".join(lines)


def walk_section(w):
    threads = w.get("walk_threads", 1)
    bi = f"{num(w['walk_bytes_inodes'][0][0])} bytes, {num(w['walk_bytes_inodes'][0][1])} inodes"
    rows = [
        ("`nice -n 19 du -x -s -B 1 DIR` (bytes)", sec(w["du_wall"]), sec(w["du_cpu"]), num(w["du_bytes"][0]) + " bytes"),
        ("`find DIR -xdev \\| wc -l` (inodes)", sec(w["find_wall"]), sec(w["find_cpu"]), num(w["find_entries"][0]) + " entries"),
        ("**kubelet's du method: du + find**", sec(w["kubelet_wall"]), sec(w["kubelet_cpu"]), ""),
    ]
    if threads != 1 and "walk1_wall" in w:
        rows.append((f"**kubedf's walk, {threads} threads** (kubedf's default; `nice -n 19 walk --threads {threads} DIR`)", sec(w["walk_wall"]), sec(w["walk_cpu"]), bi))
        rows.append(("kubedf (default) / (du + find)", ratio(w["walk_wall"], w["kubelet_wall"]), ratio(w["walk_cpu"], w["kubelet_cpu"]), "identical" if w["identical"] else "**differ**"))
        rows.append(("kubedf's walk, 1 thread (`nice -n 19 walk --threads 1 DIR`)", sec(w["walk1_wall"]), sec(w["walk1_cpu"]), bi))
        rows.append(("kubedf (1 thread) / (du + find)", ratio(w["walk1_wall"], w["kubelet_wall"]), ratio(w["walk1_cpu"], w["kubelet_cpu"]), ""))
    else:
        rows.append(("**kubedf's walk** (`nice -n 19 walk DIR`, examples/walk.rs)", sec(w["walk_wall"]), sec(w["walk_cpu"]), bi))
        rows.append(("kubedf / (du + find)", ratio(w["walk_wall"], w["kubelet_wall"]), ratio(w["walk_cpu"], w["kubelet_cpu"]), "identical" if w["identical"] else "**differ**"))
    km = w.get("kubedf_metrics")
    if km:
        rows.append(
            (
                "`kubedf metrics` on the tree as a hostPath PV (process start, API, walk, render; default threads)",
                sec(km["wall"]),
                sec(km["cpu"]),
                f"{num(km['used_bytes'])} bytes, {num(km['inodes_used'])} inodes",
            )
        )
    text = (
        f"A tree of {w['files']:,} files in {w['dirs']:,} directories on its own tmpfs (so the disk is not the variable): "
        "half of the files empty, half 1 B–4 KiB, one in 997 64 KiB. `examples/walk.rs` calls "
        "`kubedf::sources::walk::walk` directly. Medians of "
        f"{w['rounds']} rounds after one warm-up round; the order of the commands rotates each round. Wall time is "
        "measured around each command; CPU is user+sys of the command and its children (`getrusage(RUSAGE_CHILDREN)`). "
        f"The walk binary's own timer says {sec(w['walk_inner'])} (without process start). du and kubedf's walk both "
        "make one `stat` call per entry, which is what bounds them on a warm tmpfs; find makes none (it takes the "
        "entry types from the directory). So a single-threaded walk costs about what du alone costs: its advantage "
        "over du + find is one pass instead of two, plus, by default, a second thread. du and find are one thread "
        "each.\n\n"
    )
    return text + table(["", "wall (median)", "CPU user+sys (median)", "result"], rows)


def walk_rss_section(w):
    rows = [
        ("VmRSS at rest (walking the PV empty, before the tree)", mib(w["idle_rss_kib"])),
        ("VmHWM at rest (since start)", mib(w["idle_hwm_kib"])),
        (f"**VmHWM while walking the tree** (reset at rest; {w['walk_seconds']:g} s of walks after the first whole one)", f"**{mib(w['peak_kib'])}**"),
        ("peak − RSS at rest", f"**+{mib(w['delta_kib'])}** (target +{mib(w['target_kib'])})"),
        ("highest VmRSS sampled every 100 ms / VmRSS at the end", f"{mib(w['max_sampled_rss_kib'])} / {mib(w['end_rss_kib'])}"),
        ("the tree: bytes, inodes (du -sxB1, find -xdev)", f"{num(w['bytes'])}, {num(w['inodes'])}"),
        ("tree made in / reported by kubedf after", f"{w['tree_seconds']:.1f} s / {w['reported_seconds']:.1f} s"),
    ]
    if "before" in w:
        # The same step run once against an earlier build, recorded by hand.
        o = w["before"]
        rows.append(
            (
                f"the same, kubedf at git {o['rev']} ({o['what']}): at rest / peak",
                f"{mib(o['idle_rss_kib'])} / {mib(o['peak_kib'])} (+{mib(o['peak_kib'] - o['idle_rss_kib'])})",
            )
        )
    text = (
        f"A tenant's tree from issue 16 in a hostPath PV (a tmpfs of its own): {w['names']} nested directories of "
        f"{w['name_len']}-character names and {w['dirs']:,} directories in the deepest, made as `mkdir $long; cd $long` "
        "and `seq N | xargs mkdir` would. `kubedf serve` with `--volume-stats-agg-period "
        f"{w['period']}` (a walk every 1-2 periods, default walk threads) walks the PV while it is empty; at rest its "
        "peak is reset (`echo 5 > /proc/PID/clear_refs`), the tree is made, and once kubedf reports du's and find's "
        f"figures for it, it walks on for {w['walk_seconds']:g} s. VmHWM then is the peak RSS of those walks. "
        f"Measured at git {w['rev']}, {w['date']}.\n\n"
    )
    return text + table(["", ""], rows)


def render_section(rd):
    rows = []
    for key in ("render/1000", "render/10000", "render_text/1000", "render_text/10000", "render_gzip/1000", "render_gzip/10000"):
        if key in rd:
            e = rd[key]
            rows.append((f"`{key}`", ms(e["mean_ms"]), f"{ms(e['mean_lo_ms'])} – {ms(e['mean_hi_ms'])}", ms(e["median_ms"])))
    return (
        "`cargo bench --bench render` (benches/render.rs, criterion): `Registry::new(None).render(&snapshot)` of a "
        "snapshot with every collector's data and N statfs-measured CSI PVCs (7 series each), in OpenMetrics "
        "(what Prometheus asks for); `render_text` is the same in the text format 0.0.4. Collectors write each "
        "sample's line straight into the exposition, so there is no separate collect step to time. "
        "`render_gzip` adds gzip at the fastest level, as a scrape with "
        "`Accept-Encoding: gzip` gets it. kubedf's server does this once per snapshot, not once per scrape.\n\n" + table(["benchmark", "mean", "mean 95% CI", "median"], rows)
    )


def sampling_section(scr, nmax):
    s = scr.get(nmax) or {}
    sm = s.get("sampling")
    idle = s.get("idle")
    rows = []
    if sm:
        rows += [
            (f"kubedf, N={sm['n']:,}, `--volume-stats-agg-period {sm['period_seconds']:g}s`, {sm['seconds']:.0f} s window", ""),
            ("CPU over the window", sec(sm["cpu_seconds"])),
            ("CPU per volume per period (CPU ÷ (volumes × window/period))", f"{num(sm['cpu_us_per_volume_per_period'], 1)} µs" if sm["cpu_us_per_volume_per_period"] is not None else "–"),
            ("CPU per statfs measurement (each volume is due every 1x–2x the period: 1.5x on average)", f"{num(sm['cpu_us_per_measurement'], 1)} µs" if sm["cpu_us_per_measurement"] is not None else "–"),
            ("CPU seconds per minute", f"{sm['cpu_seconds_per_minute']:.3f} s"),
        ]
    if idle:
        rows += [
            (f"idle, N={idle['n']:,}, default 1m period, {idle['seconds']:.0f} s window without scrapes", ""),
            ("kubedf: CPU seconds per minute", f"{idle['cpu_seconds_per_minute'][KD]:.3f} s"),
            ("node_exporter: CPU seconds per minute (for reference: it does nothing between scrapes)", f"{idle['cpu_seconds_per_minute'][NE]:.3f} s"),
        ]
    if not rows:
        return "Not measured."
    return table(["", ""], rows)


def method_section(r):
    c = r["config"]
    return f"""- **One run, one machine.** Both exporters run side by side on the same N filesystems, started fresh for
  each N; the client (Python `http.client`, wrk) runs on the same machine over 127.0.0.1 and shares its CPUs.
  Ratios are kubedf ÷ node_exporter from the same run; absolute figures move with the machine, ratios much less.
- **The volumes.** For each N, a fake Kubernetes API server (`examples/fake_kube_server.rs`, the tests' fake in a
  process) serves N running pods on `node-1`, each with one PVC bound to a CSI PV, and the harness mounts a tmpfs
  (`size=1M`) at kubelet's path for each: `<root>/pods/<pod uid>/volumes/kubernetes.io~csi/<pv>/mount`.
- **kubedf:** `kubedf serve --node-name node-1 --kubeconfig F --kubelet.root-dir <root> --kubelet.config
  /nonexistent/... --cri.endpoint unix:///nonexistent/... --no-collector.imagefs --no-collector.image_gc
  --volume-stats-agg-period 1m` (other flags at their defaults). Measuring starts once it reports all N volumes.
- **node_exporter:** `prometheus-node-exporter --collector.disable-defaults --collector.filesystem
  --collector.filesystem.mount-points-exclude=<regex>`, the regex matching every mount point that does not start
  with `<root>/pods/` (RE2 has no negative lookahead, so it is spelled out character by character). The harness
  checks that it reports exactly N filesystems, with the same sizes kubedf reports for the same volumes.
- **Sequential latency:** {c['seq']} scrapes per exporter and encoding over one keep-alive connection, after
  {c['warmup']} warm-up scrapes, in {c['seq_blocks']} blocks alternating between the exporters (so a noisy
  moment does not hit one exporter only). Time from sending the request to reading the whole body.
  Percentiles are nearest-rank (p99 of 200 is the 198th).
- **Under load:** `wrk -c 8 -t 2 -d {c['wrk_seconds']}s --latency --timeout 10s` (plus `-H 'Accept-Encoding: gzip'`),
  figures taken from wrk's own histogram through `bench/wrk_report.lua`.
- **CPU:** of the exporter process over the measured scrapes, divided by their number: utime+stime from
  `/proc/PID/stat` (all threads, dead ones included, in 1/{os.sysconf('SC_CLK_TCK')} s ticks), refined with the per-thread
  scheduler clock (`/proc/PID/task/*/schedstat`, ns) when both agree to within a tick, since ticks are too coarse for a
  few cheap scrapes. It includes whatever the process did in the background meanwhile (kubedf's volume sampler, Go's GC).
- **Memory:** VmRSS and VmHWM from `/proc/PID/status` when the exporter is ready and after all load at that N.
- **Bytes per scrape:** body size as sent (compressed for gzip), median.
- **Plain and gzip:** plain requests send `Accept-Encoding: identity`; gzip ones `Accept-Encoding: gzip`, and the
  harness checks that the answer is gzipped.
- The harness fails (and `bench/run.sh` exits non-zero) when an exporter does not report the expected N, when the
  two disagree on a volume's size, when a wrk run gets error statuses, when kubedf does not report the hung volume
  as a timeout, when walk results differ, or when criterion's estimates are missing."""


def rest_section(r):
    rest = {}
    for name, s in r["steps"].items():
        if name.startswith("rest N=") and s.get("ok"):
            rest[s["result"]["n"]] = s["result"]
    failed = [name for name, s in r["steps"].items() if name.startswith("rest N=") and not s.get("ok")]
    if not rest:
        return "Not measured." + (f" Failed: {', '.join(failed)}." if failed else "")
    base = rest.get(0)
    rows = []
    for n in sorted(rest):
        x = rest[n]
        cpu, rss = x["cpu_seconds_per_minute"], x["rss_kib"]
        per_vol = x["cpu_us_per_volume_per_minute"][KD]
        above = f"{(rss[KD] - base['rss_kib'][KD]) / 1024 / (n / 1000):.2f} MiB" if base and n else "–"
        rows.append(
            (
                f"{n:,}",
                f"{cpu[KD] * 1e3:.1f} ms",
                f"{cpu[NE] * 1e3:.1f} ms",
                f"{cpu[KD] / cpu[NE]:.2f}" if cpu[NE] else "–",
                f"{per_vol:.1f} µs" if per_vol is not None else "–",
                mib(rss[KD]),
                mib(rss[NE]),
                above,
                f"{x['threads'][KD]} / {x['threads'][NE]}",
            )
        )
    out = table(
        [
            "N volumes",
            "kubedf CPU/min",
            "node_exporter CPU/min",
            "ratio",
            "kubedf CPU/min per volume",
            "kubedf RSS",
            "node_exporter RSS",
            "kubedf RSS above N=0, per 1,000 volumes",
            "threads (kubedf / node_exporter)",
        ],
        rows,
    )
    checks = []
    k = rest.get(1000)
    if k:
        c = k["cpu_seconds_per_minute"]
        ok = c[KD] <= c[NE] / 10
        checks.append(f"- CPU per minute at N = 1,000 at most 1/10 of node_exporter's: **{'met' if ok else 'missed'}** ({c[KD] * 1e3:.1f} ms against {c[NE] * 1e3:.1f} ms, ratio {c[KD] / c[NE]:.2f}).")
    for n in sorted(rest):
        x = rest[n]["rss_kib"]
        ok = x[KD] <= x[NE]
        checks.append(f"- RSS at N = {n:,} at most node_exporter's: **{'met' if ok else 'missed'}** ({mib(x[KD])} against {mib(x[NE])}).")
    if base:
        for n in sorted(rest):
            if n:
                per = (rest[n]["rss_kib"][KD] - base["rss_kib"][KD]) / 1024 / (n / 1000)
                checks.append(f"- RSS at N = {n:,} at most 2 MiB per 1,000 volumes above N = 0: **{'met' if per <= 2 else 'missed'}** ({per:.2f} MiB per 1,000).")
    if failed:
        checks.append(f"- Failed steps: {', '.join(failed)}.")
    return out + "\n\n" + "\n".join(checks)


def markdown(r, png_name, results_path):
    m = r["machine"]
    scr = {}
    for name, s in r["steps"].items():
        if name.startswith("scrape N=") and s.get("ok"):
            scr[s["result"]["n"]] = s["result"]
    ns = sorted(scr)
    nmax = max(r["config"]["ns"])
    out = []
    out.append("# Benchmarks: kubedf against node_exporter\n")
    out.append(
        f"<!-- Written by bench/run.sh ({r['mode']} mode) from {results_path}; regenerate with "
        f"`python3 bench/report.py {results_path} --md docs/benchmarks.md --png docs/benchmark-scrape-latency.png`. -->\n"
    )
    out.append(
        "How kubedf compares with node_exporter's filesystem collector looking at the same filesystems, and what "
        "kubedf's own work costs. Reproduce with `bench/run.sh` as root (see its header; about 15 minutes once built). "
        "`bench/run.sh --smoke` runs the same harness on N = 0 and 10 in under a minute and is part of the test suite, "
        "so the harness keeps working.\n"
    )
    out.append("## Machine and run\n")
    la0 = " ".join(m.get("loadavg_start", []))
    la1 = " ".join(m.get("loadavg_end", []))
    out.append(
        table(
            ["", ""],
            [
                ("CPU", f"{m['nproc']} × {m['cpu']}"),
                ("memory", f"{m['memory_gib']} GiB"),
                ("kernel", m["kernel"]),
                ("OS", f"Debian {m['debian']}"),
                ("node_exporter", m["node_exporter"]),
                ("kubedf", f"git {m['kubedf_rev']}, {r.get('profile', 'release')} build ({m['rustc']})"),
                ("wrk / Python", f"{m['wrk'].split(' Copyright')[0]} / {m['python']}"),
                ("date", m["date"]),
                ("run time", f"{m['run_seconds'] / 60:.1f} min"),
                ("load average at start / end (1, 5, 15 min)", f"{la0} / {la1}"),
                (
                    "CPU used by other processes during the run",
                    f"{m['others_cpu_seconds']:.0f} CPU-s, {m['others_cpu_share']:.0%} of the machine",
                ),
            ],
        )
    )
    out.append("")
    notes = []
    if os.environ.get("BENCH_NOTE"):
        notes.append(os.environ["BENCH_NOTE"])
    if m["others_cpu_share"] > 0.05:
        notes.append(
            f"**The machine was not quiet**: other processes used {m['others_cpu_share']:.0%} of its CPU time during "
            "the run, so absolute figures (latency above all, p99 most of all) are noisier and higher than on an idle "
            "machine. The ratios come from interleaved measurements and suffer less, but treat small differences "
            "with care; rerun `bench/run.sh` on a quiet machine for figures to quote."
        )
    if r["mode"] != "full":
        notes.append(f"**{r['mode']} run**: small N, short windows and a debug build; these figures say nothing about performance.")
    for n in notes:
        out.append(f"> {n}\n")
    if r.get("failures"):
        out.append("**Steps that failed:**\n")
        for f in r["failures"]:
            out.append(f"- `{f.splitlines()[0][:300]}`")
        out.append("")
    if r.get("warnings"):
        out.append("Warnings: " + "; ".join(r["warnings"]) + "\n")

    out.append("## Targets\n")
    out.append(
        "Each target as set before the run, with the figure measured. Ratios are kubedf ÷ node_exporter. Nothing in "
        "the harness was tuned to meet them.\n"
    )
    out.append(table(["target", "kubedf", "node_exporter", "ratio", "verdict"], targets(r, scr, nmax)))
    out.append("")

    out.append("## Scrapes against the number of volumes\n")
    if png_name:
        out.append(f"![Scrape latency p50 and p99 against the number of volumes, plain and gzip]({png_name})\n")
        out.append(
            "*Sequential scrape latency, log scale; blue: kubedf, orange: node_exporter; solid: p50, dashed: p99. "
            "Left plain, right gzip.*\n"
        )
    summary_rows = []
    for n in ns:
        s = scr[n]
        for enc in ("plain", "gzip"):
            k, e = get(s, "seq", enc, KD), get(s, "seq", enc, NE)
            summary_rows.append(
                (f"{n:,}", enc, ms(k["p50_ms"]), ms(k["p99_ms"]), ms(e["p50_ms"]), ms(e["p99_ms"]), ratio(k["p99_ms"], e["p99_ms"]))
            )
    out.append(table(["volumes", "encoding", "kubedf p50", "kubedf p99", "node_exporter p50", "node_exporter p99", "p99 ratio"], summary_rows))
    out.append("")
    out.append(
        "kubedf renders the exposition once per snapshot and keeps it (and its gzip) until the next snapshot. The "
        "tmpfs volumes here never change, so most scrapes above are answered from that cache; only the first scrape "
        "after a new snapshot (the sampler swaps one in every `--sample-interval`, 15 s) renders. On a node whose "
        "volumes fill and drain, the volume table changes between most scrapes and each one renders. That case is "
        f"measured separately at {nmax:,} volumes (\"rendering every scrape\" below), and `benches/render.rs` gives "
        "the render cost alone.\n"
    )
    for n in ns:
        s = scr[n]
        out.append(f"### {n:,} volumes\n")
        out.append(
            f"kubedf reported all {n:,} volumes {s['kubedf_ready_seconds']:.1f} s after it was started "
            f"(mounting them took {s['mount_seconds']:.1f} s).\n"
        )
        out.append(scrape_table(s))
        out.append("")
        u = s.get("uncached")
        if u:
            out.append(f"#### {n:,} volumes, kubedf rendering every scrape\n")
            out.append(
                f"A second kubedf with `--sample-interval 100ms`, scraped every {u['pace_s'] * 1e3:.0f} ms "
                f"({u['scrapes']} scrapes per encoding over one keep-alive connection), so that every scrape finds "
                "a new snapshot: "
                + ", ".join(f"{u[enc][KD]['fresh_fraction']:.0%} of its {enc} answers were new renders" for enc in ("plain", "gzip"))
                + ". node_exporter, which collects on every scrape anyway, is scraped at the same pace. kubedf's CPU "
                f"per scrape is net of its sampler's background CPU ({u['kubedf_background_cpu_share']:.1%} of a core "
                "at a 100 ms interval, measured over an equal window without scrapes).\n"
            )
            rows = []
            for enc in ("plain", "gzip"):
                for key, label_, fmt in (("p50_ms", "latency p50", ms), ("p99_ms", "latency p99", ms), ("cpu_ms_per_scrape", "CPU per scrape", ms)):
                    k, e = get(u, enc, KD, key), get(u, enc, NE, key)
                    rows.append((f"{label_}, {enc}", fmt(k), fmt(e), ratio(k, e)))
            out.append(table(["", KD, NE, "kubedf / node_exporter"], rows))
            out.append("")

    out.append("## A hung mount\n")
    hung = step(r, "hung mount")
    out.append(hung_section(hung, r["config"]) if hung else missing(r, "hung mount"))
    out.append("")

    out.append("## kubedf's usage walk against kubelet's du method\n")
    walk = step(r, "walk")
    out.append(walk_section(walk) if walk else missing(r, "walk"))
    out.append("")

    out.append("## kubedf's peak RSS walking a tenant's deep tree\n")
    rss = step(r, "walk RSS")
    out.append(walk_rss_section(rss) if rss else missing(r, "walk RSS"))
    out.append("")

    out.append("## Rendering\n")
    rd = step(r, "render")
    out.append(render_section(rd) if rd else missing(r, "render"))
    out.append("")

    out.append("## Cost at rest: what a node pays per minute\n")
    cfg = r["config"]
    out.append(
        f"kubedf (default `--volume-stats-agg-period 1m`) and node_exporter side by side on the same N tmpfs "
        f"filesystems, in one run, each scraped with `Accept-Encoding: gzip` every {cfg.get('rest_pace', 15):g} s "
        f"for {cfg.get('rest_seconds', 180):g} s after a warm-up, as Prometheus scrapes. CPU is the process's "
        f"CPU time over the window, per minute; RSS is VmRSS at its end. This is what the node pays all day, "
        f"scrapes and background measurements together.\n"
    )
    out.append(rest_section(r))
    out.append("")

    out.append("## kubedf's sampling cost\n")
    out.append(
        "The background work that a scrape never waits for: each volume is statfs'ed every "
        "`--volume-stats-agg-period`, jittered to 1x–2x. CPU of the kubedf process over a window without scrapes.\n"
    )
    out.append(sampling_section(scr, nmax))
    out.append("")

    out.append("## Method\n")
    out.append(method_section(r))
    out.append("")
    return "\n".join(out)


def chart(results_path, png, plot_python):
    if plot_python:
        run = subprocess.run([plot_python, os.path.join(HERE, "plot.py"), results_path, png], capture_output=True, text=True)
        if run.returncode == 0:
            return True
        sys.stderr.write(f"report: matplotlib chart failed, using pngplot.py: {run.stderr.strip()[-400:]}\n")
    sys.path.insert(0, HERE)
    import pngplot  # noqa: PLC0415 - the fallback only

    pngplot.main([results_path, png])
    return True


# Sections of docs/benchmarks.md that other harnesses write (cargo bench --bench
# pods), kept from the file being replaced: from the first of these headings on.
KEPT_HEADINGS = ("## The pod half at rest",)


def kept_sections(md_path):
    try:
        with open(md_path) as f:
            old = f.read()
    except OSError:
        return ""
    starts = [i for h in KEPT_HEADINGS for i in [old.find("\n" + h)] if i >= 0]
    return "\n" + old[min(starts) + 1:] if starts else ""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results")
    ap.add_argument("--md", required=True)
    ap.add_argument("--png")
    ap.add_argument("--plot-python")
    ap.add_argument("--results-path", help="how the doc names the results file")
    args = ap.parse_args(argv)
    with open(args.results) as f:
        r = json.load(f)
    png_name = None
    if args.png:
        chart(args.results, args.png, args.plot_python)
        png_name = os.path.relpath(args.png, os.path.dirname(os.path.abspath(args.md)))
    text = markdown(r, png_name, args.results_path or args.results)
    text += kept_sections(args.md)
    os.makedirs(os.path.dirname(os.path.abspath(args.md)), exist_ok=True)
    with open(args.md, "w") as f:
        f.write(text)
    return 1 if r.get("failures") or r.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
