"""Object heads: the first bytes of stored objects, parsed and cached.

A *head* is what a listing needs to report an exact plaintext size (the
header length) and what a reader needs to open an object (the header and the
56-byte body prefix).  Heads are fetched with one short ranged read per
object — many objects at once through the target's ``cat_ranges``, which is
concurrent on async targets such as s3fs — and cached process-wide, keyed by
the target filesystem, the path and a version token built from every identity
field the target reports (ETag / generation / version id, every time stamp
including the inode change time, the inode and the stored size).  An object
without a version token is never cached, and neither are heads of memory
filesystems (an in-place rewrite there changes no reported field).  A head
whose object is not encrypted, or broken, is fetched again before a read acts
on it.  On S3 a ranged read may take the last head cached for a path without
asking for the object's version (``HeadCache.latest``): its GETs carry
``If-Match`` on that head's ETag, so the store itself refuses another version.
A head holds no secret: only stored bytes.
"""

from __future__ import annotations

import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from fsspec.implementations.memory import MemoryFileSystem

from ..errors import EnvcryptError, MalformedHeaderError, NotEncryptedError
from ..format import BODY_PREFIX_SIZE, MAGIC, header_length_hint, object_plaintext_size
from ._pinning import etag_of

#: bytes fetched to find a header: enough for the header and body prefix of
#: objects with a few key slots; longer headers cost one more read
PROBE_SIZE = 2048
#: head fetches in flight at once on an async target (s3fs, gcsfs, adlfs)
HEAD_CONCURRENCY = 64
CACHE_ENTRIES = 65536

_TOKEN_KEYS = ("ETag", "etag", "e_tag", "generation", "VersionId", "version_id")
_TIME_KEYS = ("mtime", "ctime", "LastModified", "last_modified", "modified", "updated", "created",
              "creation_time", "last_modified_time")


@dataclass(frozen=True)
class Head:
    """What the first bytes of a stored object say (no secret)."""

    stored_size: int
    encrypted: bool
    header_size: int = 0
    plaintext_size: int | None = None  # None when the stored length is impossible
    data: bytes = b""  # the first stored bytes (header + body prefix when complete)
    #: what reading it raises: a broken header's error class, or FileNotFoundError (gone since listed)
    error: type[Exception] | None = None
    etag: str | None = None  # S3: the version readers pin their ranged reads to (see _pinning)

    @property
    def complete(self) -> bool:
        """Whether ``data`` holds the whole header and the body prefix."""
        return len(self.data) >= self.open_size

    @property
    def open_size(self) -> int:
        return min(self.header_size + BODY_PREFIX_SIZE, self.stored_size)

    @property
    def size(self) -> int:
        """The size to report: plaintext when known, else (not encrypted, or broken) the stored size."""
        if self.encrypted and self.plaintext_size is not None:
            return self.plaintext_size
        return self.stored_size

    @property
    def problem(self) -> str | None:
        """The error class name a read of this object raises, for listings (None when it looks sound)."""
        if not self.encrypted or self.error is FileNotFoundError:
            return None
        if self.error is not None:
            return self.error.__name__
        return "IntegrityError" if self.plaintext_size is None else None


def version_token(info: Mapping[str, Any]) -> Hashable | None:
    """A token that changes whenever the object at a path is replaced or rewritten, or None.

    Every identity field the target reports takes part: ETag / generation /
    version id, every time stamp (modification *and* change/creation time, so
    a rewrite that restores the mtime, as ``cp -p``, ``rsync -t`` or ``tar x``
    do, still changes the token: the inode change time cannot be set back),
    the inode and the size.  Without any tag or time stamp there is no token
    and the head is never cached.
    """
    tags = tuple((key, str(info[key])) for key in _TOKEN_KEYS if info.get(key))
    times = tuple((key, str(info[key])) for key in _TIME_KEYS if info.get(key))
    if not tags and not times:
        return None
    return (tags, times, info.get("ino"), info.get("size"))


def cacheable(target: Any) -> bool:
    """Whether heads of ``target`` may be cached.

    Not for memory filesystems: an in-place ``r+b`` rewrite there changes
    neither the size nor any time stamp the target reports, so no version
    token can see it (and fetching a head from memory costs nothing).
    """
    return not isinstance(target, MemoryFileSystem)


def parse_head(data: bytes, stored_size: int) -> tuple[Head, int | None]:
    """Parse the first bytes of an object; also return how many bytes a complete head needs."""
    if stored_size == 0:
        return Head(0, False), None
    try:
        hint = header_length_hint(data)
    except NotEncryptedError:
        return Head(stored_size, False, data=data[: len(MAGIC)]), None
    except EnvcryptError as exc:
        return Head(stored_size, True, data=data, error=type(exc)), None
    if hint is None:
        if len(data) >= stored_size:  # the object ends before its header does
            return Head(stored_size, True, data=data, error=MalformedHeaderError), None
        # the slot length field lies beyond what was fetched: fetch up to it
        context_length = int.from_bytes(data[12:16], "big")
        return Head(stored_size, True, data=data), 16 + context_length + 4 + PROBE_SIZE
    if hint > stored_size:  # cut off inside its header: what the core calls a malformed header
        return Head(stored_size, True, hint, None, data, error=MalformedHeaderError), None
    try:
        size: int | None = object_plaintext_size(hint, stored_size)
    except ValueError:
        size = None
    head = Head(stored_size, True, hint, size, data)
    want = min(hint + BODY_PREFIX_SIZE, stored_size)
    return head, (want if len(data) < want else None)


class HeadCache:
    """A bounded LRU of heads keyed by (filesystem token, path) and checked against a version token."""

    def __init__(self, entries: int = CACHE_ENTRIES) -> None:
        self._entries = entries
        self._data: OrderedDict[tuple[Hashable, str], tuple[Hashable, Head]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, fs_token: Hashable, path: str, token: Hashable | None) -> Head | None:
        if token is None:
            return None
        with self._lock:
            hit = self._data.get((fs_token, path))
            if hit is None or hit[0] != token:
                return None
            self._data.move_to_end((fs_token, path))
            return hit[1]

    def latest(self, fs_token: Hashable, path: str) -> Head | None:
        """The head last cached for ``path``, whatever version the object is now: only for a
        read that proves the version itself (S3 ``If-Match`` on its ETag, see ``_pinning``)."""
        with self._lock:
            hit = self._data.get((fs_token, path))
            if hit is None:
                return None
            self._data.move_to_end((fs_token, path))
            return hit[1]

    def put(self, fs_token: Hashable, path: str, token: Hashable | None, head: Head) -> None:
        if token is None:
            return
        with self._lock:
            self._data[(fs_token, path)] = (token, head)
            self._data.move_to_end((fs_token, path))
            while len(self._data) > self._entries:
                self._data.popitem(last=False)

    def forget(self, fs_token: Hashable, path: str) -> None:
        with self._lock:
            self._data.pop((fs_token, path), None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


HEADS = HeadCache()


def fs_token(target: Any) -> Hashable:
    try:
        return str(target._fs_token)
    except Exception:
        return id(target)


def cached(target: Any, info: Mapping[str, Any]) -> bool:
    """Whether the head of the file ``info`` describes is in the cache (or needs no fetch)."""
    if int(info.get("size") or 0) == 0:
        return True
    if not cacheable(target):
        return False
    head = HEADS.get(fs_token(target), info["name"], version_token(info))
    return head is not None and head.stored_size == int(info["size"])


def local_info(path: str) -> dict[str, Any] | None:
    """What ``LocalFileSystem.info`` says of a regular file (links followed) from one ``stat``,
    with the fields its version token uses; None when ``path`` is no regular file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return {"name": path, "size": st.st_size, "type": "file", "created": st.st_ctime, "mtime": st.st_mtime,
            "ino": st.st_ino}


def memory_head(target: MemoryFileSystem, path: str) -> Head | None:
    """The head of an object of a memory filesystem, read from its store without copying the
    body (None when ``path`` is not a file there)."""
    stored = target.store.get(path)
    if stored is None:
        return None
    view = stored.getbuffer()
    try:
        size, want = view.nbytes, min(view.nbytes, PROBE_SIZE)
        while True:
            head, more = parse_head(bytes(view[:want]), size)
            if more is None or more <= want or want >= size:
                return head
            want = min(more, size)
    finally:
        view.release()


def fetch_heads(target: Any, infos: Sequence[Mapping[str, Any]], *, use_cache: bool = True) -> list[Head]:
    """Heads of the files described by ``infos`` (target ``info``/``ls`` entries).

    Cached heads are reused; the rest are fetched with one ``cat_ranges`` call
    (concurrent on async targets), and the rare long header with a second one.
    """
    ftok = fs_token(target)
    use_cache = use_cache and cacheable(target)
    heads: list[Head | None] = [None] * len(infos)
    todo: list[int] = []
    for i, info in enumerate(infos):
        size = int(info.get("size") or 0)
        if size == 0:
            heads[i] = Head(0, False)
            continue
        cached = HEADS.get(ftok, info["name"], version_token(info)) if use_cache else None
        if cached is not None and cached.stored_size == size:
            heads[i] = cached
        else:
            todo.append(i)
    want = {i: min(int(infos[i]["size"]), PROBE_SIZE) for i in todo}
    while todo:
        paths = [infos[i]["name"] for i in todo]
        # async targets run the ranges concurrently, HEAD_CONCURRENCY at a time
        batch = {"batch_size": HEAD_CONCURRENCY} if getattr(target, "async_impl", False) else {}
        datas = target.cat_ranges(paths, [0] * len(todo), [want[i] for i in todo], on_error="return", **batch)
        again = []
        for i, data in zip(todo, datas, strict=False):
            stored = int(infos[i]["size"])
            if isinstance(data, FileNotFoundError):  # deleted since it was listed: report what was seen
                heads[i] = Head(stored, False, error=FileNotFoundError)
                continue
            if isinstance(data, BaseException):
                raise data
            head, more = parse_head(bytes(data), stored)
            pin = etag_of(target, infos[i])
            if pin is not None:
                head = replace(head, etag=pin)
            if more is not None and more > len(data) and want[i] < stored:
                want[i] = min(more, stored)
                again.append(i)
                continue
            heads[i] = head
            if use_cache:
                HEADS.put(ftok, infos[i]["name"], version_token(infos[i]), head)
        todo = again
    return [h if h is not None else Head(0, False) for h in heads]
