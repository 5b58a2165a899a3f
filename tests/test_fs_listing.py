"""Issue 13, cold listings: the heads of listed objects are fetched concurrently (at least
32 in flight on S3), with one ranged GET each; a warm listing (head cache) adds none.
Observed at a loopback proxy in front of the moto server that delays every request."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from envcrypt import encrypt
from envcrypt.fs import EnvcryptFileSystem
from envcrypt.fs._heads import HEADS
from tests.latency_proxy import LatencyProxy

boto3 = pytest.importorskip("boto3")

OBJECTS = 80


@pytest.fixture
def slow_s3(moto_server: str, _isolated_vault: object) -> Iterator[tuple[LatencyProxy, str]]:
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    bucket = f"l-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    for i in range(OBJECTS):
        client.put_object(Bucket=bucket, Key=f"many/{i:03d}.json", Body=encrypt(b'{"v": %d}' % i))
    proxy = LatencyProxy(moto_server, delay=0.05)
    proxy.start()
    HEADS.clear()
    try:
        yield proxy, bucket
    finally:
        proxy.stop()
        HEADS.clear()


@pytest.mark.cloud
def test_a_cold_listing_fetches_every_head_at_once_and_a_warm_one_none(slow_s3: tuple[LatencyProxy, str]) -> None:
    proxy, bucket = slow_s3
    fs = EnvcryptFileSystem(target_protocol="s3", target_options={"client_kwargs": {"endpoint_url": proxy.url},
                                                                   "skip_instance_cache": True})
    proxy.reset()
    entries = fs.ls(f"{bucket}/many", detail=True)
    assert [e["size"] for e in entries] == [len(b'{"v": %d}' % i) for i in range(OBJECTS)]
    assert proxy.requests == {"GET": 1 + OBJECTS}  # one LIST, one ranged GET per head
    assert proxy.max_in_flight >= 32  # 80 heads x 50 ms one after another would take 4 s
    proxy.reset()
    fs.target.invalidate_cache()
    assert fs.ls(f"{bucket}/many", detail=True) == entries
    assert proxy.requests == {"GET": 1}  # the LIST only: every head came from the head cache


@pytest.mark.cloud
def test_a_callers_own_pool_size_is_kept(moto_server: str) -> None:
    fs = EnvcryptFileSystem(target_protocol="s3", target_options={
        "client_kwargs": {"endpoint_url": moto_server}, "config_kwargs": {"max_pool_connections": 3},
        "skip_instance_cache": True})
    assert fs.target.config_kwargs["max_pool_connections"] == 3
    assert "config_kwargs" not in fs._options()["target_options"] or \
        fs._options()["target_options"]["config_kwargs"] == {"max_pool_connections": 3}


@pytest.mark.cloud
def test_cat_ranges_over_many_objects_opens_them_concurrently(slow_s3: tuple[LatencyProxy, str]) -> None:
    proxy, bucket = slow_s3
    fs = EnvcryptFileSystem(target_protocol="s3", target_options={"client_kwargs": {"endpoint_url": proxy.url},
                                                                   "skip_instance_cache": True})
    paths = [f"{bucket}/many/{i:03d}.json" for i in range(OBJECTS)]
    proxy.reset()
    assert fs.cat_ranges(paths, 1, 5) == [(b'{"v": %d}' % i)[1:5] for i in range(OBJECTS)]
    # per object: its info (HEAD), its head (GET), the chunk of the range (GET); all concurrent
    assert proxy.requests == {"HEAD": OBJECTS, "GET": 2 * OBJECTS}
    assert proxy.max_in_flight >= 32
