#!/usr/bin/env python3
"""Publish to Switchyard's zmq-sub input with pyzmq (libzmq).

Run the router (./dev run), then:

    python3 examples/publish.py tcp://127.0.0.1:5555 sensors.line1.temp 10

Each message is two frames, [topic][payload]: the default envelope.
"""
import json
import sys
import time

import zmq

endpoint = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:5555"
topic = sys.argv[2] if len(sys.argv) > 2 else "sensors.line1.temp"
count = int(sys.argv[3]) if len(sys.argv) > 3 else 10

ctx = zmq.Context()
pub = ctx.socket(zmq.PUB)
pub.setsockopt(zmq.LINGER, 2000)
pub.connect(endpoint)
time.sleep(0.3)  # PUB drops what it sends before the connection is up
for i in range(count):
    pub.send_multipart([topic.encode(), json.dumps({"seq": i, "celsius": 20 + i % 5}).encode()])
pub.close()
ctx.term()
print(f"published {count} messages on {topic} to {endpoint}")
