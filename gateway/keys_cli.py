"""`python -m gateway keys create|list|revoke`: manage API keys in the SQLite key store."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from .auth import SCOPES, KeyStore, parse_scopes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gateway keys", description="Manage the gateway's API keys.")
    p.add_argument("--keys-db", default=None,
                   help="SQLite key store [env MESH_KEYS_DB; default 'gateway-keys.sqlite3']")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("create", help="create a key and print it (shown only once)")
    c.add_argument("--name", required=True, help="who or what the key is for")
    c.add_argument("--scopes", default="infer", help=f"comma-separated subset of {', '.join(SCOPES)} (default infer)")
    c.add_argument("--rate", type=float, default=None, help="requests per second (default: the gateway's)")
    c.add_argument("--burst", type=int, default=None, help="burst size (default: the gateway's)")
    c.add_argument("--json", action="store_true", help="print a JSON object instead of the bare key")
    ls = sub.add_parser("list", help="list keys (never their secrets)")
    ls.add_argument("--json", action="store_true", help="print JSON")
    r = sub.add_parser("revoke", help="revoke a key by id")
    r.add_argument("id", help="the key id (the part after mk_ up to the next _)")
    return p


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    path = args.keys_db or os.environ.get("MESH_KEYS_DB") or "gateway-keys.sqlite3"
    store = KeyStore(path)
    try:
        if args.command == "create":
            try:
                scopes = parse_scopes(args.scopes)
            except ValueError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            key, record = store.create(args.name, scopes, args.rate, args.burst)
            print(json.dumps({"key": key, **record.public()}) if args.json else key)
        elif args.command == "list":
            records = store.list()
            if args.json:
                print(json.dumps([r.public() for r in records]))
            for r in records if not args.json else ():
                state = "revoked" if r.revoked else "active"
                print(f"{r.id}\t{state}\t{','.join(sorted(r.scopes))}\t{r.name}")
        elif args.command == "revoke":
            if not store.revoke(args.id):
                print(f"error: no active key with id {args.id!r}", file=sys.stderr)
                return 1
            print(f"revoked {args.id}")
    finally:
        store.close()
    return 0
