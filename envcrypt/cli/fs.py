"""``envcrypt ls|cat|cp|put|get|rm|inspect|rewrap|migrate|manifest|encrypt-tree|decrypt-tree``.

URLs are fsspec URLs; ``envcrypt::`` is implied for the encrypted side
(``envcrypt ls s3://bucket/prefix`` lists plaintext sizes).  Storage options
go in ``-o/--storage-options`` as JSON keyed by protocol, e.g.
``-o '{"s3": {"client_kwargs": {"endpoint_url": "http://127.0.0.1:5000"}}}'``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from typing import Any

from ..envelope import inspect as inspect_blob
from ..envelope import normalize_key_uris
from ..fs import trees
from ..fs._sinks import open_sink
from ..fs._slots import rewrite_slots
from ..fs.urls import encrypted_fs

COPY_BUFFER = 8 * 1024 * 1024


def _common(p: argparse.ArgumentParser, json_flag: bool = False) -> None:
    p.add_argument("-o", "--storage-options", type=json.loads, default={}, metavar="JSON",
                   help="fsspec storage options keyed by protocol, as JSON")
    p.add_argument("--plaintext", choices=("error", "allow"), default=None,
                   help="how to treat objects that are not envcrypt objects (default error)")
    p.add_argument("--trust", action="append", dest="trust", default=None, metavar="KEY_URI",
                   help="a further key that reads accept (repeatable; by default an object opens only under "
                        "the key new writes at its path would use: --key / key_policy / local:default)")
    if json_flag:
        p.add_argument("--json", action="store_true", help="print JSON")


def _tree(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=4, help="parallel objects (default 4)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(sub: Any) -> None:
    p = sub.add_parser("ls", help="list objects with their plaintext sizes")
    p.add_argument("url")
    p.add_argument("-R", "--recursive", action="store_true")
    _common(p, json_flag=True)
    p.set_defaults(func=_ls)

    p = sub.add_parser("cat", help="decrypt an object to stdout")
    p.add_argument("url")
    p.add_argument("--range", nargs=2, type=int, metavar=("START", "END"), help="plaintext byte range")
    _common(p)
    p.set_defaults(func=_cat)

    for name, func, helptext in (
        ("cp", _cp, "copy envcrypt objects (ciphertext copied, never decrypted)"),
        ("put", _put, "encrypt local files into URL"),
        ("get", _get, "decrypt objects at URL into local files"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("src")
        p.add_argument("dst")
        p.add_argument("-r", "--recursive", action="store_true")
        if name == "put":
            p.add_argument("--key", action="append", dest="keys", metavar="KEY_URI")
        _common(p)
        p.set_defaults(func=func)

    p = sub.add_parser("rm", help="delete objects")
    p.add_argument("url")
    p.add_argument("-r", "--recursive", action="store_true")
    _common(p)
    p.set_defaults(func=_rm)

    p = sub.add_parser("inspect", help="an object's header: key slots, context, sizes (never a key)")
    p.add_argument("url")
    _common(p, json_flag=True)
    p.set_defaults(func=_inspect)

    p = sub.add_parser("rewrap", help="re-wrap objects' data keys under new master keys (bodies untouched)")
    p.add_argument("url")
    p.add_argument("--to", action="append", required=True, metavar="KEY_URI", help="new key (repeatable)")
    p.add_argument("-r", "--recursive", action="store_true")
    _common(p, json_flag=True)
    _tree(p)
    p.set_defaults(func=_rewrap)

    p = sub.add_parser("migrate", help="encrypt plaintext objects under URL in place, atomically")
    p.add_argument("url")
    p.add_argument("--key", action="append", dest="keys", metavar="KEY_URI")
    _common(p, json_flag=True)
    _tree(p)
    p.set_defaults(func=_migrate)

    for name, func, helptext in (
        ("encrypt-tree", _encrypt_tree, "encrypt every file under plain SRC into DST"),
        ("decrypt-tree", _decrypt_tree, "decrypt every object under SRC into plain DST"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("src")
        p.add_argument("dst")
        if name == "encrypt-tree":
            p.add_argument("--key", action="append", dest="keys", metavar="KEY_URI")
        p.add_argument("--force", action="store_true",
                       help="redo every file (default: skip files whose copy has the same size and is newer)")
        _common(p, json_flag=True)
        _tree(p)
        p.set_defaults(func=func)

    p = sub.add_parser("manifest", help="signed dataset manifests")
    msub = p.add_subparsers(dest="manifest_command", required=True)
    m = msub.add_parser("sign", help="write a signed manifest of every object under URL")
    m.add_argument("url")
    m.add_argument("--key", required=True, metavar="KEY_URI", help="vault signing key (local:NAME)")
    _common(m, json_flag=True)
    m.set_defaults(func=_manifest_sign)
    m = msub.add_parser("verify", help="check URL against its signed manifest")
    m.add_argument("url")
    m.add_argument("--key", metavar="KEY_URI", help="the expected signer (local:NAME); any other signer fails")
    m.add_argument("--min-serial", type=int, default=0, metavar="N",
                   help="reject a manifest older than serial N (detects a whole-dataset rollback)")
    m.add_argument("--root", metavar="URL", help="the root the manifest must be signed for (default URL)")
    _common(m, json_flag=True)
    m.set_defaults(func=_manifest_verify)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The storage options with ``--trust`` added to the envcrypt layer's ``trusted_keys``."""
    options = {k: dict(v) if isinstance(v, dict) else v for k, v in args.storage_options.items()}
    if getattr(args, "trust", None):
        layer = options.setdefault("envcrypt", {})
        layer["trusted_keys"] = list(layer.get("trusted_keys") or []) + list(args.trust)
    return options


def _efs(args: argparse.Namespace, url: str, **extra: Any) -> tuple[Any, str]:
    return encrypted_fs(url, _options(args), plaintext=args.plaintext, **extra)


def _ls(args: argparse.Namespace) -> int:
    fs, path = _efs(args, args.url)
    if args.recursive:
        entries = list(fs.find(path, detail=True, withdirs=True).values())
    elif fs.isfile(path):
        entries = [fs.info(path)]
    else:
        entries = fs.ls(path, detail=True)
    rows = [{"name": e["name"], "type": e["type"], "size": e.get("size", 0),
             "stored_size": e.get("stored_size"), "encrypted": e.get("encrypted"),
             **({"error": e["error"]} if e.get("error") else {})} for e in entries]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            mark = {True: "enc", False: "PLAIN", None: "dir"}[row["encrypted"]]
            broken = f"  ({row['error']})" if row.get("error") else ""
            print(f"{mark:5} {row['size']:>14,} {row['name']}{broken}")
    return 0


def _cat(args: argparse.Namespace) -> int:
    fs, path = _efs(args, args.url)
    out = sys.stdout.buffer
    if args.range:
        out.write(fs.cat_file(path, args.range[0], args.range[1]))
    else:
        with fs.open(path, "rb") as f:
            shutil.copyfileobj(f, out, COPY_BUFFER)
    out.flush()
    return 0


def _cp(args: argparse.Namespace) -> int:
    src_fs, src = _efs(args, args.src)
    dst_fs, dst = _efs(args, args.dst)
    if src_fs.target is dst_fs.target:
        src_fs.copy(src, dst, recursive=args.recursive)
        return 0
    pairs = [(src, dst)]
    if args.recursive:
        pairs = [(n, dst.rstrip("/") + "/" + n[len(src.rstrip("/")) + 1 :]) for n in src_fs.find(src)]
    for a, b in pairs:  # ciphertext copied across stores: still no decryption
        if dst_fs.policy.rules and src_fs._head(a).encrypted:
            # the destination's key policy decides the copy's key (re-encrypted when it is another key)
            rewrite_slots(dst_fs, a, b, normalize_key_uris(dst_fs.key_for(b)), source=src_fs.target,
                          trusted_keys=src_fs.trusted_for(a))
            continue
        # through the destination's atomic sink: a failed copy publishes nothing
        sink = open_sink(dst_fs.target, b)
        try:
            with src_fs.target.open(a, "rb") as s:
                shutil.copyfileobj(s, sink.raw, COPY_BUFFER)
            sink.commit()
        except BaseException:
            sink.abort()
            raise
        dst_fs.invalidate_cache(b)
    return 0


def _put(args: argparse.Namespace) -> int:
    fs, path = _efs(args, args.dst, key_uri=args.keys)
    fs.put(args.src, path, recursive=args.recursive)
    return 0


def _get(args: argparse.Namespace) -> int:
    fs, path = _efs(args, args.src)
    fs.get(path, args.dst, recursive=args.recursive)
    return 0


def _rm(args: argparse.Namespace) -> int:
    fs, path = _efs(args, args.url)
    fs.rm(path, recursive=args.recursive)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    fs, path = _efs(args, args.url)
    head = fs._head(path)
    if not head.encrypted:
        print(json.dumps({"name": path, "encrypted": False, "size": head.stored_size}) if args.json
              else f"{path}: not an envcrypt object ({head.stored_size:,} bytes)")
        return 1
    info = inspect_blob(head.data[: head.header_size])
    data = {"name": path, **info.as_dict(), "stored_size": head.stored_size, "plaintext_size": head.plaintext_size}
    print(json.dumps(data, indent=2) if args.json else "\n".join(f"{k:20} {v}" for k, v in data.items()))
    return 0


def _report(args: argparse.Namespace, report: trees.TreeReport) -> int:
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(f"done {len(report.done)}, skipped {len(report.skipped)}, failed {len(report.failed)}")
        for path, error in report.failed:
            print(f"FAILED {path}: {error}", file=sys.stderr)
    return 0 if report.ok else 1


def _tree_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"storage_options": _options(args), "workers": args.workers, "progress": not args.no_progress}


def _rewrap(args: argparse.Namespace) -> int:
    return _report(args, trees.rewrap(args.url, args.to, recursive=args.recursive, **_tree_kwargs(args)))


def _migrate(args: argparse.Namespace) -> int:
    return _report(args, trees.migrate(args.url, key_uri=args.keys, **_tree_kwargs(args)))


def _encrypt_tree(args: argparse.Namespace) -> int:
    return _report(args, trees.encrypt_tree(args.src, args.dst, key_uri=args.keys, force=args.force,
                                            **_tree_kwargs(args)))


def _decrypt_tree(args: argparse.Namespace) -> int:
    return _report(args, trees.decrypt_tree(args.src, args.dst, force=args.force, **_tree_kwargs(args)))


def _manifest_sign(args: argparse.Namespace) -> int:
    from ..fs import manifest

    fs, path = _efs(args, args.url)
    written = manifest.sign_manifest(fs, path, args.key)
    print(json.dumps(written.summary(), indent=2) if args.json else f"signed {written.count} objects")
    return 0


def _manifest_verify(args: argparse.Namespace) -> int:
    from ..fs import manifest

    fs, path = _efs(args, args.url)
    expected_root = _efs(args, args.root)[1] if args.root else None
    result = manifest.verify_manifest(fs, path, signer=args.key, min_serial=args.min_serial,
                                      expected_root=expected_root)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(result.text())
    return 0 if result.ok else 1


