#!/usr/bin/env python3
"""The webhook benchmark (issue 14): the router's webhook output against a
direct client with the same HTTP stack, side by side, posting the same
batches to the same kind of local server.

Cases, interleaved trial by trial (a fresh server for each trial):

- webhook-direct: `webhook-load --mode post` posts --count messages in
  JSON arrays of --batch, --concurrency requests in flight, each body
  encoded as the router's output encodes it (same fields, same payload as
  zsend sends, utf8 or base64 as the router would choose), with
  hyper-util's pooled client over hyper-rustls, the router's own stack.
- webhook-router: zsend (libzmq PUSH, as fast as the socket takes them)
  -> router (zmq-pull -> memory route -> webhook output with
  max_messages = --batch, concurrency = --concurrency) -> the server.

The server (`webhook-load --mode serve`) answers 200 at once and measures
both alike: messages received over the time from its first request to its
last, by its own clock. The router cases also report the router's own
counts (what the output sent, what the route dropped or still holds).

    cargo build --release -p switchyard -p switchyard-bench && bench/build.sh
    python3 bench/webhook.py --count 200000 --reps 3
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from uplink import ROOT, ZSEND, ROUTER, free_port, launch, router_counts, stop, zsend

LOAD = ROOT / "target" / "release" / "webhook-load"


def start_server(count):
    proc = subprocess.Popen(
        [str(LOAD), "--mode", "serve", "--count", str(count), "--idle-ms", "3000"],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = json.loads(proc.stdout.readline())
    if not line.get("ready"):
        raise RuntimeError(f"server not ready: {line}")
    return proc, line["port"]


def finish(proc):
    out, _ = proc.communicate(timeout=600)
    lines = [l for l in out.splitlines() if l.strip()]
    return json.loads(lines[-1])


def start_router(tmp, port, args):
    pull = free_port()
    admin = free_port()
    config = Path(tmp) / f"router-{admin}.toml"
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
kind = "webhook"
url = "http://127.0.0.1:{port}/in"
max_messages = {args.batch}
concurrency = {args.concurrency}

[[route]]
name = "uplink"
match = "bench.>"
to = ["up"]
queue = {{ capacity = 100000, when_full = "block" }}
"""
    )
    return launch(config, admin), pull


def trial(case, args, tmp):
    server, port = start_server(args.count)
    router = None
    try:
        if case == "webhook-direct":
            subprocess.run(
                [str(LOAD), "--mode", "post", "--url", f"http://127.0.0.1:{port}/in",
                 "--count", str(args.count), "--batch", str(args.batch),
                 "--concurrency", str(args.concurrency), "--size", str(args.size)],
                stdout=subprocess.DEVNULL, check=True, timeout=600,
            )
            return finish(server)
        router, pull = start_router(tmp, port, args)
        zsend(pull, args.count, args.size)
        report = finish(server)
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
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--case", action="append", choices=["webhook-direct", "webhook-router"])
    args = p.parse_args()
    for tool in (ROUTER, LOAD, ZSEND):
        if not tool.exists():
            sys.exit(f"{tool} is missing: cargo build --release -p switchyard -p switchyard-bench && bench/build.sh")
    cases = args.case or ["webhook-direct", "webhook-router"]
    runs = {c: [] for c in cases}
    with tempfile.TemporaryDirectory(prefix="switchyard-webhook-") as tmp:
        for rep in range(args.reps):
            for case in cases:
                r = trial(case, args, tmp)
                runs[case].append(r)
                print(json.dumps({"case": case, "rep": rep, **r}), flush=True)
    print()
    print("| case | messages | requests | msgs/s (median) | runs |")
    print("|---|---|---|---|---|")
    for case in cases:
        rates = [r["msgs_per_s"] for r in runs[case]]
        held = min(r["messages"] for r in runs[case])
        reqs = statistics.median(r["requests"] for r in runs[case])
        print(f"| {case} | {held} of {args.count} (fewest) | {reqs:,.0f} | {statistics.median(rates):,.0f} | "
              + ", ".join(f"{x:,.0f}" for x in rates) + " |")
    if len(cases) == 2:
        ratio = statistics.median(x["msgs_per_s"] for x in runs["webhook-router"]) / statistics.median(
            x["msgs_per_s"] for x in runs["webhook-direct"])
        print(f"\nrouter / direct = {ratio:.2f}x")


if __name__ == "__main__":
    main()
