#!/usr/bin/env python3
"""Request/reply benchmark (issue 6): round trips through the router vs straight to the service.

The same closed-loop REQ clients (bench/bin/zreq) and the same echo service
(bench/bin/zrep, a ROUTER handing requests to --service-threads REP workers)
are measured two ways, taking turns, in one run:

    direct   zreq (N x REQ, connect) ───────────────────────────────> zrep (binds)
    router   zreq (N x REQ, connect) ──> switchyard (zmq-router input binds,
             route ">" , zmq-dealer output connects) ──> zrep (binds)

Each client sends [topic][payload] and waits for the reply before sending the
next request; every round trip is timed, every reply is checked against its
request (the service echoes the payload, which ends in a per-request sequence
number), and a `switchyard.error` reply, a wrong reply or a timeout counts as
an error. A trial starts a fresh service (and router), waits for the router's
admin /ready, lets every client get one good reply (the path is up), warms up
for --warmup seconds, then measures for --duration seconds. Trials repeat
--reps times, implementations interleaved; the Markdown table on stdout gives
medians of the rate and of p50/p99 side by side, and each implementation's
rate / the first one's (router / direct).

Implementations (--impl; default: direct, router):
    direct     no broker: zreq connects straight to zrep
    router     target/release/switchyard run --config bench/router-reqrep-bench.toml
               (endpoints from BENCH_IN, BENCH_SVC, BENCH_ADMIN)
    zmq_proxy  opt-in: bench/bin/zfwd --mode router-dealer, libzmq's ROUTER/DEALER
               queue device, the cost of a libzmq broker hop for comparison

Cases (--case; default: the 64 B ones; --case all for every one):
    c1-64  c16-64  c1-1k  c16-1k      (clients - payload size)

Examples:
    ./dev bench --suite reqrep                      # direct vs router, 1 and 16 clients, 64 B
    ./dev bench --suite reqrep --case all --reps 5  # plus 1 KiB, 5 runs
    ./dev bench --suite reqrep --impl direct --quick   # checks the harness, no router
    python3 bench/reqrep.py --impl direct --impl router --impl zmq_proxy
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import run as harness  # bench/run.py: ports, process handling, machine info, builds

ROOT = harness.ROOT
BIN = harness.BIN
log = harness.log


@dataclass(frozen=True)
class Case:
    """One load shape: how many concurrent clients, how big a payload."""

    name: str
    clients: int
    size: int  # payload bytes; the request is [topic][payload]


CASES = [Case("c1-64", 1, 64), Case("c16-64", 16, 64), Case("c1-1k", 1, 1024),
         Case("c16-1k", 16, 1024)]
DEFAULT_CASES = ["c1-64", "c16-64"]
TOPIC = "bench.rpc"


@dataclass
class Broker:
    """What sits between the clients and the service; `direct` means nothing."""

    name: str
    cmd: str = ""  # str.format template, see PLACEHOLDERS
    env: dict[str, str] = field(default_factory=dict)
    build: list[list[str]] = field(default_factory=list)
    admin: bool = False  # has the router's admin listener: wait for GET /ready
    direct: bool = False


PLACEHOLDERS = """
{in} / {in_port}        tcp://127.0.0.1:PORT the broker binds for the REQ clients / the bare port
{svc} / {svc_port}      tcp://127.0.0.1:PORT the echo service binds; the broker connects there
{admin} / {admin_port}  127.0.0.1:PORT for the router's admin listener / the bare port
{config}                the router config file (--router-config)
{root}                  the repository root
"""

BROKERS = {
    "direct": Broker("direct", direct=True),
    "router": Broker(
        "router",
        "{root}/target/release/switchyard run --config {config}",
        env={"BENCH_IN": "{in}", "BENCH_SVC": "{svc}", "BENCH_ADMIN": "{admin}"},
        build=[harness.CARGO_RELEASE_ROUTER],
        admin=True,
    ),
    "zmq_proxy": Broker(
        "zmq_proxy", "{root}/bench/bin/zfwd --mode router-dealer --in @{in} --out >{svc}"),
}


class TrialError(Exception):
    """The trial could not run: a program failed, or the path never came up."""


class BrokerDown(TrialError):
    """The broker exited before it was ready (e.g. its config was refused)."""


def fmt(template: str, ports: dict[str, int], args: argparse.Namespace) -> str:
    return template.format(
        root=str(ROOT), config=str(Path(args.router_config).resolve()),
        **{"in": f"tcp://127.0.0.1:{ports['in']}"}, in_port=ports["in"],
        svc=f"tcp://127.0.0.1:{ports['svc']}", svc_port=ports["svc"],
        admin=f"127.0.0.1:{ports['admin']}", admin_port=ports["admin"],
    )


def tail(path: Path, chars: int = 1200) -> str:
    try:
        return path.read_text(errors="replace")[-chars:].strip()
    except OSError:
        return ""


def wait_ready(proc: subprocess.Popen, ports: dict[str, int], logpath: Path, where: str,
               timeout: float) -> None:
    """Polls the router's GET /ready until 200; fails fast if the router exits."""
    url = f"http://127.0.0.1:{ports['admin']}/ready"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise BrokerDown(f"exited with status {proc.returncode} before it was ready; "
                             f"its output ({where}):\n{tail(logpath)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass  # not listening yet (refused) or not ready yet (503)
        if time.monotonic() > deadline:
            raise TrialError(f"not ready within {timeout:.0f}s ({url}); its output "
                             f"({where}):\n{tail(logpath)}")
        time.sleep(0.02)


class Runner:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.trial_no = 0

    def where(self, path: Path) -> str:
        """A log file's name for messages: the temporary directory goes at exit."""
        return str(path) if self.args.logs else f"{path.name}, kept with --logs DIR"

    def renice(self) -> None:
        if self.args.nice:
            os.setpriority(os.PRIO_PROCESS, 0, self.args.nice)

    def popen(self, argv: list[str], pin: str | None, **kw) -> subprocess.Popen:
        if pin is not None:
            argv = ["taskset", "-c", pin] + argv
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, preexec_fn=self.renice, **kw)

    def trial(self, case: Case, broker: Broker) -> dict:
        """One measurement: a fresh service (and broker), zreq, then the figures."""
        a = self.args
        self.trial_no += 1
        tag = f"{self.trial_no:04d}-{broker.name}-{case.name}"
        ports = {"in": harness.free_port(), "svc": harness.free_port(),
                 "admin": harness.free_port()}
        svc_log = self.workdir / f"{tag}.svc.log"
        fwd_log = self.workdir / f"{tag}.fwd.log"
        svc = fwd = None
        svc_logf = open(svc_log, "wb")
        fwd_logf = None
        peak: dict[str, int] = {}
        try:
            svc = self.popen([str(BIN / "zrep"), "--bind", f"tcp://127.0.0.1:{ports['svc']}",
                              "--threads", str(a.service_threads), "--echo", a.service_echo],
                             a.pin_load,
                             stdout=subprocess.PIPE, stderr=svc_logf, text=True)
            if not broker.direct:
                env = dict(os.environ)
                env.update({k: fmt(v, ports, a) for k, v in broker.env.items()})
                fwd_logf = open(fwd_log, "wb")
                fwd = self.popen(shlex.split(fmt(broker.cmd, ports, a)), a.pin_forwarder,
                                 stdout=fwd_logf, stderr=subprocess.STDOUT, env=env)
                if broker.admin:
                    wait_ready(fwd, ports, fwd_log, self.where(fwd_log), a.startup_timeout)
            target = ports["svc"] if broker.direct else ports["in"]
            cmd = [str(BIN / "zreq"), "--connect", f"tcp://127.0.0.1:{target}",
                   "--clients", str(case.clients), "--duration", str(a.duration),
                   "--warmup", str(a.warmup), "--size", str(case.size), "--topic", TOPIC,
                   "--frames", "2", "--timeout-ms", str(a.timeout_ms),
                   "--startup-timeout-ms", str(a.startup_timeout * 1000),
                   "--io-threads", str(a.io_threads)]
            req = self.popen(cmd, a.pin_load, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
            limit = a.startup_timeout + a.warmup + a.duration + 2 * a.timeout_ms / 1000 + 30
            deadline = time.monotonic() + limit
            while req.poll() is None and time.monotonic() < deadline:
                if fwd is not None:
                    peak = harness.proc_status(fwd.pid) or peak
                    if fwd.poll() is not None:
                        break
                if svc.poll() is not None:
                    req.kill()
                    req.communicate()
                    raise TrialError(f"the echo service exited with status {svc.returncode}; "
                                     f"its output ({self.where(svc_log)}):\n{tail(svc_log)}")
                time.sleep(0.05)
            if fwd is not None and fwd.poll() is not None:
                req.kill()
                req.communicate()
                raise TrialError(f"{broker.name} exited with status {fwd.returncode} during "
                                 f"the trial; its output ({self.where(fwd_log)}):\n"
                                 f"{tail(fwd_log)}")
            if req.poll() is None:
                req.kill()
                req.communicate()
                raise TrialError(f"zreq did not finish within {limit:.0f}s")
            if fwd is not None:
                peak = harness.proc_status(fwd.pid) or peak
            out, err = req.communicate()
            try:
                r = harness.last_json(out)
            except harness.TrialError:
                raise TrialError(f"zreq exited with {req.returncode} and no result: "
                                 f"{err.strip()[-500:]}") from None
            if "error" in r:
                raise TrialError(f"the path never came up: {r['error']} (service log "
                                 f"{self.where(svc_log)}; broker log "
                                 f"{self.where(fwd_log) if fwd else '-'})")
        finally:
            if fwd is not None:
                harness.stop(fwd)
            if fwd_logf is not None:
                fwd_logf.close()
            svc_out = ""
            if svc is not None:
                harness.stop(svc)
                svc_out = svc.stdout.read() if svc.stdout else ""
            svc_logf.close()
        try:
            served = harness.last_json(svc_out).get("requests")
        except (harness.TrialError, json.JSONDecodeError):
            served = None
        r.update({
            "impl": broker.name, "case": case.name, "service_requests": served,
            "fwd_hwm_kib": peak.get("VmHWM"), "fwd_rss_kib": peak.get("VmRSS"),
            "fwd_cpu_ms": peak.get("cpu_ms"),
        })
        # Broker CPU per request it carried (startup, warm-up and measurement alike).
        if peak.get("cpu_ms") is not None and served:
            r["fwd_cpu_us_per_rt"] = peak["cpu_ms"] * 1000 / served
        return r


def markdown(results: list[dict], cases: list[Case], chosen: list[Broker], info: dict,
             args: argparse.Namespace) -> str:
    svc = (f"{args.service_threads} REP workers" if args.service_threads
           else "one bare REP socket")
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['mem_gib']} GiB, "
        f"Linux {info['kernel']}, libzmq {info['libzmq']}, {info['rustc']}. "
        f"Load average at start {' '.join(info['loadavg'])}, at end "
        f"{' '.join(info.get('loadavg_end', ['?']))}; started {info['date']}.",
        f"Settings: {args.reps} runs, {args.warmup:g} s warm-up + {args.duration:g} s measured "
        f"per trial, echo service with {svc}, zreq "
        f"{args.io_threads} I/O thread(s), reply timeout {args.timeout_ms} ms, nice {args.nice}. "
        "Round trips/s and percentiles are medians over the runs; CPU µs/rt = broker "
        "user+system CPU over the trial / requests the service answered.",
        "",
    ]
    names = [b.name for b in chosen]
    first, others = names[0], names[1:]
    brokers = [b.name for b in chosen if not b.direct]
    head = ["case", "clients", "size"]
    head += [f"{n} round trips/s" for n in names]
    head += [f"{n} / {first}" for n in others]
    head += [f"{n} p50 µs" for n in names]
    head += [f"{n} p99 µs" for n in names]
    head += [f"{n} CPU µs/rt" for n in brokers]
    head += [f"{n} peak RSS MiB" for n in brokers]
    head += ["errors", "runs (round trips/s)"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for case in cases:
        med: dict[str, dict[str, float | None]] = {}
        runs, errors = [], []
        for n in names:
            rs = [r for r in results if r["case"] == case.name and r["impl"] == n]
            ok = [r for r in rs if "rate" in r]
            failed = len(rs) - len(ok)

            def m(key: str, rows: list[dict] = ok) -> float | None:
                xs = [r[key] for r in rows if r.get(key) is not None]
                return harness.median(xs) if xs else None

            med[n] = {k: m(k) for k in ("rate", "p50_us", "p99_us", "fwd_cpu_us_per_rt",
                                        "fwd_hwm_kib")}
            errs = sum(r.get("errors", 0) for r in ok)
            failures = f"{failed} failed trial{'s' if failed > 1 else ''}" if failed else ""
            if errs or failed:
                errors.append(f"{n}: " + ", ".join(x for x in (f"{errs}" if errs else "",
                                                              failures) if x))
            runs.append(f"{n}: " + ", ".join([f"{r['rate']:,.0f}" for r in ok]
                                             + ([failures] if failures else [])))

        def num(x: float | None, f: str = "{:,.0f}") -> str:
            return f.format(x) if x is not None else "error"

        row = [case.name, str(case.clients), f"{case.size} B"]
        row += [num(med[n]["rate"]) for n in names]
        for n in others:
            a, b = med[first]["rate"], med[n]["rate"]
            row.append(f"{b / a:.2f}x" if a and b is not None else "-")
        row += [num(med[n]["p50_us"], "{:.1f}") for n in names]
        row += [num(med[n]["p99_us"], "{:.1f}") for n in names]
        row += [num(med[n]["fwd_cpu_us_per_rt"], "{:.2f}") for n in brokers]
        row += [harness.mib(med[n]["fwd_hwm_kib"]) for n in brokers]
        row += ["; ".join(errors) or "0", "; ".join(runs)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/reqrep.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="--forwarder template placeholders:" + PLACEHOLDERS)
    p.add_argument("--suite", choices=["reqrep"], default="reqrep",
                   help="accepted so that `bench/run.py --suite reqrep ...` can hand over")
    p.add_argument("--impl", action="append", default=None,
                   help=f"implementation(s), the first is the reference (default: direct, "
                        f"router; known: {', '.join(BROKERS)})")
    p.add_argument("--forwarder", action="append", default=[], metavar="NAME=TEMPLATE",
                   help="add a broker from a command template (placeholders below)")
    p.add_argument("--case", action="append", default=None,
                   help=f"case name(s), or 'all' (default: {', '.join(DEFAULT_CASES)}; known: "
                        f"{', '.join(c.name for c in CASES)})")
    p.add_argument("--reps", type=int, default=3, help="trials per case and implementation")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per trial")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per trial")
    p.add_argument("--service-threads", type=int, default=16,
                   help="REP workers behind the echo service's ROUTER, the same for every "
                        "implementation; 0: one bare REP socket, no queue (one request at a "
                        "time: for 1 client only)")
    p.add_argument("--service-echo", choices=["last", "all"], default="last",
                   help="what the echo service replies: the last frame (the payload) or every "
                        "frame of the request")
    p.add_argument("--io-threads", type=int, default=1, help="libzmq I/O threads in zreq")
    p.add_argument("--timeout-ms", type=int, default=10_000,
                   help="zreq: a reply later than this counts as an error (the router's own "
                        "request_timeout is 5 s)")
    p.add_argument("--startup-timeout", type=int, default=30,
                   help="seconds for the router to be ready and for every client's first reply")
    p.add_argument("--router-config", default=str(ROOT / "bench" / "router-reqrep-bench.toml"),
                   help="the router's config (endpoints from BENCH_IN, BENCH_SVC, BENCH_ADMIN)")
    p.add_argument("--nice", type=int, default=0,
                   help="scheduling priority of every process in a trial, e.g. -10 as root")
    p.add_argument("--pin-forwarder", metavar="CPUS", help="taskset CPU list for the broker")
    p.add_argument("--pin-load", metavar="CPUS", help="taskset CPU list for zreq and zrep")
    p.add_argument("--quick", action="store_true",
                   help="1 run, 0.5 s warm-up, 1 s trials: checks the harness, not for results")
    p.add_argument("--no-build", action="store_true", help="do not run bench/build.sh or cargo")
    p.add_argument("--logs", metavar="DIR", help="keep each trial's broker and service output here")
    p.add_argument("--json", metavar="FILE", help="write every trial as JSON here")
    p.add_argument("--markdown", metavar="FILE", help="also write the Markdown table here")
    args = p.parse_args(argv)
    if args.quick:
        args.reps, args.warmup, args.duration = 1, 0.5, 1.0
    if args.service_threads < 0:
        p.error(f"--service-threads must be 0 or more, got {args.service_threads}")
    for flag, v in (("--reps", args.reps), ("--io-threads", args.io_threads), ("--timeout-ms", args.timeout_ms),
                    ("--startup-timeout", args.startup_timeout)):
        if v < 1:
            p.error(f"{flag} must be at least 1, got {v}")
    if args.duration <= 0 or args.warmup < 0:
        p.error("--duration must be above 0 and --warmup at least 0")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    brokers = dict(BROKERS)
    for spec in args.forwarder:
        name, sep, template = spec.partition("=")
        if not sep or not name or not template:
            sys.exit(f"--forwarder wants NAME=TEMPLATE, got {spec!r}")
        brokers[name] = Broker(name, template)
        args.impl = (args.impl or ["direct"]) + [name]
    names = args.impl or ["direct", "router"]
    unknown = [n for n in names if n not in brokers]
    if unknown:
        sys.exit(f"unknown implementation(s) {unknown}; known: {sorted(brokers)}")
    if len(set(names)) != len(names):
        sys.exit(f"an implementation is named twice: {names}")
    wanted = args.case or DEFAULT_CASES
    if "all" in wanted:
        wanted = [c.name for c in CASES]
    missing = [w for w in wanted if w not in {c.name for c in CASES}]
    if missing:
        sys.exit(f"no such case {missing}; known: {', '.join(c.name for c in CASES)}, all")
    cases = [c for c in CASES if c.name in wanted]
    chosen = [brokers[n] for n in names]
    if "router" in names and not Path(args.router_config).is_file():
        sys.exit(f"--router-config {args.router_config}: no such file")

    if not args.no_build:
        harness.build(chosen)  # bench/build.sh, then each broker's cargo build
    for prog in ("zreq", "zrep") + (("zfwd",) if "zmq_proxy" in names else ()):
        if not (BIN / prog).is_file():
            sys.exit(f"{BIN / prog} is missing: run bench/build.sh (or drop --no-build)")

    info = harness.machine_info()
    if args.logs:
        Path(args.logs).mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    down: dict[str, str] = {}  # broker name -> why it could not start
    with tempfile.TemporaryDirectory(prefix="switchyard-reqrep-") as tmp:
        runner = Runner(args, Path(args.logs or tmp))
        for rep in range(args.reps):
            for case in cases:
                for broker in chosen:
                    if broker.name in down:
                        results.append({"impl": broker.name, "case": case.name, "rep": rep,
                                        "error": down[broker.name]})
                        continue
                    plural = "s" if case.clients > 1 else ""
                    log(f"[run {rep + 1}/{args.reps}] {case.name} ({case.clients} client{plural}, "
                        f"{case.size} B) via {broker.name}")
                    try:
                        r = runner.trial(case, broker)
                        log(f"  => {r['rate']:>10,.0f} round trips/s  p50 {r['p50_us']:.1f} µs  "
                            f"p99 {r['p99_us']:.1f} µs  errors {r['errors']}"
                            + (f" (first: {r['first_error']})" if r.get("first_error") else ""))
                    except BrokerDown as e:
                        down[broker.name] = f"{broker.name} did not start: {e}"
                        log(f"  => ERROR: {broker.name} {e}\n  (skipping {broker.name}'s other "
                            "trials: it would fail the same way)")
                        r = {"impl": broker.name, "case": case.name, "error": str(e)}
                    except TrialError as e:
                        log(f"  => ERROR: {e}")
                        r = {"impl": broker.name, "case": case.name, "error": str(e)}
                    r["rep"] = rep
                    results.append(r)
        info["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
        table = markdown(results, cases, chosen, info, args)
        print(table)
        for why in down.values():
            print(f"\n{why}")
        if args.markdown:
            Path(args.markdown).write_text(table + "\n")
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"machine": info, "args": vars(args), "results": results}, indent=1))
    # Non-zero when an implementation produced no result at all.
    ok = {r["impl"] for r in results if "rate" in r}
    return 0 if all(n in ok for n in names) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
