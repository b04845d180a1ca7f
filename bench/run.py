#!/usr/bin/env python3
"""Throughput benchmark driver: the same libzmq load programs against several forwarders.

For each case (a socket pattern and a message size) and each implementation (a
forwarder command), it finds the highest *paced* publish rate that arrives with
zero loss: a ramp up from an unpaced estimate, then a bisection. Every trial
sends a fixed number of messages (max(--min-count, rate x --duration)), starts a
fresh forwarder, and passes when the receiver got every message, in order, at
>= (1 - --slack) of the target rate (so PUSH backpressure that slows the
sender counts as "did not keep up", not as success). Searches are repeated
--reps times, interleaving implementations, and medians are reported side by
side in a Markdown table with the forwarder's resident memory (VmHWM peak
during the trial, and VmRSS at the end) and CPU time.

Topology of every trial (ports are picked free on 127.0.0.1):

    zsend (PUB|PUSH, connects) -> [forwarder: binds in/out] -> zrecv (SUB|PULL, connects)
    zrecv --sync-> zsend   (probes prove the path and subscriptions are up first)

Suites:
    layer   issue 2: PUSH->PULL and PUB->SUB through the ZMTP layer (zmtp-forward)
            vs libzmq forwarders (zfwd pull-push / sub-pub), 64 B and 1 KiB.
    router  issue 3: PUB -> router (one route, no plugins) -> SUB, vs zmq_proxy
    plugin  issue 4: PUB -> router + JSON-field filter plugin -> SUB, vs the same
            route without the plugin (payloads open with a JSON document)
    latency issue 4: one message at a time through the plugin suite's two
            routers (bench/bin/zlat): the latency a plugin stage adds
            (XSUB/XPUB), two-frame [topic][payload] messages, 64 B and 1 KiB.
    idle    resident memory of each implementation idle (no traffic) after startup.
    reqrep  issue 6: REQ clients -> router (zmq-router in, zmq-dealer out) -> REP
            echo service, vs the same clients straight to the service: round
            trips/s, p50/p99. Its own options: bench/reqrep.py --help.
    store   issue 13: PUSH -> router -> PULL with the route's queue in memory
            (router-push) and on disk (router-durable), beside a nats-server
            JetStream file stream used as the buffer (jetstream: driven by
            target/release/jetstream-load, producer and pull consumer).
    curve   issue 15: PUSH -> forwarder -> PULL at 64 B with ZMTP CURVE on every
            connection: the router (CURVE server on its input and output,
            the load programs' key listed) vs zmq_proxy (zfwd, CURVE server
            on both sides). Keys are made per run with `switchyard
            curve-keypair`.
    backlog issue 13: a 1 GiB durable backlog, RSS and restart time
            (bench/backlog.py --help).
    soak    issue 13: the kill -9 e2e tests with 100 kills (bench/soak.py --help).

Examples:
    ./dev bench                                   # layer suite, all cases, 3 reps
    ./dev bench --suite router
    ./dev bench --impl libzmq --case push-pull-64 --reps 1
    ./dev bench --forwarder 'mine=path/to/fwd --in @{in} --out @{out} --mode {mode}'
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import socket
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "bench" / "bin"


@dataclass(frozen=True)
class Case:
    """One traffic pattern: sender/receiver socket types, message shape, forwarder mode."""

    name: str
    send_type: str  # pub | push
    recv_type: str  # sub | pull
    size: int  # payload bytes (the frame carrying the sequence number)
    frames: int  # 1: "topic..seq" in one frame; 2: [topic][payload]
    topic: str
    modes: dict[str, str]  # forwarder {mode} per suite flavour, see Impl.mode_key
    prefix: str = ""  # --frames 2 only: what the payload starts with (zsend --payload-prefix)
    curve: bool = False  # the load programs are CURVE clients of the forwarder


@dataclass
class Impl:
    """A forwarder under test: a command template, optional environment, what to build."""

    name: str
    cmd: str  # str.format template, see PLACEHOLDERS
    env: dict[str, str] = field(default_factory=dict)
    build: list[list[str]] = field(default_factory=list)
    mode_key: str = "layer"  # which Case.modes entry fills {mode}
    direct: bool = False  # no forwarder: zsend connects straight to a binding zrecv
    # "zmq": zsend -> forwarder -> zrecv. "jetstream": the forwarder is a
    # nats-server and target/release/jetstream-load is producer and consumer.
    load: str = "zmq"
    # A directory (template) the forwarder keeps its data in: removed before
    # the forwarder starts and after it stops.
    data_dir: str = ""


PLACEHOLDERS = """
{in} / {out}            tcp://127.0.0.1:PORT the forwarder must bind for input / output
{in_port} / {out_port}  the bare port numbers
{mode}                  pull-push | sub-pub (layer suite) or xsub-xpub (router suite)
{hwm} {sndbuf} {rcvbuf} the matched high-water mark (messages) and kernel buffers (bytes, -1 = OS default)
{root}                  the repository root
{data}                  the implementation's data directory (on the repository's disk, under target/)
"""

LAYER_CASES = [
    Case("push-pull-64", "push", "pull", 64, 1, "bench.", {"layer": "pull-push"}),
    Case("push-pull-1k", "push", "pull", 1024, 1, "bench.", {"layer": "pull-push"}),
    Case("pub-sub-64", "pub", "sub", 64, 1, "bench.", {"layer": "sub-pub"}),
    Case("pub-sub-1k", "pub", "sub", 1024, 1, "bench.", {"layer": "sub-pub"}),
]
ROUTER_CASES = [
    Case("pub-sub-64", "pub", "sub", 64, 2, "bench.data", {"proxy": "xsub-xpub"}),
    Case("pub-sub-1k", "pub", "sub", 1024, 2, "bench.data", {"proxy": "xsub-xpub"}),
]
# Issue 13: PUSH -> router -> PULL, the route's queue in memory and on disk.
STORE_CASES = [
    Case("push-pull-64", "push", "pull", 64, 2, "bench.data", {"proxy": "pull-push"}),
    Case("push-pull-1k", "push", "pull", 1024, 2, "bench.data", {"proxy": "pull-push"}),
]
# Issue 15: the store suite's PUSH -> PULL path with CURVE on every connection.
CURVE_CASES = [
    Case("curve-push-pull-64", "push", "pull", 64, 2, "bench.data", {"proxy": "pull-push"},
         curve=True),
]
# Issue 4: payloads open with a JSON document whose `sensor.temp` the plugin
# suite's JSON-field filter tests (and keeps: 25.5 > 20); padding and the
# sequence number follow the field, where the filter's scan never looks.
JSON_PREFIX = '{"sensor":{"id":"a1","temp":25.5},"pad":"'
PLUGIN_CASES = [
    Case("json-64", "pub", "sub", 64, 2, "bench.data", {"proxy": "xsub-xpub"}, JSON_PREFIX),
    Case("json-1k", "pub", "sub", 1024, 2, "bench.data", {"proxy": "xsub-xpub"}, JSON_PREFIX),
]

CARGO_RELEASE_BENCH = ["cargo", "build", "--release", "-p", "switchyard-bench"]
CARGO_RELEASE_ROUTER = ["cargo", "build", "--release", "-p", "switchyard"]
CARGO_RELEASE_PLUGINS = ["cargo", "build", "--release", "--target", "wasm32-unknown-unknown",
                         "--manifest-path", "plugins/Cargo.toml"]

# What every router config under bench/ reads from the environment.
ROUTER_ENV = {
    "BENCH_IN": "tcp://127.0.0.1:{in_port}",
    "BENCH_OUT": "tcp://127.0.0.1:{out_port}",
    "BENCH_ADMIN": "127.0.0.1:{admin_port}",
    "BENCH_HWM": "{hwm}",
}

IMPLS = {
    "libzmq": Impl(
        "libzmq",
        "{root}/bench/bin/zfwd --mode {mode} --in @{in} --out @{out} --hwm {hwm} "
        "--sndbuf {sndbuf} --rcvbuf {rcvbuf}",
    ),
    "switchyard": Impl(
        "switchyard",
        "{root}/target/release/zmtp-forward --mode {mode} --in @{in} --out @{out} --hwm {hwm} "
        "--sndbuf {sndbuf} --rcvbuf {rcvbuf}",
        build=[CARGO_RELEASE_BENCH],
    ),
    "zmq_proxy": Impl(
        "zmq_proxy",
        "{root}/bench/bin/zfwd --mode xsub-xpub --in @{in} --out @{out} --hwm {hwm} "
        "--sndbuf {sndbuf} --rcvbuf {rcvbuf}",
        mode_key="proxy",
    ),
    "router": Impl(
        "router",
        "{root}/target/release/switchyard run --config {root}/bench/router-bench.toml",
        env=ROUTER_ENV,
        build=[CARGO_RELEASE_ROUTER],
        mode_key="proxy",
    ),
    # Plugin suite: the same router and route with the JSON-field filter.
    "router-plugin": Impl(
        "router-plugin",
        "{root}/target/release/switchyard run --config {root}/bench/router-plugin-bench.toml",
        env=ROUTER_ENV,
        build=[CARGO_RELEASE_ROUTER, CARGO_RELEASE_PLUGINS],
        mode_key="proxy",
    ),
    # Store suite (issue 13): the same PUSH -> router -> PULL route in memory
    # and on disk; the durable one starts each trial on an empty data_dir.
    "router-push": Impl(
        "router-push",
        "{root}/target/release/switchyard run --config {root}/bench/router-push-bench.toml",
        env=ROUTER_ENV,
        build=[CARGO_RELEASE_ROUTER],
        mode_key="proxy",
    ),
    "router-durable": Impl(
        "router-durable",
        "{root}/target/release/switchyard run --config {root}/bench/router-durable-bench.toml",
        env={**ROUTER_ENV, "BENCH_DATA": "{data}"},
        build=[CARGO_RELEASE_ROUTER],
        mode_key="proxy",
        data_dir="{root}/target/bench-data-{admin_port}",
    ),
    # Store suite reference: a local nats-server with JetStream, a file stream
    # as the buffer (default sync), fed and drained by jetstream-load.
    "jetstream": Impl(
        "jetstream",
        "nats-server -a 127.0.0.1 -p {in_port} -js -sd {data}",
        build=[CARGO_RELEASE_BENCH],
        mode_key="proxy",
        load="jetstream",
        data_dir="{root}/target/bench-js-{admin_port}",
    ),
    # Curve suite (issue 15): both CURVE servers on every side.
    "zmq_proxy-curve": Impl(
        "zmq_proxy-curve",
        "{root}/bench/bin/zfwd --mode {mode} --in @{in} --out @{out} --hwm {hwm} "
        "--sndbuf {sndbuf} --rcvbuf {rcvbuf} --curve-secret {curve_server_secret}",
        build=[CARGO_RELEASE_ROUTER],
        mode_key="proxy",
    ),
    "router-curve": Impl(
        "router-curve",
        "{root}/target/release/switchyard run --config {root}/bench/router-curve-bench.toml",
        env={**ROUTER_ENV, "BENCH_CURVE_DIR": "{curve_dir}"},
        build=[CARGO_RELEASE_ROUTER],
        mode_key="proxy",
    ),
    # Baseline, opt-in: the load programs alone (zrecv binds, zsend connects to
    # it). Its rate is the ceiling the harness itself can measure on this machine.
    "direct": Impl("direct", "sleep 86400", direct=True),
    # Idle suite only: the router on the shipped default config (issue 3's memory goal).
    "router-default": Impl(
        "router-default",
        "{root}/target/release/switchyard run --config {root}/config/switchyard.toml",
        build=[CARGO_RELEASE_ROUTER],
        mode_key="proxy",
    ),
}

SUITES = {
    "layer": (LAYER_CASES, ["libzmq", "switchyard"]),
    "router": (ROUTER_CASES, ["zmq_proxy", "router"]),
    "plugin": (PLUGIN_CASES, ["router", "router-plugin"]),
    "store": (STORE_CASES, ["router-push", "router-durable", "jetstream"]),
    "curve": (CURVE_CASES, ["zmq_proxy-curve", "router-curve"]),
}


def curve_keys(workdir: Path) -> dict[str, str]:
    """A server and a client keypair from `switchyard curve-keypair`; the
    server's key file and a clients file listing the client, in workdir/curve."""
    def keypair() -> tuple[str, str]:
        out = subprocess.run([str(ROOT / "target" / "release" / "switchyard"), "curve-keypair"],
                             check=True, capture_output=True, text=True).stdout
        values = dict(line.split(" = ", 1) for line in out.strip().splitlines())
        return values["public"].strip('"'), values["secret"].strip('"')

    server_public, server_secret = keypair()
    client_public, client_secret = keypair()
    d = workdir / "curve"
    d.mkdir(exist_ok=True)
    (d / "server.key").write_text(f'public = "{server_public}"\nsecret = "{server_secret}"\n')
    (d / "clients.toml").write_text(f'load = "{client_public}"\n')
    return {"dir": str(d), "server_public": server_public, "server_secret": server_secret,
            "client_secret": client_secret}


class TrialError(Exception):
    """The trial could not run (a program failed or the path never came up)."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS/VmHWM in KiB and CPU seconds (user+system) of a live process."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(val.split()[0])
        # Fields 14 and 15 of /proc/PID/stat (after the ")" of the command name).
        stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        ticks = os.sysconf("SC_CLK_TCK")
        out["cpu_ms"] = int((int(stat[11]) + int(stat[12])) * 1000 / ticks)
    except (OSError, ValueError, IndexError):
        pass
    return out


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def last_json(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise TrialError(f"no JSON result in output: {text[-500:]!r}")


class Runner:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.trial_no = 0
        self._curve: dict[str, str] | None = None

    @property
    def curve(self) -> dict[str, str]:
        if self._curve is None:
            self._curve = curve_keys(self.workdir)
        return self._curve

    def renice(self) -> None:
        """Runs in each child before exec: applies --nice (negative needs root)."""
        if self.args.nice:
            os.setpriority(os.PRIO_PROCESS, 0, self.args.nice)

    def fmt(self, template: str, case: Case, impl: Impl, ports: dict[str, int]) -> str:
        data = impl.data_dir.format(root=str(ROOT), admin_port=ports["admin"])
        curve = self.curve if (case.curve or "{curve" in template) else {}
        return template.format(
            data=data,
            root=str(ROOT),
            curve_dir=curve.get("dir", ""),
            curve_server_secret=curve.get("server_secret", ""),
            mode=case.modes.get(impl.mode_key, ""),
            hwm=self.args.hwm,
            sndbuf=self.args.sndbuf,
            rcvbuf=self.args.rcvbuf,
            **{"in": f"tcp://127.0.0.1:{ports['in']}", "out": f"tcp://127.0.0.1:{ports['out']}"},
            in_port=ports["in"],
            out_port=ports["out"],
            admin_port=ports["admin"],
        )

    def data_dir(self, case: Case, impl: Impl, ports: dict[str, int]) -> Path | None:
        return Path(self.fmt(impl.data_dir, case, impl, ports)) if impl.data_dir else None

    def start_forwarder(self, case: Case, impl: Impl, ports: dict[str, int], tag: str):
        data = self.data_dir(case, impl, ports)
        if data is not None:
            shutil.rmtree(data, ignore_errors=True)
        argv = shlex.split(self.fmt(impl.cmd, case, impl, ports))
        env = dict(os.environ)
        env.update({k: self.fmt(v, case, impl, ports) for k, v in impl.env.items()})
        logf = open(self.workdir / f"{tag}.fwd.log", "wb")
        cpu = self.args.pin_forwarder
        if cpu is not None:
            argv = ["taskset", "-c", cpu] + argv
        proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, preexec_fn=self.renice)
        return proc, logf

    def trial(self, case: Case, impl: Impl, rate: int, count: int) -> dict:
        """One measurement at `rate` msgs/s (0 = unpaced) with `count` messages."""
        self.trial_no += 1
        tag = f"{self.trial_no:04d}-{impl.name}-{case.name}-{rate}"
        ports = {"in": free_port(), "out": free_port(), "sync": free_port(), "admin": free_port()}
        a = self.args
        fwd, fwd_log = self.start_forwarder(case, impl, ports, tag)
        pin = ["taskset", "-c", a.pin_load] if a.pin_load is not None else []
        recv_cmd = pin + [
            str(BIN / "zrecv"), "--type", case.recv_type,
            "--endpoint", f"{'@' if impl.direct else '>'}tcp://127.0.0.1:{ports['out']}",
            "--count", str(count), "--sync", f">tcp://127.0.0.1:{ports['sync']}",
            "--rcvhwm", str(a.hwm), "--rcvbuf", str(a.rcvbuf),
            "--idle-ms", str(a.idle_ms), "--timeout-ms", str(a.startup_timeout * 1000),
        ]
        if case.recv_type == "sub":
            recv_cmd += ["--subscribe", case.topic]
        curve_args = (["--curve-secret", self.curve["client_secret"],
                       "--curve-server-key", self.curve["server_public"]] if case.curve else [])
        recv_cmd += curve_args
        if impl.load == "jetstream":
            # One program is both ends: producer (PubAck window) and consumer.
            recv_cmd = pin + [
                str(ROOT / "target" / "release" / "jetstream-load"),
                "--server", f"nats://127.0.0.1:{ports['in']}",
                "--count", str(count), "--size", str(case.size), "--rate", str(rate),
                "--window", str(a.js_window), "--batch", str(a.js_batch),
                "--max-ack-pending", str(a.js_max_ack_pending), "--subject", case.topic,
                "--idle-ms", str(max(a.idle_ms, 10_000)),
                "--connect-timeout-s", str(a.startup_timeout),
            ]
        send_cmd = pin + [
            str(BIN / "zsend"), "--type", case.send_type,
            "--endpoint", f">tcp://127.0.0.1:{ports['out' if impl.direct else 'in']}",
            "--rate", str(rate), "--count", str(count), "--size", str(case.size),
            "--frames", str(case.frames), "--topic", case.topic,
            "--sndhwm", str(a.hwm), "--sndbuf", str(a.sndbuf),
            *(["--payload-prefix", case.prefix] if case.prefix else []),
            "--sync", f"@tcp://127.0.0.1:{ports['sync']}",
            "--sync-timeout-ms", str(a.startup_timeout * 1000),
            *curve_args,
        ]
        peak: dict[str, int] = {}
        try:
            recv = subprocess.Popen(recv_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL, text=True, preexec_fn=self.renice)
            if impl.load == "jetstream":
                send_cmd = ["true"]  # jetstream-load sends as well
            send = subprocess.Popen(send_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL, text=True, preexec_fn=self.renice)
            limit = a.startup_timeout + count / max(rate, 10_000) * 3 + 30
            deadline = time.monotonic() + limit
            # Sample the forwarder while the trial runs (VmHWM covers the peak anyway).
            while recv.poll() is None and time.monotonic() < deadline:
                st = proc_status(fwd.pid)
                if st:
                    peak = st
                if fwd.poll() is not None:
                    break
                time.sleep(0.05)
            if fwd.poll() is not None:
                for p in (send, recv):
                    p.kill()
                raise TrialError(f"forwarder exited with {fwd.returncode}; log: "
                                 f"{(self.workdir / f'{tag}.fwd.log').read_text()[-800:]}")
            if recv.poll() is None:
                send.kill()
                recv.kill()
                raise TrialError(f"receiver did not finish within {limit:.0f}s")
            end_status = proc_status(fwd.pid) or peak
            if impl.direct:
                end_status = {}
            recv_out, recv_err = recv.communicate()
            try:
                send_out, send_err = send.communicate(timeout=a.startup_timeout + 30)
            except subprocess.TimeoutExpired:
                send.kill()
                send_out, send_err = send.communicate()
        finally:
            stop(fwd)
            fwd_log.close()
            data = self.data_dir(case, impl, ports)
            if data is not None:
                shutil.rmtree(data, ignore_errors=True)
        rres = last_json(recv_out) if recv_out.strip() else {"error": recv_err.strip()}
        if impl.load == "jetstream":
            sres = rres
        else:
            sres = last_json(send_out) if send_out.strip() else {"error": send_err.strip()}
        if "error" in sres or rres.get("timed_out"):
            raise TrialError(f"path never came up: send={sres} recv={rres} "
                             f"(forwarder log: {self.workdir / f'{tag}.fwd.log'})")
        ok_rate = rate == 0 or (
            rres["msgs_per_s"] >= rate * (1 - a.slack)
            and sres["achieved_rate"] >= rate * (1 - a.slack)
        )
        passed = (rres["lost"] == 0 and rres["duplicates"] == 0 and rres["reorders"] == 0
                  and rres.get("stream_seq_gaps", 0) == 0 and ok_rate)
        result = {
            "impl": impl.name, "case": case.name, "rate": rate, "count": count,
            "passed": passed, "recv": rres, "send": sres,
            "fwd_rss_kib": end_status.get("VmRSS"), "fwd_hwm_kib": end_status.get("VmHWM"),
            "fwd_cpu_ms": end_status.get("cpu_ms"),
        }
        verdict = "ok  " if passed else "FAIL"
        log(f"    {verdict} {impl.name:<11} {case.name:<13} target {rate:>9,}/s  "
            f"got {rres['msgs_per_s']:>11,.0f}/s  sent {sres['achieved_rate']:>11,.0f}/s  "
            f"lost {rres['lost']:>8,}  fwd VmHWM {(end_status.get('VmHWM') or 0) / 1024:6.1f} MiB")
        return result

    def count_for(self, rate: int) -> int:
        return max(self.args.min_count, int(rate * self.args.duration))

    def judged_trial(self, case: Case, impl: Impl, rate: int, trials: list[dict]) -> dict:
        """A trial at `rate`, re-run up to --retries times while it fails.

        One scheduling stall on a shared machine can overflow a 1000-message
        HWM; a retry keeps that from ending the ramp. A rate passes only on a
        trial with zero loss, never by averaging.
        """
        for attempt in range(self.args.retries + 1):
            t = self.trial(case, impl, rate, self.count_for(rate))
            t["attempt"] = attempt
            trials.append(t)
            if t["passed"]:
                break
        return t

    def search(self, case: Case, impl: Impl) -> dict:
        """Highest zero-loss paced rate: ramp from an unpaced estimate, then bisect."""
        a = self.args
        trials: list[dict] = []
        # Without loss (PUSH backpressure) the unpaced receive rate is the path's
        # capacity: start a little below it. Unpaced PUB drops at the HWM, and the
        # few messages that get through say nothing: start low and double.
        est = None
        if case.send_type == "push":
            est = self.trial(case, impl, 0, a.min_count)
            trials.append(est)
        if est is not None and est["recv"]["lost"] == 0:
            rate, step = round_rate(max(est["recv"]["msgs_per_s"] * 0.6, a.min_rate)), 1.5
        else:
            rate, step = round_rate(a.start_rate), 2.0
        lo, hi = 0, None
        while True:
            t = self.judged_trial(case, impl, rate, trials)
            if t["passed"]:
                lo = rate
                if hi is not None:
                    break
                rate = round_rate(rate * step)
            else:
                hi = rate
                if lo:
                    break
                rate = round_rate(rate / 2)
                if rate < a.min_rate:
                    break
        if hi is not None and lo:
            while (hi - lo) / lo > a.tolerance:
                mid = round_rate((lo + hi) / 2)
                if mid in (lo, hi):
                    break
                t = self.judged_trial(case, impl, mid, trials)
                if t["passed"]:
                    lo = mid
                else:
                    hi = mid
        best = [t for t in trials if t["passed"] and t["rate"] == lo]
        pick = best[-1] if best else None
        peak_hwm = max((t["fwd_hwm_kib"] or 0) for t in trials)
        return {
            "impl": impl.name, "case": case.name, "max_rate": lo, "first_fail": hi,
            "unpaced_recv_rate": est["recv"]["msgs_per_s"] if est else None,
            "fwd_hwm_kib_at_max": pick["fwd_hwm_kib"] if pick else None,
            "fwd_rss_kib_at_max": pick["fwd_rss_kib"] if pick else None,
            "fwd_cpu_ms_at_max": pick["fwd_cpu_ms"] if pick else None,
            "fwd_cpu_us_per_msg_at_max": (pick["fwd_cpu_ms"] * 1000 / pick["count"]
                                          if pick and pick["fwd_cpu_ms"] is not None else None),
            "count_at_max": pick["count"] if pick else None,
            "fwd_hwm_kib_any": peak_hwm, "trials": trials,
        }


def round_rate(r: float) -> int:
    """Rounds to 2 significant digits of 1000s, e.g. 123456 -> 120000."""
    r = max(int(r), 1000)
    mag = 10 ** max(len(str(r)) - 2, 3)
    return int(round(r / mag) * mag) or 1000


def machine_info() -> dict:
    def run(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"

    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            mem_kib = int(line.split()[1])
    return {
        "cpu": model, "cores": os.cpu_count(), "mem_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(), "libzmq": run(["pkg-config", "--modversion", "libzmq"]),
        "rustc": run(["rustc", "--version"]),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else 0.0


def mib(kib) -> str:
    return f"{kib / 1024:.1f}" if kib else "-"


def markdown(results: list[dict], cases: list[Case], impls: list[str], info: dict,
             args: argparse.Namespace) -> str:
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['mem_gib']} GiB, "
        f"Linux {info['kernel']}, libzmq {info['libzmq']}, {info['rustc']}. "
        f"Load average at start {' '.join(info['loadavg'])}, at end "
        f"{' '.join(info.get('loadavg_end', ['?']))}; started {info['date']}.",
        f"Settings: HWM {args.hwm} msgs, SNDBUF {args.sndbuf}, RCVBUF {args.rcvbuf} "
        f"(-1 = OS default), {args.reps} runs, trial = max({args.min_count}, rate x "
        f"{args.duration}s) messages, tolerance {args.tolerance:.0%}, slack {args.slack:.0%}, "
        f"retries {args.retries}, nice {args.nice}. Peak RSS = forwarder VmHWM in the trial at the reported rate; "
        "CPU µs/msg = forwarder user+system CPU time in that trial / messages.",
        "",
    ]
    head = ["case", "size"]
    for name in impls:
        head.append(f"{name} msgs/s (median)")
    # The second implementation is the one under test: its ratio to each other one.
    ratio_to = [0] if len(impls) == 2 else [i for i in range(len(impls)) if i != 1]
    if len(impls) >= 2:
        for i in ratio_to:
            head.append(f"{impls[1]} / {impls[i]}")
    unpaced = args.suite == "store"
    if unpaced:
        for name in impls:
            head.append(f"{name} unpaced msgs/s (median)")
    for name in impls:
        head.append(f"{name} peak RSS MiB")
    for name in impls:
        head.append(f"{name} CPU µs/msg")
    head.append("runs (msgs/s)")
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for case in cases:
        row = [case.name, f"{case.size} B"]
        meds, hwms, cpus, runs, unp = [], [], [], [], []
        for name in impls:
            rs = [r for r in results if r["case"] == case.name and r["impl"] == name]
            rates = [r["max_rate"] for r in rs if "error" not in r]
            errs = [r for r in rs if "error" in r]
            meds.append(median(rates) if rates else None)
            hw = [r["fwd_hwm_kib_at_max"] for r in rs if r.get("fwd_hwm_kib_at_max")]
            hwms.append(median(hw) if hw else None)
            cpu = [r["fwd_cpu_us_per_msg_at_max"] for r in rs
                   if r.get("fwd_cpu_us_per_msg_at_max") is not None]
            cpus.append(median(cpu) if cpu else None)
            up = [r["unpaced_recv_rate"] for r in rs if r.get("unpaced_recv_rate")]
            unp.append(median(up) if up else None)
            runs.append(f"{name}: " + ", ".join(f"{x:,}" for x in rates)
                        + (f" ({len(errs)} errors)" if errs else ""))
        for m in meds:
            row.append(f"{m:,.0f}" if m is not None else "error")
        if len(impls) >= 2:
            for i in ratio_to:
                row.append(f"{meds[1] / meds[i]:.2f}x" if meds[i] and meds[1] is not None
                           else "-")
        if unpaced:
            for u in unp:
                row.append(f"{u:,.0f}" if u is not None else "-")
        for h in hwms:
            row.append(mib(h))
        for c in cpus:
            row.append(f"{c:.2f}" if c is not None else "-")
        row.append("; ".join(runs))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def idle_suite(args: argparse.Namespace, runner: Runner, impls: list[Impl]) -> str:
    """Resident memory of each implementation after startup, with no traffic."""
    lines = ["| implementation | VmRSS after "
             f"{args.idle_seconds:g}s idle, MiB | VmHWM MiB |", "|---|---|---|"]
    case = (LAYER_CASES + ROUTER_CASES)[0]
    for impl in impls:
        ports = {"in": free_port(), "out": free_port(), "sync": free_port(), "admin": free_port()}
        if impl.mode_key == "proxy":
            case = ROUTER_CASES[0]
        fwd, logf = runner.start_forwarder(case, impl, ports, f"idle-{impl.name}")
        try:
            time.sleep(args.idle_seconds)
            st = proc_status(fwd.pid)
            alive = fwd.poll() is None
        finally:
            stop(fwd)
            logf.close()
        if not alive:
            lines.append(f"| {impl.name} | exited early | - |")
        else:
            lines.append(f"| {impl.name} | {mib(st.get('VmRSS'))} | {mib(st.get('VmHWM'))} |")
    return "\n".join(lines)


def latency_suite(args: argparse.Namespace, runner: Runner, impls: list[Impl]) -> str:
    """Single-message round trips under light traffic (bench/bin/zlat): one
    message in flight at a time, --latency-gap-us apart, per implementation
    and case; medians over --reps runs of each percentile."""
    lines = ["| case | implementation | p50 µs | p90 µs | p99 µs | mean µs | runs (p50/p99) |",
             "|---|---|---|---|---|---|---|"]
    cases = [c for c in PLUGIN_CASES if not args.case or c.name in args.case]
    for case in cases:
        for impl in impls:
            runs = []
            for rep in range(args.reps):
                ports = {"in": free_port(), "out": free_port(), "sync": free_port(),
                         "admin": free_port()}
                fwd, logf = runner.start_forwarder(case, impl, ports, f"lat-{impl.name}-{rep}")
                try:
                    cmd = [str(BIN / "zlat"), "--in", f">tcp://127.0.0.1:{ports['in']}",
                           "--out", f">tcp://127.0.0.1:{ports['out']}",
                           "--count", str(args.latency_count),
                           "--gap-us", str(args.latency_gap_us), "--size", str(case.size),
                           "--topic", case.topic, "--prefix", case.prefix]
                    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                    r = last_json(out.stdout)
                finally:
                    stop(fwd)
                    logf.close()
                if "error" in r or out.returncode != 0:
                    log(f"  {impl.name} {case.name}: ERROR {r.get('error', out.stderr.strip())}")
                    continue
                log(f"  {impl.name} {case.name}: p50 {r['p50_us']} µs, p99 {r['p99_us']} µs")
                runs.append(r)
            if not runs:
                lines.append(f"| {case.name} | {impl.name} | error | | | | |")
                continue
            med = {k: median([r[k] for r in runs]) for k in
                   ("p50_us", "p90_us", "p99_us", "mean_us")}
            detail = "; ".join(f"{r['p50_us']:.0f}/{r['p99_us']:.0f}" for r in runs)
            lines.append(f"| {case.name} | {impl.name} | {med['p50_us']:.1f} | {med['p90_us']:.1f} "
                         f"| {med['p99_us']:.1f} | {med['mean_us']:.1f} | {detail} |")
    return "\n".join(lines)


def build(impls: list[Impl]) -> None:
    subprocess.run([str(ROOT / "bench" / "build.sh")], check=True)
    done = set()
    for impl in impls:
        for cmd in impl.build:
            if tuple(cmd) not in done:
                log(f"build: {' '.join(cmd)}")
                subprocess.run(cmd, check=True, cwd=ROOT)
                done.add(tuple(cmd))


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Forwarder command placeholders:" + PLACEHOLDERS)
    p.add_argument("--suite", choices=["layer", "router", "plugin", "store", "curve", "latency", "idle",
                                       "reqrep",
                                       "backlog", "soak"],
                   default="layer", help="reqrep hands over to bench/reqrep.py, backlog to "
                   "bench/backlog.py, soak to bench/soak.py (each with its own options)")
    p.add_argument("--js-window", type=int, default=4096,
                   help="store suite, jetstream: most PubAcks outstanding")
    p.add_argument("--js-batch", type=int, default=1024,
                   help="store suite, jetstream: messages per pull request")
    p.add_argument("--js-max-ack-pending", type=int, default=4096,
                   help="store suite, jetstream: the consumer's max_ack_pending")
    p.add_argument("--latency-count", type=int, default=2000,
                   help="latency suite: measured round trips per run")
    p.add_argument("--latency-gap-us", type=int, default=1000,
                   help="latency suite: pause between round trips")
    p.add_argument("--impl", action="append", default=None,
                   help=f"implementation(s) to run (default: the suite's pair; known: "
                        f"{', '.join(IMPLS)})")
    p.add_argument("--forwarder", action="append", default=[], metavar="NAME=TEMPLATE",
                   help="add an implementation from a command template (see placeholders); "
                        "{mode} is filled as in the layer suite, or add '@proxy' to NAME for "
                        "the router suite's xsub-xpub")
    p.add_argument("--case", action="append", default=None, help="case name(s) to run")
    p.add_argument("--reps", type=int, default=3, help="searches per case and implementation")
    p.add_argument("--hwm", type=int, default=1000, help="SNDHWM/RCVHWM everywhere (messages)")
    p.add_argument("--sndbuf", type=int, default=-1, help="SO_SNDBUF bytes, -1 = OS default")
    p.add_argument("--rcvbuf", type=int, default=-1, help="SO_RCVBUF bytes, -1 = OS default")
    p.add_argument("--duration", type=float, default=2.0, help="seconds of traffic per trial")
    p.add_argument("--min-count", type=int, default=100_000, help="messages per trial, at least")
    p.add_argument("--min-rate", type=int, default=1000, help="give up below this rate")
    p.add_argument("--start-rate", type=int, default=50_000,
                   help="first paced rate when the unpaced estimate lost messages (PUB)")
    p.add_argument("--tolerance", type=float, default=0.05,
                   help="stop bisecting when (fail - pass) / pass is below this")
    p.add_argument("--retries", type=int, default=1,
                   help="re-run a failed trial this many times before the rate counts as failed")
    p.add_argument("--slack", type=float, default=0.03,
                   help="a trial passes only if sender and receiver reach (1 - slack) x rate")
    p.add_argument("--idle-ms", type=int, default=2000,
                   help="receiver stops after this long without a message")
    p.add_argument("--startup-timeout", type=int, default=30, help="seconds for the path to come up")
    p.add_argument("--idle-seconds", type=float, default=2.0, help="idle suite: wait before reading RSS")
    p.add_argument("--nice", type=int, default=0,
                   help="scheduling priority of the forwarder and load programs; e.g. -10 (as "
                        "root) keeps background builds from stalling them on a shared machine")
    p.add_argument("--pin-forwarder", metavar="CPUS", help="taskset CPU list for the forwarder")
    p.add_argument("--pin-load", metavar="CPUS", help="taskset CPU list for zsend/zrecv")
    p.add_argument("--quick", action="store_true",
                   help="1 rep, 1 s trials, 10%% tolerance: checks the harness, not for results")
    p.add_argument("--no-build", action="store_true", help="do not run bench/build.sh or cargo")
    p.add_argument("--logs", metavar="DIR",
                   help="keep each trial's forwarder output (e.g. zmtp-forward's metrics) here")
    p.add_argument("--json", metavar="FILE", help="write every trial and result as JSON here")
    p.add_argument("--markdown", metavar="FILE", help="also write the Markdown table here")
    args = p.parse_args(argv)
    if args.quick:
        args.reps, args.duration, args.tolerance, args.min_count = 1, 1.0, 0.10, 50_000
    return args


def main(argv: list[str]) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--suite")
    suite = pre.parse_known_args(argv)[0].suite
    if suite == "reqrep":
        import reqrep  # bench/reqrep.py: request/reply, a closed loop rather than a rate search

        return reqrep.main(argv)
    if suite == "backlog":
        import backlog  # bench/backlog.py: a 1 GiB durable backlog, RSS and restart time

        return backlog.main(argv)
    if suite == "soak":
        import soak  # bench/soak.py: the kill -9 e2e tests with many cycles

        return soak.main(argv)
    args = parse_args(argv)
    impls = dict(IMPLS)
    for spec in args.forwarder:
        name, sep, template = spec.partition("=")
        if not sep or not name or not template:
            sys.exit(f"--forwarder wants NAME=TEMPLATE, got {spec!r}")
        mode_key = "layer"
        if name.endswith("@proxy"):
            name, mode_key = name[: -len("@proxy")], "proxy"
        impls[name] = Impl(name, template, mode_key=mode_key)
        if args.impl is None:
            args.impl = []
        args.impl.append(name)

    suite = {"idle": "layer", "latency": "plugin"}.get(args.suite, args.suite)
    cases, default_impls = SUITES[suite]
    if args.suite == "idle" and args.impl is None:
        default_impls = ["libzmq", "switchyard", "zmq_proxy", "router", "router-default"]
    names = args.impl or default_impls
    if len(names) == 1 and args.impl is not None and args.forwarder and args.suite != "idle":
        # A single custom forwarder is compared against the suite's reference.
        names = [default_impls[0]] + names
    unknown = [n for n in names if n not in impls]
    if unknown:
        sys.exit(f"unknown implementation(s) {unknown}; known: {sorted(impls)}")
    if args.case:
        wanted = set(args.case)
        cases = [c for c in cases if c.name in wanted]
        if not cases:
            sys.exit(f"no such case in suite {suite}: {args.case}")
    chosen = [impls[n] for n in names]

    if not args.no_build:
        build(chosen)

    info = machine_info()
    if args.logs:
        Path(args.logs).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="switchyard-bench-") as tmp:
        if args.logs:
            tmp = args.logs
        runner = Runner(args, Path(tmp))
        if args.suite == "idle":
            table = idle_suite(args, runner, chosen)
            print(table)
            return 0
        if args.suite == "latency":
            table = latency_suite(args, runner, chosen)
            print(table)
            return 0
        results = []
        for rep in range(args.reps):
            for case in cases:
                for impl in chosen:
                    log(f"[run {rep + 1}/{args.reps}] {case.name} via {impl.name}")
                    try:
                        r = runner.search(case, impl)
                        log(f"  => {impl.name} {case.name}: {r['max_rate']:,} msgs/s "
                            f"(first failure {r['first_fail']})")
                    except TrialError as e:
                        log(f"  => {impl.name} {case.name}: ERROR {e}")
                        r = {"impl": impl.name, "case": case.name, "error": str(e)}
                    r["rep"] = rep
                    results.append(r)
        info["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
        table = markdown(results, cases, names, info, args)
        print(table)
        if args.markdown:
            Path(args.markdown).write_text(table + "\n")
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"machine": info, "args": vars(args), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
