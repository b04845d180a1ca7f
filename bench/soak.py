#!/usr/bin/env python3
"""Soak (issue 13): the kill -9 end-to-end tests with many more cycles than CI runs.

`tests/tests/router_store.rs` publishes numbered batches over HTTP to a
durable route and kills the router with SIGKILL at varied moments; after the
last restart a PULL worker (cases batch and always: that fsync policy) must
get every message that was answered 202, or, in case dealer, a REP service
that a DEALER output sends to through every kill must have got every one.
CI runs 10 kills per case; this runs the same tests with
SWITCHYARD_SOAK_CYCLES kills (default 100) and collects the `soak:` line each
test prints: messages accepted (202), delivered (with duplicates), unique,
duplicates, the records the restarts found already handed to the output
(in flight at the kill: `switchyard_route_redelivered_total`, summed), and
the bound the test holds duplicates to (every record the restarts found on
disk: `recovered`).

Examples:
    ./dev bench --suite soak                    # 100 kills, every case
    python3 bench/soak.py --cycles 300 --case batch --case dealer
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = {
    "batch": "router_store::kill_9_ten_times_loses_no_acknowledged_message_batch_fsync",
    "always": "router_store::kill_9_ten_times_loses_no_acknowledged_message_always_fsync",
    # fsync batch, a DEALER output and a REP service replying through the kills
    "dealer": "router_store::kill_9_ten_times_with_a_rep_service_replying_throughout_"
              "loses_no_acknowledged_message",
}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", help=argparse.SUPPRESS)  # from bench/run.py --suite soak
    p.add_argument("--cycles", type=int, default=100, help="kill -9 cycles per test")
    p.add_argument("--case", "--fsync", dest="case", action="append", choices=sorted(TESTS),
                   help="batch, always (PUSH output, that fsync policy) or dealer "
                        "(default all three)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON here")
    args = p.parse_args(argv)
    env = dict(os.environ, SWITCHYARD_SOAK_CYCLES=str(args.cycles))
    # The e2e tests run target/debug/switchyard (as CI does) and refuse a
    # stale one.
    subprocess.run(["cargo", "build", "-p", "switchyard", "--bin", "switchyard"], cwd=ROOT,
                   check=True)
    results = []
    failed = False
    for case in args.case or ["batch", "always", "dealer"]:
        t0 = time.monotonic()
        # The e2e suite is one test binary; --exact picks one test.
        proc = subprocess.run(
            ["cargo", "test", "-p", "switchyard-tests", "--test", "e2e", "--", "--exact",
             TESTS[case], "--nocapture"],
            cwd=ROOT, env=env, capture_output=True, text=True)
        elapsed = time.monotonic() - t0
        lines = [ln for ln in proc.stderr.splitlines() + proc.stdout.splitlines()
                 if ln.startswith("soak: ")]
        r = json.loads(lines[-1][len("soak: "):]) if lines else {}
        r.update({"case": case, "passed": proc.returncode == 0, "seconds": round(elapsed, 1)})
        if proc.returncode != 0:
            failed = True
            out = proc.stdout + proc.stderr
            saved = ROOT / "target" / f"soak-{case}.log"
            saved.write_text(out)
            # The test's own error (anyhow's "Error: ..." and its causes),
            # before the backtrace.
            lines = out.splitlines()
            at = next((i for i, ln in enumerate(lines) if ln.startswith("Error:")), None)
            why = "\n".join(lines[at:at + 12] if at is not None else lines[-30:])
            print(f"soak: {case} FAILED (whole output: {saved}):\n{why}", file=sys.stderr)
        results.append(r)
        print(f"soak: {json.dumps(r)}", file=sys.stderr, flush=True)
    # "pass": every accepted number was delivered (the test fails on the
    # first one missing) and duplicates <= recovered. Unique may exceed
    # accepted: a batch on disk whose 202 the kill cut off is delivered too.
    print("| case | kills | accepted (202) | delivered | unique | duplicates "
          "| in flight at the kills (redelivered) | duplicate bound (recovered) | result "
          "| seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    def n(v) -> str:
        return f"{v:,.0f}" if isinstance(v, (int, float)) else "-"

    for r in results:
        print(f"| {r['case']} | {r.get('cycles', args.cycles)} | {n(r.get('accepted'))} "
              f"| {n(r.get('delivered'))} | {n(r.get('unique'))} "
              f"| {n(r.get('duplicates'))} | {n(r.get('redelivered'))} "
              f"| {n(r.get('recovered'))} "
              f"| {'pass' if r['passed'] else 'FAIL'} | {r['seconds']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
