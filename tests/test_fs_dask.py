"""dask read_parquet / to_parquet through envcrypt::s3 on a distributed LocalCluster (2 worker processes)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.cloud

pd = pytest.importorskip("pandas")
dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")
boto3 = pytest.importorskip("boto3")


@pytest.fixture(scope="module")
def client(moto_server: str) -> Iterator[Any]:
    """One cheap cluster for the module: 2 worker processes, 1 thread each, no dashboard."""
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit="1GiB"
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def test_dask_parquet_roundtrip_on_worker_processes(client: Any, moto_server: str, _isolated_vault: Path) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    bucket = f"dask-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    so = {
        # the vault travels to the workers by name only: its path, never a key
        "envcrypt": {"resolver_options": {"vault": str(_isolated_vault)}},
        "s3": {"client_kwargs": {"endpoint_url": moto_server}},
    }
    df = pd.DataFrame({"id": range(4000), "email": [f"u{i}@example.com" for i in range(4000)],
                       "part": [i % 3 for i in range(4000)]})
    url = f"envcrypt::s3://{bucket}/out"
    dd.from_pandas(df, npartitions=4).to_parquet(url, storage_options=so, write_index=False)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    data_keys = [k for k in keys if k.endswith(".parquet")]
    assert len(data_keys) == 4
    for key in keys:
        raw = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert raw[:8] == b"ENVCRYPT" and b"@example.com" not in raw
    back = dd.read_parquet(url, storage_options=so).compute()
    pd.testing.assert_frame_equal(back.sort_values("id").reset_index(drop=True), df, check_dtype=False)
    some = dd.read_parquet(url, columns=["email"], storage_options=so).compute()
    assert sorted(some["email"]) == sorted(df["email"])
    # the work ran on the two worker processes
    who = client.run(lambda: __import__("os").getpid())
    assert len(set(who.values())) == 2
