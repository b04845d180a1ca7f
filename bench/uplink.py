#!/usr/bin/env python3
"""The uplink benchmark (issue 14): the router's NATS outputs against a
direct async-nats client, side by side on the same nats-server, with the
same payload and the same PubAck window.

Cases, interleaved trial by trial (a fresh nats-server with JetStream for
each trial, on a free port, its store in a temp dir):

- jetstream-direct: `jetstream-load --mode publish --msg-id` publishes
  --count messages into a file stream, --window PubAcks outstanding, each
  with a Nats-Msg-Id header as the router's output sends them (the stream
  dedupes by it, which costs the server).
- jetstream-router: zsend (libzmq PUSH, as fast as the socket takes them)
  -> router (zmq-pull -> memory route -> nats-jetstream output with
  max_ack_pending = --window) -> a file stream the output creates.
- core-direct: `jetstream-load --mode core --msg-id` publishes --count
  core messages, each with a Nats-Msg-Id header as the router's output
  sends them, to a subject a core subscriber counts.
- core-router: zsend -> router (zmq-pull -> nats output) -> the same
  kind of subscriber.
- input-direct: `jetstream-load --mode core` publishes --count core
  messages that nats-server delivers to a direct core subscriber
  (`--mode count`).
- input-router: the same publisher; the router's `nats` input subscribed
  to the subject -> memory route -> zmq-pub output -> zrecv (libzmq SUB),
  measured by zrecv's arrival rate, first to last.

The JetStream cases are measured by the stream's arrival rate by the
server's own timestamps, (messages - 1) / (last - first), read by
`jetstream-load --mode watch`; the core cases by the subscriber's arrival
rate, first to last (`--mode count`). (A stream as the witness of core
publishes drops some under load: its dedupe of Nats-Msg-Id is slower than
the publishers, and core NATS has no back-pressure.) The router runs from
target/release; the router cases also report its own counts (what the
output sent, what the route dropped or still holds).

    cargo build --release -p switchyard -p switchyard-bench && bench/build.sh
    python3 bench/uplink.py --count 200000 --reps 3
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROUTER = ROOT / "target" / "release" / "switchyard"
LOAD = ROOT / "target" / "release" / "jetstream-load"
ZSEND = ROOT / "bench" / "bin" / "zsend"
ZRECV = ROOT / "bench" / "bin" / "zrecv"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp):
    port = free_port()
    store = Path(tmp) / f"store-{port}"
    proc = subprocess.Popen(
        ["nats-server", "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, f"nats://127.0.0.1:{port}"


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def load(url, *args):
    out = subprocess.run(
        [str(LOAD), "--server", url, *args], capture_output=True, text=True, timeout=600
    )
    lines = [l for l in out.stdout.splitlines() if l.strip()]
    if not lines:
        raise RuntimeError(f"jetstream-load {args}: no output; {out.stderr[-400:]}")
    report = json.loads(lines[-1])
    if "error" in report:
        raise RuntimeError(f"jetstream-load {args}: {report['error']}")
    return report


def watcher(url, *args):
    """Starts `jetstream-load --mode watch`; with --create, waits for its
    ready line (the stream exists)."""
    proc = subprocess.Popen(
        [str(LOAD), "--server", url, "--mode", "watch", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    if "--create" in args:
        line = proc.stdout.readline()
        if '"ready"' not in line:
            raise RuntimeError(f"watcher did not get ready: {line!r}")
    return proc


def counter(url, subject, n):
    """Starts a core subscriber counting arrivals on `subject`; returns
    once it is subscribed."""
    proc = subprocess.Popen(
        [str(LOAD), "--server", url, "--mode", "count", "--subject", subject,
         "--count", n, "--idle-ms", "3000"],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if '"ready"' not in line:
        raise RuntimeError(f"counter did not get ready: {line!r}")
    return proc


def finish(proc):
    out, _ = proc.communicate(timeout=600)
    lines = [l for l in out.splitlines() if l.strip()]
    report = json.loads(lines[-1])
    if "error" in report:
        raise RuntimeError(report["error"])
    return report


def launch(config, admin):
    """Runs the router on `config`; returns it once /ready says so."""
    proc = subprocess.Popen(
        [str(ROUTER), "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_ready(proc, admin)
    proc.admin = admin
    return proc


def wait_ready(proc, admin):
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            stop(proc)
            raise RuntimeError("the router did not get ready")
        time.sleep(0.02)


def metric(admin, prefix):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(prefix):
                return float(line.split()[-1])
    return 0.0


def start_input_router(tmp, url):
    """A router whose `nats` input takes `in.>` into a zmq-pub output;
    returns it and the PUB port."""
    pub = free_port()
    admin = free_port()
    config = Path(tmp) / f"router-{admin}.toml"
    config.write_text(
        f"""
[router]
admin = "127.0.0.1:{admin}"

[[input]]
name = "inbox"
kind = "nats"
servers = ["{url}"]
subjects = ["in.>"]
max_pending = 100000

[[output]]
name = "down"
kind = "zmq-pub"
bind = "tcp://127.0.0.1:{pub}"
send_hwm = 100000

[[route]]
name = "downlink"
match = "in.>"
to = ["down"]
queue = {{ capacity = 100000, when_full = "block" }}
"""
    )
    return launch(config, admin), pub


def input_counts(router):
    """What the input refused and the route or output dropped."""
    with urllib.request.urlopen(f"http://127.0.0.1:{router.admin}/metrics", timeout=5) as r:
        text = r.read().decode()
    counts = {"input_taken": 0.0, "input_rejected": 0.0, "output_sent": 0.0, "dropped": 0.0}
    for line in text.splitlines():
        value = line.split()[-1] if line and not line.startswith("#") else "0"
        if line.startswith('switchyard_input_messages_total{input="inbox"}'):
            counts["input_taken"] = float(value)
        elif line.startswith("switchyard_input_rejected_total{") and 'input="inbox"' in line:
            counts["input_rejected"] += float(value)
        elif line.startswith('switchyard_output_messages_total{output="down"}'):
            counts["output_sent"] = float(value)
        elif (line.startswith("switchyard_route_dropped_total{") and 'route="downlink"' in line) or (
            line.startswith("switchyard_output_dropped_total{") and 'output="down"' in line
        ):
            counts["dropped"] += float(value)
    return counts


def start_router(tmp, url, output, window):
    pull = free_port()
    admin = free_port()
    config = Path(tmp) / f"router-{admin}.toml"
    if output == "jetstream":
        out = f"""kind = "nats-jetstream"
subject = "r.{{topic}}"
max_ack_pending = {window}
stream = {{ name = "ROUTED", subjects = ["r.>"], storage = "file" }}"""
    else:
        out = """kind = "nats"
subject = "rc.{topic}\""""
    config.write_text(
        f"""
[router]
admin = "127.0.0.1:{admin}"

[[input]]
name = "producers"
kind = "zmq-pull"
bind = "tcp://127.0.0.1:{pull}"
recv_hwm = 100000

[[output]]
name = "up"
servers = ["{url}"]
{out}

[[route]]
name = "uplink"
match = "bench.>"
to = ["up"]
queue = {{ capacity = 100000, when_full = "block" }}
"""
    )
    return launch(config, admin), pull


def router_counts(router):
    """The router's own account: what the output took, what the route
    dropped, what it still holds."""
    with urllib.request.urlopen(f"http://127.0.0.1:{router.admin}/metrics", timeout=5) as r:
        text = r.read().decode()
    counts = {"output_sent": 0.0, "route_dropped": 0.0, "route_depth": 0.0}
    for line in text.splitlines():
        if line.startswith('switchyard_output_messages_total{output="up"}'):
            counts["output_sent"] = float(line.split()[-1])
        elif line.startswith("switchyard_route_dropped_total{") and 'route="uplink"' in line:
            counts["route_dropped"] += float(line.split()[-1])
        elif line.startswith('switchyard_route_queue_depth{route="uplink"}'):
            counts["route_depth"] = float(line.split()[-1])
    return counts


def zsend(pull, count, size):
    subprocess.run(
        [
            str(ZSEND), "--type", "push", "--endpoint", f">tcp://127.0.0.1:{pull}",
            "--rate", "0", "--size", str(size), "--count", str(count),
            "--topic", "bench.x", "--frames", "2", "--sndhwm", "100000",
        ],
        stdout=subprocess.DEVNULL,
        check=True,
        timeout=600,
    )


def trial(case, args, tmp):
    server, url = start_server(tmp)
    router = None
    try:
        n, size, window = str(args.count), str(args.size), str(args.window)
        if case == "jetstream-direct":
            report = load(url, "--mode", "publish", "--msg-id", "--count", n, "--size", size,
                          "--window", window, "--stream", "DIRECT", "--subject", "d.x")
        elif case == "input-direct":
            w = counter(url, "in.>", n)
            load(url, "--mode", "core", "--count", n, "--size", size, "--subject", "in.x")
            report = finish(w)
        elif case == "input-router":
            router, pub = start_input_router(tmp, url)
            sub = subprocess.Popen(
                [str(ZRECV), "--type", "sub", "--endpoint", f">tcp://127.0.0.1:{pub}",
                 "--count", n, "--rcvhwm", "100000", "--idle-ms", "3000"],
                stdout=subprocess.PIPE,
                text=True,
            )
            deadline = time.monotonic() + 30
            while metric(router.admin, 'switchyard_output_peers{output="down"}') < 1:
                if time.monotonic() > deadline:
                    raise RuntimeError("zrecv did not connect")
                time.sleep(0.02)
            # The subscription travels after the handshake: give it a moment
            # (a benchmark, not a test).
            time.sleep(0.5)
            load(url, "--mode", "core", "--count", n, "--size", size, "--subject", "in.x")
            out, _ = sub.communicate(timeout=600)
            report = json.loads([l for l in out.splitlines() if l.strip()][-1])
            report["messages"] = report["received"]
            report.update(input_counts(router))
        elif case == "core-direct":
            w = counter(url, "c.>", n)
            load(url, "--mode", "core", "--msg-id", "--count", n, "--size", size,
                 "--subject", "c.x")
            report = finish(w)
        else:
            output = "jetstream" if case == "jetstream-router" else "core"
            w = None
            if output == "core":
                w = counter(url, "rc.>", n)
            router, pull = start_router(tmp, url, output, args.window)
            if w is None:
                w = watcher(url, "--stream", "ROUTED", "--count", n, "--idle-ms", "3000")
            zsend(pull, args.count, args.size)
            report = finish(w)
            report.update(router_counts(router))
        return report
    finally:
        if router is not None:
            stop(router)
        stop(server)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=200_000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--case", action="append",
                   choices=["jetstream-direct", "jetstream-router", "core-direct", "core-router",
                            "input-direct", "input-router"])
    args = p.parse_args()
    for tool in (ROUTER, LOAD, ZSEND, ZRECV):
        if not tool.exists():
            sys.exit(f"{tool} is missing: cargo build --release -p switchyard -p switchyard-bench && bench/build.sh")
    cases = args.case or ["jetstream-direct", "jetstream-router", "core-direct", "core-router",
                          "input-direct", "input-router"]
    runs = {c: [] for c in cases}
    with tempfile.TemporaryDirectory(prefix="switchyard-uplink-") as tmp:
        for rep in range(args.reps):
            for case in cases:
                r = trial(case, args, tmp)
                runs[case].append(r)
                print(json.dumps({"case": case, "rep": rep, **r}), flush=True)
    print()
    print(f"| case | messages | msgs/s (median) | runs |")
    print("|---|---|---|---|")
    for case in cases:
        rates = [r["msgs_per_s"] for r in runs[case]]
        held = min(r["messages"] for r in runs[case])
        print(f"| {case} | {held} of {args.count} (fewest) | {statistics.median(rates):,.0f} | "
              + ", ".join(f"{x:,.0f}" for x in rates) + " |")
    for kind in ("jetstream", "core", "input"):
        d, r = f"{kind}-direct", f"{kind}-router"
        if d in runs and r in runs:
            ratio = statistics.median(x["msgs_per_s"] for x in runs[r]) / statistics.median(
                x["msgs_per_s"] for x in runs[d])
            print(f"\n{kind}: router / direct = {ratio:.2f}x")


if __name__ == "__main__":
    main()
