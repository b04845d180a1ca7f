#!/usr/bin/env python3
"""An HTTPS client for the TLS tests, driven line by line: Python's `ssl`
through `requests`, as users' scripts talk to a router.

    https_client.py --ca CA.pem [--cert C.pem --key K.pem]

Each line on stdin is a command; each answer one line on stdout:

    POST <url>       -> "<status>" or "ERR <exception name>: <text>"
                        (one keep-alive connection per url's host, reused)
    NEW              -> "ok": drops the pooled connections, so the next
                        request makes a new connection (and handshake)
"""

import argparse
import sys

import requests


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ca", required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    args = p.parse_args()
    cert = (args.cert, args.key) if args.cert else None
    session = requests.Session()
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "NEW":
            session.close()
            session = requests.Session()
            print("ok", flush=True)
            continue
        if cmd[0] == "POST":
            try:
                r = session.post(cmd[1], data=b"x", verify=args.ca, cert=cert, timeout=10)
                print(r.status_code, flush=True)
            except Exception as e:  # noqa: BLE001 - every failure is an answer
                text = str(e).replace("\n", " ")[:300]
                print(f"ERR {type(e).__name__}: {text}", flush=True)
            continue
        print(f"ERR unknown command {cmd[0]}", flush=True)


if __name__ == "__main__":
    main()
