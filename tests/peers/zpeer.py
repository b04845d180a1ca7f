#!/usr/bin/env python3
"""A libzmq (pyzmq) peer for the Switchyard end-to-end tests.

Plays one ZeroMQ role (pub, sub, push, pull, req, rep, dealer, router) on one
bound or connected endpoint, and speaks the tests' line protocol (see
tests/support/protocol.rs): prints {"ready":true,"endpoint":...} once, then
answers one JSON command per stdin line with one JSON event line.

It never hangs: every wait has a deadline, it exits when stdin closes (the
test is gone) and when --life-s seconds have passed.

Usage: zpeer.py --role ROLE (--bind EP | --connect EP...) [--sndhwm N]
       [--rcvhwm N] [--rcvbuf BYTES] [--sndbuf BYTES] [--identity ID]
       [--subscribe PREFIX]... [--echo] [--sndtimeo-ms MS] [--life-s S]
       [--plain-client USER:PASS | --plain-server USER:PASS...]
       [--curve-secret Z85 (--curve-server | --curve-server-key Z85)]
"""

import argparse
import json
import os
import select
import sys
import time

import zmq

ROLES = {
    "pub": zmq.PUB,
    "sub": zmq.SUB,
    "push": zmq.PUSH,
    "pull": zmq.PULL,
    "req": zmq.REQ,
    "rep": zmq.REP,
    "dealer": zmq.DEALER,
    "router": zmq.ROUTER,
}


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Stdin:
    """Line reader over fd 0 that can be polled without blocking."""

    def __init__(self):
        self.buf = b""
        self.eof = False

    def poll_line(self, timeout):
        """A complete line, or None after `timeout` seconds (0 = just look)."""
        while b"\n" not in self.buf and not self.eof:
            r, _, _ = select.select([0], [], [], max(timeout, 0))
            if not r:
                return None
            chunk = os.read(0, 65536)
            if not chunk:
                self.eof = True
                break
            self.buf += chunk
            timeout = 0
        if b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            return line.decode()
        return None


def now_us():
    return int(time.time() * 1_000_000)


def render(templates, seq, size):
    ts = str(now_us())
    out = []
    for i, t in enumerate(templates):
        s = t.replace("{seq}", str(seq)).replace("{ts}", ts)
        if i == len(templates) - 1 and len(s) < size:
            s += "." * (size - len(s))
        out.append(s.encode())
    return out


def text(frames):
    return [f.decode("utf-8", "replace") for f in frames]


class Tally:
    def __init__(self):
        self.count = 0
        self.seq_errors = 0
        self.last_seq = None
        self.last_at = None
        self.max_gap = 0.0
        self.max_latency_us = 0

    def add(self, last_frame):
        now = time.monotonic()
        if self.last_at is not None:
            self.max_gap = max(self.max_gap, now - self.last_at)
        self.last_at = now
        self.count += 1
        words = last_frame.decode("utf-8", "replace").split(" ")
        try:
            seq = int(words[0])
        except ValueError:
            return
        if self.last_seq is not None and seq <= self.last_seq:
            self.seq_errors += 1
        self.last_seq = seq
        if len(words) > 1:
            try:
                self.max_latency_us = max(self.max_latency_us, now_us() - int(words[1]))
            except ValueError:
                pass

    def event(self, timed_out):
        return {
            "event": "counted",
            "count": self.count,
            "seq_errors": self.seq_errors,
            "max_gap_ms": self.max_gap * 1000.0,
            "max_latency_ms": self.max_latency_us / 1000.0,
            "timed_out": timed_out,
        }


class Peer:
    def __init__(self, args):
        self.args = args
        self.ctx = zmq.Context.instance()
        self.role = args.role
        s = self.ctx.socket(ROLES[args.role])
        if args.sndhwm is not None:
            s.setsockopt(zmq.SNDHWM, args.sndhwm)
        if args.rcvhwm is not None:
            s.setsockopt(zmq.RCVHWM, args.rcvhwm)
        if args.rcvbuf is not None:
            s.setsockopt(zmq.RCVBUF, args.rcvbuf)
        if args.sndbuf is not None:
            s.setsockopt(zmq.SNDBUF, args.sndbuf)
        if args.identity:
            s.setsockopt(zmq.IDENTITY, args.identity.encode())
        if args.plain_client:
            user, password = args.plain_client.split(":", 1)
            s.setsockopt(zmq.PLAIN_USERNAME, user.encode())
            s.setsockopt(zmq.PLAIN_PASSWORD, password.encode())
        self.auth = None
        if args.plain_server:
            # libzmq 4.3 refuses every PLAIN client unless a ZAP handler
            # answers: run pyzmq's, with these users.
            from zmq.auth.thread import ThreadAuthenticator

            self.auth = ThreadAuthenticator(self.ctx)
            self.auth.start()
            users = dict(c.split(":", 1) for c in args.plain_server)
            self.auth.configure_plain(domain="*", passwords=users)
            s.setsockopt(zmq.PLAIN_SERVER, 1)
        if args.curve_secret:
            secret = args.curve_secret.encode()
            s.setsockopt(zmq.CURVE_SECRETKEY, secret)
            s.setsockopt(zmq.CURVE_PUBLICKEY, zmq.curve_public(secret))
            if args.curve_server:
                # No ZAP handler: libzmq admits every client key.
                s.setsockopt(zmq.CURVE_SERVER, 1)
            else:
                s.setsockopt(zmq.CURVE_SERVERKEY, args.curve_server_key.encode())
        if args.heartbeat_ms:
            # libzmq PINGs every interval and drops a peer silent for 3.
            s.setsockopt(zmq.HEARTBEAT_IVL, args.heartbeat_ms)
            s.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * args.heartbeat_ms)
        s.setsockopt(zmq.SNDTIMEO, args.sndtimeo_ms)
        s.setsockopt(zmq.LINGER, 2000)
        s.setsockopt(zmq.RECONNECT_IVL, 50)
        s.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        for p in args.subscribe:
            s.setsockopt(zmq.SUBSCRIBE, p.encode())
        self.endpoint = None
        if args.bind:
            ep = args.bind
            if ep.endswith(":0"):
                ep = ep[:-2] + ":*"
            s.bind(ep)
            self.endpoint = s.getsockopt(zmq.LAST_ENDPOINT).decode()
        for ep in args.connect:
            s.connect(ep)
            self.endpoint = self.endpoint or ep
        self.sock = s
        self.stdin = Stdin()
        self.received = 0
        self.sent = 0
        self.deadline = time.monotonic() + args.life_s
        self.pending = []  # commands read while a send/request was running

    # ---- helpers ----------------------------------------------------------

    def stop_requested(self, wait):
        """Reads stdin for up to `wait` s; True on `stop`, EOF or lifetime end."""
        if time.monotonic() > self.deadline:
            return True
        line = self.stdin.poll_line(wait)
        if line is None:
            return self.stdin.eof
        cmd = json.loads(line)
        if cmd.get("cmd") == "stop":
            return True
        self.pending.append(cmd)
        return False

    def recv_until(self, deadline):
        """One multipart message, or None at the deadline."""
        while True:
            if self.sock.poll(0, zmq.POLLIN):
                return self.sock.recv_multipart()
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if self.args.echo:
                self.serve_echo()
            self.sock.poll(int(min(left, 0.05) * 1000) + 1, zmq.POLLIN)

    def serve_echo(self):
        """Echoes every pending request (rep and router with --echo)."""
        while self.sock.poll(0, zmq.POLLIN):
            msg = self.sock.recv_multipart()
            self.received += 1
            try:
                self.sock.send_multipart(msg)
                self.sent += 1
            except zmq.Again:
                pass

    # ---- commands ---------------------------------------------------------

    def cmd_send(self, c):
        count, rate, size, start = c["count"], c.get("rate", 0), c.get("size", 0), c.get("start", 0)
        frames = c["frames"]
        t0 = time.monotonic()
        n = 0
        error = None
        while count == 0 or n < count:
            if rate:
                due = t0 + n / rate
                wait = due - time.monotonic()
                if (n % 64 == 0 or wait > 0) and self.stop_requested(max(wait, 0)):
                    break
            elif n % 256 == 0 and self.stop_requested(0):
                break
            try:
                self.sock.send_multipart(render(frames, start + n, size))
            except zmq.Again:
                error = "timeout"
                break
            except zmq.ZMQError as e:
                error = str(e)
                break
            n += 1
            self.sent += 1
        emit({"event": "sent", "count": n, "error": error})

    def collect(self, c, on_message):
        deadline = time.monotonic() + c["timeout_ms"] / 1000.0
        skip = c.get("skip_prefix")
        got = 0
        while got < c["count"]:
            msg = self.recv_until(deadline)
            if msg is None:
                return True
            self.received += 1
            if skip is not None and msg and msg[0].startswith(skip.encode()):
                continue
            on_message(msg)
            got += 1
        return False

    def cmd_recv(self, c):
        messages = []
        timed_out = self.collect(c, lambda m: messages.append(text(m)))
        emit({"event": "received", "messages": messages, "timed_out": timed_out})

    def cmd_count(self, c):
        tally = Tally()
        timed_out = self.collect(c, lambda m: tally.add(m[-1] if m else b""))
        emit(tally.event(timed_out))

    def cmd_request(self, c):
        count, rate, start = c["count"], c.get("rate", 0), c.get("start", 0)
        t0 = time.monotonic()
        ok = mismatches = n = 0
        error = None
        while count == 0 or n < count:
            wait = (t0 + n / rate - time.monotonic()) if rate else 0
            if (rate or n % 64 == 0) and self.stop_requested(max(wait, 0)):
                break
            req = render(c["frames"], start + n, 0)
            n += 1
            try:
                self.sock.send_multipart(req)
            except zmq.ZMQError as e:
                error = "send: " + str(e)
                break
            reply = self.recv_until(time.monotonic() + c["timeout_ms"] / 1000.0)
            if reply is None:
                error = "timeout"
                break
            self.received += 1
            if reply == req:
                ok += 1
            else:
                mismatches += 1
        emit({"event": "replies", "count": ok, "mismatches": mismatches, "error": error})

    def dispatch(self, c):
        name = c.get("cmd")
        if name == "send" and self.role in ("pub", "push", "dealer", "req", "router"):
            self.cmd_send(c)
        elif name == "recv":
            self.cmd_recv(c)
        elif name == "count":
            self.cmd_count(c)
        elif name in ("sub", "unsub") and self.role == "sub":
            opt = zmq.SUBSCRIBE if name == "sub" else zmq.UNSUBSCRIBE
            self.sock.setsockopt(opt, c["prefix"].encode())
            emit({"event": "ok"})
        elif name == "request" and self.role in ("req", "dealer"):
            self.cmd_request(c)
        elif name == "stats":
            emit({"event": "stats", "received": self.received, "sent": self.sent})
        elif name == "stop":
            pass  # nothing running
        else:
            emit({"event": "error", "message": "unsupported for %s: %s" % (self.role, name)})

    def run(self):
        emit({"ready": True, "endpoint": self.endpoint})
        while True:
            if self.pending:
                c = self.pending.pop(0)
            else:
                left = self.deadline - time.monotonic()
                if left <= 0:
                    return
                if self.args.echo:
                    self.serve_echo()
                    poller = zmq.Poller()
                    poller.register(self.sock, zmq.POLLIN)
                    poller.register(0, zmq.POLLIN)
                    if b"\n" not in self.stdin.buf:
                        poller.poll(int(min(left, 1.0) * 1000) + 1)
                    line = self.stdin.poll_line(0)
                else:
                    line = self.stdin.poll_line(min(left, 1.0))
                if line is None:
                    if self.stdin.eof:
                        return
                    continue
                c = json.loads(line)
            if c.get("cmd") == "quit":
                return
            self.dispatch(c)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--role", required=True, choices=sorted(ROLES))
    p.add_argument("--bind")
    p.add_argument("--connect", action="append", default=[])
    p.add_argument("--sndhwm", type=int)
    p.add_argument("--rcvhwm", type=int)
    p.add_argument("--rcvbuf", type=int)
    p.add_argument("--sndbuf", type=int)
    p.add_argument("--identity")
    p.add_argument("--subscribe", action="append", default=[])
    p.add_argument("--echo", action="store_true")
    p.add_argument("--heartbeat-ms", type=int, help="ZMQ_HEARTBEAT_IVL (timeout 3x)")
    p.add_argument("--plain-client", help="PLAIN credentials user:password")
    p.add_argument("--plain-server", action="append", default=[], help="PLAIN server accepting user:password")
    p.add_argument("--curve-secret", help="CURVE long-term secret key (Z85)")
    p.add_argument("--curve-server", action="store_true", help="CURVE server admitting any client key")
    p.add_argument("--curve-server-key", help="CURVE client: the server's public key (Z85)")
    p.add_argument("--sndtimeo-ms", type=int, default=10000)
    p.add_argument("--life-s", type=float, default=300.0)
    args = p.parse_args()
    if not args.bind and not args.connect:
        p.error("one of --bind or --connect is required")
    peer = Peer(args)
    try:
        peer.run()
    finally:
        peer.sock.close()
        if peer.auth is not None:
            peer.auth.stop()
        peer.ctx.term()


if __name__ == "__main__":
    main()
