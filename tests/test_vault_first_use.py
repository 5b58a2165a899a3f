"""First use of a vault in a fresh process, from many threads at once.

The master key and the keys derived from it are published as one object, after every
check: no thread sees half of them (the old code published the AES key first, and a
concurrent thread tripped over ``assert self._audit_key is not None``).  Each child is a
fresh interpreter, so every run is a first use (and each round in it, a first use of a new
vault object); the threads start together on a barrier.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import envcrypt
from envcrypt.keys.vault import LocalVault

RUNS = 20
THREADS = 12
#: first uses per child: each round drops the resolver cache, so the next call opens a new vault object
ROUNDS = 30

_CHILD_USE = r"""
import os, sys, threading
sys.setswitchinterval(1e-6)
from concurrent.futures import ThreadPoolExecutor
import envcrypt
from envcrypt.keys.base import clear_resolver_cache

vault, blob_dir, threads, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
blobs = [open(os.path.join(blob_dir, name), "rb").read() for name in sorted(os.listdir(blob_dir))]
barrier = threading.Barrier(threads)

def work(i):
    barrier.wait()
    if i % 2:
        return envcrypt.decrypt(blobs[i % len(blobs)], vault=vault)
    return envcrypt.decrypt(envcrypt.encrypt(b"fresh %d" % i, "local:k", vault=vault), vault=vault)

with ThreadPoolExecutor(threads) as pool:
    for _ in range(rounds):
        clear_resolver_cache()  # the first round is the process's first use; later rounds, a new vault object's
        out = list(pool.map(work, range(threads)))
        if not all(out):
            sys.exit("empty plaintext")
"""

_CHILD_CREATE = r"""
import sys, threading
sys.setswitchinterval(1e-6)
from concurrent.futures import ThreadPoolExecutor
import envcrypt

threads = int(sys.argv[1])
barrier = threading.Barrier(threads)

def work(i):
    barrier.wait()
    return envcrypt.decrypt(envcrypt.encrypt(b"x%d" % i))  # local:default in a vault that does not exist yet

with ThreadPoolExecutor(threads) as pool:
    out = list(pool.map(work, range(threads)))
if out != [b"x%d" % i for i in range(threads)]:
    sys.exit("wrong plaintexts")
"""


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ENVCRYPT_VAULT_PASSPHRASE", "ENVCRYPT_KEY_URI")}
    env.update(extra)
    return env


def _run_all(commands: list[tuple[list[str], dict[str, str]]]) -> list[tuple[int, str]]:
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for cmd, env in commands]
    results = []
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        results.append((proc.returncode, err.decode(errors="replace")[-2000:]))
    return results


def test_many_threads_on_first_use_of_an_existing_vault(tmp_path: Path) -> None:
    vault_path = tmp_path / "vault"
    vault = LocalVault(vault_path)
    vault.create_key("k")
    blob_dir = tmp_path / "blobs"
    blob_dir.mkdir()
    for i in range(4):
        (blob_dir / f"{i}.envc").write_bytes(envcrypt.encrypt(b"blob %d" % i, "local:k", vault=str(vault_path)))
    env = _child_env(ENVCRYPT_KEY_URI="local:k")
    results = _run_all([([sys.executable, "-c", _CHILD_USE, str(vault_path), str(blob_dir), str(THREADS), str(ROUNDS)], env)] * RUNS)
    failures = [err for code, err in results if code != 0]
    assert not failures, f"{len(failures)}/{RUNS} children failed; first:\n{failures[0]}"
    assert vault.audit.verify().ok


def test_many_threads_create_a_new_vault_together(tmp_path: Path) -> None:
    commands = [([sys.executable, "-c", _CHILD_CREATE, str(THREADS)], _child_env(ENVCRYPT_VAULT=str(tmp_path / f"v{i}")))
                for i in range(RUNS // 2)]
    results = _run_all(commands)
    failures = [err for code, err in results if code != 0]
    assert not failures, f"{len(failures)}/{len(commands)} children failed; first:\n{failures[0]}"
    for i in range(RUNS // 2):
        vault = LocalVault(tmp_path / f"v{i}")
        assert vault.audit.verify().ok
        assert [k["name"] for k in vault.list_keys()] == ["default"]


def test_processes_create_one_vault_together(tmp_path: Path) -> None:
    """Several fresh processes (each with many threads) create the same vault at once."""
    env = _child_env(ENVCRYPT_VAULT=str(tmp_path / "shared"))
    results = _run_all([([sys.executable, "-c", _CHILD_CREATE, str(THREADS)], env)] * 4)
    failures = [err for code, err in results if code != 0]
    assert not failures, f"{len(failures)}/4 children failed; first:\n{failures[0]}"
    vault = LocalVault(tmp_path / "shared")
    assert vault.audit.verify().ok
    assert [e["op"] for e in vault.audit.entries()].count("vault-init") == 1


def test_other_threads_wait_until_the_vault_and_its_genesis_line_exist(tmp_path: Path) -> None:
    """The thread creating the vault holds its keys for its own genesis line; another thread of
    the process sharing the vault object waits until vault.json is published, so no line of
    its precedes ``vault-init`` in the audit log (as a process waits on .init.lock)."""
    import threading
    import time

    vault = LocalVault(tmp_path / "v")
    started, release = threading.Event(), threading.Event()

    def slow_creation(fields: object) -> None:  # runs before the genesis line is written
        started.set()
        release.wait(10)

    vault.store.init_hooks.insert(0, slow_creation)
    creator = threading.Thread(target=vault.create_key, args=("a",))
    creator.start()
    assert started.wait(10)
    other = threading.Thread(target=vault.create_key, args=("b",))
    other.start()
    time.sleep(0.3)  # time enough to create "b" and commit its line, were the half-made vault usable
    release.set()
    creator.join(10)
    other.join(10)
    ops = [entry["op"] for entry in vault.audit.entries()]
    assert ops[0] == "vault-init" and sorted(ops[1:3]) == ["create", "create"]
    assert vault.audit.verify().ok
