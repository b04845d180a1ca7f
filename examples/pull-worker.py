#!/usr/bin/env python3
"""A PULL worker for Switchyard's zmq-push output, with pyzmq (libzmq).

Run the router (./dev run), start one or more workers, then publish on a
route whose target is a zmq-push output (jobs.> in the default config):

    python3 examples/pull-worker.py tcp://127.0.0.1:6556
    curl -X POST --data-binary 'resize img-7' http://127.0.0.1:8080/v1/publish/jobs.images

The router spreads messages round-robin over the connected workers.
"""
import sys

import zmq

endpoint = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:6556"
ctx = zmq.Context()
pull = ctx.socket(zmq.PULL)
pull.connect(endpoint)
print(f"pulling from {endpoint}; Ctrl-C to stop", flush=True)
try:
    while True:
        frames = pull.recv_multipart()
        print(frames[0].decode(errors="replace"), frames[-1].decode(errors="replace"), flush=True)
except KeyboardInterrupt:
    pass
