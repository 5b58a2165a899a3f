"""One process of the load test (run as ``python -m tests.faults.load_worker``; see test_load.py).

Process ``proc`` of ``procs`` owns the objects ``i`` with ``i % procs == proc``.  Its threads
write them under the process's own key, then the process rotates that key and rewraps them
(header-only); all the while every thread also reads random objects of every process (each
read must equal what its writer wrote: the content is derived from the object id) and lists
the prefix.  Prints one JSON line: operation counts, elapsed seconds and every error seen.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from typing import Any

import fsspec

from envcrypt.errors import ObjectChangedError
from envcrypt.fs import EnvcryptFileSystem
from envcrypt.fs.trees import rewrap_object
from envcrypt.keys.vault import LocalVault


def payload(i: int) -> bytes:
    rng = random.Random(i)
    return rng.randbytes(rng.randrange(200, 20_000))


def name(root: str, i: int) -> str:
    return f"{root}/d{i % 8}/o{i:05d}"


def main() -> None:
    url, root, proc, procs, threads, n = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
    options: dict[str, Any] = json.loads(sys.argv[7]) if len(sys.argv) > 7 else {}
    key = f"local:p{proc}"
    vault = LocalVault()
    vault.create_key(f"p{proc}")
    trusted = [f"local:p{p}" for p in range(procs)]

    def make_fs() -> EnvcryptFileSystem:
        fs, _ = fsspec.core.url_to_fs(url, envcrypt={"key_uri": key, "trusted_keys": trusted}, **options)
        assert isinstance(fs, EnvcryptFileSystem)
        return fs

    mine = [i for i in range(n) if i % procs == proc]
    counts = {"write": 0, "read": 0, "read_missing": 0, "read_changed": 0, "rewrap": 0, "list": 0}
    errors: list[str] = []
    lock = threading.Lock()

    def note(what: str) -> None:
        with lock:
            counts[what] += 1

    def read_some(fs: EnvcryptFileSystem, rng: random.Random) -> None:
        i = rng.randrange(n)
        try:
            got = fs.cat_file(name(root, i))
        except FileNotFoundError:
            note("read_missing")  # not written yet by its process
            return
        except ObjectChangedError:
            note("read_changed")  # replaced under the read (S3); a typed error, never mixed bytes
            return
        if got != payload(i):
            errors.append(f"read {i}: {len(got)} bytes differ from what was written")
        note("read")

    def listing(fs: EnvcryptFileSystem) -> None:
        fs.invalidate_cache()
        for entry in fs.find(root, detail=True).values():
            i = int(entry["name"].rsplit("o", 1)[1])
            if entry.get("error") or entry["size"] != len(payload(i)):
                errors.append(f"listed {entry['name']}: {entry.get('error')} size {entry['size']}")
        note("list")

    def phase(work: str, t: int) -> None:
        fs, rng = make_fs(), random.Random(proc * 100 + t)
        for k, i in enumerate(mine[t::threads]):
            try:
                if work == "write":
                    fs.pipe_file(name(root, i), payload(i))
                else:
                    rewrap_object(fs, name(root, i), [key])
                note(work)
                read_some(fs, rng)
                read_some(fs, rng)
                if k % 10 == 0:
                    listing(fs)
            except Exception as exc:  # every failure is reported and fails the test
                errors.append(f"{work} {i}: {type(exc).__name__}: {exc}")

    start = time.perf_counter()
    for work in ("write", "rewrap"):
        if work == "rewrap":
            vault.rotate_key(f"p{proc}")
        pool = [threading.Thread(target=phase, args=(work, t)) for t in range(threads)]
        for th in pool:
            th.start()
        for th in pool:
            th.join()
    elapsed = time.perf_counter() - start
    print(json.dumps({"counts": counts, "elapsed": elapsed, "errors": errors[:20]}), flush=True)


if __name__ == "__main__":
    main()
