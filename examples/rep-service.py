#!/usr/bin/env python3
"""A REP service for Switchyard's zmq-dealer output, with pyzmq (libzmq).

Run the router on the request/reply example config, start the services it
connects to, then ask through the router (examples/request.py, or HTTP):

    switchyard run --config config/request-reply.toml
    python3 examples/rep-service.py tcp://127.0.0.1:7570 line-a
    python3 examples/rep-service.py tcp://127.0.0.1:7571 line-b
    python3 examples/request.py tcp://127.0.0.1:5570 status.line1 '?'
    curl --data-binary '?' -H 'X-Attr-Line: 1' http://127.0.0.1:8081/v1/request/status.line1

Each request arrives as [topic][body]; the service answers [name][body].
"""
import sys

import zmq

endpoint = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:7570"
name = sys.argv[2] if len(sys.argv) > 2 else "service"
ctx = zmq.Context()
rep = ctx.socket(zmq.REP)
rep.bind(endpoint)
print(f"{name} answering on {endpoint}; Ctrl-C to stop", flush=True)
try:
    while True:
        frames = rep.recv_multipart()
        print(frames[0].decode(errors="replace"), frames[-1].decode(errors="replace"), flush=True)
        rep.send_multipart([name.encode(), frames[-1]])
except KeyboardInterrupt:
    pass
