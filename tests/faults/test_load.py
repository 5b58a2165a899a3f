"""Load: 2 processes x 8 threads writing, reading, rewrapping and listing objects at once, on
the moto server and on local disk; the vault under 8 processes creating, rotating and using
keys.  Zero corrupted or lost objects, every read equal to what was written, the vault's
audit chain verifying.  Prints operations/s (``-s`` shows them).

Default sizes keep the suite fast (S3: 64 objects; local: 200) with the same 2 x 8 workers;
the ``slow`` tests run 1,000 objects on each when ``ENVCRYPT_LOAD_FULL=1`` (minutes on moto),
and ``ENVCRYPT_LOAD_OBJECTS`` sets the default tests' size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import fsspec
import pytest

from envcrypt.fs import EnvcryptFileSystem
from envcrypt.keys.vault import LocalVault
from tests.faults.load_worker import name, payload

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[2]
PROCS, THREADS = 2, 8
N_ENV = os.environ.get("ENVCRYPT_LOAD_OBJECTS")
#: the 1,000-object runs are opt-in: CI runs every test, slow ones included
FULL = pytest.mark.skipif(not os.environ.get("ENVCRYPT_LOAD_FULL"), reason="set ENVCRYPT_LOAD_FULL=1")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run(url: str, root: str, n: int, options: dict[str, Any]) -> dict[str, Any]:
    procs = [subprocess.Popen(
        [sys.executable, "-m", "tests.faults.load_worker", url, root, str(p), str(PROCS), str(THREADS), str(n),
         json.dumps(options)], cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for p in range(PROCS)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=1700)
        assert proc.returncode == 0, err.decode()[-3000:]
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    errors = [e for r in results for e in r["errors"]]
    assert errors == []
    total = {k: sum(r["counts"][k] for r in results) for k in results[0]["counts"]}
    assert total["write"] == n and total["rewrap"] == n and total["list"] > 0
    assert total["read"] > n // 2
    elapsed = max(r["elapsed"] for r in results)
    ops = total["write"] + total["rewrap"] + total["read"] + total["read_missing"] + total["list"]
    print(f"\nload {url}: {n} objects, {PROCS} processes x {THREADS} threads: {ops} operations in "
          f"{elapsed:.1f} s = {ops / elapsed:.0f} ops/s ({total})")
    return total


def _verify(fs: EnvcryptFileSystem, root: str, n: int) -> None:
    fs.invalidate_cache()
    found = sorted(fs.find(root))
    assert found == sorted(name(root, i) for i in range(n))  # nothing lost, nothing extra (no temp)
    for i in range(n):
        assert fs.cat_file(name(root, i)) == payload(i)
    report = LocalVault().audit.verify()
    assert report.ok, report


def _s3(moto_server: str, n: int) -> None:
    import boto3

    bucket = f"load-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    options = {"s3": {"client_kwargs": {"endpoint_url": moto_server}}}
    _run(f"envcrypt::s3://{bucket}", bucket, n, options)
    fs, _ = fsspec.core.url_to_fs(f"envcrypt::s3://{bucket}",
                                  envcrypt={"trusted_keys": [f"local:p{p}" for p in range(PROCS)]}, **options)
    _verify(fs, bucket, n)


@pytest.mark.cloud
def test_load_on_the_moto_server(moto_server: str) -> None:
    pytest.importorskip("s3fs")
    _s3(moto_server, int(N_ENV or 64))


@pytest.mark.cloud
@pytest.mark.slow
@pytest.mark.timeout(1800)
@FULL
def test_load_on_the_moto_server_1000_objects(moto_server: str) -> None:
    pytest.importorskip("s3fs")
    _s3(moto_server, 1000)


def test_load_on_local_disk(tmp_path: Path) -> None:
    _local(tmp_path, int(N_ENV or 200))


@pytest.mark.slow
@pytest.mark.timeout(1800)
@FULL
def test_load_on_local_disk_1000_objects(tmp_path: Path) -> None:
    _local(tmp_path, 1000)


def _local(tmp_path: Path, n: int) -> None:
    root = str(tmp_path / "lake")
    _run(f"envcrypt::file://{root}", root, n, {"file": {"auto_mkdir": True}})
    fs = EnvcryptFileSystem(fs=fsspec.filesystem("file"), trusted_keys=[f"local:p{p}" for p in range(PROCS)],
                            skip_instance_cache=True)
    _verify(fs, root, n)


VAULT_WORKER = """
import sys, envcrypt
from envcrypt.keys.vault import LocalVault
me, rounds = int(sys.argv[1]), int(sys.argv[2])
vault = LocalVault()
vault.create_key(f"own{me}")
blobs = []
for r in range(rounds):
    vault.rotate_key(f"own{me}")
    vault.rotate_key("shared")
    blobs.append(envcrypt.encrypt(b"%d-%d" % (me, r), f"local:own{me}"))
    blobs.append(envcrypt.encrypt(b"shared %d-%d" % (me, r), "local:shared"))
for r in range(rounds):
    assert envcrypt.decrypt(blobs[2 * r], trusted_keys=[f"local:own{me}"]) == b"%d-%d" % (me, r)
    assert envcrypt.decrypt(blobs[2 * r + 1], trusted_keys=["local:shared"]) == b"shared %d-%d" % (me, r)
sys.stdout.buffer.write(b"".join(len(b).to_bytes(4, "big") + b for b in blobs))
"""


def test_the_vault_under_8_processes(tmp_path: Path) -> None:
    import envcrypt

    vault = LocalVault()
    vault.create_key("shared")
    rounds, workers = 4, 8
    procs = [subprocess.Popen([sys.executable, "-c", VAULT_WORKER, str(w), str(rounds)], cwd=REPO, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for w in range(workers)]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=280)
        assert proc.returncode == 0, err.decode()[-3000:]
        outputs.append(out)
    keys = {k["name"]: k for k in LocalVault().list_keys()}
    shown = LocalVault().show_key("shared")
    # no lost update: every rotation of the shared key by every process is a version
    assert len(shown["versions"]) == 1 + workers * rounds, shown
    for w in range(workers):
        assert f"own{w}" in keys and len(LocalVault().show_key(f"own{w}")["versions"]) == 1 + rounds
    for w, out in enumerate(outputs):  # every record still opens what it sealed
        pos, blobs = 0, []
        while pos < len(out):
            size = int.from_bytes(out[pos:pos + 4], "big")
            blobs.append(out[pos + 4:pos + 4 + size])
            pos += 4 + size
        assert len(blobs) == 2 * rounds
        for r in range(rounds):
            assert envcrypt.decrypt(blobs[2 * r], trusted_keys=[f"local:own{w}"]) == b"%d-%d" % (w, r)
    report = LocalVault().audit.verify()
    assert report.ok, report
