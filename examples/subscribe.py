#!/usr/bin/env python3
"""Watch Switchyard's zmq-pub output with pyzmq (libzmq).

Run the router (./dev run), then:

    python3 examples/subscribe.py tcp://127.0.0.1:6555 sensors.

Prints each message's topic and payload. The prefix is a ZeroMQ
subscription: the router sends only messages whose topic starts with it.
"""
import sys

import zmq

endpoint = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:6555"
prefix = sys.argv[2] if len(sys.argv) > 2 else ""

ctx = zmq.Context()
sub = ctx.socket(zmq.SUB)
sub.connect(endpoint)
sub.setsockopt(zmq.SUBSCRIBE, prefix.encode())
print(f"subscribed to {prefix!r} at {endpoint}; Ctrl-C to stop", flush=True)
try:
    while True:
        frames = sub.recv_multipart()
        print(frames[0].decode(errors="replace"), frames[-1].decode(errors="replace"), flush=True)
except KeyboardInterrupt:
    pass
