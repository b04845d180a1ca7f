#!/usr/bin/env python3
"""Mints JWTs for the security tests with PyJWT, the library many
identity providers and their clients use.

Reads a JSON list of specs on stdin and prints a JSON list of tokens:

    {"alg": "ES256", "key_file": "ec-private.pem", "kid": "ec1", "claims": {...}}
    {"alg": "HS256", "secret": "...", "claims": {...}}
    {"alg": "none", "claims": {...}}                      # unsigned
    {"confused": "rsa-public.pem", "claims": {...}}       # HS256 keyed with a public key

PyJWT refuses to use a PEM public key as an HMAC secret (the key
confusion attack), so the "confused" token is assembled by hand here, as
an attacker would.
"""

import base64
import hashlib
import hmac
import json
import sys

import jwt


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(spec: dict) -> str:
    claims = spec["claims"]
    if "confused" in spec:
        with open(spec["confused"], "rb") as f:
            secret = f.read()
        head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = b64(json.dumps(claims).encode())
        signing_input = f"{head}.{body}".encode()
        sig = hmac.new(secret, signing_input, hashlib.sha256).digest()
        return f"{head}.{body}.{b64(sig)}"
    alg = spec["alg"]
    headers = {"kid": spec["kid"]} if "kid" in spec else None
    if alg == "none":
        return jwt.encode(claims, None, algorithm="none", headers=headers)
    if "key_file" in spec:
        with open(spec["key_file"], "rb") as f:
            key = f.read()
    else:
        key = spec["secret"]
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def main() -> None:
    specs = json.load(sys.stdin)
    json.dump([mint(s) for s in specs], sys.stdout)


if __name__ == "__main__":
    main()
