#!/usr/bin/env python3
"""A REQ client for Switchyard's zmq-router input, with pyzmq (libzmq).

    python3 examples/request.py tcp://127.0.0.1:5570 status.line1 '?' [line=1 ...]

Sends [topic][body] (or [topic][attributes JSON][body] when attributes are
given and the input's envelope is topic-attrs-payload) and prints the reply.
An error reply is two frames, switchyard.error and a JSON body such as
{"error":{"code":"NO_SERVICE","message":"..."}}; the client never waits
longer than the route's request_timeout for one of the two. See
examples/rep-service.py for services to answer.
"""
import json
import sys

import zmq

endpoint = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:5570"
topic = sys.argv[2] if len(sys.argv) > 2 else "status.line1"
body = sys.argv[3] if len(sys.argv) > 3 else "?"
attrs = dict(a.split("=", 1) for a in sys.argv[4:])
ctx = zmq.Context()
req = ctx.socket(zmq.REQ)
req.setsockopt(zmq.RCVTIMEO, 30000)
req.setsockopt(zmq.LINGER, 0)
req.connect(endpoint)
frames = [topic.encode()]
if attrs:
    frames.append(json.dumps(attrs).encode())
frames.append(body.encode())
req.send_multipart(frames)
try:
    reply = req.recv_multipart()
except zmq.Again:
    sys.exit("no answer within 30 s: is the router running?")
if reply[0] == b"switchyard.error":
    error = json.loads(reply[1])["error"]
    sys.exit(f"error {error['code']}: {error['message']}")
print(" | ".join(f.decode(errors="replace") for f in reply))
