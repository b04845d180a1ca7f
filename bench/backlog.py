#!/usr/bin/env python3
"""Backlog benchmark (issue 13): a 1 GiB durable backlog, the router's memory and its restart.

One release router (bench/router-backlog-bench.toml: PUSH -> zmq-pull input ->
one durable route, fsync = batch -> zmq-push output) runs with a data_dir on
the repository's disk (under target/, not tmpfs) and no worker connected, so
everything published stays in the route's queue on disk. The steps:

  1. start the router, wait for GET /ready = 200, let it idle, read its RSS
     (/proc/PID/status VmRSS, VmHWM): the idle figure;
  2. publish with bench/bin/zsend (PUSH, unpaced, --size B payloads) in runs of
     --chunk messages, watching switchyard_route_queue_bytes on /metrics, until
     the route holds --target bytes; RSS is sampled throughout (peak) and read
     again once the queue is settled (steady);
  3. restart it, twice: once after SIGTERM (graceful stop) and once after
     SIGKILL. For each, a PULL worker (pyzmq, a child process) connects to the
     output before the new router is exec'd; the figures are the time from
     exec to /ready answering 200 and to the worker's first message, the RSS
     right after /ready, the RSS while the worker drains the whole backlog
     (peak of the samples, and VmHWM at the end), and the worker's count,
     checked against what was published: every sequence number exactly once
     (a duplicate is reported, not hidden). Between the two restarts the
     backlog is published again.
  4. with --cold (root only), the page cache is dropped
     (echo 3 > /proc/sys/vm/drop_caches) before each restart as well, so the
     router reads its segments from the disk; without it the restart is warm
     (the segments were just written and are in the page cache).

Examples:
    ./dev bench --suite backlog                      # 1 GiB of 1 KiB messages, warm restarts
    ./dev bench --suite backlog --cold               # also cold (root: drops the page cache)
    python3 bench/backlog.py --size 64 --target 256MiB --no-build
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "bench" / "bin"
ROUTER = ROOT / "target" / "release" / "switchyard"

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import free_port, log, machine_info  # noqa: E402


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+)\s*(B|KiB|MiB|GiB)?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1GiB, 256MiB)")
    return int(m.group(1)) * {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20,
                              "GiB": 1 << 30}[m.group(2)]


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0, ""


def metric(port: int, name: str) -> float | None:
    status, text = http_get(port, "/metrics")
    if status != 200:
        return None
    for line in text.splitlines():
        if line.startswith(name + "{") and 'route="bench"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def mib(kib) -> str:
    return f"{kib / 1024:.1f}" if kib else "-"


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ports = {"in": free_port(), "out": free_port(), "admin": free_port()}
        self.data = ROOT / "target" / f"bench-backlog-{self.ports['admin']}"
        self.logs = Path(args.logs) if args.logs else self.data.with_name(self.data.name + "-logs")
        self.logs.mkdir(parents=True, exist_ok=True)
        self.router: subprocess.Popen | None = None
        self.starts = 0
        self.published = 0

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "BENCH_IN": f"tcp://127.0.0.1:{self.ports['in']}",
            "BENCH_OUT": f"tcp://127.0.0.1:{self.ports['out']}",
            "BENCH_ADMIN": f"127.0.0.1:{self.ports['admin']}",
            "BENCH_DATA": str(self.data),
            "BENCH_HWM": "1000",
        })
        return env

    def start(self) -> float:
        """Execs the router; returns the monotonic time just before the exec."""
        self.starts += 1
        logf = open(self.logs / f"router-{self.starts}.log", "wb")
        t0 = time.monotonic()
        self.router = subprocess.Popen(
            [str(ROUTER), "run", "--config", str(self.args.config)], env=self.env(),
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        logf.close()
        return t0

    def wait_ready(self, t0: float, timeout: float = 120.0) -> float:
        """Polls /ready every 2 ms; returns seconds from exec to the first 200."""
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.router.poll() is not None:
                raise RuntimeError(f"router exited with {self.router.returncode} "
                                   f"(log {self.logs / f'router-{self.starts}.log'})")
            if http_get(self.ports["admin"], "/ready", timeout=1.0)[0] == 200:
                return time.monotonic() - t0
            time.sleep(0.002)
        raise RuntimeError("router not ready in time")

    def rss(self) -> dict[str, int]:
        """VmRSS, VmHWM and the anonymous / file-backed parts of VmRSS, KiB."""
        out: dict[str, int] = {}
        try:
            for line in Path(f"/proc/{self.router.pid}/status").read_text().splitlines():
                key, _, val = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                    out[key] = int(val.split()[0])
        except (OSError, ValueError):
            pass
        return out

    def stop(self, sig: int) -> float:
        t = time.monotonic()
        self.router.send_signal(sig)
        self.router.wait(timeout=120)
        return time.monotonic() - t

    def queue_bytes(self) -> float:
        return metric(self.ports["admin"], "switchyard_route_queue_bytes") or 0.0

    def queue_depth(self) -> float:
        return metric(self.ports["admin"], "switchyard_route_queue_depth") or 0.0

    def fill(self) -> dict:
        """Publishes until the route holds --target bytes; samples RSS meanwhile."""
        a = self.args
        first = self.published
        peak_rss = peak_anon = 0
        # Counted from what the route reports before the fill: after a
        # restart it may report bytes held with nothing queued (see notes).
        base = self.queue_bytes()
        t0 = time.monotonic()
        while self.queue_bytes() - base < a.target:
            send = subprocess.Popen(
                [str(BIN / "zsend"), "--type", "push",
                 "--endpoint", f">tcp://127.0.0.1:{self.ports['in']}", "--rate", "0",
                 "--count", str(a.chunk), "--size", str(a.size), "--frames", "2",
                 "--topic", "bench.data", "--sndhwm", "1000", "--first", str(self.published)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            while send.poll() is None:
                st = self.rss()
                peak_rss = max(peak_rss, st.get("VmRSS", 0))
                peak_anon = max(peak_anon, st.get("RssAnon", 0))
                time.sleep(0.05)
            out, err = send.communicate()
            if send.returncode != 0:
                raise RuntimeError(f"zsend failed: {err.strip()}")
            self.published += a.chunk
            # Everything sent is in the route once the depth says so.
            deadline = time.monotonic() + 60
            while self.queue_depth() < self.published and time.monotonic() < deadline:
                peak_rss = max(peak_rss, self.rss().get("VmRSS", 0))
                time.sleep(0.02)
            if self.queue_depth() < self.published:
                raise RuntimeError(f"route depth {self.queue_depth()} < published {self.published}")
        elapsed = time.monotonic() - t0
        # Settled: the batch fsync and a checkpoint have run.
        time.sleep(a.settle)
        st = self.rss()
        return {
            "published": self.published - first, "queue_bytes": self.queue_bytes() - base,
            "queue_bytes_before": base,
            "queue_depth": self.queue_depth(), "fill_s": elapsed,
            "fill_msgs_per_s": (self.published - first) / elapsed,
            "rss_peak_sampled_kib": max(peak_rss, st.get("VmRSS", 0)),
            "rss_steady_kib": st.get("VmRSS"), "hwm_kib": st.get("VmHWM"),
            "anon_peak_sampled_kib": peak_anon, "anon_steady_kib": st.get("RssAnon"),
            "disk_bytes": sum(f.stat().st_size for f in self.data.rglob("*") if f.is_file()),
        }

    def restart(self, how: str) -> dict:
        """Stops the router (SIGTERM for `graceful`, SIGKILL for `kill`; a
        `-cold` suffix drops the page cache first), restarts it with a worker
        waiting, and drains the backlog through the worker."""
        how, _, cache = how.partition("-")
        if how not in ("graceful", "kill") or cache not in ("", "cold"):
            raise RuntimeError(f"unknown restart {how!r}: graceful, kill, graceful-cold, kill-cold")
        stop_s = self.stop(signal.SIGTERM if how == "graceful" else signal.SIGKILL)
        cold = False
        if cache == "cold":
            subprocess.run(["sync"], check=True)
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
            cold = True
        expect = self.published
        worker = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker",
             f"tcp://127.0.0.1:{self.ports['out']}", "--expect", str(expect),
             "--idle-s", str(self.args.worker_idle)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # The worker says when its socket is connecting; the router starts after.
        line = worker.stdout.readline()
        if not line.startswith("connecting"):
            raise RuntimeError(f"worker did not start: {line!r} {worker.stderr.read()}")
        t0 = self.start()
        ready_s = self.wait_ready(t0)
        after = self.rss()
        recovered = metric(self.ports["admin"], "switchyard_queue_recovered_records_total")
        peak = 0
        while worker.poll() is None:
            peak = max(peak, self.rss().get("VmRSS", 0))
            time.sleep(0.05)
        out, err = worker.communicate()
        res = json.loads(out.strip().splitlines()[-1])
        end = self.rss()
        first_s = res["first_t"] - t0 if res.get("first_t") else None
        depth = self.queue_depth()
        queue_bytes = self.queue_bytes()
        # The backlog is gone: the next fill starts from an empty route.
        self.published = 0
        return {
            "how": how, "cold_cache": cold, "stop_s": stop_s, "ready_s": ready_s,
            "first_message_s": first_s, "rss_after_ready_kib": after.get("VmRSS"),
            "rss_drain_peak_sampled_kib": max(peak, end.get("VmRSS", 0)),
            "hwm_after_drain_kib": end.get("VmHWM"), "rss_after_drain_kib": end.get("VmRSS"),
            "expected": expect, "received": res["received"], "unique": res["unique"],
            "missing": res["missing"], "duplicates": res["duplicates"],
            "drain_s": res["drain_s"], "drain_msgs_per_s": res["msgs_per_s"],
            "recovered_records": recovered, "depth_after_drain": depth,
            "queue_bytes_after_drain": queue_bytes,
        }

    def cleanup(self) -> None:
        if self.router is not None and self.router.poll() is None:
            self.router.kill()
            self.router.wait()
        shutil.rmtree(self.data, ignore_errors=True)
        if not self.args.logs:
            shutil.rmtree(self.logs, ignore_errors=True)


def worker_main(endpoint: str, expect: int, idle_s: float) -> int:
    """The PULL worker: connects, then takes messages until `expect` unique
    sequence numbers arrived or none came for `idle_s`; prints one JSON line."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, 1000)
    sock.setsockopt(zmq.RECONNECT_IVL, 5)  # the router is not up yet: retry every 5 ms
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    print("connecting", flush=True)
    seen = bytearray(expect)
    received = unique = duplicates = 0
    first_t = last_t = None
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    while unique < expect:
        # Wait long for the first message (the router is restarting), then idle_s.
        timeout = 120_000 if first_t is None else idle_s * 1000
        if not poller.poll(timeout):
            break
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                break
            now = time.monotonic()
            if first_t is None:
                first_t = now
            last_t = now
            received += 1
            seq = int.from_bytes(frames[-1][-8:], "little")
            if seq < expect and not seen[seq]:
                seen[seq] = 1
                unique += 1
            else:
                duplicates += 1
    drain = (last_t - first_t) if first_t and last_t else 0.0
    print(json.dumps({
        "received": received, "unique": unique, "missing": expect - unique,
        "duplicates": duplicates, "first_t": first_t, "drain_s": drain,
        "msgs_per_s": received / drain if drain > 0 else 0.0,
    }), flush=True)
    sock.close()
    ctx.term()
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", help=argparse.SUPPRESS)  # from bench/run.py --suite backlog
    p.add_argument("--size", type=int, default=1024, help="payload bytes per message")
    p.add_argument("--target", type=parse_size, default=1 << 30,
                   help="bytes the route must hold (switchyard_route_queue_bytes), e.g. 1GiB")
    p.add_argument("--chunk", type=int, default=200_000, help="messages per zsend run")
    p.add_argument("--settle", type=float, default=3.0,
                   help="seconds after the fill before the steady RSS is read")
    p.add_argument("--idle-seconds", type=float, default=3.0,
                   help="seconds after /ready before the idle RSS is read")
    p.add_argument("--worker-idle", type=float, default=10.0,
                   help="the worker stops after this long without a message")
    p.add_argument("--cold", action="store_true",
                   help="also restart with the page cache dropped (needs root): adds "
                        "graceful-cold,kill-cold to --restarts")
    p.add_argument("--restarts", default="graceful,kill",
                   help="which restarts to measure, in order: graceful, kill, graceful-cold, "
                        "kill-cold (each after a fresh fill)")
    p.add_argument("--config", type=Path, default=ROOT / "bench" / "router-backlog-bench.toml")
    p.add_argument("--no-build", action="store_true", help="do not run bench/build.sh or cargo")
    p.add_argument("--logs", metavar="DIR",
                   help="keep the router logs here (by default they are removed at the end)")
    p.add_argument("--json", metavar="FILE", help="write every figure as JSON here")
    p.add_argument("--worker", metavar="ENDPOINT", help=argparse.SUPPRESS)
    p.add_argument("--expect", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--idle-s", type=float, default=10.0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.expect, args.idle_s)
    if args.cold:
        args.restarts += ",graceful-cold,kill-cold"
    if "cold" in args.restarts and os.geteuid() != 0:
        sys.exit("a cold restart drops the page cache and needs root")
    if not args.no_build:
        subprocess.run([str(ROOT / "bench" / "build.sh")], check=True)
        subprocess.run(["cargo", "build", "--release", "-p", "switchyard"], check=True, cwd=ROOT)
    info = machine_info()
    bench = Bench(args)
    shutil.rmtree(bench.data, ignore_errors=True)
    report: dict = {"machine": info, "args": {k: str(v) for k, v in vars(args).items()}}
    try:
        t0 = bench.start()
        report["first_start_ready_s"] = bench.wait_ready(t0)
        time.sleep(args.idle_seconds)
        idle = bench.rss()
        report["idle"] = {"rss_kib": idle.get("VmRSS"), "hwm_kib": idle.get("VmHWM")}
        log(f"idle: VmRSS {mib(idle.get('VmRSS'))} MiB")
        report["fills"], report["restarts"] = [], []
        for how in args.restarts.split(","):
            fill = bench.fill()
            report["fills"].append(fill)
            log(f"fill: {fill['published']:,} msgs, {fill['queue_bytes'] / 2**20:.0f} MiB "
                f"queued ({fill['disk_bytes'] / 2**20:.0f} MiB on disk) in "
                f"{fill['fill_s']:.1f}s; RSS peak {mib(fill['rss_peak_sampled_kib'])} MiB, "
                f"steady {mib(fill['rss_steady_kib'])} MiB, VmHWM {mib(fill['hwm_kib'])} MiB")
            r = bench.restart(how.strip())
            report["restarts"].append(r)
            log(f"restart ({r['how']}, {'cold' if r['cold_cache'] else 'warm'} cache): ready "
                f"{r['ready_s']:.3f}s, first message {r['first_message_s']:.3f}s, RSS after ready "
                f"{mib(r['rss_after_ready_kib'])} MiB, while draining {mib(r['rss_drain_peak_sampled_kib'])}"
                f" MiB (VmHWM {mib(r['hwm_after_drain_kib'])}); received {r['received']:,} of "
                f"{r['expected']:,} (missing {r['missing']}, duplicates {r['duplicates']}), drained "
                f"in {r['drain_s']:.1f}s")
        bench.stop(signal.SIGTERM)
    finally:
        bench.cleanup()
    info["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    print(markdown(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


def markdown(rep: dict) -> str:
    m = rep["machine"]
    idle = rep["idle"]["rss_kib"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, {m['rustc']}; load average "
        f"at start {' '.join(m['loadavg'])}, at end {' '.join(m.get('loadavg_end', ['?']))}; "
        f"started {m['date']}. Idle RSS {mib(idle)} MiB (first start to /ready "
        f"{rep['first_start_ready_s']:.3f}s).",
        "",
        "| fill | messages | queue MiB | on disk MiB | fill msgs/s | RSS peak MiB (anon) "
        "| RSS steady MiB (anon) | steady − idle MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, f in enumerate(rep["fills"]):
        lines.append(
            f"| {i + 1} | {f['published']:,} | {f['queue_bytes'] / 2**20:.0f} | "
            f"{f['disk_bytes'] / 2**20:.0f} | {f['fill_msgs_per_s']:,.0f} | "
            f"{mib(f['rss_peak_sampled_kib'])} ({mib(f['anon_peak_sampled_kib'])}) | "
            f"{mib(f['rss_steady_kib'])} ({mib(f['anon_steady_kib'])}) | "
            f"{(f['rss_steady_kib'] - idle) / 1024:.1f} |")
    lines += [
        "",
        "| restart | cache | exec → /ready s | exec → first message s | RSS after ready MiB "
        "| RSS draining (peak) MiB | delivered / expected | missing | duplicates | drain msgs/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for r in rep["restarts"]:
        first = f"{r['first_message_s']:.3f}" if r["first_message_s"] is not None else "-"
        if r["depth_after_drain"] or r["queue_bytes_after_drain"]:
            notes.append(f"after the {r['how']} restart's ({'cold' if r['cold_cache'] else 'warm'}) drain the route reports depth "
                         f"{r['depth_after_drain']:.0f} and "
                         f"{r['queue_bytes_after_drain'] / 2**20:.1f} MiB held")
        lines.append(
            f"| {r['how']} | {'cold' if r['cold_cache'] else 'warm'} | {r['ready_s']:.3f} | "
            f"{first} | {mib(r['rss_after_ready_kib'])} | {mib(r['rss_drain_peak_sampled_kib'])} | "
            f"{r['unique']:,} / {r['expected']:,} | {r['missing']} | {r['duplicates']} | "
            f"{r['drain_msgs_per_s']:,.0f} |")
    if notes:
        lines += [""] + [f"Note: {n}." for n in notes]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
