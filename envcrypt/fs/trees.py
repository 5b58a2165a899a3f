"""Whole-tree operations: encrypt/decrypt a tree, migrate plaintext in place, rewrap a prefix.

All of them are parallel (a thread pool), resumable (an object already in the
wanted state is skipped, and every object is written atomically, so a
restarted run never sees a half-written one) and report progress.

- ``encrypt_tree(src, dst)``: every file under the plain URL ``src`` becomes an
  envcrypt object under ``dst``; skipped when ``dst`` already holds an envcrypt
  object of the same plaintext size that was modified *after* the source
  (``dst mtime > src mtime``, the stores' own modification times, as rsync's
  default check; with no modification time on either side the file is
  always redone).  Not detected: a source replaced by same-size content with an
  *older* mtime (restored from a backup with ``cp -p``/``tar``), or changed
  while it was being copied; pass ``force=True`` (``--force``) to redo all.
- ``decrypt_tree(src, dst)``: the reverse, with the same check.
- ``migrate(url)``: plaintext objects under ``url`` are encrypted in place;
  the replacement is conditional (see ``_sinks``): an object written by
  someone else meanwhile is left as they wrote it and reported.
- ``rewrap(url, to)``: only the key slots change: the new header replaces the
  old one and the body is copied byte for byte (never re-encrypted); skipped
  when the slots already name exactly the target key versions.  A reader open
  during a rewrap follows the replacement (see ``_files``).  The replacement is
  conditional like migrate's: a concurrent write is never overwritten with the
  old version (``ConcurrentModificationError`` for that object; a rerun
  rewraps it).
"""

from __future__ import annotations

import datetime
import errno
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..envelope import normalize_key_uris
from ..errors import EnvcryptError, IsAPrefixError
from ..format import MAGIC
from ..slots import key_name
from ._sinks import open_sink, sweep_stale_temps, version_of
from ._slots import rewrite_slots, target_identities
from .filesystem import EnvcryptFileSystem
from .manifest import MANIFEST_NAME
from .progress import Progress
from .urls import encrypted_fs, plain_fs

__all__ = ["TreeReport", "encrypt_tree", "decrypt_tree", "migrate", "rewrap", "rewrap_object", "copy_object"]

COPY_BUFFER = 8 * 1024 * 1024


@dataclass
class TreeReport:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def as_dict(self) -> dict[str, Any]:
        return {"done": len(self.done), "skipped": len(self.skipped),
                "failed": [{"path": p, "error": e} for p, e in self.failed]}


def _run(items: Sequence[str], work: Callable[[str], bool], desc: str, workers: int, progress: bool,
         sizes: Mapping[str, Any] | None = None) -> TreeReport:
    """Run ``work(item) -> did_something`` over items in a pool; collect a report.

    ``sizes`` (item -> info with ``size``) gives the progress its bytes, rate and ETA."""
    report = TreeReport()

    def size(item: str) -> int:
        value = (sizes or {}).get(item, {}).get("size")
        return int(value) if isinstance(value, int) else 0

    bar = Progress(len(items), desc, progress, total_bytes=sum(size(i) for i in items) if sizes else None)

    def one(item: str) -> None:
        try:
            (report.done if work(item) else report.skipped).append(item)
        except (EnvcryptError, OSError, ValueError) as exc:
            report.failed.append((item, f"{type(exc).__name__}: {exc}"))
        finally:
            bar.update(1, size(item))

    try:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            list(pool.map(one, items))
    finally:
        bar.close()
    report.done.sort()
    report.skipped.sort()
    report.failed.sort()
    return report


def _sweep(fs: Any, root: str) -> None:
    """Remove temp files a killed earlier run left under a local ``root`` (see ``_sinks``): a
    re-run that finds every file of a directory done writes nothing there to sweep it."""
    from fsspec.implementations.local import LocalFileSystem

    target = getattr(fs, "target", fs)
    if isinstance(target, LocalFileSystem) and os.path.isdir(root):
        for directory, _, _ in os.walk(root):
            sweep_stale_temps(directory)


def _files(fs: Any, root: str) -> dict[str, dict[str, Any]]:
    if fs.isfile(root):
        return {root: fs.info(root)}
    found: dict[str, dict[str, Any]] = fs.find(root, detail=True)
    return {name: info for name, info in found.items()
            if info.get("type") == "file" and not name.endswith("/" + MANIFEST_NAME)}


def _relative(root: str, name: str) -> str:
    root = root.rstrip("/")
    return name[len(root) + 1 :] if name.startswith(root + "/") else name.rsplit("/", 1)[-1]


def _join(root: str, rel: str) -> str:
    return f"{root.rstrip('/')}/{rel}" if root else rel


def _copy(src: Any, dst: Any) -> None:
    shutil.copyfileobj(src, dst, COPY_BUFFER)


def _mtime(info: Mapping[str, Any]) -> float | None:
    """A listing entry's modification time in seconds since the epoch, when the store reports one."""
    for key in ("mtime", "LastModified", "last_modified", "modified", "updated", "created"):
        value = info.get(key)
        if isinstance(value, datetime.datetime):
            return value.timestamp()
        if isinstance(value, (int, float)) and value:
            return float(value)
        if isinstance(value, str) and value:
            try:
                return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


def _up_to_date(have: Mapping[str, Any] | None, source: Mapping[str, Any]) -> bool:
    """``have`` (the destination entry) holds the source's current content, as far as size and times tell."""
    if not have or have.get("size") != source.get("size"):
        return False
    dst_time, src_time = _mtime(have), _mtime(source)
    return dst_time is not None and src_time is not None and dst_time > src_time


def encrypt_tree(
    src: str, dst: str, *, storage_options: Mapping[str, Any] | None = None, key_uri: Any = None,
    workers: int = 4, progress: bool = True, force: bool = False,
) -> TreeReport:
    """Encrypt every file under plain URL ``src`` into ``dst`` (same relative paths)."""
    src_fs, src_root = plain_fs(src, storage_options)
    dst_fs, dst_root = encrypted_fs(dst, storage_options, key_uri=key_uri)
    _sweep(dst_fs, dst_root)
    sources = _files(src_fs, src_root)
    existing = {} if force else _existing(dst_fs, dst_root)

    def work(name: str) -> bool:
        target = _join(dst_root, _relative(src_root, name))
        have = existing.get(target)
        if have and have.get("encrypted") and _up_to_date(have, sources[name]):
            return False
        dst_fs.makedirs(dst_fs._parent(target), exist_ok=True)
        with src_fs.open(name, "rb") as s, dst_fs.open(target, "wb") as d:
            _copy(s, d)
        return True

    return _run(sorted(sources), work, "encrypt-tree", workers, progress, sources)


def decrypt_tree(
    src: str, dst: str, *, storage_options: Mapping[str, Any] | None = None, workers: int = 4,
    progress: bool = True, force: bool = False,
) -> TreeReport:
    """Decrypt every envcrypt object under ``src`` into plain URL ``dst``, atomically per file."""
    src_fs, src_root = encrypted_fs(src, storage_options)
    dst_fs, dst_root = plain_fs(dst, storage_options)
    _sweep(dst_fs, dst_root)
    sources = _files(src_fs, src_root)
    existing = {} if force else _existing(dst_fs, dst_root)

    def work(name: str) -> bool:
        target = _join(dst_root, _relative(src_root, name))
        if _up_to_date(existing.get(target), sources[name]):
            return False
        dst_fs.makedirs(dst_fs._parent(target), exist_ok=True)
        sink = open_sink(dst_fs, target)
        try:
            with src_fs.open(name, "rb") as s:
                _copy(s, sink.raw)
            sink.commit()
        except BaseException:
            sink.abort()
            raise
        return True

    return _run(sorted(sources), work, "decrypt-tree", workers, progress, sources)


def _existing(fs: Any, root: str) -> dict[str, dict[str, Any]]:
    try:
        return _files(fs, root) if fs.exists(root) else {}
    except FileNotFoundError:
        return {}


def migrate(
    url: str, *, storage_options: Mapping[str, Any] | None = None, key_uri: Any = None, workers: int = 4,
    progress: bool = True,
) -> TreeReport:
    """Encrypt the plaintext objects under ``url`` in place, each replaced atomically."""
    fs, root = encrypted_fs(url, storage_options, key_uri=key_uri)
    _sweep(fs, root)
    infos = _files(fs, root)

    def work(name: str) -> bool:
        if infos[name].get("encrypted"):
            return False
        expect = version_of(fs.target, name)
        with fs.target.open(name, "rb") as s:
            if s.read(len(MAGIC)) == MAGIC:
                return False  # encrypted since it was listed (another migrate)
            s.seek(0)
            with fs._open_write(name, True, None, expect=expect) as d:
                _copy(s, d)
        return True

    return _run(sorted(infos), work, "migrate", workers, progress, infos)


# ---------------------------------------------------------------- rewrap


def copy_object(src_fs: EnvcryptFileSystem, src: str, dst_fs: EnvcryptFileSystem, dst: str) -> None:
    """Copy one stored object from ``src_fs`` to ``dst_fs``, which may be another store.

    On one store: ``cp_file`` (its key policy decides the copy's key).  Across
    stores, when the destination has a key policy and the source is encrypted,
    the object gets the key the policy gives ``dst`` (slots rewritten, or
    re-encrypted under a fresh DEK when the new key does not hold the DEK; the
    source is read under the keys ``src_fs`` trusts for ``src``).  Otherwise the
    stored bytes are copied as they are.  Every copy goes through the
    destination's atomic sink: a failed copy publishes nothing.
    """
    if src_fs.target is dst_fs.target:
        dst_fs.makedirs(dst_fs._parent(dst), exist_ok=True)
        src_fs.cp_file(src, dst)
        return
    if dst_fs.policy.rules and src_fs.head(src).encrypted:
        rewrite_slots(dst_fs, src, dst, normalize_key_uris(dst_fs.key_for(dst)), source=src_fs.target,
                      trusted_keys=src_fs.trusted_for(src))
        return
    sink = open_sink(dst_fs.target, dst, make_parents=True)
    try:
        with src_fs.target.open(src, "rb") as s:
            shutil.copyfileobj(s, sink.raw, COPY_BUFFER)
        sink.commit()
    except BaseException:  # abort, then re-raise whatever it was
        sink.abort()
        raise
    dst_fs.invalidate_written(dst)


def rewrap_object(fs: EnvcryptFileSystem, path: str, key_uris: Sequence[str],
                  identities: Sequence[str] | None = None) -> bool:
    """Put one object under ``key_uris``; False when already done.

    Within the keys the object has (a rotation), only its key slots are replaced
    and the body is copied byte-identical; to another key it is re-encrypted
    under a fresh DEK (see ``_slots.rewrite_slots``).

    The replacement is conditional (see ``_sinks``): an object rewritten by
    someone else while it was being rewrapped is left as they wrote it and
    reported (``ConcurrentModificationError``); a rerun rewraps it.
    """
    # a rewrap reads through the keys the path's configuration names, and the target keys
    # themselves (a rotation within a key needs no further option)
    trusted = list(dict.fromkeys(fs.trusted_for(path) + [key_name(u) for u in key_uris]))
    return rewrite_slots(fs, path, path, key_uris, identities, trusted_keys=trusted)


def rewrap(
    url: str, to: Any, *, recursive: bool = False, storage_options: Mapping[str, Any] | None = None,
    workers: int = 4, progress: bool = True,
) -> TreeReport:
    """Rewrap the object at ``url`` (or every object under it with ``recursive``) to key(s) ``to``."""
    fs, root = encrypted_fs(url, storage_options)
    key_uris = normalize_key_uris(to)
    identities = target_identities(key_uris, fs.resolver_options)
    if recursive:
        _sweep(fs, root)
        infos = _files(fs, root)
    else:
        infos = {root: fs.info(root)}
        if infos[root].get("type") == "directory":
            raise IsAPrefixError(errno.EISDIR, "is a prefix; pass recursive=True", url)
    names = [n for n, i in infos.items() if i.get("encrypted")]
    return _run(sorted(names), lambda n: rewrap_object(fs, n, key_uris, identities), "rewrap", workers, progress,
                infos)
