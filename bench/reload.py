#!/usr/bin/env python3
"""Hot-reload benchmarks (issue 5), against the release router.

Three measurements, each on a router running bench/router-plugin-bench.toml's
shape (zmq-sub in, the JSON-field filter plugin, zmq-pub out) from a copy of
the config in a scratch directory, with a compile cache (plugin_cache):

  latency   Save the config (write a temp file, rename it over the original,
            as editors do) with one route changed, and time until /v1/status
            shows the new generation: the whole path, file watcher debounce
            (200 ms) included. --saves times, spaced 1.5 s apart.
  cached    POST /v1/reload with the plugin's `config` changed, so the plugin
            is loaded again from the compile cache, and read the router's own
            timings (config, plugins, swap, total) from the answer.
  dip       A paced publisher (bench/bin/zsend) at --rate msgs/s for
            --seconds, through the router to bench/bin/zrecv, twice: once
            with no reload, once reloading every second (alternating the
            plugin's config and a second route, through the file watcher).
            Reports what arrived, loss, duplicates, and the delivered rate
            per 100 ms window (from the route's delivered counter; the first
            and last, partial windows left out) at its lowest and 10th
            percentile.

Run:  python3 bench/reload.py [--saves 20] [--rate 50000] [--seconds 20]
(builds nothing: `cargo build --release -p switchyard`, `bench/build.sh` and
the plugins first, or run `./dev bench --suite plugin` once.)
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "bench" / "bin"
ROUTER = ROOT / "target" / "release" / "switchyard"
PLUGIN = ROOT / "plugins" / "target" / "wasm32-unknown-unknown" / "release" / "json_filter.wasm"
PREFIX = '{"sensor":{"id":"a1","temp":25.5},"pad":"'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(ports: dict, cache: Path, value: int, extra_route: bool, capacity: int) -> str:
    extra = ""
    if extra_route:
        extra = """
[[route]]
name = "extra"
match = "bench.extra.>"
to = ["out"]
"""
    return f"""
[router]
name = "reload-bench"
admin = "127.0.0.1:{ports['admin']}"
plugin_cache = "{cache}"

[[input]]
name = "in"
kind = "zmq-sub"
bind = "tcp://127.0.0.1:{ports['in']}"
recv_hwm = 10000

[[output]]
name = "out"
kind = "zmq-pub"
bind = "tcp://127.0.0.1:{ports['out']}"
send_hwm = 10000

[[plugin]]
name = "hot"
path = "{PLUGIN}"
config = {{ path = "sensor.temp", op = "gt", value = {value} }}

[[route]]
name = "bench"
match = "bench.>"
filters = ["hot"]
to = ["out"]
queue = {{ capacity = {capacity}, when_full = "block" }}
{extra}
"""


def save(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def get(ports: dict, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{ports['admin']}{path}", timeout=10) as r:
        return r.read().decode()


def status(ports: dict) -> dict:
    return json.loads(get(ports, "/v1/status"))


def post_reload(ports: dict, body: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{ports['admin']}/v1/reload",
                                 data=body.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read().decode())


def delivered(ports: dict) -> float:
    for line in get(ports, "/metrics").splitlines():
        if line.startswith('switchyard_route_messages_total{outcome="delivered",route="bench"}'):
            return float(line.split()[-1])
    return 0.0


class Router:
    def __init__(self, workdir: Path) -> None:
        self.ports = {k: free_port() for k in ("admin", "in", "out")}
        self.cache = workdir / "cache"
        self.path = workdir / "router.toml"
        self.value = 20
        self.extra = False
        self.capacity = 10000
        save(self.path, self.text())
        self.log = open(workdir / "router.log", "w")
        self.proc = subprocess.Popen([str(ROUTER), "run", "--config", str(self.path)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while True:
            try:
                if status(self.ports)["ready"]:
                    break
            except OSError:
                pass
            if time.time() > deadline or self.proc.poll() is not None:
                sys.exit(f"router did not start; see {workdir / 'router.log'}")
            time.sleep(0.02)

    def text(self) -> str:
        return config(self.ports, self.cache, self.value, self.extra, self.capacity)

    def generation(self) -> int:
        return status(self.ports)["config_generation"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def pct(xs: list, p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round((len(xs) - 1) * p)))]


def latency(workdir: Path, saves: int) -> dict:
    r = Router(workdir / "latency")
    try:
        took, inside = [], []
        for i in range(saves):
            time.sleep(1.5)  # let the previous save settle past the debounce
            gen = r.generation()
            r.capacity = 10000 + 1 + i
            t0 = time.perf_counter()
            save(r.path, r.text())
            while r.generation() == gen:
                if time.perf_counter() - t0 > 10:
                    sys.exit("a save was not applied within 10 s")
                time.sleep(0.002)
            took.append((time.perf_counter() - t0) * 1000)
            inside.append(status(r.ports)["reload"]["last_timings"]["total_ms"])
        return {"saves": saves, "p50_ms": statistics.median(took), "p90_ms": pct(took, 0.9),
                "max_ms": max(took), "router_p50_ms": statistics.median(inside)}
    finally:
        r.stop()


def cached(workdir: Path, reps: int) -> dict:
    r = Router(workdir / "cached")
    try:
        rows = []
        for i in range(reps):
            r.value = 21 + i % 2
            rep = post_reload(r.ports, r.text())
            assert rep["diff"]["plugins"]["changed"], rep
            rows.append(rep["timings"])
        med = {k: statistics.median(t[k] for t in rows) for k in rows[0]}
        return {"reps": reps, **{f"{k}_p50": v for k, v in med.items()},
                "plugins_ms_max": max(t["plugins_ms"] for t in rows)}
    finally:
        r.stop()


def dip(workdir: Path, rate: int, seconds: int, reload_every: float) -> dict:
    r = Router(workdir / ("dip-reload" if reload_every else "dip-steady"))
    count = rate * seconds
    try:
        sync = free_port()
        recv = subprocess.Popen(
            [str(BIN / "zrecv"), "--type", "sub", "--endpoint", f">tcp://127.0.0.1:{r.ports['out']}",
             "--count", str(count), "--subscribe", "bench.data", "--rcvhwm", "10000",
             "--idle-ms", "3000", "--timeout-ms", str((seconds + 60) * 1000),
             "--sync", f">tcp://127.0.0.1:{sync}"],
            stdout=subprocess.PIPE, text=True)
        send = subprocess.Popen(
            [str(BIN / "zsend"), "--type", "pub", "--endpoint", f">tcp://127.0.0.1:{r.ports['in']}",
             "--rate", str(rate), "--count", str(count), "--size", "64", "--frames", "2",
             "--topic", "bench.data", "--sndhwm", "10000", "--payload-prefix", PREFIX,
             "--sync", f"@tcp://127.0.0.1:{sync}"],
            stdout=subprocess.PIPE, text=True)
        windows, reloads, stop = [], [0], threading.Event()

        def sample() -> None:
            last, t_last = delivered(r.ports), time.perf_counter()
            while not stop.is_set():
                time.sleep(0.1)
                now, t = delivered(r.ports), time.perf_counter()
                windows.append((now - last) / (t - t_last))
                last, t_last = now, t

        def churn() -> None:
            while not stop.is_set():
                time.sleep(reload_every)
                r.value = 41 - r.value  # 20 <-> 21: both keep every message
                r.extra = not r.extra
                save(r.path, r.text())
                reloads[0] += 1

        sampler = threading.Thread(target=sample)
        sampler.start()
        churner = threading.Thread(target=churn) if reload_every else None
        if churner:
            churner.start()
        sent = json.loads(send.communicate(timeout=seconds + 120)[0].strip().splitlines()[-1])
        got = json.loads(recv.communicate(timeout=seconds + 120)[0].strip().splitlines()[-1])
        stop.set()
        sampler.join()
        if churner:
            churner.join()
        # Windows while the stream ran, without the first and last (partial).
        active = [i for i, w in enumerate(windows) if w > 0]
        inner = windows[active[0] + 1:active[-1]] if len(active) > 2 else []
        busy = sorted(inner)
        return {"reloads": reloads[0], "generation": r.generation(), "sent": sent.get("sent"),
                "received": got.get("received"), "lost": got.get("lost"),
                "rate": got.get("msgs_per_s"), "duplicates": got.get("duplicates"),
                "window_min": busy[0] if busy else 0,
                "window_p10": pct(busy, 0.1) if busy else 0,
                "window_median": statistics.median(busy) if busy else 0}
    finally:
        r.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--saves", type=int, default=20)
    p.add_argument("--reps", type=int, default=20, help="cached: reloads through POST")
    p.add_argument("--rate", type=int, default=50000)
    p.add_argument("--seconds", type=int, default=20)
    p.add_argument("--only", choices=["latency", "cached", "dip"], action="append")
    a = p.parse_args()
    for need in (ROUTER, PLUGIN, BIN / "zsend", BIN / "zrecv"):
        if not need.exists():
            sys.exit(f"missing {need}: build it first (see the docstring)")
    only = set(a.only or ["latency", "cached", "dip"])
    with tempfile.TemporaryDirectory(prefix="switchyard-reload-bench-") as tmp:
        work = Path(tmp)
        for d in ("latency", "cached", "dip-reload", "dip-steady"):
            (work / d).mkdir()
        out = {"loadavg": Path("/proc/loadavg").read_text().split()[:3]}
        if "latency" in only:
            out["latency"] = latency(work, a.saves)
            print(json.dumps({"latency": out["latency"]}), flush=True)
        if "cached" in only:
            out["cached"] = cached(work, a.reps)
            print(json.dumps({"cached": out["cached"]}), flush=True)
        if "dip" in only:
            out["dip_steady"] = dip(work, a.rate, a.seconds, 0)
            print(json.dumps({"dip_steady": out["dip_steady"]}), flush=True)
            out["dip_reload"] = dip(work, a.rate, a.seconds, 1.0)
            print(json.dumps({"dip_reload": out["dip_reload"]}), flush=True)
        out["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
        print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
