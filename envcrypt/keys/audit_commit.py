"""Group commit of audit lines: many lines per lock, write and fsync, in a bounded window.

Durability promise (also in SECURITY.md):

* a line of an operation that changes the vault (create, import, rotate, enable,
  disable, delete, recover, purge, restore, backup, set-ops, secret-set ...), and the
  ``vault-init``/``vault-upgrade`` lines, is written and fsynced before the operation
  returns, together with every line queued before it;
* a line of a key use or a read (wrapKey, unwrapKey, encrypt, decrypt, sign, verify,
  identity, show, list, get-public-key, secret-get ...) is queued in the process and
  committed within :data:`WINDOW_SECONDS` by a daemon thread, at once when
  :data:`MAX_PENDING_LINES` are queued, before any read of the log in this process
  (``entries``/``tail``/``verify``), and at interpreter exit (``atexit``; no signal
  handler is installed) or, in a ``multiprocessing`` worker (which ends with
  ``os._exit``), by a multiprocessing finalizer.  A crash, a kill, or another
  ``os._exit`` loses at most the lines queued and not yet committed: at most
  MAX_PENDING_LINES lines, at most WINDOW_SECONDS old; :func:`flush_all` commits
  them on demand.

Each commit takes ``.audit.lock`` (flock: processes append in turn), continues the
chain from the last line on disk (its MAC checked, so the chain survives a crash
between a write and the head update), numbers and MACs the queued lines, writes them
in one ``write``, fsyncs, then rewrites ``audit.head``.  After a fork the child drops
the parent's queued lines (the parent commits them).

DEK-cache hits (envcrypt.keys.cache) are counted per exact key URI
(:func:`record_cache_hits`) and written as one ``cache-hits`` line per key version
(``hits``: the count since the last one) with each commit of the vault that last
wrapped or unwrapped under that URI in this process.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import AuditLogError
from .vault_files import canonical, check_private, flocked

__all__ = ["Committer", "committer_for", "flush_all", "record_cache_hits", "WINDOW_SECONDS", "MAX_PENDING_LINES",
           "GROUPED_OPS", "parse_head", "LOG_FILE", "HEAD_FILE", "LOCK_FILE", "GENESIS", "MAX_LINE_SIZE"]

LOG_FILE = "audit.log"
HEAD_FILE = "audit.head"
LOCK_FILE = ".audit.lock"
GENESIS = "0" * 64
MAX_LINE_SIZE = 64 * 1024
_HEAD = "{:020d} {}\n"  # seq and mac of the last line, fixed width
HEAD_SIZE = 20 + 1 + 64 + 1
#: a queued line is committed at most this long after it was queued (by the daemon thread)
WINDOW_SECONDS = 0.2
#: a process never holds more queued lines than this: the line that reaches it commits them
MAX_PENDING_LINES = 1024
#: operations whose lines are group-committed (uses and reads); every other line is
#: committed before its operation returns
GROUPED_OPS = frozenset({
    "wrapKey", "unwrapKey", "encrypt", "decrypt", "sign", "verify", "identity", "show", "list",
    "get-public-key", "secret-get", "secret-list", "secret-versions", "cache-hits",
})

MacFn = Callable[[dict[str, Any]], str]


def parse_head(raw: bytes) -> tuple[int, str] | None:
    if len(raw) != HEAD_SIZE:
        return None
    seq, _, mac = raw.decode("ascii", "replace").strip().partition(" ")
    if not seq.isdigit() or len(mac) != 64:
        return None
    return int(seq), mac


def _last_line(log_fd: int) -> dict[str, Any] | None:
    """The last complete line of the log, parsed (None if there is none or it is malformed)."""
    size = os.fstat(log_fd).st_size
    if size == 0:
        return None
    want = 4096
    while True:
        start = max(0, size - want)
        tail = os.pread(log_fd, size - start, start)
        body = tail[:-1] if tail.endswith(b"\n") else tail  # a torn last line is not a line
        cut = body.rfind(b"\n")
        if cut >= 0 or start == 0:
            line = body[cut + 1:]
            break
        if want > MAX_LINE_SIZE:
            return None
        want *= 4
    if not tail.endswith(b"\n"):
        return None
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def _chain_end(head_fd: int, log_fd: int, mac: MacFn) -> tuple[int, str]:
    """Where the next line continues the chain: the last line on disk when its MAC checks and
    it is not behind the head (a crash between a write and the head update), else the head."""
    head = parse_head(os.pread(head_fd, HEAD_SIZE, 0))
    last = _last_line(log_fd)
    if last is not None and isinstance(last.get("seq"), int) and isinstance(last.get("mac"), str):
        body = {k: v for k, v in last.items() if k != "mac"}
        if mac(body) == last["mac"] and (head is None or last["seq"] >= head[0]):
            return int(last["seq"]), str(last["mac"])
    return head if head is not None else (0, GENESIS)


def _append(vault: Path, entries: list[dict[str, Any]], mac: MacFn, mac_of: Callable[[bytes], str]) -> None:
    """Chain, write and fsync ``entries`` under the audit lock, then move the head."""
    check_private(vault, want_dir=True)
    with flocked(vault / LOCK_FILE):
        head_fd = os.open(vault / HEAD_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            log_fd = os.open(vault / LOG_FILE, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                seq, prev = _chain_end(head_fd, log_fd, mac)
                out = []
                for entry in entries:
                    seq += 1
                    entry["seq"], entry["prev"] = seq, prev
                    body = line_body(entry)
                    entry["mac"] = prev = mac_of(body)
                    # the MAC is over the canonical JSON of the line without it (what verify
                    # recomputes from the parsed line): "mac" goes last, serialised once
                    out.append(body[:-1] + b',"mac":"' + prev.encode() + b'"}\n')
                data = memoryview(b"".join(out))
                while data:
                    data = data[os.write(log_fd, data):]
                os.fsync(log_fd)
            finally:
                os.close(log_fd)
            # one small in-place write: the head never exists half-renamed
            os.pwrite(head_fd, _HEAD.format(seq, prev).encode(), 0)
        finally:
            os.close(head_fd)


class Committer:
    """The queued lines of one vault directory in this process (shared by every AuditLog
    of that directory, so that any of them sees, and flushes, the others' lines)."""

    def __init__(self, vault: Path) -> None:
        self.vault = vault
        self._lock = threading.Lock()  # the queue
        self._commit_lock = threading.Lock()  # commits in order, one at a time
        self._pending: list[dict[str, Any]] = []
        self._mac: MacFn | None = None  # held while lines are queued
        self._mac_of: Callable[[bytes], str] | None = None
        self._mac_ref: weakref.WeakMethod[MacFn] | None = None  # for hit summaries
        self._mac_of_ref: weakref.WeakMethod[Callable[[bytes], str]] | None = None
        self._hits: dict[str, int] = {}

    def add(self, entry: dict[str, Any], mac: MacFn, mac_of: Callable[[bytes], str], commit_now: bool) -> None:
        with self._lock:
            first = not self._pending
            self._pending.append(entry)
            self._mac, self._mac_of = mac, mac_of
            full = len(self._pending) >= MAX_PENDING_LINES
        if commit_now or full:
            self.flush()
        elif first:
            _flusher.wake()  # the thread commits this line, and those queued after it, in a window
            _finalize_in_multiprocessing_workers()

    def after_fork(self) -> None:
        self._lock, self._commit_lock = threading.Lock(), threading.Lock()
        self._pending, self._mac, self._mac_of, self._hits = [], None, None, {}

    def own(self, key_uri: str, mac: MacFn, mac_of: Callable[[bytes], str]) -> None:
        """This vault's log counts the cache hits of ``key_uri`` (it wrapped or unwrapped under it)."""
        if _owners.get(key_uri) is not self:
            self._mac_ref, self._mac_of_ref = weakref.WeakMethod(mac), weakref.WeakMethod(mac_of)
            _owners[key_uri] = self

    def count_hits(self, key_uri: str, count: int) -> None:
        with self._lock:
            first = not self._hits
            self._hits[key_uri] = self._hits.get(key_uri, 0) + count
        if first:
            _flusher.wake()

    @property
    def pending(self) -> bool:
        return bool(self._pending or self._hits)

    def _summaries(self) -> tuple[list[dict[str, Any]], MacFn | None, Callable[[bytes], str] | None]:
        hits, self._hits = self._hits, {}
        mac = self._mac_ref() if self._mac_ref is not None else None
        mac_of = self._mac_of_ref() if self._mac_of_ref is not None else None
        lines = []
        for uri, count in sorted(hits.items()):
            name, _, version = uri.partition(":")[2].partition("/")
            lines.append(new_entry("cache-hits", name, int(version) if version.isdigit() else None, "ok",
                                {"hits": count}))
        return lines, mac, mac_of

    def flush(self) -> None:
        """Commit every queued line (and the cache-hit summaries) now."""
        with self._commit_lock:
            with self._lock:
                batch, mac, mac_of = self._pending, self._mac, self._mac_of
                self._pending, self._mac, self._mac_of = [], None, None
                summaries, summary_mac, summary_mac_of = self._summaries()
            mac, mac_of = mac or summary_mac, mac_of or summary_mac_of
            if mac is not None:
                batch += summaries
            if not batch or mac is None or mac_of is None:
                return
            if not self.vault.is_dir():
                return  # the vault (and its log) is gone: nothing to append to
            try:
                _append(self.vault, batch, mac, mac_of)
            except BaseException:
                with self._lock:  # keep them for the next commit, in order
                    self._pending[:0] = [{k: v for k, v in e.items() if k not in ("seq", "prev", "mac")}
                                         for e in batch]
                    self._mac, self._mac_of = self._mac or mac, self._mac_of or mac_of
                raise


_committers: dict[str, Committer] = {}
_owners: dict[str, Committer] = {}
_registry_lock = threading.Lock()


def committer_for(vault: Path) -> Committer:
    key = os.path.realpath(vault)
    committer = _committers.get(key)
    if committer is None:
        with _registry_lock:
            committer = _committers.setdefault(key, Committer(Path(key)))
    return committer


def record_cache_hits(key_uri: str, count: int = 1) -> None:
    """Count ``count`` DEK-cache hits under ``key_uri`` (an exact ``local:NAME/V``): a
    ``cache-hits`` summary line goes to the vault that last used that key in this process,
    at its next commit (within WINDOW_SECONDS).  A URI no vault here used is ignored."""
    committer = _owners.get(key_uri)
    if committer is not None and count > 0:
        committer.count_hits(key_uri, count)


def flush_all() -> None:
    """Commit the queued lines of every vault in this process (also run at exit)."""
    for committer in list(_committers.values()):
        try:
            committer.flush()
        except Exception as exc:  # at exit, or in the daemon thread: nobody else can report it
            print(f"envcrypt: audit lines of {committer.vault} could not be written: {exc}", file=sys.stderr)


_WHO: tuple[int, dict[str, Any]] | None = None


def _who() -> dict[str, Any]:
    """user, uid, host, pid (computed once per process)."""
    global _WHO
    pid = os.getpid()
    if _WHO is None or _WHO[0] != pid:
        import getpass
        import socket

        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "?"
        _WHO = (pid, {"user": user, "uid": os.getuid() if hasattr(os, "getuid") else None,
                      "host": socket.gethostname(), "pid": pid})
    return _WHO[1]  # shared by the lines of the process: lines are serialised, never changed


_NOW: tuple[int, str] = (-1, "")


def _utc_now() -> str:
    """The time of a line, ISO 8601 UTC to the second (formatted once per second)."""
    global _NOW
    second = int(time.time())
    if _NOW[0] != second:
        _NOW = (second, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)))
    return _NOW[1]


_RESERVED = ("seq", "prev", "mac")


def new_entry(op: str, key: str | None, version: int | None, outcome: str, extra: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "time": _utc_now(),
        "who": _who(), "op": op, "key": key, "version": version, "outcome": outcome,
    }
    if extra:
        for reserved in _RESERVED:
            if reserved in extra:
                raise AuditLogError(f"an audit line cannot set {reserved!r}")
        entry.update(extra)
    return entry


# ---------------------------------------------------------------- serialising a line

#: the fields of a plain line (a key use: no extra fields), in canonical (sorted) order
_PLAIN_SET = frozenset(("key", "op", "outcome", "prev", "seq", "time", "version", "who"))
#: canonical JSON of the parts of plain lines that repeat: (key, op, outcome) -> the line up
#: to ``"prev":``, (time, version, who JSON) -> the line from ``,"time":`` on; bounded, each a
#: pure function of its key
_PIECES: dict[tuple[Any, ...], bytes] = {}
_PIECES_SIZE = 4096
#: the canonical JSON of the process's ``who`` dict and a copy of what it encodes (a line whose
#: ``who`` compares equal reuses it)
_WHO_JSON: tuple[dict[str, Any] | None, bytes] = (None, b"")


def _piece(key: tuple[Any, ...], value: bytes) -> bytes:
    if len(_PIECES) >= _PIECES_SIZE:
        _PIECES.clear()
    _PIECES[key] = value
    return value


def line_body(entry: dict[str, Any]) -> bytes:
    """The canonical JSON of a line without ``mac`` (what its MAC covers): equal, byte for byte,
    to ``canonical(entry)`` (tests/test_keys_audit_commit.py proves it over many lines), built
    from memoized pieces for the plain lines of key uses (most lines), else by ``canonical``."""
    global _WHO_JSON
    if entry.keys() != _PLAIN_SET:
        return canonical(entry)
    key, op, outcome, prev = entry["key"], entry["op"], entry["outcome"], entry["prev"]
    seq, when, version, who = entry["seq"], entry["time"], entry["version"], entry["who"]
    if (type(key) is not str or type(op) is not str or type(outcome) is not str or type(prev) is not str
            or type(seq) is not int or type(when) is not str or (version is not None and type(version) is not int)
            or type(who) is not dict):
        return canonical(entry)
    if _WHO_JSON[0] != who:
        _WHO_JSON = (dict(who), canonical(who))
    who_json = _WHO_JSON[1]
    head = _PIECES.get((key, op, outcome))
    if head is None:
        head = _piece((key, op, outcome), b'{"key":%s,"op":%s,"outcome":%s,"prev":' % (
            canonical(key), canonical(op), canonical(outcome)))
    tail = _PIECES.get((when, version, who_json))
    if tail is None:
        tail = _piece((when, version, who_json), b',"time":%s,"version":%s,"who":%s}' % (
            canonical(when), b"null" if version is None else b"%d" % version, who_json))
    return b'%s%s,"seq":%d%s' % (head, canonical(prev), seq, tail)


_MP_FINALIZER_PID = 0


def _finalize_in_multiprocessing_workers() -> None:
    """A ``multiprocessing`` worker ends with ``os._exit`` (no atexit) after running the
    multiprocessing finalizers: register a commit there, once per process, when
    multiprocessing is in use (never imported here)."""
    global _MP_FINALIZER_PID
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is None or _MP_FINALIZER_PID == os.getpid():
        return
    _MP_FINALIZER_PID = os.getpid()
    mp_util.Finalize(None, flush_all, exitpriority=100)


class _Flusher:
    """One daemon thread per process: commits queued lines WINDOW_SECONDS after they appear."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def wake(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="envcrypt-audit-commit", daemon=True)
                    self._thread.start()
        self._event.set()

    def _run(self) -> None:
        while True:
            self._event.wait()
            time.sleep(WINDOW_SECONDS)
            self._event.clear()
            flush_all()

    def after_fork(self) -> None:
        self._event, self._thread, self._lock = threading.Event(), None, threading.Lock()


_flusher = _Flusher()


def _after_fork_in_child() -> None:
    """The parent commits its queued lines; the child's queues start empty, with fresh locks
    (the same Committer objects: AuditLogs hold them)."""
    global _registry_lock
    for committer in _committers.values():
        committer.after_fork()
    _registry_lock = threading.Lock()
    _flusher.after_fork()


atexit.register(flush_all)
with contextlib.suppress(AttributeError):  # no fork on this platform
    os.register_at_fork(after_in_child=_after_fork_in_child)
