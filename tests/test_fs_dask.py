"""dask read_parquet / to_parquet through envcrypt::s3 on a distributed LocalCluster (2 worker processes)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.cloud

pd = pytest.importorskip("pandas")
dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")
boto3 = pytest.importorskip("boto3")


def test_dask_parquet_roundtrip_on_worker_processes(dask_client: Any, moto_server: str, _isolated_vault: Path) -> None:
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
    with distributed.get_task_stream(dask_client) as stream:
        back = dd.read_parquet(url, storage_options=so).compute()
    pd.testing.assert_frame_equal(back.sort_values("id").reset_index(drop=True), df, check_dtype=False)
    workers = set(dask_client.scheduler_info()["workers"])
    ran_on = {t["worker"] for t in stream.data}
    assert ran_on and ran_on <= workers  # the reads ran in the worker processes, not in this one
    some = dd.read_parquet(url, columns=["email"], storage_options=so).compute()
    assert sorted(some["email"]) == sorted(df["email"])

    # the pickled filesystem works in each worker process: one task pinned to each worker reads
    # every object's size and bytes there; the sizes are plaintext sizes
    import fsspec

    fs, root = fsspec.core.url_to_fs(url, **so)
    paths = sorted(fs.find(root))
    expected = {p: len(fs.cat_file(p)) for p in paths}
    assert all(expected[p] == fs.info(p)["size"] < fs.info(p)["stored_size"] for p in paths)
    futures = [dask_client.submit(_sizes_in_worker, fs, paths, workers=[w], pure=False, allow_other_workers=False)
               for w in sorted(workers)]
    results = dask_client.gather(futures)
    pids = dask_client.run(os.getpid)
    assert sorted(pid for pid, _ in results) == sorted(pids.values())
    assert os.getpid() not in {pid for pid, _ in results}
    for _, sizes in results:
        assert sizes == {p: (expected[p], expected[p]) for p in paths}


def _sizes_in_worker(fs: Any, paths: list[str]) -> tuple[int, dict[str, tuple[int, int]]]:
    """Runs in a worker: (its pid, {path: (reported size, decrypted length)})."""
    return os.getpid(), {p: (fs.info(p)["size"], len(fs.cat_file(p))) for p in paths}
