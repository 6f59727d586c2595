#!/usr/bin/env python3
"""Writes HS256 buyer JWTs (one per line) for the quick wrk measurement: tokens.py SECRET N."""
import base64, hashlib, hmac, json, sys, time

def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

secret, count = sys.argv[1].encode(), int(sys.argv[2])
header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
exp = int(time.time()) + 3600
for n in range(count):
    payload = b64(json.dumps({"sub": f"bench-{n}", "exp": exp}, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = b64(hmac.new(secret, signing_input, hashlib.sha256).digest())
    print(f"{header}.{payload}.{signature}")
