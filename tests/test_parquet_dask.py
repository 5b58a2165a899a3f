"""dask on a distributed LocalCluster (2 worker processes): workers build PME from the picklable config."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

pd = pytest.importorskip("pandas")
dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

import envcrypt.parquet as ep  # noqa: E402
from envcrypt.keys.vault import vault_for  # noqa: E402


def _pid_and_rows(path: str, cfg: dict[str, Any]) -> tuple[int, int]:
    return os.getpid(), ep.read_table(path, decryption=cfg).num_rows


def test_dask_writes_and_reads_pme_on_worker_processes(dask_client: Any, tmp_path: Path, _isolated_vault: Path) -> None:
    vault = vault_for(None)
    vault.create_key("footer")
    vault.create_key("pii")
    # the vault travels by name (its directory), never a key
    cfg = {"footer_key": "local:footer", "column_keys": {"local:pii": ["ssn", "email"]},
           "resolver_options": {"vault": str(_isolated_vault)}}
    df = pd.DataFrame({"id": range(4000), "ssn": [f"{i:09d}" for i in range(4000)],
                       "email": [f"u{i}@example.com" for i in range(4000)], "score": [i / 2 for i in range(4000)]})
    out = tmp_path / "out"
    workers = set(dask_client.scheduler_info()["workers"])
    with distributed.get_task_stream(dask_client) as stream:
        paths = ep.dask_to_parquet(dd.from_pandas(df, npartitions=4), out, encryption=cfg)
    assert len(paths) == 4 and {t["worker"] for t in stream.data} <= workers and stream.data
    for p in paths:
        assert b"@example.com" not in Path(p).read_bytes() and ep.inspect(p)["encrypted"]
    with distributed.get_task_stream(dask_client) as stream:
        back = ep.dask_read_parquet(out, decryption=cfg).compute()
    assert {t["worker"] for t in stream.data} <= workers and stream.data
    pd.testing.assert_frame_equal(back.sort_values("id").reset_index(drop=True), df, check_dtype=False)
    some = ep.dask_read_parquet(out, decryption=cfg, columns=["email"]).compute()
    assert sorted(some["email"]) == sorted(df["email"])
    # one read pinned to each worker process: each builds its own CryptoFactory from the dict
    futures = [dask_client.submit(_pid_and_rows, p, cfg, workers=[w], pure=False, allow_other_workers=False)
               for w, p in zip(sorted(workers), paths, strict=False)]
    results = dask_client.gather(futures)
    pids = dask_client.run(os.getpid)
    assert sorted(pid for pid, _ in results) == sorted(pids.values())
    assert os.getpid() not in {pid for pid, _ in results}
    assert all(rows == 1000 for _, rows in results)
