"""The vault audit log: one JSON line per operation, hash-chained.

Each line holds ``seq``, ``time`` (UTC, ISO 8601), ``who`` (user, uid, host,
pid), ``op``, ``key`` (a key or secret name, never material), ``version``,
``outcome`` (``"ok"`` or the error class name) and ``prev``, the ``mac`` of the
previous line (64 zeros for the first); ``mac`` is HMAC-SHA256 over the
canonical JSON of the line without ``mac``, under a key derived from the vault
master key, so the chain cannot be recomputed without the vault.  ``audit.head``
holds the ``seq`` and ``mac`` of the last line (fixed width, rewritten in place),
so lines deleted at the end are detected too (unless the head is also set back
to an older line: an attacker with write access to the vault directory can
always truncate; keep a copy of the head elsewhere to pin it).

A line is appended under ``.audit.lock`` before the head is updated, so a crash
between the two leaves the log at most one line ahead of the head, which
``verify`` accepts.

The chain is anchored at vault creation: creating a vault writes a first
``vault-init`` line, so an initialised vault whose log and head are both gone
verifies as broken ("audit log is missing"), never as an empty, intact log.
The genesis line records the master mode and the vault.json format; upgrading
a vault made by an earlier release appends a ``vault-upgrade`` line.  The vault
checks the genesis line (and, for a vault.json without a mac, looks for a
format-2 genesis or upgrade line) before it uses a master key: see vault_store.py.

Lines of operations that write a record (``create``, ``rotate``, ``disable``,
``purge``, ``restore``, ``secret-set`` ...) carry the record's ``generation``;
``verify`` also checks that the vault index (index.json) is not older than the
log: a key record rolled back together with the index is reported.

Failures of any kind are recorded: an envcrypt error by its class name, any
other exception as ``error:<Type>``.
"""

from __future__ import annotations

import contextlib
import getpass
import hmac
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import AuditLogError, EnvcryptError, VaultError
from .vault_store import SECTIONS, VaultStore, canonical, check_private

__all__ = ["AuditLog", "AuditReport", "AuditScope", "outcome_of"]

LOG_FILE = "audit.log"
HEAD_FILE = "audit.head"
LOCK_FILE = ".audit.lock"
GENESIS = "0" * 64
MAX_LINE_SIZE = 64 * 1024
_HEAD = "{:020d} {}\n"  # seq and mac of the last line, fixed width
HEAD_SIZE = 20 + 1 + 64 + 1


def _parse_head(raw: bytes) -> tuple[int, str] | None:
    if len(raw) != HEAD_SIZE:
        return None
    seq, _, mac = raw.decode("ascii", "replace").strip().partition(" ")
    if not seq.isdigit() or len(mac) != 64:
        return None
    return int(seq), mac


_canonical = canonical


def outcome_of(exc: BaseException) -> str:
    """The ``outcome`` of a failed operation: the class name of an envcrypt error,
    ``error:<Type>`` for anything else."""
    name = type(exc).__name__
    return name if isinstance(exc, EnvcryptError) else f"error:{name}"


def shown(ref: Any) -> str:
    """An invalid key reference as the audit log shows it (bounded, printable)."""
    return repr(ref)[:128]


class AuditScope:
    """One audited operation, written once for every vault operation (as Tink's
    ``use_tink_errors`` writes its error boundary once): parse the reference, run the
    body, and audit ``ok`` (with ``extra``, which the body may fill) or the failure, of
    any exception type (with ``tags`` either way).  A reference that does not parse is
    audited as shown by :func:`shown`.  The body may set ``key`` and ``version`` (e.g. to
    the version it found)."""

    __slots__ = ("log", "op", "key", "version", "extra", "tags", "audit_ok", "_ref", "_parse")

    def __init__(self, log: AuditLog, op: str, ref: Any, parse: Callable[[Any], tuple[str, int | None]] | None,
                 version: int | None, tags: dict[str, Any], audit_ok: bool = True) -> None:
        self.log, self.op, self.version, self.tags, self.audit_ok = log, op, version, tags, audit_ok
        self.key: str | None = ref
        self.extra: dict[str, Any] = {}
        self._ref, self._parse = ref, parse

    def __enter__(self) -> AuditScope:
        if self._parse is not None and self._ref is not None:
            try:
                self.key, version = self._parse(self._ref)
            except Exception as exc:
                self.log.record(self.op, shown(self._ref), self.version, outcome_of(exc), **self.tags)
                raise
            self.version = self.version if version is None else version
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            if self.audit_ok:
                self.log.record(self.op, self.key, self.version, "ok", **self.tags, **self.extra)
        elif isinstance(exc, Exception):
            self.log.record(self.op, self.key, self.version, outcome_of(exc), **self.tags)


def _who() -> dict[str, Any]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return {"user": user, "uid": os.getuid() if hasattr(os, "getuid") else None,
            "host": socket.gethostname(), "pid": os.getpid()}


@dataclass(frozen=True)
class AuditReport:
    ok: bool
    entries: int
    problem: str | None = None
    line: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "problem": self.problem, "line": self.line}


class AuditLog:
    """Append to and verify a vault's audit log."""

    def __init__(self, store: VaultStore) -> None:
        self.store = store
        store.init_hooks.append(self._genesis)
        store.upgrade_hooks.append(self._upgraded)

    def _genesis(self, fields: dict[str, Any]) -> None:
        self.record("vault-init", None, None, "ok", **fields)

    def _upgraded(self, fields: dict[str, Any]) -> None:
        self.record("vault-upgrade", None, None, "ok", **fields)

    @property
    def path(self) -> Any:
        return self.store.path / LOG_FILE

    def _mac(self, entry: dict[str, Any]) -> str:
        return self.store.audit_mac(entry)

    def scope(self, op: str, ref: Any = None, *, parse: Callable[[Any], tuple[str, int | None]] | None = None,
              version: int | None = None, audit_ok: bool = True, **tags: Any) -> AuditScope:
        """``with log.scope(op, ref, parse=...) as line:`` audits the block (:class:`AuditScope`);
        ``audit_ok=False`` audits a failure only (the block leads to audited operations)."""
        return AuditScope(self, op, ref, parse, version, tags, audit_ok)

    def record(self, op: str, key: str | None, version: int | None, outcome: str, **extra: Any) -> None:
        """Append one line (never pass key material in ``extra``)."""
        self.store.audit_key()  # before the lock: may derive the master key
        with self.store.locked(LOCK_FILE):
            head_fd = os.open(self.store.path / HEAD_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                seq, prev = self._last(head_fd)
                entry: dict[str, Any] = {
                    "seq": seq + 1,
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "who": _who(), "op": op, "key": key, "version": version, "outcome": outcome,
                    "prev": prev,
                }
                entry.update(extra)
                entry["mac"] = self._mac(entry)
                log_fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
                try:
                    os.write(log_fd, _canonical(entry) + b"\n")
                finally:
                    os.close(log_fd)
                # one small in-place write: the head never exists half-renamed
                os.pwrite(head_fd, _HEAD.format(entry["seq"], entry["mac"]).encode(), 0)
            finally:
                os.close(head_fd)

    def _last(self, head_fd: int) -> tuple[int, str]:
        head = _parse_head(os.pread(head_fd, HEAD_SIZE, 0))
        if head is not None:
            return head
        if self.path.exists():  # head lost: continue from the last line (verify still reports it)
            last = None
            for entry in self.entries():
                last = entry
            if last is not None:
                return int(last["seq"]), str(last["mac"])
        return 0, GENESIS

    def entries(self) -> Iterator[dict[str, Any]]:
        """The parsed lines, oldest first (unverified)."""
        if not self.path.exists():
            return
        check_private(self.path, want_dir=False)
        with open(self.path, "rb") as f:
            for raw in f:
                if len(raw) > MAX_LINE_SIZE:
                    raise AuditLogError("audit log line too long")
                try:
                    yield json.loads(raw)
                except json.JSONDecodeError:
                    raise AuditLogError("audit log line is not JSON") from None

    def tail(self, n: int = 20) -> list[dict[str, Any]]:
        from collections import deque

        return list(deque(self.entries(), maxlen=max(n, 0)))

    def verify(self) -> AuditReport:
        """Check the chain: every MAC, every ``prev`` link, consecutive ``seq``, and the head."""
        prev, older, seq, count = GENESIS, GENESIS, 0, 0
        generations: dict[tuple[str, str], int] = {}
        try:
            for count, entry in enumerate(self.entries(), start=1):
                if not isinstance(entry, dict) or "mac" not in entry:
                    return AuditReport(False, count - 1, "malformed line", count)
                body = {k: v for k, v in entry.items() if k != "mac"}
                if not hmac.compare_digest(str(entry["mac"]), self._mac(body)):
                    return AuditReport(False, count - 1, "line was edited (MAC mismatch)", count)
                if entry.get("prev") != prev:
                    return AuditReport(False, count - 1, "chain broken (a line was deleted or reordered)", count)
                if entry.get("seq") != seq + 1:
                    return AuditReport(False, count - 1, "sequence gap", count)
                older, prev, seq = prev, entry["mac"], entry["seq"]
                generation = entry.get("generation")
                if entry.get("outcome") == "ok" and isinstance(generation, int) and isinstance(entry.get("key"), str):
                    where = ("secrets" if entry.get("kind") == "secret" else "keys", entry["key"])
                    generations[where] = max(generation, generations.get(where, 0))
        except AuditLogError as exc:
            return AuditReport(False, count, str(exc), count + 1)
        head_path = self.store.path / HEAD_FILE
        if count == 0 and not head_path.exists():
            if self.store.initialised():  # the vault's creation wrote the first line
                return AuditReport(False, 0, "audit log is missing (the vault was created with one)")
            return AuditReport(True, 0)
        head = None
        with contextlib.suppress(FileNotFoundError):
            check_private(head_path, want_dir=False)
            head = _parse_head(head_path.read_bytes())
        if head is None:
            return AuditReport(False, count, "audit head is missing or corrupt")
        if head != (seq, prev) and head != (seq - 1, older):  # (a crash between the append and the head update)
            return AuditReport(False, count, "log does not end where the head says (lines removed at the end)")
        problem = self._index_problem(generations)
        if problem is not None:
            return AuditReport(False, count, problem)
        return AuditReport(True, count)

    def _index_problem(self, generations: dict[tuple[str, str], int]) -> str | None:
        """Why the vault index is older than the log says (a record and the index rolled back), or None."""
        if not generations:
            return None
        try:
            index = self.store.read_index()
        except VaultError as exc:
            return str(exc)
        if index is None:
            return "the vault index is missing but the audit log records generations"
        for (section, name), logged in sorted(generations.items()):
            entry = index[section].get(name)
            held = max(entry) if isinstance(entry, list) and entry else entry
            if not isinstance(held, int) or held < logged:
                what = f"{SECTIONS[section]} {name}"
                return (f"the vault index holds generation {held} for {what} but the audit log recorded "
                        f"generation {logged}: the record and the index were rolled back")
        return None
