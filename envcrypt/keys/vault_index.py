"""The vault index (``index.json``): the generation of every record, and what a process
may keep of a record between operations.

Every record write raises the vault's generation and stores it in the record and in the
index (HMAC under the record key, label ``index``); a record whose generation is not the
one its index entry holds is an older copy put back (a rollback) and is refused.  While a
write is in progress the entry is ``[OLD, NEW]``.

:class:`RecordCache` keeps a parsed record together with the :data:`~.vault_files.Stamp`
of its file and of the index, taken before they were read.  It serves the record again
only while both stamps are unchanged (two ``lstat`` calls): any write by any process
renames new files in (new inode and ctime), and an old copy put back changes the ctime
too (only the kernel sets it), so a disable, delete or purge made elsewhere takes effect
on the next operation, and a replayed file is read, and refused, as before.  Files
changed within the last second are never kept (a rewrite in place within one timestamp
tick could keep the stamp).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import VaultError
from .vault_files import Stamp, is_racy, write_json
from .vault_master import MasterKeys, mac_matches

__all__ = ["INDEX_FILE", "INDEX_FORMAT", "SECTIONS", "parse_index", "new_index", "build_index",
           "write_index", "check_generation", "allowed_generations", "is_generation", "RecordCache"]

INDEX_FILE = "index.json"
INDEX_FORMAT = 1
#: record sections: directory -> MAC label prefix
SECTIONS = {"keys": "key", "secrets": "secret"}
#: records kept per vault object (a vault has a handful of keys; past this the cache restarts)
MAX_CACHED_RECORDS = 1024


def is_generation(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def allowed_generations(entry: Any) -> frozenset[int] | None:
    """An index entry: GEN, or [OLD, NEW] while a write is in progress; None when malformed."""
    if is_generation(entry):
        return frozenset({entry})
    if isinstance(entry, list) and 1 <= len(entry) <= 2 and all(is_generation(g) for g in entry):
        return frozenset(entry)
    return None


def parse_index(raw: bytes | None, keys: MasterKeys) -> dict[str, Any] | None:
    """The authenticated index from its bytes (None: no index yet); VaultError when it fails."""
    if raw is None:
        return None
    try:
        index = json.loads(raw)
    except ValueError:
        raise VaultError(f"corrupt vault file: {INDEX_FILE}") from None
    if not isinstance(index, dict) or set(index) != {"format", "generation", "mac", *SECTIONS} \
            or index["format"] != INDEX_FORMAT or not is_generation(index["generation"]) \
            or not all(isinstance(index[s], dict) for s in SECTIONS):
        raise VaultError(f"corrupt vault file: {INDEX_FILE}")
    if not mac_matches(index.get("mac"), keys.record_mac("index", index)):
        raise VaultError(f"the vault index ({INDEX_FILE}) failed authentication (edited or replaced)")
    return index


def new_index() -> dict[str, Any]:
    return {"format": INDEX_FORMAT, "generation": 0, **{s: {} for s in SECTIONS}}


def write_index(vault: Path, index: dict[str, Any], keys: MasterKeys) -> None:
    index["mac"] = keys.record_mac("index", index)
    write_json(vault / INDEX_FILE, index)


def build_index(vault: Path, keys: MasterKeys) -> None:
    """The index of a vault made before it existed: every record at generation 0 (the
    caller holds the lock and checked that no record carries a generation)."""
    index = new_index()
    for section in SECTIONS:
        directory = vault / section
        names = sorted(p.stem for p in directory.glob("*.json")) if directory.is_dir() else []
        index[section] = dict.fromkeys(names, 0)
    write_index(vault, index, keys)


def check_generation(section: str, name: str, label: str, record: dict[str, Any],
                     index: dict[str, Any] | None) -> None:
    """VaultError unless the record's generation is one its index entry allows."""
    generation = record.get("generation", 0)
    if not is_generation(generation):
        raise VaultError(f"corrupt vault record for {label} (field 'generation')")
    if index is None:
        if generation:
            raise VaultError(f"the vault index ({INDEX_FILE}) is missing: refusing {label}")
        return
    entry = index[section].get(name)
    if entry is None:
        raise VaultError(f"the vault record for {label} is not in the vault index (copied in or replayed)")
    allowed = allowed_generations(entry)
    if allowed is None:
        raise VaultError(f"corrupt vault file: {INDEX_FILE}")
    if generation not in allowed:
        raise VaultError(
            f"the vault record for {label} is generation {generation} but the vault index says "
            f"{max(allowed)}: an older copy was put back (rollback): refusing it"
        )


@dataclass(frozen=True)
class _Kept:
    stamps: tuple[Stamp | None, ...]
    parser: Callable[..., Any]
    value: Any


class RecordCache:
    """Parsed records, each kept with the stamps (index, record file, directories) it was
    read under; served only while every stamp is unchanged.  Thread-safe."""

    def __init__(self) -> None:
        self._kept: dict[tuple[str, str], _Kept] = {}
        self._lock = threading.Lock()

    def get(self, where: tuple[str, str], stamps: tuple[Stamp | None, ...], parser: Callable[..., Any]) -> Any | None:
        kept = self._kept.get(where)
        if kept is None or kept.stamps != stamps or kept.parser is not parser:
            return None
        return kept.value

    def put(self, where: tuple[str, str], stamps: tuple[Stamp | None, ...], parser: Callable[..., Any], value: Any) -> None:
        """Keep ``value`` (parsed from files whose stamps, taken before reading, are
        ``stamps``) unless a file changed too recently for its stamp to be trusted."""
        if any(stamp is not None and is_racy(stamp) for stamp in stamps):
            self.drop(where)
            return
        with self._lock:
            if len(self._kept) >= MAX_CACHED_RECORDS:
                self._kept.clear()
            self._kept[where] = _Kept(stamps, parser, value)

    def drop(self, where: tuple[str, str] | None = None) -> None:
        with self._lock:
            if where is None:
                self._kept.clear()
            else:
                self._kept.pop(where, None)
