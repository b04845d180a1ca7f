#!/usr/bin/env python3
"""HTTP publish with and without security, side by side (issue 15).

Cases, each its own router (target/release/switchyard) with one `http` input
and one route to a blackhole output, loaded by wrk over keep-alive
connections, raw publishes of --size bytes to one topic:

    plain      no [[auth]]: the baseline
    jwt-es256  auth = an ES256 issuer (JWKS, the test keys in
               router/tests/fixtures/auth), every request with one bearer token
    jwt-hs256  the same with an HS256 issuer
    tls        no auth, HTTPS (an openssl-made P-256 certificate)

The router runs on --router-cpu and wrk on --load-cpu (taskset), so the two
do not share a core. Reps are interleaved; the medians are compared with
the plain case: the bars are jwt >= 0.9x and tls >= 0.8x plain.

    python3 bench/security.py [--reps 3] [--duration 10] [--connections 32]

Needs wrk, openssl and PyJWT (`./dev setup`, then `apt-get install wrk`).
"""

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "router" / "tests" / "fixtures" / "auth"
HS_SECRET = "a benchmark secret that is long enough for HS256"

LUA = """
wrk.method = "POST"
wrk.body = string.rep("x", tonumber(os.getenv("BENCH_SIZE")))
local token = os.getenv("BENCH_TOKEN")
if token ~= nil and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tokens() -> dict:
    import jwt  # PyJWT, installed by ./dev setup

    now = int(time.time())
    claims = {"sub": "bench", "iss": "https://idp.example", "aud": "switchyard",
              "exp": now + 3600}
    es = jwt.encode(claims, (FIXTURES / "ec-private.pem").read_bytes(), algorithm="ES256",
                    headers={"kid": "ec1"})
    hs = jwt.encode(claims, HS_SECRET, algorithm="HS256")
    return {"es256": es, "hs256": hs}


def certificate(d: Path) -> tuple[Path, Path]:
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def config(case: str, port: int, admin: int, d: Path) -> str:
    head = f'[router]\nadmin = "127.0.0.1:{admin}"\n'
    inp = f'[[input]]\nname = "api"\nkind = "http"\nlisten = "127.0.0.1:{port}"\n'
    tail = ('[[output]]\nname = "out"\nkind = "blackhole"\n\n'
            '[[route]]\nname = "r"\nmatch = ">"\nto = ["out"]\n'
            'queue = { capacity = 100000, when_full = "block" }\n')
    if case == "plain":
        return head + inp + tail
    if case == "tls":
        return (head + inp + f'tls = {{ cert = "{d / "cert.pem"}", key = "{d / "key.pem"}" }}\n'
                + tail)
    if case == "jwt-es256":
        issuer = (f'[[auth]]\nname = "idp"\nkind = "jwt"\njwks_file = "{FIXTURES / "jwks.json"}"\n'
                  'algorithms = ["ES256"]\nissuer = "https://idp.example"\naudience = "switchyard"\n')
    else:
        (d / "hs.secret").write_text(HS_SECRET)
        issuer = (f'[[auth]]\nname = "idp"\nkind = "jwt"\nsecret_file = "{d / "hs.secret"}"\n'
                  'algorithms = ["HS256"]\n')
    acl = '[[acl]]\nprincipals = ["*"]\npublish = [">"]\n'
    return (head + 'admin_auth = ["anonymous"]\nmetrics_open = true\n' + issuer + inp
            + 'auth = ["idp"]\n' + tail + acl)


def wait_ready(admin: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"router exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("router not ready")


def run_case(case: str, args, d: Path, toks: dict) -> dict:
    port, admin = free_port(), free_port()
    cfg = d / f"{case}.toml"
    cfg.write_text(config(case, port, admin, d))
    router = subprocess.Popen(["taskset", "-c", args.router_cpu,
                               str(ROOT / "target" / "release" / "switchyard"), "run",
                               "--config", str(cfg)],
                              stdout=subprocess.DEVNULL, stderr=open(d / f"{case}.log", "ab"))
    try:
        wait_ready(admin, router)
        scheme = "https" if case == "tls" else "http"
        env = dict(os.environ, BENCH_SIZE=str(args.size),
                   BENCH_TOKEN=toks.get(case.removeprefix("jwt-"), ""))
        out = subprocess.run(["taskset", "-c", args.load_cpu, "wrk", "-t", "1", "-c",
                              str(args.connections), "-d", f"{args.duration}s", "-s",
                              str(d / "post.lua"),
                              f"{scheme}://127.0.0.1:{port}/v1/publish/bench.data"],
                             check=True, capture_output=True, text=True, env=env).stdout
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
        errors = re.search(r"Socket errors: (.*)", out)
        stat = Path(f"/proc/{router.pid}/stat").read_text().split()
        cpu_s = (int(stat[13]) + int(stat[14])) / os.sysconf("SC_CLK_TCK")
        return {"case": case, "rps": rps, "non_2xx": int(bad.group(1)) if bad else 0,
                "socket_errors": errors.group(1) if errors else "", "router_cpu_s": cpu_s,
                "requests": int(rps * args.duration)}
    finally:
        router.terminate()
        try:
            router.wait(10)
        except subprocess.TimeoutExpired:
            router.kill()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--duration", type=int, default=10, help="seconds of load per run")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--size", type=int, default=64, help="payload bytes")
    p.add_argument("--router-cpu", default="0")
    p.add_argument("--load-cpu", default="1")
    p.add_argument("--case", action="append", choices=["plain", "jwt-es256", "jwt-hs256", "tls"])
    p.add_argument("--json", help="write every run here")
    args = p.parse_args()
    cases = args.case or ["plain", "jwt-es256", "jwt-hs256", "tls"]
    with tempfile.TemporaryDirectory(prefix="switchyard-bench-sec-") as tmp:
        d = Path(tmp)
        (d / "post.lua").write_text(LUA)
        certificate(d)
        toks = tokens()
        runs = []
        for rep in range(args.reps):
            for case in cases:
                r = run_case(case, args, d, toks)
                r["rep"] = rep
                print(json.dumps(r), file=sys.stderr, flush=True)
                runs.append(r)
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2))
    med = {c: statistics.median(r["rps"] for r in runs if r["case"] == c) for c in cases}
    base = med.get("plain")
    print(f"| case | requests/s (median of {args.reps}) | vs plain | non-2xx |")
    print("|---|---|---|---|")
    for c in cases:
        ratio = f"{med[c] / base:.2f}x" if base else "-"
        bad = sum(r["non_2xx"] for r in runs if r["case"] == c)
        print(f"| {c} | {med[c]:,.0f} | {ratio} | {bad} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
