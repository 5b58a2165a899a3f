"""Group commit of the audit log (envcrypt/keys/audit_commit.py): what is on disk when,
what a crash loses, and that the chain stays whole across processes and crashes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import envcrypt
from envcrypt.keys import audit_commit
from envcrypt.keys.vault import LocalVault

ROOT = Path(__file__).parents[1]


def _on_disk(vault: LocalVault) -> list[dict[str, object]]:
    """The lines in the file now, without committing this process's queue."""
    path = vault.path / "audit.log"
    return [json.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def _ops(lines: list[dict[str, object]]) -> list[object]:
    return [line["op"] for line in lines]


@pytest.fixture
def vault(tmp_path: Path) -> LocalVault:
    vault = LocalVault(tmp_path / "vault")
    vault.create_key("k")
    return vault


def _child(vault: LocalVault, body: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    script = ("import os, sys\nimport envcrypt\nfrom envcrypt.keys.vault import LocalVault\n"
              f"v = LocalVault({str(vault.path)!r})\n{body}\n")
    return subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, check=True, capture_output=True)


def test_uses_are_queued_and_a_state_change_commits_them_first(vault: LocalVault) -> None:
    vault.wrap_key("k", os.urandom(32))
    vault.wrap_key("k", os.urandom(32))
    assert _ops(_on_disk(vault)) == ["vault-init", "create"]  # queued, not yet written
    vault.disable_key("k")  # committed before it returns, after the lines queued before it
    assert _ops(_on_disk(vault)) == ["vault-init", "create", "wrapKey", "wrapKey", "disable"]
    assert vault.audit.verify().ok


def test_queued_lines_reach_the_disk_within_the_window(vault: LocalVault) -> None:
    vault.wrap_key("k", os.urandom(32))
    deadline = time.monotonic() + 20 * audit_commit.WINDOW_SECONDS
    while "wrapKey" not in _ops(_on_disk(vault)):
        assert time.monotonic() < deadline, "the daemon thread did not commit the queued line"
        time.sleep(audit_commit.WINDOW_SECONDS / 4)


def test_a_full_queue_commits_at_once(vault: LocalVault, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_commit, "MAX_PENDING_LINES", 10)
    audit_commit.flush_all()
    time.sleep(2 * audit_commit.WINDOW_SECONDS)  # the daemon thread idle: our first line starts its window
    for _ in range(9):
        vault.wrap_key("k", os.urandom(32))
    assert _ops(_on_disk(vault)).count("wrapKey") == 0
    vault.wrap_key("k", os.urandom(32))  # the tenth fills the queue: committed before it returns
    assert _ops(_on_disk(vault)).count("wrapKey") == 10


def test_audit_lines_are_serialised_as_canonical_json() -> None:
    """The memoized serialisation of a line (what its MAC covers) equals canonical JSON."""
    from envcrypt.keys.vault_files import canonical

    entries = []
    for key in ("k", "bench", "é-ü", 'a"b\\c', "\u2028", "x" * 300):
        for version in (None, 1, 2**40):
            for outcome in ("ok", "KeyDisabledError", "error:ValueError"):
                entries.append(audit_commit.new_entry("unwrapKey", key, version, outcome, {}))
    entries.append(audit_commit.new_entry("create", "k", None, "ok", {"generation": 3}))
    entries.append(audit_commit.new_entry("cache-hits", "k", 1, "ok", {"hits": 12}))
    odd = audit_commit.new_entry("wrapKey", "k", 1, "ok", {})
    odd["who"] = {**odd["who"], "host": "h\u00e9"}  # another who: not the memoized one
    entries.append(odd)
    entries.append({**audit_commit.new_entry("wrapKey", "k", 1, "ok", {}), "version": True})
    for seq, entry in enumerate(entries, start=1):
        entry["seq"], entry["prev"] = seq, f"{seq:064x}"
        assert audit_commit.line_body(entry) == canonical(entry), entry


def test_a_clean_exit_commits_the_queue(vault: LocalVault) -> None:
    _child(vault, "for _ in range(50): v.wrap_key('k', os.urandom(32))")
    assert _ops(_on_disk(vault)).count("wrapKey") == 50
    assert vault.audit.verify().ok


def test_a_crash_loses_at_most_the_queue_and_the_chain_continues(vault: LocalVault) -> None:
    # os._exit skips atexit: what a kill or a crash does to the queued lines
    _child(vault, "v.rotate_key('k')\nfor _ in range(10): v.wrap_key('k', os.urandom(32))\nos._exit(0)")
    lines = _on_disk(vault)
    assert _ops(lines)[-1] == "rotate" and "wrapKey" not in _ops(lines)  # the state change survived
    vault.wrap_key("k", os.urandom(32))
    report = vault.audit.verify()
    assert report.ok and report.entries == len(lines) + 1


def _five_uses_on_disk(vault: LocalVault) -> list[dict[str, object]]:
    for _ in range(5):
        vault.wrap_key("k", os.urandom(32))
    vault.audit.flush()
    return _on_disk(vault)


def test_a_crash_between_a_commit_and_the_head_update(vault: LocalVault) -> None:
    lines = _five_uses_on_disk(vault)
    stale = lines[-4]  # the head still names a line before the last batch
    (vault.path / "audit.head").write_bytes("{:020d} {}\n".format(stale["seq"], stale["mac"]).encode())
    os.chmod(vault.path / "audit.head", 0o600)
    assert vault.audit.verify().ok
    vault.disable_key("k")  # continues from the last line on disk, not from the head
    report = vault.audit.verify()
    assert report.ok and report.entries == len(lines) + 1


def test_lines_removed_at_the_end_are_still_detected(vault: LocalVault) -> None:
    _five_uses_on_disk(vault)
    raw = (vault.path / "audit.log").read_bytes().splitlines(keepends=True)
    (vault.path / "audit.log").write_bytes(b"".join(raw[:-2]))
    report = vault.audit.verify()
    assert not report.ok and "head" in (report.problem or "")


def test_a_forked_child_does_not_write_the_parents_queue(vault: LocalVault) -> None:
    vault.wrap_key("k", os.urandom(32))  # queued in the parent
    pid = os.fork()
    if pid == 0:  # the child: one line of its own, committed, then a hard exit
        try:
            vault.unwrap_key("k/1", vault.wrap_key("k", os.urandom(32))[1])
            audit_commit.flush_all()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    vault.audit.flush()
    counts = Counter(_ops(_on_disk(vault)))
    assert counts["wrapKey"] == 2 and counts["unwrapKey"] == 1
    assert vault.audit.verify().ok


def _use_in_worker(path: str) -> None:
    LocalVault(path).wrap_key("k", os.urandom(32))  # queued; the worker ends with os._exit


def test_a_multiprocessing_worker_commits_its_queue(vault: LocalVault) -> None:
    import multiprocessing

    worker = multiprocessing.get_context("fork").Process(target=_use_in_worker, args=(str(vault.path),))
    worker.start()
    worker.join(60)
    assert worker.exitcode == 0
    assert _ops(_on_disk(vault)).count("wrapKey") == 1


def test_eight_processes_at_once_lose_no_line(vault: LocalVault) -> None:
    """Each child encrypts and decrypts (more lines than one queue holds, so commits interleave
    across processes) and exits cleanly: every line is in the log and the chain verifies."""
    pairs = 200
    body = (f"for i in range({pairs}):\n"
            "    blob = envcrypt.encrypt(b'x%d' % i, 'local:k', vault=str(v.path))\n"
            "    assert envcrypt.decrypt(blob, trusted_keys='local:k', vault=str(v.path)) == b'x%d' % i\n")
    script = ("import os, sys\nimport envcrypt\nfrom envcrypt.keys.vault import LocalVault\n"
              f"v = LocalVault({str(vault.path)!r})\n{body}")
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stderr=subprocess.PIPE) for _ in range(8)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    report = vault.audit.verify()
    assert report.ok, report
    counts = Counter(_ops(_on_disk(vault)))
    assert counts["wrapKey"] == counts["unwrapKey"] == 8 * pairs
    assert len({line["who"]["pid"] for line in _on_disk(vault) if line["op"] == "wrapKey"}) == 8  # type: ignore[index]


def test_dek_cache_hits_are_summarised(vault: LocalVault) -> None:
    where = str(vault.path)
    blobs = [envcrypt.encrypt(b"x", "local:k", vault=where, dek_cache=True) for _ in range(5)]
    for blob in blobs:
        envcrypt.decrypt(blob, trusted_keys="local:k", vault=where, dek_cache=True)
    vault.audit.flush()
    lines = _on_disk(vault)
    counts = Counter(_ops(lines))
    assert counts["wrapKey"] == 1 and counts["unwrapKey"] == 1  # one DEK, wrapped and unwrapped once
    hits = sum(int(line["hits"]) for line in lines if line["op"] == "cache-hits")  # type: ignore[call-overload]
    assert hits == 4 + 4 and {line["key"] for line in lines if line["op"] == "cache-hits"} == {"k"}
    assert vault.audit.verify().ok
