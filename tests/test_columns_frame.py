"""envcrypt.columns on pandas frames (dtypes kept) and on dask, encrypting and decrypting in the
worker processes of a distributed LocalCluster."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import envcrypt.columns as ec  # noqa: E402
from envcrypt.errors import IntegrityError, UntrustedKeyError  # noqa: E402
from envcrypt.keys.vault import vault_for  # noqa: E402


@pytest.fixture(autouse=True)
def _keys(_isolated_vault: Path) -> None:
    vault_for(None).create_key("pii")


def frame(n: int = 12) -> Any:
    index = pd.Index([f"k{i}" for i in range(n)], name="key")
    return pd.DataFrame({
        "id": np.arange(n),
        "ssn": pd.Series([None if i % 5 == 1 else f"{i:03d}-05-1120" for i in range(n)], index=index),
        "obj": pd.Series([None if i % 4 == 2 else f"o{i}" for i in range(n)], index=index, dtype=object),
        "n": pd.array([None if i % 3 == 0 else 2**60 + i for i in range(n)], dtype="Int64"),
        "f": np.where(np.arange(n) % 6 == 5, np.nan, np.arange(n) / 3),
        "u8": np.arange(n, dtype=np.uint8),
        "ts": pd.date_range("2026-01-01", periods=n, freq="h", tz="Europe/Paris"),
        "cat": pd.Categorical([None if i == 3 else "ab"[i % 2] for i in range(n)]),
        "flag": [i % 3 == 0 for i in range(n)],
        "sa": pd.array([None if i == 2 else f"s{i}" for i in range(n)], dtype="string[pyarrow]"),
    }, index=index)


def test_a_frame_round_trips_with_its_dtypes_index_and_attrs() -> None:
    df = frame()
    df.attrs["owner"] = "tests"
    policy = {c: "local:pii" for c in df.columns if c != "id"}
    enc = ec.encrypt_frame(df, policy)
    for name in policy:
        assert enc[name].dtype == object
        assert all(v is None or isinstance(v, bytes) for v in enc[name])
        assert enc[name].isna().sum() == df[name].isna().sum()
    assert enc["id"].equals(df["id"]) and enc.index.equals(df.index)
    assert set(enc.attrs[ec.FRAME_ATTR]) == set(policy) and enc.attrs["owner"] == "tests"
    assert b"05-1120" not in b"".join(v for v in enc["ssn"] if v is not None)
    dec = ec.decrypt_frame(enc, policy)
    pd.testing.assert_frame_equal(dec, df)
    assert dec.attrs == {"owner": "tests"}
    with pytest.raises(UntrustedKeyError):  # default trust: the default key only
        ec.decrypt_frame(enc)


def test_frames_of_several_calls_concatenate_and_metadata_can_come_from_parquet(tmp_path: Path) -> None:
    token = ec.new_column_key("local:pii")
    df = frame(30)
    policy = {"ssn": token, "n": token}
    parts = [ec.encrypt_frame(df.iloc[i : i + 10], policy) for i in (0, 10, 20)]
    both = pd.concat(parts)
    both.attrs = parts[0].attrs  # the same metadata in every part (one column key)
    pd.testing.assert_frame_equal(ec.decrypt_frame(both, policy), df)
    lake = tmp_path / "lake"
    lake.mkdir()
    for i, part in enumerate(parts):
        part.to_parquet(lake / f"part-{i}.parquet")
    pq.write_metadata(ec.frame_schema(parts[0]), lake / "_envcrypt_columns")  # no secret in it
    read = pd.concat(pd.read_parquet(lake / f"part-{i}.parquet") for i in range(3))
    read.attrs = {}
    back = ec.decrypt_frame(read, policy, schema=pq.read_schema(lake / "_envcrypt_columns"))
    pd.testing.assert_frame_equal(back[["ssn", "n"]].reset_index(drop=True), df[["ssn", "n"]].reset_index(drop=True))


def test_a_tampered_frame_cell_fails_and_an_unconvertible_column_is_typed() -> None:
    df = frame()
    enc = ec.encrypt_frame(df, {"ssn": "local:pii"})
    cell = enc.at["k0", "ssn"]
    enc.at["k0", "ssn"] = cell[:30] + bytes([cell[30] ^ 1]) + cell[31:]
    with pytest.raises(IntegrityError):
        ec.decrypt_frame(enc, {"ssn": "local:pii"})
    mixed = pd.DataFrame({"m": pd.Series([1, "a", 2.5], dtype=object)})
    with pytest.raises(ec.UnsupportedTypeError, match="'m'"):
        ec.encrypt_frame(mixed, {"m": "local:pii"})


# ------------------------------------------------------------------ dask on worker processes

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")


@pytest.fixture
def client(dask_client: Any) -> Any:
    return dask_client  # the session's cluster (conftest)


def test_dask_encrypts_and_decrypts_in_both_worker_processes(client: Any, _isolated_vault: Path) -> None:
    df = pd.DataFrame({"id": np.arange(4000), "ssn": [f"{i:09d}" for i in range(4000)],
                       "n": pd.array(np.arange(4000) * 7, dtype="Int32"), "score": np.arange(4000) / 2})
    ddf = dd.from_pandas(df, npartitions=4)
    policy = {"columns": {"ssn": "local:pii", "n": "local:pii"},
              "resolver_options": {"vault": str(_isolated_vault)}}  # the vault by name, never a key
    workers = set(client.scheduler_info()["workers"])
    with distributed.get_task_stream(client) as stream:
        enc = ec.dask_encrypt(ddf, policy).persist()
        distributed.wait(enc)
    assert {t["worker"] for t in stream.data} == workers  # both worker processes encrypted
    cells = enc.compute()
    assert cells["ssn"].map(len).min() == 9 + 44 and cells["score"].equals(df["score"])
    assert len({c[:16] for c in cells["ssn"]}) == 4  # one batch (salt) per partition, one column key
    with distributed.get_task_stream(client) as stream:
        back = ec.dask_decrypt(enc, policy).compute()
    assert {t["worker"] for t in stream.data} == workers
    pd.testing.assert_frame_equal(back, ddf.compute())
    # a decrypt pinned to each worker process (the metadata and policy are plain data)
    parts = enc.to_delayed()
    futures = [client.compute(p, workers=[w]) for w, p in zip(sorted(workers), parts[:2], strict=True)]
    frames = client.gather(futures)
    pids = client.run(os.getpid)
    got = client.gather([client.submit(_pid_and_decrypt, f, policy, workers=[w], pure=False,
                                       allow_other_workers=False)
                         for w, f in zip(sorted(workers), frames, strict=True)])
    assert sorted(pid for pid, _ in got) == sorted(pids.values()) and os.getpid() not in {p for p, _ in got}
    assert [rows for _, rows in got] == [1000, 1000]


def _pid_and_decrypt(part: Any, policy: dict[str, Any]) -> tuple[int, int]:
    return os.getpid(), len(ec.decrypt_frame(part, policy))
