"""``envcrypt parquet inspect|rotate``: Parquet modular encryption (PME) files with envcrypt keys.

Registered by ``envcrypt.cli`` through ``register(sub)`` (module ``envcrypt.cli.parquet``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ._location import add_target_options, plain_target


def register(sub: Any) -> None:
    group = sub.add_parser("parquet", help="Parquet modular encryption files: inspect, rotate",
                           description="Parquet modular encryption (PME) with envcrypt master keys")
    psub = group.add_subparsers(dest="parquet_command", metavar="COMMAND", required=True)

    p = psub.add_parser(
        "inspect", help="which columns are encrypted under which master keys (never a key)",
        epilog="example:\n  envcrypt parquet inspect s3://lake/pii/part.0.parquet --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", help="fsspec URL or local path of a Parquet file")
    add_target_options(p)
    p.set_defaults(func=_inspect)

    p = psub.add_parser(
        "rotate", help="rewrap a PME file's external key material under the newest key versions "
                       "(the Parquet file is untouched; a concurrent change is never overwritten)",
        epilog="example:\n  envcrypt parquet rotate s3://lake/pii/part.0.parquet --to local:footer --to local:pii",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", help="fsspec URL or local path of a Parquet file written with external key material")
    p.add_argument("--to", action="append", required=True, metavar="KEY_URI",
                   help="a master key of the file, rotated to its newest version (or the version named); "
                        "repeat for every master key the file uses")
    p.add_argument("--trust", action="append", default=None, metavar="KEY_URI",
                   help="keys the old key material may name (default: the --to keys, any version)")
    p.add_argument("--vault", metavar="DIR", help="local vault directory for local: keys (default $ENVCRYPT_VAULT)")
    p.add_argument("--single-wrapping", action="store_true",
                   help="wrap data keys directly under the master keys (default: new KEKs, double wrapping)")
    add_target_options(p)
    p.set_defaults(func=_rotate)


def _inspect(args: argparse.Namespace) -> int:
    from ..parquet import inspect

    fs, path = plain_target(args)
    info = inspect(path, filesystem=fs)
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    out = [f"{args.url}: {'PME-encrypted' if info['encrypted'] else 'not encrypted'}, footer {info['footer']}"
           + (f", {info['algorithm']}" if info.get("algorithm") else "")]
    if info["encrypted"]:
        out.append(f"  footer key: {_key(info.get('footer_key'))}")
        if info.get("columns") is None:
            out.append("  columns: listed in the encrypted footer only")
            if info.get("master_keys"):
                out.append(f"  master keys in the key material: {', '.join(info['master_keys'])}")
        else:
            for column, key in info["columns"].items():
                out.append(f"  column {column}: {_key(key)}")
            if info.get("plaintext_columns"):
                out.append(f"  plaintext columns: {', '.join(info['plaintext_columns'])}")
    print("\n".join(out))
    return 0


def _key(described: dict[str, Any] | None) -> str:
    if not described:
        return "the footer key"
    version = described.get("key_version") or "wrapped by another KMS client"
    return (f"{described.get('master_key')} ({version}; {described.get('key_material')} key material"
            f"{', double wrapping' if described.get('double_wrapping') else ''})")


def _rotate(args: argparse.Namespace) -> int:
    from ..parquet import rotate

    fs, path = plain_target(args)
    options = {"vault": args.vault} if args.vault else {}
    result = rotate(path, args.to, trusted_keys=args.trust, filesystem=fs, resolver_options=options,
                    double_wrapping=not args.single_wrapping)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        for master, version in sorted(result["keys"].items()):
            print(f"{args.url}: {master} -> {version}")
        print(f"rewrote {result['key_material']} (the Parquet file is untouched)", file=sys.stderr)
    return 0
