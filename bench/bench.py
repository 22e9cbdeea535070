#!/usr/bin/env python3
"""kubedf against node_exporter: the measurements behind bench/run.sh.

Standard library only. Run it through bench/run.sh, which builds the binaries
and passes their paths; see the top of run.sh for what is measured.

Every process it starts listens on 127.0.0.1, is stopped by PID (SIGTERM,
then SIGKILL), and gets SIGTERM from the kernel if this script dies
(PR_SET_PDEATHSIG). Every mount it makes is under its work directory
/tmp/kubedf-bench-*, and is unmounted in a `finally`. A run killed with
SIGKILL leaves its mounts behind: the next run unmounts them (each run holds
a lock on its work directory, so a live run's mounts are never touched).
Every load step is bounded in count and time, and the whole run has a
deadline.
"""

import argparse
import ctypes
import fcntl
import glob
import gzip
import http.client
import json
import math
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CLK_TCK = os.sysconf("SC_CLK_TCK")
WORK_PREFIX = "kubedf-bench-"
# Seconds between a watch's bookmarks from a real kube-apiserver (its
# cacher's bookmarkFrequency); the fake server's default is 1 s, for tests.
REAL_BOOKMARK_INTERVAL = 60
NODE = "node-1"
NS = "bench"
KUBEDF = "kubedf"
NE = "node_exporter"

MODES = {
    "full": dict(
        ns=[0, 100, 1000],
        seq=200,  # sequential scrapes per exporter and encoding
        seq_blocks=4,  # alternating blocks (kubedf, node_exporter, ...)
        warmup=5,  # scrapes before measuring, not counted
        wrk_seconds=10,
        hung_n=100,
        hung_timeout=10.0,  # client timeout of each scrape
        hung_pace=1.0,  # one scrape per second from the moment the port opens
        hung_scrapes=10,
        hung_volume_timeout="5s",
        sigterm_grace=5.0,
        tree_top=40,
        tree_sub=49,  # 40 + 40*49 = 2,000 directories
        tree_files=200_000,
        tree_size="2G",
        walk_rounds=5,
        deep_names=14,  # a tenant's 14 nested 250-character names ...
        deep_name_len=250,
        deep_dirs=20_000,  # ... and 20,000 directories under them (issue 16)
        deep_size="256M",
        rss_period="2s",  # --volume-stats-agg-period: a walk every 2-4 s
        rss_idle_seconds=20.0,  # kubedf walking the empty PV, before the tree
        rss_walk_seconds=30.0,  # after the first walk that saw the whole tree
        uncached_scrapes=100,  # paced scrapes while kubedf renders anew for each
        uncached_pace=0.12,
        sample_period="2s",
        sample_warmup=6.0,
        sample_seconds=30.0,
        idle_seconds=120.0,
        rest_ns=[0, 100, 1000, 5000],
        rest_seconds=180.0,  # per N: both exporters side by side, gzip scrapes
        rest_pace=15.0,  # seconds between scrapes, as Prometheus' default interval
        rest_warmup=20.0,
        ready_timeout=180.0,
        criterion=["--noplot"],
        criterion_timeout=900,
        deadline=60 * 60,
    ),
    "smoke": dict(
        ns=[0, 10],
        seq=20,
        seq_blocks=2,
        warmup=2,
        wrk_seconds=1,
        hung_n=10,
        hung_timeout=3.0,
        hung_pace=0.3,
        hung_scrapes=10,
        hung_volume_timeout="1s",
        sigterm_grace=1.5,
        tree_top=4,
        tree_sub=4,  # 20 directories
        tree_files=2_000,
        tree_size="64M",
        walk_rounds=1,
        deep_names=14,
        deep_name_len=250,
        deep_dirs=2_000,
        deep_size="64M",
        rss_period="1s",
        rss_idle_seconds=1.0,
        rss_walk_seconds=1.5,
        uncached_scrapes=10,
        uncached_pace=0.12,
        sample_period="1s",
        sample_warmup=1.0,
        sample_seconds=3.0,
        idle_seconds=2.0,
        rest_ns=[0, 10],
        rest_seconds=4.0,
        rest_pace=1.0,
        rest_warmup=1.0,
        ready_timeout=30.0,
        criterion=[
            "--noplot",
            "--warm-up-time",
            "0.1",
            "--measurement-time",
            "0.2",
            "--sample-size",
            "10",
            "/1000$",
        ],
        criterion_timeout=120,
        deadline=240,
    ),
}


class Fail(Exception):
    """A step that did not do what it should: reported, and the run exits 1."""


class Interrupted(BaseException):
    """SIGTERM, SIGINT, SIGHUP or the deadline: clean up and stop."""


def raise_on_signals():
    """SIGTERM, SIGINT, SIGHUP and SIGALRM raise `Interrupted`, so that a run
    stopped from outside still releases its processes and mounts in its
    `finally` (a shell starts a background job with SIGINT ignored, and
    SIGTERM's default ends Python without unwinding)."""

    def interrupted(signum, _frame):
        raise Interrupted(signal.Signals(signum).name)

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM):
        signal.signal(s, interrupted)


def log(msg):
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


# ---------------------------------------------------------------------------
# /proc figures
# ---------------------------------------------------------------------------


def cpu_seconds(pid):
    """utime + stime of a process (all its threads, dead ones included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_sample(pid):
    """(utime+stime in seconds, {tid: on-CPU nanoseconds}) of a process."""
    threads = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        tids = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                threads[tid] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return cpu_seconds(pid), threads


def cpu_used(a, b):
    """CPU seconds between two cpu_sample()s. utime+stime only counts whole
    clock ticks (10 ms), too coarse for a few cheap scrapes, so the
    scheduler's per-thread nanosecond clock is used when it agrees with the
    ticks to within one tick (+5%); it would miss a thread that exited in
    between, and then the ticks are used."""
    ticks = b[0] - a[0]
    precise = sum(ns - a[1].get(tid, 0) for tid, ns in b[1].items()) / 1e9
    if abs(precise - ticks) <= 1.0 / CLK_TCK + 0.05 * ticks:
        return precise
    return ticks


def reset_peak_rss(pid):
    """Sets a process's VmHWM to its current VmRSS (Linux 4.0+), so that the
    next VmHWM is the peak from now on."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def du_find(path):
    """kubelet's du method by its own tools: (du -sxB1, the distinct inodes
    find -xdev lists on the tree's device), as testkit::du_find."""
    du = subprocess.run(["du", "-sxB1", path], capture_output=True, text=True, check=True, timeout=600)
    find = subprocess.run(["find", path, "-xdev", "-printf", "%D %i\\n"], capture_output=True, text=True, check=True, timeout=600)
    lines = find.stdout.splitlines()
    dev = lines[0].split(" ")[0]
    return int(du.stdout.split()[0]), len({l for l in lines if l.split(" ")[0] == dev})


def memory_kib(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def machine_busy():
    """(busy, total) CPU seconds of the whole machine since boot."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    total = sum(parts[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


def own_cpu():
    """CPU seconds of this script and every child it has waited for."""
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def children_cpu():
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return c.ru_utime + c.ru_stime


def mounts_under(path):
    path = path.rstrip("/") + "/"
    found = []
    with open("/proc/self/mounts") as f:
        for line in f:
            mp = line.split()[1].replace("\\040", " ")
            if (mp + "/").startswith(path):
                found.append(mp)
    return found


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100)."""
    s = sorted(values)
    if not s:
        return None
    k = max(0, math.ceil(p / 100 * len(s)) - 1)
    return s[k]


# ---------------------------------------------------------------------------
# Processes and mounts, all released in close()
# ---------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1
MNT_DETACH = 2


def _die_with_parent():
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Proc:
    def __init__(self, name, popen, logpath, port=None):
        self.name = name
        self.popen = popen
        self.pid = popen.pid
        self.logpath = logpath
        self.port = port
        self.termed = None

    def alive(self):
        return self.popen.poll() is None

    def log_tail(self, lines=15):
        try:
            with open(self.logpath, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""


class Resources:
    """Everything this run started or mounted, released in reverse order."""

    def __init__(self, work):
        self.work = work
        self.logs = os.path.join(work, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.procs = []
        self.mounts = []
        self.seq = 0

    def spawn(self, name, argv, port=None, stdout_pipe=False, env=None):
        self.seq += 1
        logpath = os.path.join(self.logs, f"{self.seq:02d}-{name}.log")
        logf = open(logpath, "ab")
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else logf,
            stderr=logf,
            env=env,
            preexec_fn=_die_with_parent,
        )
        logf.close()
        p = Proc(name, popen, logpath, port)
        self.procs.append(p)
        return p

    def _forget(self, p):
        if p in self.procs:
            self.procs.remove(p)

    def stop(self, p, grace=5.0, kill=True):
        """SIGTERM by PID; SIGKILL after `grace` unless kill=False. Returns the
        seconds it took to exit after SIGTERM, or None when it did not exit
        within `grace` (or had exited already)."""
        if p.popen.poll() is not None:
            self._forget(p)
            return None
        if p.termed is None:
            os.kill(p.pid, signal.SIGTERM)
            p.termed = time.monotonic()
        try:
            p.popen.wait(timeout=max(0.0, p.termed + grace - time.monotonic()))
            self._forget(p)
            return time.monotonic() - p.termed
        except subprocess.TimeoutExpired:
            if not kill:
                return None
        log(f"{p.name} (pid {p.pid}) did not exit {grace}s after SIGTERM: SIGKILL")
        os.kill(p.pid, signal.SIGKILL)
        try:
            p.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log(f"{p.name} (pid {p.pid}) survives SIGKILL (a thread blocked in the kernel?)")
            return None
        self._forget(p)
        return None

    def mount_tmpfs(self, path, size):
        os.makedirs(path, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
            check=True,
            stdin=subprocess.DEVNULL,
        )
        self.mounts.append(path)

    def adopt_mount(self, path):
        self.mounts.append(path)

    def umount(self, path):
        if path in self.mounts:
            self.mounts.remove(path)
        if path not in mounts_under(path):
            return True
        if _libc.umount2(path.encode(), 0) == 0:
            return True
        # Busy or hung: detach it, as the tests do.
        if _libc.umount2(path.encode(), MNT_DETACH) == 0:
            return True
        err = ctypes.get_errno()
        log(f"umount {path}: {os.strerror(err)}")
        return False

    def umount_all(self, under=None):
        ok = True
        for path in sorted(self.mounts, key=len, reverse=True):
            if under is None or path.startswith(under):
                ok = self.umount(path) and ok
        return ok

    def close(self):
        """Stops every process (SIGTERM to all at once, so that a hangfs
        releases the callers it holds, then SIGKILL) and unmounts everything."""
        procs = [p for p in self.procs if p.popen.poll() is None]
        for p in procs:
            if p.termed is None:
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                p.termed = time.monotonic()
        deadline = time.monotonic() + 5
        for p in procs:
            try:
                p.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in procs:
            if p.popen.poll() is None:
                log(f"{p.name} (pid {p.pid}) did not exit after SIGTERM: SIGKILL")
                os.kill(p.pid, signal.SIGKILL)
        for p in procs:
            try:
                p.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log(f"{p.name} (pid {p.pid}) survives SIGKILL")
        self.procs = [p for p in self.procs if p.popen.poll() is None]
        self.umount_all()
        left = mounts_under(self.work)
        for path in sorted(left, key=len, reverse=True):
            _libc.umount2(path.encode(), MNT_DETACH)
        left = mounts_under(self.work)
        if left or self.procs:
            log(f"{len(left)} mounts and {len(self.procs)} processes remain under {self.work}: leaving it")
            return False
        return True


def clean_stale_runs():
    """Unmounts what a killed earlier run left (its lock is free)."""
    for d in glob.glob(os.path.join(tempfile.gettempdir(), WORK_PREFIX + "*")):
        lock = os.path.join(d, "lock")
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # a live run
        left = mounts_under(d)
        for path in sorted(left, key=len, reverse=True):
            _libc.umount2(path.encode(), MNT_DETACH)
        if left:
            log(f"unmounted {len(left)} mounts left by a killed run in {d}")
        if not mounts_under(d):
            shutil.rmtree(d, ignore_errors=True)
        os.close(fd)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_line(p, want, timeout):
    """Reads p's stdout until a line equals `want`; then drains the rest to its log."""
    deadline = time.monotonic() + timeout
    fd = p.popen.stdout
    seen = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Fail(f"{p.name} did not print {want!r} within {timeout}s; log:\n{p.log_tail()}")
        r, _, _ = select.select([fd], [], [], min(left, 0.5))
        if r:
            line = fd.readline()
            if not line:
                raise Fail(f"{p.name} exited before {want!r} (rc={p.popen.wait()}); log:\n{p.log_tail()}")
            text = line.decode(errors="replace").strip()
            seen.append(text)
            if text == want:
                break
        elif not p.alive():
            raise Fail(f"{p.name} exited (rc={p.popen.returncode}); log:\n{p.log_tail()}")

    def drain():
        with open(p.logpath, "ab") as logf:
            for line in fd:
                logf.write(line)

    threading.Thread(target=drain, daemon=True).start()


def wait_port(p, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not p.alive():
            raise Fail(f"{p.name} exited (rc={p.popen.returncode}); log:\n{p.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", p.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise Fail(f"{p.name} did not listen on 127.0.0.1:{p.port} within {timeout}s")


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------


class Scrape:
    def __init__(self, status, seconds, body, encoding):
        self.status = status
        self.seconds = seconds
        self.body = body
        self.encoding = encoding

    @property
    def text(self):
        body = gzip.decompress(self.body) if self.encoding == "gzip" else self.body
        return body.decode()


def scrape(port, gz=False, timeout=30.0, conn=None, path="/metrics"):
    own = conn is None
    if own:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Accept-Encoding": "gzip" if gz else "identity"}
    try:
        started = time.perf_counter()
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        elapsed = time.perf_counter() - started
        return Scrape(resp.status, elapsed, body, resp.getheader("Content-Encoding"))
    finally:
        if own:
            conn.close()


def series_lines(text):
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def count(text, name):
    return sum(1 for line in text.splitlines() if line.startswith(name + "{") or line.startswith(name + " "))


def values(text, name):
    """{labels-string: value} of one family."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, _, value = line[len(name) :].rpartition(" ")
            out[labels] = float(value)
    return out


def label(series, key):
    m = re.search(key + r'="([^"]*)"', series)
    return m.group(1) if m else None


# ---------------------------------------------------------------------------
# The exporters
# ---------------------------------------------------------------------------


def not_prefix_regex(prefix):
    """A regex (RE2 and Python alike, no lookahead) matching every string
    that does not start with `prefix`: node_exporter's
    --collector.filesystem.mount-points-exclude, so it sees only the bench's
    mounts."""

    def in_class(ch):
        return "\\" + ch if ch in "\\]^-[" else ch

    alts = [f"{re.escape(prefix[:i])}(?:[^{in_class(ch)}].*)?" for i, ch in enumerate(prefix)]
    return "^(?:" + "|".join(alts) + ")$"


class Bench:
    def __init__(self, args, cfg, res):
        self.args = args
        self.cfg = cfg
        self.res = res
        self.work = res.work
        self.bin = args.bin_dir
        self.failures = []
        self.warnings = []

    def exe(self, name):
        path = os.path.join(self.bin, name)
        if not os.access(path, os.X_OK):
            raise Fail(f"{path} is not built")
        return path

    # -- fake API server ----------------------------------------------------

    def start_fake(self, tag, generate=0, objects=None, bookmark_interval=None):
        d = os.path.join(self.work, tag)
        os.makedirs(d, exist_ok=True)
        kubeconfig = os.path.join(d, "kubeconfig")
        mapping = os.path.join(d, "mapping.json")
        argv = [self.exe("examples/fake_kube_server"), "--kubeconfig", kubeconfig, "--node", NODE, "--namespace", NS]
        if generate:
            argv += ["--generate", str(generate), "--mapping", mapping]
        if bookmark_interval is not None:
            argv += ["--bookmark-interval", str(bookmark_interval)]
        if objects is not None:
            path = os.path.join(d, "objects.json")
            with open(path, "w") as f:
                json.dump(objects, f)
            argv += ["--objects", path]
        p = self.res.spawn(f"fake-kube-{tag}", argv, stdout_pipe=True)
        wait_line(p, "ready", 60)
        volumes = []
        if generate:
            with open(mapping) as f:
                volumes = json.load(f)["volumes"]
        return p, kubeconfig, volumes

    # -- kubedf -----------------------------------------------------------------

    def start_kubedf(self, tag, root, kubeconfig, period="1m", extra=()):
        port = free_port()
        argv = [
            self.exe("kubedf"),
            "serve",
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--node-name",
            NODE,
            "--kubeconfig",
            kubeconfig,
            "--kubelet.root-dir",
            root,
            "--kubelet.config",
            "/nonexistent/kubedf-bench/config.yaml",
            "--cri.endpoint",
            "unix:///nonexistent/kubedf-bench/cri.sock",
            "--no-collector.imagefs",
            "--no-collector.image_gc",
            "--volume-stats-agg-period",
            period,
            *extra,
        ]
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        env["NO_COLOR"] = "1"
        return self.res.spawn(f"kubedf-{tag}", argv, port=port, env=env)

    def start_node_exporter(self, tag, prefix):
        port = free_port()
        argv = [
            "prometheus-node-exporter",
            "--collector.disable-defaults",
            "--collector.filesystem",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--collector.filesystem.mount-points-exclude={not_prefix_regex(prefix)}",
        ]
        return self.res.spawn(f"node-exporter-{tag}", argv, port=port)

    def wait_kubedf(self, p, n, timeout=None):
        """Until kubedf reports n measured volumes and the API as up."""
        timeout = timeout or self.cfg["ready_timeout"]
        wait_port(p, 30)
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if not p.alive():
                raise Fail(f"kubedf exited; log:\n{p.log_tail()}")
            text = scrape(p.port).text
            got = count(text, "kubelet_volume_stats_capacity_bytes")
            up = 'kubedf_source_up{source="kubernetes"} 1' in text
            last = (got, up)
            if got == n and up:
                return text
            time.sleep(0.25)
        raise Fail(f"kubedf did not report {n} volumes within {timeout}s (last: {last[0]} volumes, api up={last[1]})")

    def wait_node_exporter(self, p, n, prefix):
        wait_port(p, 30)
        text = scrape(p.port, timeout=60).text
        sizes = values(text, "node_filesystem_size_bytes")
        outside = [s for s in sizes if not (label(s, "mountpoint") or "").startswith(prefix)]
        if outside or len(sizes) != n:
            raise Fail(f"node_exporter reports {len(sizes)} filesystems ({len(outside)} outside the bench), want {n}")
        return text

    # -- (a) scrapes --------------------------------------------------------------

    def sequential(self, exporters, gz):
        """Alternating blocks of back-to-back scrapes over keep-alive connections."""
        cfg = self.cfg
        conns = {}
        out = {}
        for p in exporters:
            conns[p.name] = http.client.HTTPConnection("127.0.0.1", p.port, timeout=60)
            out[p.name] = dict(lat=[], bytes=[], cpu=0.0)
            for _ in range(cfg["warmup"]):
                scrape(p.port, gz, conn=conns[p.name])
        block = cfg["seq"] // cfg["seq_blocks"]
        for b in range(cfg["seq_blocks"]):
            order = exporters if b % 2 == 0 else list(reversed(exporters))
            for p in order:
                o = out[p.name]
                c0 = cpu_sample(p.pid)
                for _ in range(block):
                    s = scrape(p.port, gz, conn=conns[p.name])
                    if s.status != 200:
                        raise Fail(f"{p.name}: HTTP {s.status}")
                    o["lat"].append(s.seconds)
                    o["bytes"].append(len(s.body))
                o["cpu"] += cpu_used(c0, cpu_sample(p.pid))
                o["last"] = s
        result = {}
        for p in exporters:
            o = out[p.name]
            last = o["last"]
            if gz and last.encoding != "gzip":
                raise Fail(f"{p.name} did not gzip its answer to Accept-Encoding: gzip")
            result[p.name] = dict(
                scrapes=len(o["lat"]),
                p50_ms=percentile(o["lat"], 50) * 1e3,
                p99_ms=percentile(o["lat"], 99) * 1e3,
                mean_ms=statistics.mean(o["lat"]) * 1e3,
                max_ms=max(o["lat"]) * 1e3,
                bytes=int(statistics.median(o["bytes"])),
                series=len(series_lines(last.text)),
                cpu_ms_per_scrape=o["cpu"] / len(o["lat"]) * 1e3,
            )
            conns[p.name].close()
        return result

    def wrk(self, p, gz):
        cfg = self.cfg
        argv = [
            "wrk",
            "-c",
            "8",
            "-t",
            "2",
            "-d",
            f"{cfg['wrk_seconds']}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            os.path.join(HERE, "wrk_report.lua"),
        ]
        if gz:
            argv += ["-H", "Accept-Encoding: gzip"]
        argv.append(f"http://127.0.0.1:{p.port}/metrics")
        c0 = cpu_sample(p.pid)
        run = subprocess.run(argv, capture_output=True, text=True, timeout=cfg["wrk_seconds"] + 60, stdin=subprocess.DEVNULL)
        cpu = cpu_used(c0, cpu_sample(p.pid))
        m = re.search(r"^WRKJSON (\{.*\})$", run.stdout, re.M)
        if run.returncode != 0 or not m:
            raise Fail(f"wrk against {p.name} failed (rc={run.returncode}): {run.stderr.strip()[-500:]}")
        w = json.loads(m.group(1))
        if w["requests"] == 0:
            raise Fail(f"wrk got no answer from {p.name}")
        if w["err_status"]:
            raise Fail(f"{p.name} answered {w['err_status']} requests with an error status under wrk")
        errors = w["err_connect"] + w["err_read"] + w["err_write"] + w["err_timeout"]
        if errors:
            self.warnings.append(f"wrk against {p.name} (gzip={gz}): {errors} socket errors/timeouts")
        secs = w["duration_us"] / 1e6
        return dict(
            requests=w["requests"],
            rps=w["requests"] / secs,
            p50_ms=w["p50_us"] / 1e3,
            p99_ms=w["p99_us"] / 1e3,
            max_ms=w["max_us"] / 1e3,
            socket_errors=errors,
            bytes_per_request=w["bytes"] / w["requests"],
            cpu_ms_per_request=cpu / w["requests"] * 1e3,
            cpu_share=cpu / secs,
        )

    def scrape_scenario(self, n, last):
        cfg = self.cfg
        tag = f"n{n}"
        root = os.path.join(self.work, tag, "kubelet")
        os.makedirs(root, exist_ok=True)
        prefix = root + "/pods/"
        log(f"N={n}: fake API server, {n} tmpfs mounts")
        fake, kubeconfig, volumes = self.start_fake(tag, generate=n)
        t0 = time.monotonic()
        for v in volumes:
            self.res.mount_tmpfs(os.path.join(root, v["path"]), "1M")
        mount_seconds = time.monotonic() - t0
        kd = self.start_kubedf(tag, root, kubeconfig)
        ne = self.start_node_exporter(tag, prefix)
        t0 = time.monotonic()
        kd_text = self.wait_kubedf(kd, n)
        ready_seconds = time.monotonic() - t0
        ne_text = self.wait_node_exporter(ne, n, prefix)
        # Both look at the same N filesystems: the same sizes, mount by mount.
        caps = values(kd_text, "kubelet_volume_stats_capacity_bytes")
        sizes = values(ne_text, "node_filesystem_size_bytes")
        by_claim = {label(k, "persistentvolumeclaim"): v for k, v in caps.items()}
        by_mount = {label(k, "mountpoint"): v for k, v in sizes.items()}
        for v in volumes:
            if by_claim.get(v["claim"]) != by_mount.get(os.path.join(root, v["path"])):
                raise Fail(f"{v['claim']}: kubedf says {by_claim.get(v['claim'])} bytes, node_exporter {by_mount.get(os.path.join(root, v['path']))}")
        log(f"N={n}: both exporters see {n} filesystems (kubedf ready in {ready_seconds:.1f}s)")
        out = dict(n=n, mount_seconds=mount_seconds, kubedf_ready_seconds=ready_seconds, seq={}, wrk={}, mem={})
        out["mem"]["start"] = {KUBEDF: memory_kib(kd.pid), NE: memory_kib(ne.pid)}
        for gz in (False, True):
            enc = "gzip" if gz else "plain"
            r = self.sequential([kd, ne], gz)
            out["seq"][enc] = {KUBEDF: r[kd.name], NE: r[ne.name]}
            log(
                f"N={n} {enc} sequential p50/p99 ms: kubedf {r[kd.name]['p50_ms']:.2f}/{r[kd.name]['p99_ms']:.2f}, "
                f"node_exporter {r[ne.name]['p50_ms']:.2f}/{r[ne.name]['p99_ms']:.2f}"
            )
        for gz in (False, True):
            enc = "gzip" if gz else "plain"
            out["wrk"][enc] = {}
            for p, name in ((kd, KUBEDF), (ne, NE)):
                out["wrk"][enc][name] = w = self.wrk(p, gz)
                log(f"N={n} {enc} wrk {name}: {w['rps']:.0f} req/s, p99 {w['p99_ms']:.2f} ms")
        out["mem"]["after_load"] = {KUBEDF: memory_kib(kd.pid), NE: memory_kib(ne.pid)}
        if last:
            out["idle"] = self.idle(kd, ne, n)
        self.res.stop(kd)
        if last:
            out["uncached"] = self.uncached(tag, root, kubeconfig, n, ne)
        self.res.stop(ne)
        if last:
            out["sampling"] = self.sampling(tag, root, kubeconfig, n)
        self.res.stop(fake)
        if not self.res.umount_all(under=root):
            raise Fail(f"could not unmount everything under {root}")
        return out

    def uncached(self, tag, root, kubeconfig, n, ne):
        """Scrapes that each find a new snapshot, so kubedf renders (and
        gzips) for every one, as on a node whose volumes change between
        scrapes: kubedf samples every 100 ms and the scrapes are 120 ms
        apart. node_exporter, which renders every scrape anyway, gets the
        same pacing. kubedf's CPU per scrape is net of its sampler's, taken
        over a window as long without scrapes."""
        cfg = self.cfg
        count, pace = cfg["uncached_scrapes"], cfg["uncached_pace"]
        kd = self.start_kubedf(f"{tag}-sample100ms", root, kubeconfig, extra=["--sample-interval", "100ms"])
        self.wait_kubedf(kd, n)
        time.sleep(1)
        log(f"N={n}: scrapes {pace * 1e3:.0f} ms apart while kubedf samples every 100 ms (a render per scrape)")
        window = count * pace
        c0 = cpu_sample(kd.pid)
        t0 = time.monotonic()
        time.sleep(window)
        background = (cpu_used(c0, cpu_sample(kd.pid))) / (time.monotonic() - t0)
        out = dict(n=n, scrapes=count, pace_s=pace, sample_interval_s=0.1, kubedf_background_cpu_share=background)
        for gz in (False, True):
            enc = "gzip" if gz else "plain"
            out[enc] = {}
            for p, name in ((kd, KUBEDF), (ne, NE)):
                conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=60)
                scrape(p.port, gz, conn=conn)
                lat, bodies = [], []
                c0 = cpu_sample(p.pid)
                t0 = time.monotonic()
                for i in range(count):
                    delay = t0 + i * pace - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    sc = scrape(p.port, gz, conn=conn)
                    if sc.status != 200:
                        raise Fail(f"{name}: HTTP {sc.status}")
                    lat.append(sc.seconds)
                    bodies.append(hash(sc.body))
                wall = time.monotonic() - t0
                cpu = cpu_used(c0, cpu_sample(p.pid))
                conn.close()
                if name == KUBEDF:
                    cpu -= background * wall
                # Each render differs (collector durations, timestamps).
                fresh = sum(1 for a, b in zip(bodies, bodies[1:]) if a != b) / max(1, len(bodies) - 1)
                out[enc][name] = dict(
                    p50_ms=percentile(lat, 50) * 1e3,
                    p99_ms=percentile(lat, 99) * 1e3,
                    max_ms=max(lat) * 1e3,
                    cpu_ms_per_scrape=max(0.0, cpu) / count * 1e3,
                    fresh_fraction=fresh,
                    series=len(series_lines(sc.text)),
                )
            if out[enc][KUBEDF]["fresh_fraction"] < 0.9:
                self.warnings.append(
                    f"uncached {enc}: only {out[enc][KUBEDF]['fresh_fraction']:.0%} of kubedf's answers were new renders"
                )
            k, e = out[enc][KUBEDF], out[enc][NE]
            log(f"N={n} {enc} rendering every scrape, p50/p99 ms: kubedf {k['p50_ms']:.2f}/{k['p99_ms']:.2f}, node_exporter {e['p50_ms']:.2f}/{e['p99_ms']:.2f}")
        self.res.stop(kd)
        return out

    # -- (f) cost at rest ---------------------------------------------------

    def rest_scenario(self, n):
        """What a node pays per minute: kubedf (default 1m period) and
        node_exporter side by side on the same N filesystems, both scraped with
        gzip every rest_pace seconds, as Prometheus scrapes, for rest_seconds."""
        cfg = self.cfg
        tag = f"rest{n}"
        root = os.path.join(self.work, tag, "kubelet")
        os.makedirs(root, exist_ok=True)
        prefix = root + "/pods/"
        # At rest, the watch's bookmarks come as often as from a real API
        # server (about once a minute), not the fake's default of every second.
        fake, kubeconfig, volumes = self.start_fake(tag, generate=n, bookmark_interval=REAL_BOOKMARK_INTERVAL)
        for v in volumes:
            self.res.mount_tmpfs(os.path.join(root, v["path"]), "1M")
        kd = self.start_kubedf(tag, root, kubeconfig)
        ne = self.start_node_exporter(tag, prefix)
        self.wait_kubedf(kd, n)
        self.wait_node_exporter(ne, n, prefix)
        time.sleep(cfg["rest_warmup"])
        log(f"N={n}: at rest for {cfg['rest_seconds']:.0f}s, gzip scrapes every {cfg['rest_pace']:.0f}s, side by side")
        procs = ((kd, KUBEDF), (ne, NE))
        c0 = {name: cpu_sample(p.pid) for p, name in procs}
        t0 = time.monotonic()
        scrapes = {KUBEDF: 0, NE: 0}
        i = 0
        while True:
            at = t0 + i * cfg["rest_pace"]
            if at > t0 + cfg["rest_seconds"]:
                break
            delay = at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            for p, name in procs:
                s = scrape(p.port, gz=True, timeout=30)
                if s.status != 200:
                    raise Fail(f"{name} answered {s.status} at rest")
                scrapes[name] += 1
            i += 1
        wall = time.monotonic() - t0
        c1 = {name: cpu_sample(p.pid) for p, name in procs}
        mem = {name: memory_kib(p.pid) for p, name in procs}
        threads = {name: len(os.listdir(f"/proc/{p.pid}/task")) for p, name in procs}
        self.res.stop(kd)
        self.res.stop(ne)
        self.res.stop(fake)
        if not self.res.umount_all(under=root):
            raise Fail(f"could not unmount everything under {root}")
        cpu = {name: cpu_used(c0[name], c1[name]) / wall * 60 for name in c0}
        out = dict(
            n=n,
            seconds=wall,
            scrapes=scrapes,
            cpu_seconds_per_minute=cpu,
            cpu_us_per_volume_per_minute={k: (v / n * 1e6 if n else None) for k, v in cpu.items()},
            rss_kib={k: v["VmRSS"] for k, v in mem.items()},
            peak_rss_kib={k: v["VmHWM"] for k, v in mem.items()},
            threads=threads,
        )
        log(
            f"N={n} at rest: CPU/min kubedf {cpu[KUBEDF] * 1e3:.1f} ms, node_exporter {cpu[NE] * 1e3:.1f} ms; "
            f"RSS kubedf {out['rss_kib'][KUBEDF] / 1024:.1f} MiB, node_exporter {out['rss_kib'][NE] / 1024:.1f} MiB"
        )
        return out

    # -- (e) background cost -------------------------------------------------

    def idle(self, kd, ne, n):
        secs = self.cfg["idle_seconds"]
        log(f"N={n}: idle window of {secs:.0f}s (default 1m period, no scrapes)")
        c0 = {KUBEDF: cpu_sample(kd.pid), NE: cpu_sample(ne.pid)}
        t0 = time.monotonic()
        time.sleep(secs)
        wall = time.monotonic() - t0
        c1 = {KUBEDF: cpu_sample(kd.pid), NE: cpu_sample(ne.pid)}
        return dict(
            n=n,
            seconds=wall,
            cpu_seconds_per_minute={k: cpu_used(c0[k], c1[k]) / wall * 60 for k in c0},
        )

    def sampling(self, tag, root, kubeconfig, n):
        cfg = self.cfg
        period = cfg["sample_period"]
        period_s = float(period.rstrip("s"))
        kd = self.start_kubedf(f"{tag}-period{period}", root, kubeconfig, period=period)
        self.wait_kubedf(kd, n)
        time.sleep(cfg["sample_warmup"])
        log(f"N={n}: sampling cost with --volume-stats-agg-period {period} over {cfg['sample_seconds']:.0f}s")
        c0 = cpu_sample(kd.pid)
        t0 = time.monotonic()
        time.sleep(cfg["sample_seconds"])
        wall = time.monotonic() - t0
        cpu = cpu_used(c0, cpu_sample(kd.pid))
        self.res.stop(kd)
        periods = wall / period_s
        # Each volume is due every 1x-2x the period (uniform jitter): 1.5x on average.
        measurements = n * wall / (1.5 * period_s)
        return dict(
            n=n,
            period_seconds=period_s,
            seconds=wall,
            cpu_seconds=cpu,
            cpu_us_per_volume_per_period=cpu / (n * periods) * 1e6 if n else None,
            cpu_us_per_measurement=cpu / measurements * 1e6 if n else None,
            cpu_seconds_per_minute=cpu / wall * 60,
        )

    # -- (b) a hung mount ----------------------------------------------------

    def paced_scrapes(self, p, kind):
        """Scrape i at i*pace seconds after the port opens (or right after the
        previous one if that took longer), each on a new connection with the
        client timeout."""
        cfg = self.cfg
        wait_port(p, 30)
        t0 = time.monotonic()
        out = []
        for i in range(cfg["hung_scrapes"]):
            delay = t0 + i * cfg["hung_pace"] - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            at = time.monotonic() - t0
            try:
                s = scrape(p.port, timeout=cfg["hung_timeout"])
            except (TimeoutError, socket.timeout):
                out.append(dict(i=i + 1, at=at, ms=None, timed_out=True))
                continue
            text = s.text
            row = dict(i=i + 1, at=at, ms=s.seconds * 1e3, timed_out=False, status=s.status)
            if kind == KUBEDF:
                row["volumes"] = count(text, "kubelet_volume_stats_capacity_bytes")
                row["errors"] = sorted(label(k, "reason") for k in values(text, "kubedf_volume_stats_error"))
            else:
                row["volumes"] = count(text, "node_filesystem_size_bytes")
                row["device_errors"] = int(sum(values(text, "node_filesystem_device_error").values()))
            out.append(row)
        return out

    def sigterm_exit(self, p, grace):
        """SIGTERM, then how the process goes away within `grace`:
        ("exited", s); ("threads blocked", s) when its main thread exited but
        a thread stuck in the kernel (a hung statfs) keeps the process from
        finishing (/proc shows the leader as a zombie); or ("running", None)."""
        os.kill(p.pid, signal.SIGTERM)
        p.termed = started = time.monotonic()
        blocked_at = None
        while time.monotonic() - started < grace:
            if p.popen.poll() is not None:
                return "exited", time.monotonic() - started
            if blocked_at is None:
                try:
                    with open(f"/proc/{p.pid}/stat") as f:
                        state = f.read().rsplit(")", 1)[1].split()[0]
                except OSError:
                    state = "?"
                if state == "Z":
                    blocked_at = time.monotonic() - started
            time.sleep(0.005)
        if blocked_at is not None:
            return "threads blocked", blocked_at
        return "running", None

    @staticmethod
    def thread_states(pid):
        """{"D request_wait_answer": 1, "S futex_do_wait": 3, ...} of a process's threads."""
        out = {}
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return out
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
                with open(f"/proc/{pid}/task/{tid}/wchan") as f:
                    wchan = f.read().strip() or "-"
            except OSError:
                continue
            key = f"{state} {wchan}"
            out[key] = out.get(key, 0) + 1
        return out

    def start_hangfs(self, path):
        os.makedirs(path, exist_ok=True)
        fs = self.res.spawn("hangfs", [self.exe("examples/hangfs"), path, "--hang", "statfs"], stdout_pipe=True)
        self.res.adopt_mount(path)
        wait_line(fs, "ready", 20)
        if path not in mounts_under(path):
            raise Fail(f"hangfs printed ready but {path} is not a mount point")
        return fs

    def hung_scenario(self):
        """N tmpfs plus one more volume: a tmpfs in the control run, a FUSE
        mount whose statfs never answers in the hung run. Each exporter gets
        a fresh hangfs, so each meets the hang for the first time."""
        cfg = self.cfg
        n = cfg["hung_n"]
        self.exe("examples/hangfs")
        out = dict(
            n=n,
            timeout_s=cfg["hung_timeout"],
            pace_s=cfg["hung_pace"],
            volume_stats_timeout=cfg["hung_volume_timeout"],
            sigterm_grace_s=cfg["sigterm_grace"],
        )
        for variant in ("control", "hung"):
            tag = f"hung-{variant}"
            root = os.path.join(self.work, tag, "kubelet")
            prefix = root + "/pods/"
            fake, kubeconfig, volumes = self.start_fake(tag, generate=n + 1)
            for v in volumes[:n]:
                self.res.mount_tmpfs(os.path.join(root, v["path"]), "1M")
            last = os.path.join(root, volumes[n]["path"])
            hung_claim = volumes[n]["claim"]
            if variant == "control":
                self.res.mount_tmpfs(last, "1M")
            log(f"hung mount, {variant}: {n} tmpfs + {'1 hung FUSE mount' if variant == 'hung' else '1 more tmpfs'}")
            res = {}
            for kind in (KUBEDF, NE):
                fs = self.start_hangfs(last) if variant == "hung" else None
                if kind == KUBEDF:
                    p = self.start_kubedf(tag, root, kubeconfig, extra=["--volume-stats-timeout", cfg["hung_volume_timeout"]])
                else:
                    p = self.start_node_exporter(tag, prefix)
                scrapes = self.paced_scrapes(p, kind)
                # Does it stop on SIGTERM while a statfs hangs? (A thread
                # blocked on the mount is in D state until hangfs lets go.)
                how, t_exit = self.sigterm_exit(p, cfg["sigterm_grace"])
                exit_s = t_exit if how == "exited" else None
                left = self.thread_states(p.pid) if how != "exited" else {}
                if fs is not None:
                    self.res.stop(fs)
                    self.res.umount(last)
                after_release = None
                if exit_s is None:
                    # Now that the parked statfs failed, does it exit by itself?
                    t0 = time.monotonic()
                    try:
                        p.popen.wait(timeout=2 * cfg["sigterm_grace"])
                        after_release = time.monotonic() - t0
                    except subprocess.TimeoutExpired:
                        after_release = None
                self.res.stop(p)
                res[kind] = dict(
                    scrapes=scrapes,
                    sigterm=how,
                    sigterm_exit_seconds=exit_s,
                    main_thread_exit_seconds=t_exit,
                    threads_left=left,
                    exited_after_release=after_release,
                )
            out[variant] = res
            # kubedf answers every scrape, and ends up reporting the healthy
            # volumes and a timeout for the hung one.
            kds = res[KUBEDF]["scrapes"]
            if any(s["timed_out"] for s in kds):
                raise Fail(f"kubedf scrape timed out ({variant})")
            final = kds[-1]
            want_volumes = n if variant == "hung" else n + 1
            if final["volumes"] != want_volumes:
                raise Fail(f"kubedf reported {final['volumes']} volumes at the last scrape ({variant}), want {want_volumes}")
            if variant == "hung" and final["errors"] != ["timeout"]:
                raise Fail(f"kubedf did not report the hung volume {hung_claim} as a timeout: {final['errors']}")
            self.res.stop(fake)
            if not self.res.umount_all(under=root):
                raise Fail(f"could not unmount everything under {root}")
        return out

    # -- (c) the usage walk ----------------------------------------------------

    def make_tree(self, top):
        cfg = self.cfg
        dirs = []
        for t in range(cfg["tree_top"]):
            d = os.path.join(top, f"t{t:03d}")
            os.mkdir(d)
            dirs.append(d)
            for s in range(cfg["tree_sub"]):
                sd = os.path.join(d, f"s{s:03d}")
                os.mkdir(sd)
                dirs.append(sd)
        payload = bytes(range(256)) * 256  # 64 KiB
        files = cfg["tree_files"]
        for i in range(files):
            d = dirs[i % len(dirs)]
            # Half empty, half 1 byte..4 KiB, one in 997 a 64 KiB file.
            size = 65536 if i % 997 == 0 else (0 if i % 2 else (i * 7919) % 4096 + 1)
            fd = os.open(os.path.join(d, f"f{i:06d}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            if size:
                os.write(fd, payload[:size])
            os.close(fd)
        return len(dirs), files

    def timed(self, argv, shell=False):
        c0 = children_cpu()
        t0 = time.perf_counter()
        run = subprocess.run(argv, capture_output=True, text=True, shell=shell, timeout=600, stdin=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        cpu = children_cpu() - c0
        if run.returncode != 0:
            raise Fail(f"{argv if not shell else argv[:80]} failed: {run.stderr.strip()[-300:]}")
        return run.stdout, wall, cpu

    def walk_scenario(self):
        cfg = self.cfg
        top = os.path.join(self.work, "tree")
        self.res.mount_tmpfs(top, cfg["tree_size"])
        t0 = time.monotonic()
        ndirs, nfiles = self.make_tree(top)
        log(f"walk: {nfiles} files in {ndirs} directories made in {time.monotonic() - t0:.1f}s")
        walk = self.exe("examples/walk")
        quoted = shlex_quote(top)
        threads = self.default_walk_threads()

        def du():
            out, wall, cpu = self.timed(["nice", "-n", "19", "du", "-x", "-s", "-B", "1", top])
            return int(out.split()[0]), wall, cpu

        def find():
            out, wall, cpu = self.timed(f"find {quoted} -xdev | wc -l", shell=True)
            return int(out.strip()), wall, cpu

        def kwalk(n):
            def run():
                out, wall, cpu = self.timed(["nice", "-n", "19", walk, "--threads", str(n), top])
                w = json.loads(out)
                return (w["bytes"], w["inodes"], w["elapsed_seconds"]), wall, cpu

            return run

        fns = {"du": du, "find": find, "walk1": kwalk(1)}
        if threads != 1:
            fns["walkd"] = kwalk(threads)
        runs = {name: [] for name in fns}
        for name in fns:  # warm-up, not counted
            fns[name]()
        names = list(fns)
        for r in range(cfg["walk_rounds"]):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                runs[name].append(fns[name]())
        du_bytes = {x[0] for x in runs["du"]}
        find_count = {x[0] for x in runs["find"]}
        walk_res = {x[0][:2] for name in fns if name.startswith("walk") for x in runs[name]}
        identical = len(du_bytes) == 1 and len(find_count) == 1 and walk_res == {(next(iter(du_bytes)), next(iter(find_count)))}

        def med(name, k):
            return statistics.median(x[k] for x in runs[name])

        out = dict(
            dirs=ndirs,
            files=nfiles,
            rounds=cfg["walk_rounds"],
            du_bytes=sorted(du_bytes),
            find_entries=sorted(find_count),
            walk_bytes_inodes=sorted(walk_res),
            identical=identical,
            du_wall=med("du", 1),
            du_cpu=med("du", 2),
            find_wall=med("find", 1),
            find_cpu=med("find", 2),
            walk_threads=threads,
            walk1_wall=med("walk1", 1),
            walk1_cpu=med("walk1", 2),
            walk1_inner=statistics.median(x[0][2] for x in runs["walk1"]),
        )
        d = "walkd" if threads != 1 else "walk1"
        out["walk_wall"] = med(d, 1)
        out["walk_cpu"] = med(d, 2)
        out["walk_inner"] = statistics.median(x[0][2] for x in runs[d])
        out["kubelet_wall"] = out["du_wall"] + out["find_wall"]
        out["kubelet_cpu"] = out["du_cpu"] + out["find_cpu"]
        log(
            f"walk: du+find {out['kubelet_wall'] * 1e3:.0f} ms wall / {out['kubelet_cpu'] * 1e3:.0f} ms CPU, "
            f"kubedf walk ({threads} threads) {out['walk_wall'] * 1e3:.0f} ms / {out['walk_cpu'] * 1e3:.0f} ms, "
            f"(1 thread) {out['walk1_wall'] * 1e3:.0f} ms / {out['walk1_cpu'] * 1e3:.0f} ms, identical={identical}"
        )
        if not identical:
            raise Fail(f"walk results differ: du {sorted(du_bytes)} find {sorted(find_count)} walk {sorted(walk_res)}")
        out["kubedf_metrics"] = self.walk_end_to_end(top, next(iter(du_bytes)), next(iter(find_count)))
        if not self.res.umount_all(under=top):
            raise Fail(f"could not unmount {top}")
        return out

    def default_walk_threads(self):
        """kubedf's default --volume-stats-walk-threads, from its --help (1 if it has none)."""
        run = subprocess.run([self.exe("kubedf"), "--help"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        m = re.search(r"--volume-stats-walk-threads\b[^\[]*(?:\[[^\]]*\]\s*)*?\[default: (\d+)\]", run.stdout)
        return int(m.group(1)) if m else 1

    def walk_end_to_end(self, top, want_bytes, want_inodes):
        """The same tree as a hostPath PV, through `kubedf metrics`."""
        fake, kubeconfig, _ = self.start_fake("walk-e2e", objects=host_path_pvc(top))
        root = os.path.join(self.work, "walk-e2e", "kubelet")
        os.makedirs(root, exist_ok=True)
        argv = [
            "nice", "-n", "0",
            self.exe("kubedf"), "metrics",
            "--node-name", NODE,
            "--kubeconfig", kubeconfig,
            "--kubelet.root-dir", root,
            "--kubelet.config", "/nonexistent/kubedf-bench/config.yaml",
            "--cri.endpoint", "unix:///nonexistent/kubedf-bench/cri.sock",
            "--no-collector.imagefs", "--no-collector.image_gc",
            "--volume-stats-walk-workers", "1",
        ]  # fmt: skip
        text, wall, cpu = self.timed(argv)
        self.res.stop(fake)
        got = (values(text, "kubelet_volume_stats_used_bytes").get(TREE_KEY), values(text, "kubelet_volume_stats_inodes_used").get(TREE_KEY))
        if got != (want_bytes, want_inodes):
            raise Fail(f"kubedf metrics reports used/inodes {got} for the tree, du/find say {(want_bytes, want_inodes)}")
        return dict(wall=wall, cpu=cpu, used_bytes=int(got[0]), inodes_used=int(got[1]))

    # -- (c2) peak RSS walking a tenant's deep tree --------------------------------

    def make_deep_tree(self, top):
        """As a tenant does it: `mkdir $long; cd $long` deep_names times, then
        `seq deep_dirs | xargs mkdir` (relative to a descriptor, as cd is)."""
        cfg = self.cfg
        name = "n" * cfg["deep_name_len"]
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for _ in range(cfg["deep_names"]):
                os.mkdir(name, dir_fd=fd)
                below = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = below
            for i in range(1, cfg["deep_dirs"] + 1):
                os.mkdir(str(i), dir_fd=fd)
        finally:
            os.close(fd)

    def walk_rss_scenario(self):
        """kubedf serve's peak RSS while it walks a hostPath PV holding a
        tenant's deep tree, against its RSS at rest walking the same PV empty."""
        cfg = self.cfg
        mnt = os.path.join(self.work, "deep")
        self.res.mount_tmpfs(mnt, cfg["deep_size"])
        top = os.path.join(mnt, "pv")
        os.mkdir(top)
        fake, kubeconfig, _ = self.start_fake("walk-rss", objects=host_path_pvc(top))
        root = os.path.join(self.work, "walk-rss", "kubelet")
        os.makedirs(root, exist_ok=True)
        kd = self.start_kubedf("walk-rss", root, kubeconfig, period=cfg["rss_period"])
        self.wait_kubedf(kd, 1)
        time.sleep(cfg["rss_idle_seconds"])
        idle = memory_kib(kd.pid)
        reset_peak_rss(kd.pid)
        t0 = time.monotonic()
        self.make_deep_tree(top)
        made = time.monotonic() - t0
        want = du_find(top)
        deadline = time.monotonic() + cfg["ready_timeout"]
        while True:
            text = scrape(kd.port).text
            got = (values(text, "kubelet_volume_stats_used_bytes").get(TREE_KEY), values(text, "kubelet_volume_stats_inodes_used").get(TREE_KEY))
            if got == want:
                break
            if not kd.alive():
                raise Fail(f"kubedf exited while walking the deep tree; log:\n{kd.log_tail()}")
            if time.monotonic() > deadline:
                raise Fail(f"kubedf reports used/inodes {got} for the deep tree, du/find say {want}")
            time.sleep(0.25)
        seen = time.monotonic() - t0 - made
        rss = []
        end = time.monotonic() + cfg["rss_walk_seconds"]
        while time.monotonic() < end:
            if not kd.alive():
                raise Fail(f"kubedf exited while walking the deep tree; log:\n{kd.log_tail()}")
            rss.append(memory_kib(kd.pid)["VmRSS"])
            time.sleep(0.1)
        last = memory_kib(kd.pid)
        self.res.stop(kd)
        self.res.stop(fake)
        if not self.res.umount_all(under=mnt):
            raise Fail(f"could not unmount {mnt}")
        out = dict(
            names=cfg["deep_names"],
            name_len=cfg["deep_name_len"],
            dirs=cfg["deep_dirs"],
            period=cfg["rss_period"],
            walk_seconds=cfg["rss_walk_seconds"],
            tree_seconds=made,
            reported_seconds=seen,
            bytes=want[0],
            inodes=want[1],
            idle_rss_kib=idle["VmRSS"],
            idle_hwm_kib=idle["VmHWM"],
            peak_kib=last["VmHWM"],
            max_sampled_rss_kib=max(rss),
            end_rss_kib=last["VmRSS"],
            target_kib=8 * 1024,
            rev=kubedf_rev(),
            date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        )
        out["delta_kib"] = out["peak_kib"] - out["idle_rss_kib"]
        log(
            f"walk RSS: idle {out['idle_rss_kib'] / 1024:.1f} MiB, peak while walking {out['peak_kib'] / 1024:.1f} MiB "
            f"(+{out['delta_kib'] / 1024:.1f} MiB; target +8 MiB) over {cfg['deep_dirs']:,} dirs under "
            f"{cfg['deep_names']} names of {cfg['deep_name_len']}"
        )
        return out

    # -- (d) render ----------------------------------------------------------------

    def render_scenario(self):
        exe = self.args.render_bench
        if not exe or not os.access(exe, os.X_OK):
            raise Fail(f"render bench executable not given or not built: {exe!r}")
        home = os.path.join(self.work, "criterion")
        env = dict(os.environ, CRITERION_HOME=home)
        log("render: criterion (benches/render.rs)")
        run = subprocess.run(
            [exe, "--bench", *self.cfg["criterion"]],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=self.cfg["criterion_timeout"],
            stdin=subprocess.DEVNULL,
        )
        with open(os.path.join(self.res.logs, "criterion.log"), "w") as f:
            f.write(run.stdout + run.stderr)
        if run.returncode != 0:
            raise Fail(f"render bench failed: {run.stderr.strip()[-800:]}")
        out = {}
        for group in ("render", "render_text", "render_gzip"):
            for n in (1000, 10000):
                path = os.path.join(home, group, str(n), "new", "estimates.json")
                if not os.path.exists(path) and self.args.mode == "smoke" and n == 10000:
                    continue  # the smoke run benches 1,000 PVCs only
                try:
                    with open(path) as f:
                        est = json.load(f)
                except OSError as e:
                    raise Fail(f"criterion wrote no {path}: {e}") from e
                out[f"{group}/{n}"] = dict(
                    mean_ms=est["mean"]["point_estimate"] / 1e6,
                    mean_lo_ms=est["mean"]["confidence_interval"]["lower_bound"] / 1e6,
                    mean_hi_ms=est["mean"]["confidence_interval"]["upper_bound"] / 1e6,
                    median_ms=est["median"]["point_estimate"] / 1e6,
                )
        log("render: " + ", ".join(f"{k} {v['mean_ms']:.2f} ms" for k, v in out.items()))
        return out


TREE_KEY = f'{{namespace="{NS}",persistentvolumeclaim="tree"}}'


def host_path_pvc(top):
    """The fake API's objects for one running pod whose PVC `tree` is bound
    to a hostPath PV at `top` (what local-path-provisioner makes)."""
    pod_uid = "7d0a1f1e-0000-4000-8000-00000000b0b0"
    return [
        {
            "kind": "PersistentVolume",
            "apiVersion": "v1",
            "metadata": {"name": "pv-tree", "uid": "7d0a1f1e-0000-4000-8000-0000000000a1"},
            "spec": {
                "capacity": {"storage": "10Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "manual",
                "volumeMode": "Filesystem",
                "hostPath": {"path": top, "type": ""},
                "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": NS, "name": "tree"},
            },
            "status": {"phase": "Bound"},
        },
        {
            "kind": "PersistentVolumeClaim",
            "apiVersion": "v1",
            "metadata": {"name": "tree", "namespace": NS, "uid": "7d0a1f1e-0000-4000-8000-0000000000a2"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "10Gi"}},
                "storageClassName": "manual",
                "volumeMode": "Filesystem",
                "volumeName": "pv-tree",
            },
            "status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "10Gi"}},
        },
        {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {"name": "tree-user", "namespace": NS, "uid": pod_uid},
            "spec": {
                "nodeName": NODE,
                "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10", "volumeMounts": [{"name": "d", "mountPath": "/d"}]}],
                "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "tree"}}],
            },
            "status": {"phase": "Running"},
        },
    ]


def shlex_quote(s):
    import shlex

    return shlex.quote(s)


# ---------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------


def first_line(argv):
    try:
        run = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        return ((run.stdout or run.stderr).strip().splitlines() or [""])[0]
    except (OSError, subprocess.SubprocessError):
        return "?"


def kubedf_rev():
    rev = first_line(["git", "-C", REPO, "rev-parse", "--short=12", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, stdin=subprocess.DEVNULL
    ).stdout.rstrip()
    dirty_files = [line[3:] for line in dirty.splitlines()]
    return rev + (f" with uncommitted changes to {', '.join(dirty_files)}" if dirty_files else "")


def machine():
    info = {}
    info["nproc"] = os.cpu_count()
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    info["cpu"] = model
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    info["kernel"] = platform.release()
    try:
        with open("/etc/debian_version") as f:
            info["debian"] = f.read().strip()
    except OSError:
        info["debian"] = "?"
    info["node_exporter"] = first_line(["prometheus-node-exporter", "--version"])
    info["wrk"] = first_line(["wrk", "--version"])
    info["rustc"] = first_line(["rustc", "--version"])
    info["kubedf_rev"] = kubedf_rev()
    info["python"] = platform.python_version()
    with open("/proc/loadavg") as f:
        info["loadavg_start"] = f.read().split()[:3]
    info["date"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return info


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=sorted(MODES), default="full")
    ap.add_argument("--bin-dir", required=True, help="cargo's profile dir with kubedf and examples/")
    ap.add_argument("--render-bench", help="the benches/render.rs executable")
    ap.add_argument("--profile", help="the cargo profile the binaries were built with (for the report)")
    ap.add_argument("--out-dir", required=True, help="where results.json (and the report) go")
    ap.add_argument("--only", help="comma-separated steps to run: scrape,rest,hung,walk,walkrss,render")
    args = ap.parse_args()
    cfg = dict(MODES[args.mode])
    if os.environ.get("BENCH_REST_NS"):
        # e.g. BENCH_REST_NS=0,1000 to measure the cost at rest at fewer N.
        cfg["rest_ns"] = [int(x) for x in os.environ["BENCH_REST_NS"].split(",")]

    if os.geteuid() != 0:
        log("needs root (it mounts tmpfs and FUSE filesystems)")
        return 2
    for tool in ("prometheus-node-exporter", "wrk", "du", "find", "mount", "fusermount3"):
        if not shutil.which(tool):
            log(f"`{tool}` is not installed (bench/run.sh installs it)")
            return 2

    raise_on_signals()
    signal.alarm(cfg["deadline"])

    clean_stale_runs()
    work = tempfile.mkdtemp(prefix=WORK_PREFIX)
    lockfd = os.open(os.path.join(work, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lockfd, fcntl.LOCK_EX)
    res = Resources(work)
    bench = Bench(args, cfg, res)
    steps = set((args.only or "scrape,rest,hung,walk,walkrss,render").split(","))
    results = dict(mode=args.mode, profile=args.profile or os.path.basename(os.path.normpath(args.bin_dir)), config={k: v for k, v in cfg.items()}, machine=machine(), steps={})
    busy0, total0 = machine_busy()
    own0 = own_cpu()
    wall0 = time.monotonic()
    interrupted_by = None
    clean = False
    try:
        plan = []
        if "scrape" in steps:
            for i, n in enumerate(cfg["ns"]):
                plan.append((f"scrape N={n}", lambda n=n, last=(i == len(cfg["ns"]) - 1): bench.scrape_scenario(n, last)))
        if "rest" in steps:
            for n in cfg["rest_ns"]:
                plan.append((f"rest N={n}", lambda n=n: bench.rest_scenario(n)))
        if "hung" in steps:
            plan.append(("hung mount", bench.hung_scenario))
        if "walk" in steps:
            plan.append(("walk", bench.walk_scenario))
        if "walkrss" in steps:
            plan.append(("walk RSS", bench.walk_rss_scenario))
        if "render" in steps:
            plan.append(("render", bench.render_scenario))
        for name, fn in plan:
            t0 = time.monotonic()
            try:
                results["steps"][name] = dict(ok=True, result=fn())
            except Fail as e:
                log(f"FAILED {name}: {e}")
                bench.failures.append(f"{name}: {e}")
                results["steps"][name] = dict(ok=False, error=str(e))
            except (OSError, subprocess.SubprocessError, ValueError, KeyError, http.client.HTTPException) as e:
                log(f"FAILED {name}: {type(e).__name__}: {e}")
                bench.failures.append(f"{name}: {type(e).__name__}: {e}")
                results["steps"][name] = dict(ok=False, error=f"{type(e).__name__}: {e}")
            results["steps"][name]["seconds"] = time.monotonic() - t0
            # A failed step may have left its processes and mounts: release them now.
            res.close()
    except Interrupted as e:
        interrupted_by = str(e)
        log(f"interrupted ({e}): cleaning up")
    finally:
        signal.alarm(0)
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        clean = res.close()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)

    busy1, total1 = machine_busy()
    wall = time.monotonic() - wall0
    ours = own_cpu() - own0
    others = max(0.0, (busy1 - busy0) - ours)
    with open("/proc/loadavg") as f:
        results["machine"]["loadavg_end"] = f.read().split()[:3]
    results["machine"]["run_seconds"] = wall
    results["machine"]["others_cpu_seconds"] = others
    results["machine"]["others_cpu_share"] = others / (wall * (os.cpu_count() or 1))
    results["failures"] = bench.failures
    results["warnings"] = bench.warnings
    results["interrupted"] = interrupted_by
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    if clean and not os.environ.get("BENCH_KEEP"):
        shutil.rmtree(work, ignore_errors=True)
    elif clean:
        log(f"kept {work} (BENCH_KEEP)")
    else:
        log(f"left {work} (mounts remain); the next run cleans it up")
    if interrupted_by:
        return 130
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
