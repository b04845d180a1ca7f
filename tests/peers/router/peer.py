#!/usr/bin/env python3
"""libzmq (pyzmq) peers for the router end-to-end tests.

Each role talks JSON lines: events on stdout, commands on stdin. A peer
exits when its stdin closes (the test dropped it) or after --max-seconds,
so a forgotten peer never outlives its test for long.

Roles:
  sub  ENDPOINT --subscribe P [--subscribe P ...] [--rcvhwm N]
       SUB socket, connects and subscribes in the order given, prints
       {"event":"ready"} and then one {"event":"msg",...} per message.
  pull ENDPOINT [--hold] [--rcvhwm N] [--rcvbuf BYTES] [--monitor]
       PULL socket. With --hold it connects but reads nothing until the
       command {"go":true} arrives (a stalled worker). With --monitor it
       prints {"event":"disconnected"} when the connection ends, after
       every message that connection carried.
  xpub ENDPOINT --expect P [--expect P ...]
       XPUB socket (a PUB that sees subscriptions), connects, prints one
       {"event":"subscribed","prefix":P} per subscription it receives and
       {"event":"ready"} once every expected prefix arrived; then sends on
       command.
  push ENDPOINT [--sndhwm N] [--sndbuf BYTES]
       PUSH socket, connects, prints {"event":"ready"}; sends on command.
       While a send cannot go out for --held-after seconds it prints
       {"event":"held_back","sent":K} once per command.

  rep  ENDPOINT --name NAME [--bind] [--delay-ms D]
       REP service: connects (or binds, ENDPOINT may have port 0), prints
       {"event":"ready","endpoint":E}; answers each request [..., payload]
       with [NAME, payload] after D ms, printing the request as a msg
       event. The command {"delay_ms": D} changes the delay (answered
       {"event":"delay","ms":D}).
  req  ENDPOINT
       Request clients, one REQ socket each. The command
       {"run": {"clients": N, "count": M, "topic": T, "timeout_ms": W,
                "keys": K, "attrs": true, "pause_ms": P}}
       runs N clients at once, each sending M requests [T][payload] (with
       "attrs": [T][{"key": "k<j mod K>"}][payload]), payload "c<i>-<j>",
       waiting up to W ms for each reply and P ms between requests. Then
       it prints
       {"event":"done","ok":..,"mismatches":..,"timeouts":..,
        "errors":{CODE: n},"services":{NAME: n},"keys":{KEY: [NAME...]},
        "answers":[...]} where a reply [NAME, payload] with the client's own
       payload is ok, a [switchyard.error, JSON] reply counts under its
       code, and "answers" lists the first frame of every answer in order
       (the last client's, for ordering checks).

Send commands (xpub, push), one JSON object per line:
  {"send": [["frame", "frame"], ...]}
  {"gen": {"topic": T, "start": S, "count": N, "size": Z, "attrs": A}}
      N messages [T][payload] (or [T][A][payload] when "attrs" is given,
      A being the attributes frame as a string), payload the decimal
      sequence number padded with '.' to Z bytes.
  Each command ends with {"event":"sent","count":N}.

A received message prints as
  {"event":"msg","frames":[...],"sizes":[...]}
where each frame is cut to its first 120 bytes (payloads are padded ids).

Every role takes --curve-secret Z85 --curve-server-key Z85: its socket is
then a CURVE client of the router; or --plain-user U --plain-password P: a
PLAIN client.
"""
import argparse
import json
import os
import sys
import threading
import time

import zmq


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def frame_text(frame):
    return frame[:120].decode("utf-8", "backslashreplace")


def emit_msg(frames):
    emit(
        {
            "event": "msg",
            "frames": [frame_text(f) for f in frames],
            "sizes": [len(f) for f in frames],
        }
    )


def commands():
    """Yields parsed stdin lines; exits the process when stdin closes."""
    for line in sys.stdin:
        line = line.strip()
        if line:
            yield json.loads(line)
    os._exit(0)


def watch_stdin():
    """Exits the process when stdin closes (for roles that only receive)."""

    def run():
        for _ in sys.stdin:
            pass
        os._exit(0)

    threading.Thread(target=run, daemon=True).start()


def payload(seq, size):
    text = str(seq).encode()
    return text + b"." * max(0, size - len(text))


def messages(cmd):
    if "send" in cmd:
        for frames in cmd["send"]:
            yield [f.encode() for f in frames]
    elif "gen" in cmd:
        g = cmd["gen"]
        topic = g["topic"].encode()
        attrs = g.get("attrs")
        for seq in range(g["start"], g["start"] + g["count"]):
            body = payload(seq, g.get("size", 0))
            if attrs is None:
                yield [topic, body]
            else:
                yield [topic, attrs.encode(), body]
    else:
        raise ValueError(f"unknown command {cmd!r}")


def send_all(sock, held_after_ms):
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLOUT)
    for cmd in commands():
        sent = 0
        held = False
        for frames in messages(cmd):
            while True:
                try:
                    sock.send_multipart(frames, flags=zmq.NOBLOCK)
                    break
                except zmq.Again:
                    pass
                if not poller.poll(held_after_ms) and not held:
                    held = True
                    emit({"event": "held_back", "sent": sent})
            sent += 1
        emit({"event": "sent", "count": sent})


def role_sub(ctx, args):
    sock = ctx.socket(zmq.SUB)
    if args.rcvhwm is not None:
        sock.setsockopt(zmq.RCVHWM, args.rcvhwm)
    sock.connect(args.endpoint)
    for prefix in args.subscribe:
        sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
    watch_stdin()
    emit({"event": "ready"})
    while True:
        emit_msg(sock.recv_multipart())


def role_pull(ctx, args):
    sock = ctx.socket(zmq.PULL)
    if args.rcvhwm is not None:
        sock.setsockopt(zmq.RCVHWM, args.rcvhwm)
    if args.rcvbuf is not None:
        sock.setsockopt(zmq.RCVBUF, args.rcvbuf)
    sock.connect(args.endpoint)
    emit({"event": "ready"})
    if args.hold:
        for cmd in commands():
            if cmd.get("go"):
                break
        emit({"event": "reading"})
    watch_stdin()
    if not args.monitor:
        while True:
            emit_msg(sock.recv_multipart())
    monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(monitor, zmq.POLLIN)
    while True:
        ready = dict(poller.poll())
        if sock in ready:
            emit_msg(sock.recv_multipart())
        if monitor in ready:
            monitor.recv_multipart()
            # The connection ended: what it carried is in the socket now.
            while True:
                try:
                    emit_msg(sock.recv_multipart(flags=zmq.NOBLOCK))
                except zmq.Again:
                    break
            emit({"event": "disconnected"})


def role_xpub(ctx, args):
    sock = ctx.socket(zmq.XPUB)
    sock.connect(args.endpoint)
    expected = set(args.expect)
    seen = set()
    while not expected <= seen:
        msg = sock.recv()
        if msg[:1] == b"\x01":
            prefix = msg[1:].decode("utf-8", "backslashreplace")
            seen.add(prefix)
            emit({"event": "subscribed", "prefix": prefix})
    emit({"event": "ready"})
    send_all(sock, args.held_after_ms)


def role_push(ctx, args):
    sock = ctx.socket(zmq.PUSH)
    if args.sndhwm is not None:
        sock.setsockopt(zmq.SNDHWM, args.sndhwm)
    if args.sndbuf is not None:
        sock.setsockopt(zmq.SNDBUF, args.sndbuf)
    sock.connect(args.endpoint)
    emit({"event": "ready"})
    send_all(sock, args.held_after_ms)


def role_rep(ctx, args):
    sock = ctx.socket(zmq.REP)
    if args.bind:
        sock.bind(args.endpoint)
        endpoint = sock.getsockopt(zmq.LAST_ENDPOINT).decode()
    else:
        sock.connect(args.endpoint)
        endpoint = args.endpoint
    delay = [args.delay_ms / 1000.0]

    def control():
        for cmd in commands():
            if "delay_ms" in cmd:
                delay[0] = cmd["delay_ms"] / 1000.0
                emit({"event": "delay", "ms": cmd["delay_ms"]})

    threading.Thread(target=control, daemon=True).start()
    emit({"event": "ready", "endpoint": endpoint})
    name = args.name.encode()
    while True:
        frames = sock.recv_multipart()
        emit_msg(frames)
        if delay[0]:
            time.sleep(delay[0])
        sock.send_multipart([name, frames[-1]])


def run_clients(ctx, endpoint, run):
    clients, count = run["clients"], run["count"]
    topic = run["topic"].encode()
    keys = run.get("keys", 1)
    timeout_ms = run.get("timeout_ms", 10000)
    pause = run.get("pause_ms", 0) / 1000.0
    lock = threading.Lock()
    total = {"ok": 0, "mismatches": 0, "timeouts": 0, "errors": {}, "services": {}, "keys": {}}
    answers = []

    def client(i):
        sock = ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
        sock.connect(endpoint)
        try:
            for j in range(count):
                if pause and j:
                    time.sleep(pause)
                body = ("c%d-%d" % (i, j)).encode()
                key = "k%d" % (j % keys)
                if run.get("attrs"):
                    frames = [topic, json.dumps({"key": key}).encode(), body]
                else:
                    frames = [topic, body]
                sock.send_multipart(frames)
                try:
                    reply = sock.recv_multipart()
                except zmq.Again:
                    with lock:
                        total["timeouts"] += 1
                    # A REQ socket that missed its reply cannot send again.
                    sock.close(0)
                    sock = ctx.socket(zmq.REQ)
                    sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
                    sock.connect(endpoint)
                    continue
                first = reply[0].decode("utf-8", "backslashreplace") if reply else ""
                with lock:
                    if i == clients - 1:
                        answers.append(first)
                    if first == "switchyard.error":
                        code = json.loads(reply[1])["error"]["code"]
                        total["errors"][code] = total["errors"].get(code, 0) + 1
                    elif len(reply) == 2 and reply[1] == body:
                        total["ok"] += 1
                        total["services"][first] = total["services"].get(first, 0) + 1
                        seen = total["keys"].setdefault(key, [])
                        if first not in seen:
                            seen.append(first)
                    else:
                        total["mismatches"] += 1
        finally:
            sock.close(0)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total["answers"] = answers
    emit(dict(event="done", **total))


def role_req(ctx, args):
    emit({"event": "ready"})
    for cmd in commands():
        if "run" in cmd:
            run_clients(ctx, args.endpoint, cmd["run"])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["sub", "pull", "xpub", "push", "rep", "req"])
    parser.add_argument("--name", default="svc")
    parser.add_argument("--bind", action="store_true")
    parser.add_argument("--delay-ms", type=int, default=0)
    parser.add_argument("endpoint")
    parser.add_argument("--subscribe", action="append", default=[])
    parser.add_argument("--expect", action="append", default=[])
    parser.add_argument("--hold", action="store_true")
    parser.add_argument("--monitor", action="store_true")
    parser.add_argument("--rcvhwm", type=int)
    parser.add_argument("--rcvbuf", type=int)
    parser.add_argument("--sndhwm", type=int)
    parser.add_argument("--sndbuf", type=int)
    parser.add_argument("--held-after-ms", type=int, default=1000)
    parser.add_argument("--max-seconds", type=int, default=120)
    parser.add_argument("--curve-secret", help="CURVE client: our secret key (Z85)")
    parser.add_argument("--curve-server-key", help="CURVE client: the server's public key (Z85)")
    parser.add_argument("--plain-user", help="PLAIN client: the user name")
    parser.add_argument("--plain-password", help="PLAIN client: the password")
    args = parser.parse_args()

    # A hard bound on the peer's life, whatever the test does.
    timer = threading.Timer(args.max_seconds, lambda: os._exit(3))
    timer.daemon = True
    timer.start()
    ctx = zmq.Context()
    ctx.setsockopt(zmq.LINGER, 0)
    if args.curve_secret:
        # Every socket the role makes is a CURVE client of the router.
        make = ctx.socket

        def curve_socket(kind):
            sock = make(kind)
            secret = args.curve_secret.encode()
            sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, zmq.curve_public(secret))
            sock.setsockopt(zmq.CURVE_SERVERKEY, args.curve_server_key.encode())
            return sock

        ctx.socket = curve_socket
    elif args.plain_user:
        make = ctx.socket

        def plain_socket(kind):
            sock = make(kind)
            sock.setsockopt(zmq.PLAIN_USERNAME, args.plain_user.encode())
            sock.setsockopt(zmq.PLAIN_PASSWORD, (args.plain_password or "").encode())
            return sock

        ctx.socket = plain_socket
    roles = {
        "sub": role_sub,
        "pull": role_pull,
        "xpub": role_xpub,
        "push": role_push,
        "rep": role_rep,
        "req": role_req,
    }
    roles[args.role](ctx, args)


if __name__ == "__main__":
    main()
