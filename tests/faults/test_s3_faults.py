"""Faults on a real S3 endpoint (moto server): a server killed mid-upload, parts refused,
racing exclusive creates, objects replaced or rewrapped under running readers, and GET
bodies cut mid-way.  Nothing is lost, nothing half-written becomes visible, and every
failure is an exception (never short data returned as success)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import fsspec
import pytest

from envcrypt.errors import ObjectChangedError, ObjectExistsError
from envcrypt.fs import EnvcryptFileSystem
from envcrypt.fs.trees import rewrap
from envcrypt.keys.vault import LocalVault
from tests.fault_servers import FaultProxy, MotoProcess

boto3 = pytest.importorskip("boto3")
botocore_exceptions = pytest.importorskip("botocore.exceptions")
aiohttp = pytest.importorskip("aiohttp")
pytest.importorskip("s3fs")
pytestmark = [pytest.mark.cloud, pytest.mark.timeout(120)]

#: what a dead or cut connection surfaces as (after s3fs's and botocore's retries): a transport
#: error of the client stack, never data
TRANSPORT = (OSError, botocore_exceptions.BotoCoreError, aiohttp.ClientError)
PART = 5 * 1024 * 1024  # S3's smallest multipart part
#: few and short retries: a fault test fails in seconds, never hangs
QUICK = {"config_kwargs": {"retries": {"max_attempts": 2}, "connect_timeout": 2, "read_timeout": 10}}


def _pattern(tag: bytes, size: int) -> bytes:
    return (tag * (size // len(tag) + 1))[:size]


def _fs(endpoint: str, bucket: str, **options: Any) -> EnvcryptFileSystem:
    so = {"s3": {"client_kwargs": {"endpoint_url": endpoint}, "skip_instance_cache": True, **QUICK}}
    fs, _ = fsspec.core.url_to_fs(f"envcrypt::s3://{bucket}", envcrypt=options, **so)
    assert isinstance(fs, EnvcryptFileSystem)
    fs.target.retries = 3  # s3fs's own retry loop (a class attribute, not an option)
    return fs


def _client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def _uploads(endpoint: str, bucket: str) -> list[str]:
    return [u["Key"] for u in _client(endpoint).list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def _keys(endpoint: str, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in _client(endpoint).list_objects_v2(Bucket=bucket).get("Contents", []))


@pytest.fixture
def bucket(moto_server: str) -> str:
    name = f"f-{uuid.uuid4().hex[:12]}"
    _client(moto_server).create_bucket(Bucket=name)
    return name


@pytest.fixture
def proxy(moto_server: str) -> Iterator[FaultProxy]:
    p = FaultProxy(moto_server)
    yield p
    p.close()


# ---------------------------------------------------------------- a server killed mid-upload


@pytest.fixture
def killable(aws_env: None) -> Iterator[MotoProcess]:
    server = MotoProcess()
    server.start()
    yield server
    server.kill9()


def test_server_killed_in_the_middle_of_a_multipart_upload(killable: MotoProcess) -> None:
    bucket = "killed"
    _client(killable.url).create_bucket(Bucket=bucket)
    data = _pattern(b"multipart!", 3 * PART)
    fs = _fs(killable.url, bucket)
    path = f"{bucket}/big.bin"
    with pytest.raises(TRANSPORT):  # the transport error of a dead endpoint
        with fs.open(path, "wb", block_size=PART) as f:
            f.write(data[:PART + 1024])  # one part is uploaded, the upload is open
            killable.kill9()
            f.write(data[PART + 1024:])
    killable.start()  # a fresh server on the same port (moto keeps no state across a crash)
    client = _client(killable.url)
    client.create_bucket(Bucket=bucket)
    assert _keys(killable.url, bucket) == [] and _uploads(killable.url, bucket) == []
    fs = _fs(killable.url, bucket)
    with fs.open(path, "wb", block_size=PART) as f:  # the retry after the restart succeeds
        f.write(data)
    assert fs.cat_file(path) == data
    assert _uploads(killable.url, bucket) == []


def test_a_refused_part_aborts_the_upload_and_leaves_no_orphan(moto_server: str, bucket: str,
                                                               proxy: FaultProxy) -> None:
    """The server stays up (its state is kept), only part 2 never gets through: the writer
    fails, aborts its multipart upload on the server, and nothing is visible."""
    proxy.rule = lambda method, path, headers: "drop" if method == "PUT" and "partNumber=2" in path else None
    data = _pattern(b"parts", 3 * PART)
    fs = _fs(proxy.url, bucket)
    path = f"{bucket}/refused.bin"
    with pytest.raises(TRANSPORT):  # the transport error of a dropped connection
        with fs.open(path, "wb", block_size=PART) as f:
            f.write(data)
    assert any(m == "PUT" and "partNumber=1" in p for m, p, _ in proxy.log)  # an upload was under way
    assert any(m == "DELETE" and "uploadId=" in p for m, p, _ in proxy.log)  # and was aborted
    assert _keys(moto_server, bucket) == [] and _uploads(moto_server, bucket) == []
    proxy.rule = lambda method, path, headers: None
    with fs.open(path, "wb", block_size=PART) as f:
        f.write(data)
    assert _fs(moto_server, bucket).cat_file(path) == data
    assert _uploads(moto_server, bucket) == []


# ---------------------------------------------------------------- two writers, create-only


@pytest.mark.parametrize("size", [1000, 2 * PART + 7], ids=["put", "multipart"])
def test_two_exclusive_creates_of_one_key_one_wins(moto_server: str, bucket: str, size: int) -> None:
    fs = _fs(moto_server, bucket)
    path = f"{bucket}/once.bin"
    payloads = {name: _pattern(name.encode(), size) for name in ("alice", "bob")}
    ready, results = threading.Barrier(2), {}
    turn = {"alice": threading.Event(), "bob": threading.Event()}
    turn["alice"].set()

    def writer(name: str) -> None:
        f = fs.open(path, "xb", block_size=PART) if name == "alice" else \
            fs.open(path, "wb", block_size=PART, overwrite=False)
        f.write(payloads[name])  # parts of both uploads go up concurrently
        ready.wait(timeout=30)  # both opened and wrote before either publishes
        # the publishes are ordered: moto checks If-None-Match without a lock, so two
        # CompleteMultipartUpload calls in the same millisecond both pass there (S3 checks
        # atomically); what this proves is that the second publish carries the condition
        turn[name].wait(timeout=30)
        try:
            f.close()
            results[name] = "won"
        except ObjectExistsError as exc:
            results[name] = exc
        finally:
            turn["bob"].set()

    threads = [threading.Thread(target=writer, args=(n,)) for n in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    winners = [n for n, r in results.items() if r == "won"]
    losers = [r for r in results.values() if isinstance(r, ObjectExistsError)]
    assert len(winners) == 1 and len(losers) == 1
    assert isinstance(losers[0], FileExistsError)  # the fsspec convention, and typed
    fs.invalidate_cache()
    assert fs.cat_file(path) == payloads[winners[0]]
    assert _uploads(moto_server, bucket) == []  # the loser's multipart upload was aborted
    with pytest.raises(ObjectExistsError):  # once it exists, a create-only open fails at once
        fs.open(path, "xb")
    with pytest.raises(ObjectExistsError):
        fs.pipe_file(path, b"late", mode="create")


# ---------------------------------------------------------------- readers while objects change


def test_a_reader_is_pinned_to_the_version_it_opened(moto_server: str, bucket: str) -> None:
    fs = _fs(moto_server, bucket)
    path = f"{bucket}/moving.bin"
    old, new = _pattern(b"old object ", 3 * PART), _pattern(b"NEW OBJECT ", 3 * PART)
    fs.pipe_file(path, old)
    reader = fs.open(path, "rb", block_size=256 * 1024)
    first = reader.read(256 * 1024)
    assert first == old[:256 * 1024]
    _fs(moto_server, bucket).pipe_file(path, new)  # another writer replaces it
    with pytest.raises(ObjectChangedError):
        reader.read()  # the rest is never taken from the new object
    with pytest.raises(ObjectChangedError):  # sticky
        reader.read(10)
    assert _fs(moto_server, bucket).cat_file(path) == new  # a new open reads the new object whole


def test_rotation_and_prefix_rewrap_while_readers_run(moto_server: str, bucket: str) -> None:
    vault = LocalVault()
    vault.create_key("lake")
    fs = _fs(moto_server, bucket, key_uri="local:lake")
    objects = {f"{bucket}/p/o{i:02d}": _pattern(f"object {i} ".encode(), 40_000 + i * 997) for i in range(12)}
    for path, data in objects.items():
        fs.pipe_file(path, data)
    early = fs.open(f"{bucket}/p/o03", "rb", block_size=16 * 1024)  # opened before the rewrap
    assert early.read(16 * 1024) == objects[f"{bucket}/p/o03"][:16 * 1024]
    stop, errors, reads = threading.Event(), [], [0]

    def reader() -> None:
        mine = _fs(moto_server, bucket, key_uri="local:lake")
        while not stop.is_set():
            for path, data in objects.items():
                try:
                    mine.invalidate_cache()
                    got = mine.cat_file(path)
                except Exception as exc:  # every failure is recorded and fails the test
                    errors.append(repr(exc))
                    continue
                if got != data:
                    errors.append(f"{path}: wrong bytes")
                reads[0] += 1

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        vault.rotate_key("lake")
        so = {"s3": {"client_kwargs": {"endpoint_url": moto_server}, "skip_instance_cache": True}}
        report = rewrap(f"envcrypt::s3://{bucket}/p", "local:lake", recursive=True, storage_options=so,
                        progress=False)
        assert report.ok and len(report.done) == len(objects)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert errors == [] and reads[0] > 0
    assert early.read() == objects[f"{bucket}/p/o03"][16 * 1024:]  # the old reader followed the rewrap
    fresh = _fs(moto_server, bucket, key_uri="local:lake")
    assert all(fresh.cat_file(p) == d for p, d in objects.items())


# ---------------------------------------------------------------- GET bodies cut mid-way


def test_get_bodies_cut_mid_way_are_retried(moto_server: str, bucket: str, proxy: FaultProxy) -> None:
    data = _pattern(b"cut me ", 300_000)
    _fs(moto_server, bucket).pipe_file(f"{bucket}/c.bin", data)
    cuts = [2]

    def rule(method: str, path: str, headers: dict[str, str]) -> str | None:
        if method == "GET" and "c.bin" in path and "Range" in headers and cuts[0] > 0:
            cuts[0] -= 1
            return "cut"
        return None

    proxy.rule = rule
    fs = _fs(proxy.url, bucket)
    assert fs.cat_file(f"{bucket}/c.bin") == data
    assert fs.cat_file(f"{bucket}/c.bin", 100_000, 200_000) == data[100_000:200_000]
    assert sum(1 for *_, a in proxy.log if a == "cut") == 2  # bodies were cut, and retried


def test_get_bodies_always_cut_fail_and_never_return_short_data(moto_server: str, bucket: str,
                                                                proxy: FaultProxy) -> None:
    data = _pattern(b"never short ", 300_000)
    _fs(moto_server, bucket).pipe_file(f"{bucket}/s.bin", data)
    fs = _fs(proxy.url, bucket)
    f = fs.open(f"{bucket}/s.bin", "rb")  # the head is read before the faults begin
    proxy.rule = lambda method, path, headers: "cut" if method == "GET" and "Range" in headers else None
    with pytest.raises(TRANSPORT):  # the transport error, after s3fs's retries
        f.read()
    proxy.rule = lambda method, path, headers: None
    f.seek(0)
    assert f.read() == data  # a transport failure is not sticky: once the endpoint heals, all of it
    assert _fs(proxy.url, bucket).cat_file(f"{bucket}/s.bin") == data
