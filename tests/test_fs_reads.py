"""Issue 13, reads: each object opened once (read-side DEK cache, opened-object cache),
``cat_file`` / ``cat_ranges`` that fetch only the sealed chunks, the cache's bounds,
expiry and flush on a key state change, and the request counts on S3."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fsspec.implementations.memory import MemoryFileSystem

import envcrypt
from envcrypt.errors import IntegrityError, KeyDeletedError, KeyDisabledError, NotEncryptedError
from envcrypt.fs import EnvcryptFileSystem
from envcrypt.fs._heads import HEADS
from envcrypt.keys.base import clear_resolver_cache
from envcrypt.keys.cache import DekCache, default_cache
from envcrypt.keys.vault import LocalVault
from tests.latency_proxy import LatencyProxy
from tests.time_helpers import Clock

s3fs = pytest.importorskip("s3fs")

MiB = 1 << 20
DATA = os.urandom(3 * MiB + 12_345)


@pytest.fixture(autouse=True)
def _fresh_caches(_isolated_vault: Path) -> Iterator[None]:
    default_cache().clear()
    HEADS.clear()
    yield
    default_cache().clear()
    HEADS.clear()


def _memory_fs(**options: Any) -> EnvcryptFileSystem:
    return EnvcryptFileSystem(fs=MemoryFileSystem(global_store=False, skip_instance_cache=True),
                              skip_instance_cache=True, **options)


def _audited_unwraps() -> int:
    return sum(1 for e in LocalVault().audit.entries() if e["op"] == "unwrapKey" and e["outcome"] == "ok")


# ---------------------------------------------------------------- the read-side DEK cache


def test_reopening_an_object_asks_the_resolver_once_and_audits_once(tmp_path: Path, unwraps: list[str]) -> None:
    fs = EnvcryptFileSystem(target_protocol="file", skip_instance_cache=True)
    fs.pipe_file(f"{tmp_path}/a.bin", DATA)
    for _ in range(5):
        assert fs.cat_file(f"{tmp_path}/a.bin", 100, 200) == DATA[100:200]
        with fs.open(f"{tmp_path}/a.bin", "rb") as f:
            assert f.read(10) == DATA[:10]
    assert fs.cat_file(f"{tmp_path}/a.bin") == DATA
    assert len(unwraps) == 1  # on by default for local: keys
    assert _audited_unwraps() == 1  # one audit line per unwrap, not per open


def test_reads_served_from_the_cache_are_counted_in_the_audit_log(tmp_path: Path, unwraps: list[str]) -> None:
    fs = EnvcryptFileSystem(target_protocol="file", skip_instance_cache=True)
    fs.pipe_file(f"{tmp_path}/a.bin", DATA)
    for _ in range(10):
        assert fs.cat_file(f"{tmp_path}/a.bin", 100, 200) == DATA[100:200]
        assert fs.cat_file(f"{tmp_path}/a.bin") == DATA
    vault = LocalVault()
    vault.audit.flush()
    hits = sum(e.get("hits", 0) for e in vault.audit.entries() if e["op"] == "cache-hits")
    assert len(unwraps) == 1 and _audited_unwraps() == 1
    assert hits == 19  # every later read is a use of the cached DEK, counted (one summary line per commit)


def test_the_cache_serves_objects_sharing_slots_but_not_other_objects(unwraps: list[str]) -> None:
    fs = _memory_fs()
    for i in range(3):
        fs.pipe_file(f"/o{i}", DATA[: 1000 * (i + 1)])  # three objects, three DEKs
    for _ in range(2):
        for i in range(3):
            assert fs.cat_file(f"/o{i}") == DATA[: 1000 * (i + 1)]
    assert len(unwraps) == 3


@pytest.mark.parametrize("switch", ["env", "option"])
def test_one_switch_turns_the_read_cache_off(monkeypatch: pytest.MonkeyPatch, unwraps: list[str],
                                             switch: str) -> None:
    if switch == "env":
        monkeypatch.setenv("ENVCRYPT_DEK_CACHE", "0")
        fs = _memory_fs()
    else:
        fs = _memory_fs(resolver_options={"dek_cache": False})
    fs.pipe_file("/x", DATA[:5000])
    for _ in range(3):
        assert fs.cat_file("/x", 10, 20) == DATA[10:20]
    assert len(unwraps) == 3
    assert envcrypt.decrypt(envcrypt.encrypt(b"y"), dek_cache=False) == b"y"


@pytest.mark.parametrize("change, error", [
    (lambda v: v.disable_key("default"), KeyDisabledError),
    (lambda v: v.delete_key("default"), KeyDeletedError),
    (lambda v: (v.delete_key("default"), v.purge_key("default")), KeyDeletedError),
])
def test_a_key_state_change_in_this_process_stops_cached_reads_at_once(change: Any, error: type[Exception],
                                                                       unwraps: list[str]) -> None:
    fs = _memory_fs()
    fs.pipe_file("/x", DATA[:5000])
    assert fs.cat_file("/x", 0, 10) == DATA[:10]
    assert fs.cat_file("/x", 0, 10) == DATA[:10]
    assert len(unwraps) == 1  # the second read was served from the cache
    change(LocalVault())
    with pytest.raises(error):
        fs.cat_file("/x", 0, 10)
    with pytest.raises(error):
        fs.open("/x", "rb")
    with pytest.raises(error):
        envcrypt.decrypt(fs.target.cat_file("/x"))


def test_a_new_resolver_instance_does_not_inherit_cached_keys(unwraps: list[str]) -> None:
    fs = _memory_fs()
    fs.pipe_file("/x", DATA[:5000])
    fs.cat_file("/x", 0, 10)
    clear_resolver_cache()  # e.g. another vault configured through the environment
    fs.cat_file("/x", 0, 10)
    assert len(unwraps) == 2


def test_opened_objects_obey_age_uses_entries_and_bytes(unwraps: list[str]) -> None:
    clock = Clock()
    cache = DekCache(max_age=10, max_objects=4, clock=clock)
    fs = _memory_fs(resolver_options={"dek_cache": cache})
    fs.pipe_file("/x", DATA[:5000])
    for _ in range(4):  # the first open unwraps (and caches); uses 2..4 are hits
        fs.cat_file("/x", 0, 10)
    assert len(unwraps) == 1
    fs.cat_file("/x", 0, 10)  # a 5th use is past max_objects: opened again
    assert len(unwraps) == 2
    clock.now += 10  # max_age reached
    fs.cat_file("/x", 0, 10)
    assert len(unwraps) == 3
    clock.now += 9.9
    fs.cat_file("/x", 0, 10)
    assert len(unwraps) == 3

    small = DekCache(max_entries=2)
    fs2 = _memory_fs(resolver_options={"dek_cache": small})
    for i in range(3):
        fs2.pipe_file(f"/y{i}", DATA[:100])
        fs2.cat_file(f"/y{i}")
    assert len(small._decrypt) == 2  # least recently used out first (writes use the other table)
    tiny = DekCache(max_read_bytes=300)  # room for the DEK entry, not for the opened object's header too
    fs3 = _memory_fs(resolver_options={"dek_cache": tiny})
    fs3.pipe_file("/z", DATA[:100])
    before = len(unwraps)
    fs3.cat_file("/z")
    fs3.cat_file("/z")
    assert len(tiny._decrypt) == 1 and 0 < tiny._read_held <= 300
    assert len(unwraps) == before + 1


def test_read_cache_byte_bound_counts_what_entries_hold() -> None:
    cache = DekCache(max_read_bytes=1000)
    cache.put_decryption(("k", b"s" * 600), b"d" * 32, "local:k/1")
    cache.put_decryption(("k", b"t" * 600), b"d" * 32, "local:k/1")
    assert len(cache) == 1  # 2 x (600 + 1 + 32) > 1000: the older one went
    assert cache.take_decryption(("k", b"t" * 600)) == b"d" * 32
    cache.put_decryption(("k", b"u" * 2000), b"d" * 32, "local:k/1")  # larger than the bound: not kept
    assert cache.take_decryption(("k", b"u" * 2000)) is None
    assert cache.forget("local:k") == 1 and cache._read_held == 0


# ---------------------------------------------------------------- cat_file / cat_ranges


def test_cat_ranges_equal_slices_of_the_plaintext(tmp_path: Path) -> None:
    fs = EnvcryptFileSystem(target_protocol="file", skip_instance_cache=True, plaintext="allow")
    sizes = [0, 1, 16383, 16384, 16385, 100_000]
    blobs = {f"{tmp_path}/s{n}": os.urandom(n) for n in sizes}
    for path, data in blobs.items():
        fs.pipe_file(path, data)
    (tmp_path / "plain.txt").write_bytes(b"plain bytes")
    rng = random.Random(4)
    paths, starts, ends, want = [], [], [], []
    for _ in range(300):
        path = rng.choice(list(blobs))
        data = blobs[path]
        start = rng.choice([None, rng.randrange(-len(data) - 3, len(data) + 3)])
        end = rng.choice([None, rng.randrange(-len(data) - 3, len(data) + 20_000)])
        paths.append(path)
        starts.append(start)
        ends.append(end)
        want.append(data[slice(start, end)] if end is not None and end < 0 or start is None or start >= 0
                    else data[max(0, len(data) + start) : end])
    paths += [f"{tmp_path}/missing", f"{tmp_path}/plain.txt"]
    starts += [0, 2]
    ends += [10, 7]
    got = fs.cat_ranges(paths, starts, ends)
    for i, (g, w) in enumerate(zip(got[:-2], want, strict=True)):
        assert g == w, (paths[i], starts[i], ends[i])
    assert isinstance(got[-2], FileNotFoundError)
    assert got[-1] == b"ain b"
    with pytest.raises(FileNotFoundError):
        fs.cat_ranges(paths, starts, ends, on_error="raise")
    for path, data in blobs.items():
        assert fs.cat_file(path) == data
        assert fs.cat_file(path, -5) == data[-5:]


def test_cat_ranges_refuses_plaintext_unless_allowed(tmp_path: Path) -> None:
    fs = EnvcryptFileSystem(target_protocol="file", skip_instance_cache=True)
    (tmp_path / "plain.txt").write_bytes(b"plain bytes")
    with pytest.raises(NotEncryptedError):
        fs.cat_file(f"{tmp_path}/plain.txt", 0, 4)
    with pytest.raises(NotEncryptedError):
        fs.cat_file(f"{tmp_path}/plain.txt")
    assert isinstance(fs.cat_ranges([f"{tmp_path}/plain.txt"], [0], [4])[0], NotEncryptedError)


def test_a_range_reaching_the_end_authenticates_the_length(tmp_path: Path) -> None:
    fs = EnvcryptFileSystem(target_protocol="file", skip_instance_cache=True)
    path = tmp_path / "t.bin"
    fs.pipe_file(str(path), DATA[:100_000])
    stored = path.read_bytes()
    path.write_bytes(stored[: -(100_000 % 16384) - 16 - 100])  # cut inside the last full chunk: a plausible size
    HEADS.clear()
    for start, end in [(None, None), (50_000, None), (90_000, 200_000), (-10, None)]:
        with pytest.raises(IntegrityError):
            fs.cat_file(str(path), start, end)
    assert fs.cat_file(str(path), 0, 10) == DATA[:10]  # a range inside the body still authenticates


def test_cat_ranges_tampered_chunk_fails_only_its_ranges(tmp_path: Path) -> None:
    fs = EnvcryptFileSystem(target_protocol="file", skip_instance_cache=True)
    path = tmp_path / "t.bin"
    fs.pipe_file(str(path), DATA[:200_000])
    raw = bytearray(path.read_bytes())
    raw[-50_000] ^= 1
    path.write_bytes(bytes(raw))
    got = fs.cat_ranges([str(path)] * 2, [0, 150_000], [100, 150_010])  # the flipped byte is in chunk 9
    assert got[0] == DATA[:100] and isinstance(got[1], IntegrityError)


# ---------------------------------------------------------------- requests on S3


@pytest.fixture
def s3_proxy(moto_server: str) -> Iterator[tuple[LatencyProxy, str]]:
    import uuid

    import boto3

    bucket = f"r-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    proxy = LatencyProxy(moto_server, delay=0.0)
    proxy.start()
    try:
        yield proxy, bucket
    finally:
        proxy.stop()


@pytest.mark.cloud
def test_reopen_and_six_ranges_on_s3_cost_one_head_fetch_and_one_unwrap(
    s3_proxy: tuple[LatencyProxy, str], unwraps: list[str]
) -> None:
    proxy, bucket = s3_proxy
    target = s3fs.S3FileSystem(client_kwargs={"endpoint_url": proxy.url}, skip_instance_cache=True)
    fs = EnvcryptFileSystem(fs=target, skip_instance_cache=True)
    path = f"{bucket}/t.bin"
    fs.pipe_file(path, DATA)
    HEADS.clear()
    unwraps.clear()
    proxy.reset()
    starts = [0, 20_000, 40_000, 1 * MiB, 2 * MiB, len(DATA) - 100]
    ends = [s + 100 for s in starts]
    assert fs.cat_ranges([path] * 6, starts, ends) == [DATA[s:e] for s, e in zip(starts, ends, strict=True)]
    # one HEAD (size and version), one GET of the head, the six ranges' chunks in 4 GETs
    # (the first three are neighbours: one span)
    assert proxy.requests == {"HEAD": 1, "GET": 5}
    assert len(unwraps) == 1
    proxy.reset()
    assert fs.cat_file(path, 5000, 5100) == DATA[5000:5100]  # reopened: head and DEK cached
    assert proxy.requests == {"GET": 1}  # what plain s3fs's cat_file costs: one GET (If-Match on the ETag)
    with fs.open(path, "rb") as f:
        f.seek(3000)
        assert f.read(10) == DATA[3000:3010]
    assert proxy.requests == {"HEAD": 1, "GET": 2}  # what plain s3fs opens cost: HEAD + ranged GET
    assert len(unwraps) == 1
    proxy.reset()
    target.cat_file(path)
    plain = dict(proxy.requests)
    proxy.reset()
    assert fs.cat_file(path) == DATA  # a whole object: what plain s3fs costs (one GET, header included)
    assert proxy.requests == plain and plain["GET"] == 1


def test_a_key_disabled_by_another_process_stops_cached_reads_within_max_age(_isolated_vault: Path) -> None:
    """What SECURITY.md states: reads are not re-checked against the vault; another
    process's disable is seen once the cached DEK reaches ``max_age``."""
    import subprocess
    import sys

    clock = Clock()
    cache = DekCache(max_age=10, clock=clock)
    fs = _memory_fs(resolver_options={"dek_cache": cache})
    fs.pipe_file("/x", DATA[:5000])
    assert fs.cat_file("/x", 0, 10) == DATA[:10]
    env = {**os.environ, "ENVCRYPT_VAULT": str(_isolated_vault)}
    script = "from envcrypt.cli import main; raise SystemExit(main(['key', 'disable', 'default']))"
    subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True, timeout=60,
                   cwd=Path(__file__).resolve().parent.parent)
    clock.now += 9.9
    assert fs.cat_file("/x", 0, 10) == DATA[:10]  # still within max_age of the unwrap
    clock.now += 0.1
    with pytest.raises(KeyDisabledError):
        fs.cat_file("/x", 0, 10)


# ---------------------------------------------------------------- ranges within one chunk


@pytest.mark.parametrize("where", ["file", "memory"])
def test_cat_file_ranges_within_one_chunk_equal_slices_of_the_plaintext(tmp_path: Path, where: str) -> None:
    fs = (_memory_fs() if where == "memory" else EnvcryptFileSystem(target_protocol="file", skip_instance_cache=True))
    rng = random.Random(13)
    for size in [0, 1, 100, 16383, 16384, 16385, 3 * 16384 + 5000]:
        data = os.urandom(size)
        path = f"{tmp_path}/o{size}"
        fs.pipe_file(path, data)
        cases = [(0, 0), (5, 5), (0, 1), (size - 1, size), (None, 10), (-7, None), (-20, -3), (size, size + 9),
                 (16384, 16390), (16380, 16390), (2 * 16384 + 10, 2 * 16384 + 4000), (size - 50, -10)]
        cases += [(s, s + rng.randrange(1, 2048)) for s in (rng.randrange(max(size, 1)) for _ in range(30))]
        for start, end in cases:
            want = data[max(0, size + start) if start is not None and start < 0 else (start or 0):
                        (size + end if end < 0 else end) if end is not None else None]
            assert fs.cat_file(path, start, end) == want, (size, start, end)


def test_a_range_within_one_chunk_reads_only_that_sealed_chunk(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from envcrypt.format import SEALED_CHUNK_SIZE

    fs = EnvcryptFileSystem(target_protocol="file", skip_instance_cache=True)
    path = f"{tmp_path}/big.bin"
    fs.pipe_file(path, DATA)
    fs.cat_file(path, 0, 1)  # head cached, object opened
    reads: list[int] = []
    real = os.pread

    def spy(fd: int, n: int, offset: int) -> bytes:
        reads.append(n)
        return real(fd, n, offset)

    monkeypatch.setattr(os, "pread", spy)
    assert fs.cat_file(path, 2 * MiB + 100, 2 * MiB + 1124) == DATA[2 * MiB + 100 : 2 * MiB + 1124]
    assert reads == [SEALED_CHUNK_SIZE]


@pytest.mark.cloud
def test_cat_ranges_on_s3_with_a_cached_head_asks_no_head_and_pins_its_gets(
    s3_proxy: tuple[LatencyProxy, str], unwraps: list[str]
) -> None:
    proxy, bucket = s3_proxy
    target = s3fs.S3FileSystem(client_kwargs={"endpoint_url": proxy.url}, skip_instance_cache=True)
    fs = EnvcryptFileSystem(fs=target, skip_instance_cache=True)
    path = f"{bucket}/p.bin"
    fs.pipe_file(path, DATA)
    starts, ends = [0, 2 * MiB, len(DATA) - 100], [100, 2 * MiB + 100, len(DATA)]
    want = [DATA[s:e] for s, e in zip(starts, ends, strict=True)]
    assert fs.cat_ranges([path] * 3, starts, ends) == want  # the head is fetched and cached
    proxy.reset()
    etag = target.info(path)["ETag"]
    calls: list[tuple[str, Any]] = []
    real = target._call_s3

    async def spy(method: str, *args: Any, **kwargs: Any) -> Any:
        calls.append((method, kwargs.get("IfMatch")))
        return await real(method, *args, **kwargs)

    target._call_s3 = spy
    assert fs.cat_ranges([path] * 3, starts, ends) == want
    del target._call_s3
    # what plain s3fs's cat_ranges costs: the spans' GETs, each pinned to the cached head's ETag; no HEAD
    assert calls == [("get_object", etag)] * 3
    assert proxy.requests == {"HEAD": 1, "GET": 3}  # (the HEAD is the info() above)
    # replaced by another writer (this filesystem's caches know nothing of it): the pinned GETs
    # get 412, and every range is read again from a fresh head, all from the new version
    other = bytes(reversed(DATA))
    target.pipe_file(path, envcrypt.encrypt(other))  # straight to the store: no cache of this process hears of it
    proxy.reset()
    assert fs.cat_ranges([path] * 3, starts, ends) == [other[s:e] for s, e in zip(starts, ends, strict=True)]
    assert proxy.requests == {"GET": 3 + 1 + 3, "HEAD": 1}  # 412s, then the head and the spans again
    assert len(unwraps) == 2
