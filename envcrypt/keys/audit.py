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

Lines are group-committed (audit_commit.py: the durability promise, what a crash
can lose): a commit appends a batch under ``.audit.lock``, fsyncs, then updates the
head, so a crash between the two leaves the log at most one batch ahead of the head,
which ``verify`` accepts, and the next commit continues the chain from the last line
on disk.  Reading the log in a process (``entries``, ``tail``, ``verify``) commits
that process's queued lines first.

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
import hmac
import json
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import AuditLogError, EnvcryptError, VaultError
from .audit_commit import (
    GENESIS,
    GROUPED_OPS,
    HEAD_FILE,
    LOG_FILE,
    MAX_LINE_SIZE,
    MAX_PENDING_LINES,
    Committer,
    committer_for,
    flush_all,
    new_entry,
    parse_head,
    record_cache_hits,
)
from .vault_store import SECTIONS, VaultStore, check_private

__all__ = ["AuditLog", "AuditReport", "AuditScope", "outcome_of", "record_cache_hits", "flush_all"]

#: how far a crash can leave the head behind the log (one commit: the queue, its summaries, one more)
_HEAD_LAG = 4 * MAX_PENDING_LINES


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
            if not self.audit_ok:
                return
            if self.tags or self.extra:
                self.log.record(self.op, self.key, self.version, "ok", **self.tags, **self.extra)
            else:  # a key use: no keyword arguments to merge
                self.log.record(self.op, self.key, self.version, "ok")
        elif isinstance(exc, Exception):
            self.log.record(self.op, self.key, self.version, outcome_of(exc), **self.tags)


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
        self._committer: Committer | None = None  # of this vault directory: shared in the process
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
        """Queue one line (never pass key material in ``extra``): committed before this call
        returns unless ``op`` is a use or a read (GROUPED_OPS), whose lines are group-committed
        within a bounded window (audit_commit.py)."""
        mac, mac_of = self.store.audit_macs()  # before any lock: may derive the master key
        committer = self._committer
        if committer is None:
            committer = self._committer = committer_for(self.store.path)
        if outcome == "ok" and op in ("wrapKey", "unwrapKey") and version is not None:
            committer.own(f"local:{key}/{version}", mac, mac_of)  # DEK-cache hits under it are counted here
        committer.add(new_entry(op, key, version, outcome, extra), mac, mac_of, commit_now=op not in GROUPED_OPS)

    def flush(self) -> None:
        """Commit this vault's queued lines now."""
        committer_for(self.store.path).flush()

    def entries(self) -> Iterator[dict[str, Any]]:
        """The parsed lines, oldest first (unverified); this process's queued lines are committed first."""
        self.flush()  # also waits for a commit in flight (the daemon thread's)
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
        prev, seq, count = GENESIS, 0, 0
        recent: deque[tuple[int, str]] = deque([(0, GENESIS)], maxlen=_HEAD_LAG + 1)
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
                prev, seq = entry["mac"], entry["seq"]
                recent.append((seq, prev))
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
            head = parse_head(head_path.read_bytes())
        if head is None:
            return AuditReport(False, count, "audit head is missing or corrupt")
        if head not in recent:  # the last line, or (a crash between a commit and the head update) one of its batch
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
