"""``envcrypt columns inspect|rotate``: files with cell-by-cell encrypted columns (envcrypt.columns).

Registered by ``envcrypt.cli`` through ``register(sub)`` (module ``envcrypt.cli.columns``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ._location import add_target_options, plain_target


def register(sub: Any) -> None:
    group = sub.add_parser("columns", help="files with encrypted columns (envcrypt.columns): inspect, rotate",
                           description="Parquet and Arrow IPC files whose columns envcrypt.columns encrypted")
    csub = group.add_subparsers(dest="columns_command", metavar="COMMAND", required=True)

    p = csub.add_parser(
        "inspect", help="which columns are encrypted, in which mode, under which master keys (never a key)",
        epilog="example:\n  envcrypt columns inspect s3://lake/people/part-0.parquet --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", help="fsspec URL or local path of a Parquet or Arrow IPC (Feather) file")
    add_target_options(p)
    p.set_defaults(func=_inspect)

    p = csub.add_parser(
        "new-key", help="make a column key wrapped under a master key and print its token (plain data, no "
                        "secret): name it in the policy of every writer that must share the key",
        epilog="example:\n  envcrypt columns new-key local:pii > email.token",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("key_uri", nargs="+", metavar="KEY_URI", help="master key(s) wrapping the column key")
    p.add_argument("--vault", metavar="DIR", help="local vault directory for local: keys (default $ENVCRYPT_VAULT)")
    p.set_defaults(func=_new_key)

    p = csub.add_parser(
        "rotate", help="rewrap the file's column keys under new master keys: only the column metadata "
                       "changes, every cell is copied as it is; a concurrent change is never overwritten",
        epilog="example:\n  envcrypt columns rotate lake/people/part-0.parquet --to local:pii\n"
               "  envcrypt columns rotate people.parquet --to local:pii2 --trust local:pii",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", help="fsspec URL or local path of a Parquet or Arrow IPC (Feather) file")
    p.add_argument("--to", action="append", required=True, metavar="KEY_URI",
                   help="master key the column keys are wrapped under afterwards (newest version unless "
                        "one is named); repeat for several slots")
    p.add_argument("--trust", action="append", default=None, metavar="KEY_URI",
                   help="keys the current column keys may be opened with (default: the --to keys, any "
                        "version; name the old key to move to another one)")
    p.add_argument("--vault", metavar="DIR", help="local vault directory for local: keys (default $ENVCRYPT_VAULT)")
    add_target_options(p)
    p.set_defaults(func=_rotate)


def _inspect(args: argparse.Namespace) -> int:
    from ..columns._rotate import inspect_file

    fs, path = plain_target(args)
    info = inspect_file(path, fs)
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    columns = info["encrypted_columns"]
    out = [f"{args.url}: {info['format']}, {len(columns) or 'no'} encrypted column{'s' if len(columns) != 1 else ''}"]
    for name, c in columns.items():
        out.append(f"  column {name}: {c['mode']} ({c['suite']}), {c['type']}, column key {c['key_id']} "
                   f"under {', '.join(c['master_keys'])}")
    if info["plaintext_columns"]:
        out.append(f"  plaintext columns: {', '.join(info['plaintext_columns'])}")
    print("\n".join(out))
    return 0


def _rotate(args: argparse.Namespace) -> int:
    from ..columns._rotate import rotate_file

    fs, path = plain_target(args)
    options = {"vault": args.vault} if args.vault else {}
    names = rotate_file(path, args.to, fs, trusted_keys=args.trust, **options)
    if args.json:
        print(json.dumps({"url": args.url, "rotated_columns": names, "to": args.to}, indent=2, sort_keys=True))
    elif names:
        print(f"{args.url}: column keys of {', '.join(names)} now under {', '.join(args.to)}")
        print("only the column metadata changed; every cell was copied as it is", file=sys.stderr)
    else:
        print(f"{args.url}: no encrypted column; left as it is", file=sys.stderr)
    return 0


def _new_key(args: argparse.Namespace) -> int:
    from ..columns import new_column_key

    options = {"vault": args.vault} if args.vault else {}
    print(new_column_key(args.key_uri if len(args.key_uri) > 1 else args.key_uri[0], **options))
    return 0
