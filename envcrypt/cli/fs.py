"""``envcrypt ls|cat|cp|put|get|rm|inspect|rewrap|migrate|manifest|encrypt-tree|decrypt-tree``.

URLs are fsspec URLs; ``envcrypt::`` is implied for the encrypted side
(``envcrypt ls s3://bucket/prefix`` lists plaintext sizes).  Storage options
go in ``-o/--storage-options`` as JSON keyed by protocol, e.g.
``-o '{"s3": {"client_kwargs": {"endpoint_url": "http://127.0.0.1:5000"}}}'``.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import sys
from typing import Any

from ..envelope import inspect as inspect_blob
from ..errors import EnvcryptError, IsAPrefixError
from ..fs import trees
from ..fs.progress import Progress
from ..fs.urls import encrypted_fs
from ._location import STORAGE_OPTIONS_HELP, parse_storage_options

COPY_BUFFER = 8 * 1024 * 1024


def _common(p: argparse.ArgumentParser, json_flag: bool = True) -> None:
    p.add_argument("-o", "--storage-options", default=None, metavar="JSON", help=STORAGE_OPTIONS_HELP)
    p.add_argument("--plaintext", choices=("error", "allow"), default=None,
                   help="how to treat objects that are not envcrypt objects (default error)")
    p.add_argument("--trust", action="append", dest="trust", default=None, metavar="KEY_URI",
                   help="a further key that reads accept (repeatable; by default an object opens only under "
                        "the key new writes at its path would use: --key / key_policy / local:default)")
    p.add_argument("--vault", metavar="DIR",
                   help="local vault directory for local: keys (default $ENVCRYPT_VAULT); never created by a read")
    if json_flag:
        p.add_argument("--json", action="store_true", help="print a JSON result instead of text")


def _tree(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=4, help="objects processed in parallel (default 4)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress (default: a bar on a terminal, plain lines otherwise, on stderr)")


def _parser(sub: Any, name: str, helptext: str, example: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=helptext, description=helptext, epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    return p


URL_HELP = "fsspec URL or local path (envcrypt:: is implied)"
SRC_RECURSIVE = "with a prefix: every object under it (required for a prefix)"


def register(sub: Any) -> None:
    p = _parser(sub, "ls", "list objects with their plaintext sizes", "envcrypt ls s3://lake/sales --json")
    p.add_argument("url", help=URL_HELP)
    p.add_argument("-R", "--recursive", action="store_true", help="list every object under the prefix")
    _common(p)
    p.set_defaults(func=_ls)

    p = _parser(sub, "cat", "decrypt an object to stdout", "envcrypt cat s3://lake/sales/2026.csv --range 0 100")
    p.add_argument("url", help=URL_HELP)
    p.add_argument("--range", nargs=2, type=int, metavar=("START", "END"), help="plaintext byte range [START, END)")
    _common(p, json_flag=False)
    p.set_defaults(func=_cat)

    for name, func, helptext, example, src_help, dst_help in (
        ("cp", _cp, "copy envcrypt objects (ciphertext copied, never decrypted)",
         "envcrypt cp -r s3://lake/sales file:///backup/sales", URL_HELP, URL_HELP),
        ("put", _put, "encrypt local files into URL", "envcrypt put -r ./raw s3://lake/raw --key local:sales",
         "local file or directory", URL_HELP),
        ("get", _get, "decrypt objects at URL into local files",
         "envcrypt get -r s3://lake/raw ./raw-back --trust local:sales", URL_HELP, "local file or directory"),
    ):
        p = _parser(sub, name, helptext, example)
        p.add_argument("src", help=src_help)
        p.add_argument("dst", help=dst_help)
        p.add_argument("-r", "--recursive", action="store_true", help=SRC_RECURSIVE)
        if name == "put":
            p.add_argument("--key", action="append", dest="keys", metavar="KEY_URI",
                           help="master key for the new objects (repeatable; default the path's key)")
        _common(p)
        if name != "cp":
            _tree(p)
        else:
            p.add_argument("--no-progress", action="store_true", help="no progress on stderr")
        p.set_defaults(func=func)

    p = _parser(sub, "rm", "delete objects", "envcrypt rm -r s3://lake/tmp")
    p.add_argument("url", help=URL_HELP)
    p.add_argument("-r", "--recursive", action="store_true", help=SRC_RECURSIVE)
    _common(p)
    p.set_defaults(func=_rm)

    p = _parser(sub, "inspect", "an object's header: key slots, context, sizes (never a key)",
                "envcrypt inspect data.csv.envc --json")
    p.add_argument("url", help=URL_HELP)
    _common(p)
    p.set_defaults(func=_inspect)

    p = _parser(sub, "rewrap", "re-wrap objects' data keys under new master keys (bodies untouched)",
                "envcrypt rewrap s3://lake/tenants/acme --to local:acme -r")
    p.add_argument("url", help=URL_HELP)
    p.add_argument("--to", action="append", required=True, metavar="KEY_URI", help="new key (repeatable)")
    p.add_argument("-r", "--recursive", action="store_true", help=SRC_RECURSIVE)
    _common(p)
    _tree(p)
    p.set_defaults(func=_rewrap)

    p = _parser(sub, "migrate", "encrypt plaintext objects under URL in place, atomically",
                "envcrypt migrate s3://lake/legacy --key local:sales")
    p.add_argument("url", help=URL_HELP)
    p.add_argument("--key", action="append", dest="keys", metavar="KEY_URI",
                   help="master key (repeatable; default the path's key)")
    _common(p)
    _tree(p)
    p.set_defaults(func=_migrate)

    for name, func, helptext, example in (
        ("encrypt-tree", _encrypt_tree, "encrypt every file under plain SRC into DST",
         "envcrypt encrypt-tree ./raw s3://lake/raw --key local:sales"),
        ("decrypt-tree", _decrypt_tree, "decrypt every object under SRC into plain DST",
         "envcrypt decrypt-tree s3://lake/raw ./raw-back --trust local:sales"),
    ):
        p = _parser(sub, name, helptext, example)
        p.add_argument("src", help="source URL or local path" + (" (plain)" if name == "encrypt-tree" else ""))
        p.add_argument("dst", help="destination URL or local path" + (" (plain)" if name == "decrypt-tree" else ""))
        if name == "encrypt-tree":
            p.add_argument("--key", action="append", dest="keys", metavar="KEY_URI",
                           help="master key (repeatable; default the path's key)")
        p.add_argument("--force", action="store_true",
                       help="redo every file (default: skip files whose copy has the same size and is newer)")
        _common(p)
        _tree(p)
        p.set_defaults(func=func)

    p = _parser(sub, "manifest", "signed dataset manifests", "envcrypt manifest sign s3://lake/sales --key local:signer")
    msub = p.add_subparsers(dest="manifest_command", metavar="ACTION", required=True)
    m = _parser(msub, "sign", "write a signed manifest of every object under URL",
                "envcrypt manifest sign s3://lake/sales --key local:signer")
    m.add_argument("url", help=URL_HELP)
    m.add_argument("--key", required=True, metavar="KEY_URI",
                   help="vault signing key (local:NAME; create it with: envcrypt key create NAME --kind ec-p256)")
    _common(m)
    m.set_defaults(func=_manifest_sign)
    m = _parser(msub, "verify", "check URL against its signed manifest",
                "envcrypt manifest verify s3://lake/sales --key local:signer")
    m.add_argument("url", help=URL_HELP)
    m.add_argument("--key", metavar="KEY_URI", help="the expected signer (local:NAME); any other signer fails")
    m.add_argument("--min-serial", type=int, default=0, metavar="N",
                   help="reject a manifest older than serial N (detects a whole-dataset rollback)")
    m.add_argument("--root", metavar="URL", help="the root the manifest must be signed for (default URL)")
    _common(m)
    m.set_defaults(func=_manifest_verify)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The storage options with ``--trust``, ``--plaintext`` and ``--vault`` added to the envcrypt layer."""
    options = parse_storage_options(args.storage_options)
    layer = options.setdefault("envcrypt", {})
    if getattr(args, "trust", None):
        layer["trusted_keys"] = list(layer.get("trusted_keys") or []) + list(args.trust)
    if getattr(args, "plaintext", None):
        layer["plaintext"] = args.plaintext
    if getattr(args, "vault", None):
        layer["resolver_options"] = {**(layer.get("resolver_options") or {}), "vault": args.vault}
    return options


def _efs(args: argparse.Namespace, url: str, **extra: Any) -> tuple[Any, str]:
    return encrypted_fs(url, _options(args), **extra)


def _is_prefix(fs: Any, path: str) -> bool:
    return not fs.isfile(path) and bool(fs.isdir(path))


def _refuse_prefix(fs: Any, path: str, shown: str) -> None:
    """A command on one object given a prefix says so (instead of doing nothing)."""
    if _is_prefix(fs, path):
        raise IsAPrefixError(errno.EISDIR, "is a prefix; use -r", shown)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


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
        _print_json(rows)
    else:
        for row in rows:
            mark = {True: "enc", False: "PLAIN", None: "dir"}[row["encrypted"]]
            broken = f"  ({row['error']})" if row.get("error") else ""
            print(f"{mark:5} {row['size']:>14,} {row['name']}{broken}")
    return 0


def _cat(args: argparse.Namespace) -> int:
    fs, path = _efs(args, args.url)
    _refuse_prefix(fs, path, args.url)
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
    if not args.recursive:
        _refuse_prefix(src_fs, src, args.src)
        if dst_fs.isdir(dst) and not dst_fs.isfile(dst):
            dst = dst.rstrip("/") + "/" + src.rstrip("/").rsplit("/", 1)[-1]
        trees.copy_object(src_fs, src, dst_fs, dst)
        return _done(args, trees.TreeReport(done=[dst]))
    infos = {n: i for n, i in src_fs.find(src, detail=True).items() if i.get("type") == "file"}
    pairs = {n: dst.rstrip("/") + "/" + n[len(src.rstrip("/")) + 1:] for n in infos}
    report = trees.TreeReport()
    bar = Progress(len(pairs), "cp", not args.no_progress, total_bytes=sum(int(i.get("stored_size") or 0)
                                                                            for i in infos.values()))
    try:
        for a, b in sorted(pairs.items()):
            try:
                trees.copy_object(src_fs, a, dst_fs, b)
                report.done.append(b)
            except (EnvcryptError, OSError, ValueError) as exc:
                report.failed.append((a, f"{type(exc).__name__}: {exc}"))
            bar.update(1, int(infos[a].get("stored_size") or 0))
    finally:
        bar.close()
    return _report(args, report)


def _done(args: argparse.Namespace, report: trees.TreeReport) -> int:
    """A one-object command's result: JSON like a tree's report, or nothing."""
    if args.json:
        _print_json(report.as_dict())
    return 0


def _put(args: argparse.Namespace) -> int:
    if args.recursive:
        return _report(args, trees.encrypt_tree(args.src, args.dst, key_uri=args.keys, force=True,
                                                **_tree_kwargs(args)))
    if os.path.isdir(args.src):
        raise IsAPrefixError(errno.EISDIR, "is a directory; use -r", args.src)
    fs, path = _efs(args, args.dst, key_uri=args.keys)
    if _is_prefix(fs, path):
        path = path.rstrip("/") + "/" + os.path.basename(args.src)
    fs.put_file(args.src, path)
    return _done(args, trees.TreeReport(done=[path]))


def _get(args: argparse.Namespace) -> int:
    if args.recursive:  # as decrypt-tree: atomic per file, the manifest skipped
        return _report(args, trees.decrypt_tree(args.src, args.dst, force=True, **_tree_kwargs(args)))
    fs, path = _efs(args, args.src)
    _refuse_prefix(fs, path, args.src)
    dst = args.dst
    if os.path.isdir(dst):
        dst = os.path.join(dst, path.rstrip("/").rsplit("/", 1)[-1])
    fs.get_file(path, dst)
    return _done(args, trees.TreeReport(done=[dst]))


def _rm(args: argparse.Namespace) -> int:
    fs, path = _efs(args, args.url)
    if not args.recursive:
        _refuse_prefix(fs, path, args.url)
        if not fs.exists(path):
            raise FileNotFoundError(errno.ENOENT, "no such object", args.url)
        removed = [path]
    else:
        removed = sorted(fs.find(path))
    fs.rm(path, recursive=args.recursive)
    return _done(args, trees.TreeReport(done=removed))


def _inspect(args: argparse.Namespace) -> int:
    fs, path = _efs(args, args.url)
    _refuse_prefix(fs, path, args.url)
    head = fs.head(path)
    if head.error is FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "no such object", args.url)
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
        _print_json(report.as_dict())
    else:
        print(f"done {len(report.done)}, skipped {len(report.skipped)}, failed {len(report.failed)}")
        for path, error in report.failed:
            print(f"FAILED {path}: {error}", file=sys.stderr)
    return 0 if report.ok else 1


def _tree_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"storage_options": _options(args), "workers": args.workers, "progress": not args.no_progress}


def _rewrap(args: argparse.Namespace) -> int:
    if not args.recursive:
        fs, path = _efs(args, args.url)
        _refuse_prefix(fs, path, args.url)
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


