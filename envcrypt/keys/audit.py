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
Failures of any kind are recorded: an envcrypt error by its class name, any
other exception as ``error:<Type>``.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import hmac
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import AuditLogError, EnvcryptError
from .vault_store import VaultStore, check_private

__all__ = ["AuditLog", "AuditReport", "outcome_of"]

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


def _canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def outcome_of(exc: BaseException) -> str:
    """The ``outcome`` of a failed operation: the class name of an envcrypt error,
    ``error:<Type>`` for anything else."""
    name = type(exc).__name__
    return name if isinstance(exc, EnvcryptError) else f"error:{name}"


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

    def _genesis(self) -> None:
        self.record("vault-init", None, None, "ok", master=self.store.master_mode())

    @property
    def path(self) -> Any:
        return self.store.path / LOG_FILE

    def _mac(self, entry: dict[str, Any]) -> str:
        return hmac.new(self.store.audit_key(), _canonical(entry), hashlib.sha256).hexdigest()

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
        if head == (seq, prev):
            return AuditReport(True, count)
        if head == (seq - 1, older):  # a crash between the append and the head update
            return AuditReport(True, count)
        return AuditReport(False, count, "log does not end where the head says (lines removed at the end)")
