"""Real clients through envcrypt:: as a user would try them: duckdb, h5py, xarray (netCDF), zarr v3, polars.

Local targets and S3 (a real moto server through s3fs).  Every test checks the
stored bytes are envcrypt objects and compares what the client reads back with
what was written (or with pandas).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest

from envcrypt.fs import EnvcryptFileSystem
from tests.fs_helpers import make_key

pd = pytest.importorskip("pandas")
duckdb = pytest.importorskip("duckdb")
boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs")


def _frame(n: int = 600, seed: int = 0) -> Any:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "id": np.arange(n, dtype="int64") + seed * n,
        "region": rng.choice(["eu", "us", "ap"], n),
        "amount": rng.integers(0, 10_000, n).astype("int64"),
    })


def _local_fs(**options: Any) -> EnvcryptFileSystem:
    return EnvcryptFileSystem(target_protocol="file", skip_instance_cache=True, **options)


def _s3_fs(s3: dict[str, Any], **options: Any) -> EnvcryptFileSystem:
    fs, _ = fsspec.core.url_to_fs(f"envcrypt::s3://{s3['bucket']}", envcrypt=options, **s3["options"])
    assert isinstance(fs, EnvcryptFileSystem)
    return fs


def _raw_s3(s3: dict[str, Any], key: str) -> bytes:
    return bytes(s3["client"].get_object(Bucket=s3["bucket"], Key=key)["Body"].read())


# ---------------------------------------------------------------------- duckdb


def _write_parts(fs: EnvcryptFileSystem, root: str) -> Any:
    frames = [_frame(seed=i) for i in range(3)]
    for i, frame in enumerate(frames):
        with fs.open(f"{root}/parquet/part-{i}.parquet", "wb") as f:
            frame.to_parquet(f, index=False)
        with fs.open(f"{root}/csv/part-{i}.csv", "wb") as f:
            frame.to_csv(f, index=False)
    return pd.concat(frames, ignore_index=True)


def _check_duckdb(fs: EnvcryptFileSystem, root: str, expected: Any) -> None:
    con = duckdb.connect()
    con.register_filesystem(fs.for_duckdb())
    url = f"envcrypt://{root}"
    want = expected.groupby("region")["amount"].sum().sort_index()
    for reader, ext in (("read_parquet", "parquet"), ("read_csv", "csv")):
        got = con.sql(f"SELECT region, sum(amount) AS s FROM {reader}('{url}/{ext}/*.{ext}') "
                      "GROUP BY region ORDER BY region").df()
        assert got["region"].tolist() == want.index.tolist(), reader
        assert got["s"].astype("int64").tolist() == want.tolist(), reader
    rows = con.sql(f"SELECT * FROM read_parquet('{url}/parquet/*.parquet') ORDER BY id").df()
    pd.testing.assert_frame_equal(rows.reset_index(drop=True), expected.sort_values("id").reset_index(drop=True),
                                  check_dtype=False)
    files = [r[0] for r in con.sql(f"SELECT file FROM glob('{url}/parquet/*.parquet')").fetchall()]
    assert sorted(files) == [f"{url}/parquet/part-{i}.parquet" for i in range(3)]
    # writing through the adapter, read back through the filesystem
    con.sql(f"COPY (SELECT region, count(*) AS n FROM read_parquet('{url}/parquet/*.parquet') GROUP BY region) "
            f"TO '{url}/out/counts.parquet' (FORMAT parquet)")
    with fs.open(f"{root}/out/counts.parquet", "rb") as f:
        counts = pd.read_parquet(f).set_index("region")["n"].sort_index()
    assert counts.tolist() == expected.groupby("region").size().sort_index().tolist()
    con.close()


def test_duckdb_reads_globs_and_aggregates_on_a_local_target(tmp_path: Path) -> None:
    fs = _local_fs()
    root = str(tmp_path / "lake")
    expected = _write_parts(fs, root)
    assert (tmp_path / "lake/parquet/part-0.parquet").read_bytes()[:8] == b"ENVCRYPT"
    _check_duckdb(fs, root, expected)
    # the filesystem's own URLs are untouched: fsspec.open of what it returns still works
    url = fs.unstrip_protocol(f"{root}/csv/part-0.csv")
    assert url.startswith("envcrypt::file://")
    with fsspec.open(url, "rb") as f:
        assert pd.read_csv(f)["id"].tolist() == list(range(600))


def test_duckdb_reads_only_what_a_trusted_key_wrote(tmp_path: Path) -> None:
    other = make_key("other")
    root = str(tmp_path / "lake")
    _local_fs(key_uri=other).pipe_file(f"{root}/x.csv", b"a,b\n1,2\n")
    con = duckdb.connect()
    con.register_filesystem(_local_fs().for_duckdb())  # trusts the default key only
    with pytest.raises(duckdb.Error, match="UntrustedKeyError|not written under|trusted"):
        con.sql(f"SELECT * FROM read_csv('envcrypt://{root}/x.csv')").fetchall()
    con = duckdb.connect()
    con.register_filesystem(_local_fs(trusted_keys=[other]).for_duckdb())
    assert con.sql(f"SELECT a, b FROM read_csv('envcrypt://{root}/x.csv')").fetchall() == [(1, 2)]


@pytest.mark.cloud
def test_duckdb_reads_globs_and_aggregates_on_s3(s3: dict[str, Any]) -> None:
    fs = _s3_fs(s3)
    root = f"{s3['bucket']}/lake"
    expected = _write_parts(fs, root)
    assert _raw_s3(s3, "lake/csv/part-1.csv")[:8] == b"ENVCRYPT"
    _check_duckdb(fs, root, expected)


# ---------------------------------------------------------------------- zarr v3


def _check_zarr(url: str, storage_options: dict[str, Any]) -> None:
    zarr = pytest.importorskip("zarr")
    data = np.arange(120 * 90, dtype="int32").reshape(120, 90)
    store = zarr.storage.FsspecStore.from_url(url, storage_options=storage_options, read_only=False)
    group = zarr.open_group(store, mode="w")
    array = group.create_array("temps/a", shape=data.shape, chunks=(50, 40), dtype="int32")
    array[:] = data
    array[7:9, 3:5] = -1
    data[7:9, 3:5] = -1
    back = zarr.open_group(zarr.storage.FsspecStore.from_url(url, storage_options=storage_options,
                                                             read_only=True), mode="r")
    np.testing.assert_array_equal(back["temps/a"][:], data)
    np.testing.assert_array_equal(back["temps/a"][100:, 80:], data[100:, 80:])


def test_zarr_v3_on_a_local_target_creates_its_directories(tmp_path: Path) -> None:
    _check_zarr(f"envcrypt::file://{tmp_path}/cube.zarr", {})
    stored = sorted(p for p in (tmp_path / "cube.zarr").rglob("*") if p.is_file())
    assert len(stored) >= 1 + 1 + 1 + 9  # group, subgroup, array metadata, 3x3 chunks
    assert all(p.read_bytes()[:8] == b"ENVCRYPT" for p in stored)


def test_local_writes_make_parent_directories_unless_told_not_to(tmp_path: Path) -> None:
    fs = _local_fs()
    fs.pipe_file(f"{tmp_path}/a/b/c.bin", b"x")
    assert fs.cat_file(f"{tmp_path}/a/b/c.bin") == b"x"
    strict = _local_fs(auto_mkdir=False)
    with pytest.raises(FileNotFoundError):
        strict.pipe_file(f"{tmp_path}/d/e.bin", b"x")
    assert not (tmp_path / "d").exists()
    assert pickle_roundtrip(strict).auto_mkdir is False


def pickle_roundtrip(obj: Any) -> Any:
    import pickle

    return pickle.loads(pickle.dumps(obj))


@pytest.mark.cloud
def test_zarr_v3_on_s3(s3: dict[str, Any]) -> None:
    _check_zarr(f"envcrypt::s3://{s3['bucket']}/cube.zarr", s3["options"])
    assert _raw_s3(s3, "cube.zarr/zarr.json")[:8] == b"ENVCRYPT"
    assert _raw_s3(s3, "cube.zarr/temps/a/c/0/0")[:8] == b"ENVCRYPT"


# ---------------------------------------------------------------------- seekable (spooled) writers


@pytest.fixture
def spool_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temp dir spools are made in, for this test only (to see what is left there)."""
    import tempfile

    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


def _h5_write(fs: EnvcryptFileSystem, path: str, data: Any) -> None:
    h5py = pytest.importorskip("h5py")
    with fs.open(path, "wb") as f, h5py.File(f, "w") as h5:
        h5["readings"] = data
        h5["meta/scale"] = np.float64(0.5)
        h5["readings"].attrs["unit"] = "K"


def _h5_check(fs: EnvcryptFileSystem, path: str, data: Any) -> None:
    h5py = pytest.importorskip("h5py")
    with fs.open(path, "rb") as f, h5py.File(f, "r") as h5:
        np.testing.assert_array_equal(h5["readings"][:], data)
        assert h5["readings"].attrs["unit"] == "K" and h5["meta/scale"][()] == 0.5


def test_h5py_writes_straight_into_an_envcrypt_file(tmp_path: Path, spool_dir: Path) -> None:
    fs = _local_fs()
    data = np.random.default_rng(1).random((300, 200))
    _h5_write(fs, f"{tmp_path}/out/cube.h5", data)
    assert (tmp_path / "out/cube.h5").read_bytes()[:8] == b"ENVCRYPT"
    assert list(spool_dir.iterdir()) == []  # the plaintext spool is gone
    _h5_check(fs, f"{tmp_path}/out/cube.h5", data)


def test_xarray_to_netcdf_writes_straight_into_an_envcrypt_file(tmp_path: Path, spool_dir: Path) -> None:
    xr = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    fs = _local_fs()
    ds = xr.Dataset(
        {"temp": (("time", "x"), np.random.default_rng(2).random((40, 25)), {"units": "K"})},
        coords={"time": np.arange(40), "x": np.linspace(0, 1, 25)}, attrs={"title": "secret run"},
    )
    with fs.open(f"{tmp_path}/run.nc", "wb") as f:
        ds.to_netcdf(f, engine="h5netcdf")
    stored = (tmp_path / "run.nc").read_bytes()
    assert stored[:8] == b"ENVCRYPT" and b"secret run" not in stored
    assert list(spool_dir.iterdir()) == []
    with fs.open(f"{tmp_path}/run.nc", "rb") as f:
        back = xr.open_dataset(f, engine="h5netcdf").load()
    xr.testing.assert_identical(back, ds)


@pytest.mark.cloud
def test_h5py_and_netcdf_into_s3(s3: dict[str, Any], spool_dir: Path) -> None:
    xr = pytest.importorskip("xarray")
    fs = _s3_fs(s3)
    data = np.arange(5000, dtype="int64").reshape(50, 100)
    _h5_write(fs, f"{s3['bucket']}/a.h5", data)
    assert _raw_s3(s3, "a.h5")[:8] == b"ENVCRYPT"
    _h5_check(fs, f"{s3['bucket']}/a.h5", data)
    ds = xr.Dataset({"v": ("x", np.arange(10.0))})
    with fsspec.open(f"envcrypt::s3://{s3['bucket']}/v.nc", "wb", **s3["options"]) as f:
        ds.to_netcdf(f, engine="h5netcdf")
    with fs.open(f"{s3['bucket']}/v.nc", "rb") as f:
        xr.testing.assert_identical(xr.open_dataset(f, engine="h5netcdf").load(), ds)
    assert list(spool_dir.iterdir()) == []


def test_a_spooled_writer_is_an_ordinary_private_file_until_closed(tmp_path: Path, spool_dir: Path) -> None:
    fs = _local_fs()
    path = f"{tmp_path}/s.bin"
    with fsspec.open(f"envcrypt::file://{path}", "wb", spool=True) as f:
        assert f.seekable() and f.readable()
        f.write(b"a" * 100_000)
        f.seek(10)
        f.write(b"HEADER")
        f.seek(0)
        assert f.read(20) == b"a" * 10 + b"HEADER" + b"aaaa"
        f.seek(0, 2)
        f.write(b"tail")
        f.truncate(90_000)
        (spool,) = spool_dir.iterdir()
        assert spool.stat().st_mode & 0o777 == 0o700
        for plain in spool.iterdir():  # none on Linux: the plaintext is an unnamed O_TMPFILE (_spool)
            assert plain.stat().st_mode & 0o777 == 0o600
        assert not os.path.exists(path)  # nothing published before close
    want = bytearray(b"a" * 90_000)
    want[10:16] = b"HEADER"
    assert fs.cat_file(path) == bytes(want)
    assert list(spool_dir.iterdir()) == []


def test_a_failed_spooled_write_publishes_nothing_and_removes_the_spool(tmp_path: Path, spool_dir: Path) -> None:
    h5py = pytest.importorskip("h5py")
    fs = _local_fs()
    fs.pipe_file(f"{tmp_path}/keep.h5", b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with fs.open(f"{tmp_path}/new.h5", "wb") as f, h5py.File(f, "w") as h5:
            h5["x"] = np.arange(10)
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        with fs.open(f"{tmp_path}/keep.h5", "wb", spool=True) as f:
            f.write(b"new")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["keep.h5"]
    assert fs.cat_file(f"{tmp_path}/keep.h5") == b"old"
    assert list(spool_dir.iterdir()) == []
    f = fs.open(f"{tmp_path}/dropped.bin", "wb", spool=True)  # never closed: collected
    f.write(b"x")
    del f
    import gc

    gc.collect()
    assert list(spool_dir.iterdir()) == [] and not os.path.exists(f"{tmp_path}/dropped.bin")


def test_streaming_writers_stay_streaming(tmp_path: Path, spool_dir: Path) -> None:
    import io

    fs = _local_fs()
    with fs.open(f"{tmp_path}/big.bin", "wb") as f:
        assert not f.seekable()
        f.write(b"x" * (2 * 2**20))  # past the undecided first MiB: streaming for good
        assert f.seek(0, 1) == 2 * 2**20  # where it is: fine
        with pytest.raises(io.UnsupportedOperation, match="spool=True"):
            f.seek(0)
        assert list(spool_dir.iterdir()) == []
    with fs.open(f"{tmp_path}/s.bin", "wb", spool=False) as f:
        f.write(b"abc")
        with pytest.raises(io.UnsupportedOperation):
            f.seek(1)
    assert fs.cat_file(f"{tmp_path}/big.bin") == b"x" * (2 * 2**20) and fs.cat_file(f"{tmp_path}/s.bin") == b"abc"
    with pytest.raises(ValueError):
        fs.open(f"{tmp_path}/t.bin", "wb", spool="yes")


# ---------------------------------------------------------------------- sizes and compression


@pytest.mark.cloud
def test_s3_entries_report_the_stored_size_only_as_stored_size(s3: dict[str, Any]) -> None:
    fs = _s3_fs(s3)
    root = f"{s3['bucket']}/sizes"
    fs.pipe_file(f"{root}/a.bin", b"x" * 40_000)
    fs.invalidate_cache()
    entries = [fs.info(f"{root}/a.bin"), *fs.ls(root, detail=True), *fs.find(root, detail=True).values(),
               *fs.glob(f"{root}/*.bin", detail=True).values()]
    fs.invalidate_cache()
    fs.ls(root)  # the target's listing cache (s3fs entries carry "Size") serves the next info
    entries.append(fs.info(f"{root}/a.bin"))
    stored = len(_raw_s3(s3, "sizes/a.bin"))
    for entry in entries:
        assert entry["size"] == 40_000 and entry["stored_size"] == stored
        others = {k: v for k, v in entry.items() if v == stored and k != "stored_size"}
        assert others == {}, f"the stored size is reported as {sorted(others)} too"


def test_pandas_compression_on_envcrypt_urls_is_named_not_inferred(tmp_path: Path) -> None:
    """pandas infers compression from the text before ``::`` (here "envcrypt"): README says to pass it."""
    import gzip

    fs = _local_fs()
    url = f"envcrypt::file://{tmp_path}/t.csv.gz"
    frame = _frame(50)
    frame.to_csv(url, index=False, compression="gzip")
    assert gzip.decompress(fs.cat_file(f"{tmp_path}/t.csv.gz")).startswith(b"id,region,amount\n")
    pd.testing.assert_frame_equal(pd.read_csv(url, compression="gzip"), frame)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert 'compression="gzip"' in readme


# ---------------------------------------------------------------------- polars


def test_polars_reads_and_writes_through_envcrypt_file_objects(tmp_path: Path) -> None:
    pl = pytest.importorskip("polars")
    fs = _local_fs()
    frame = pl.from_pandas(_frame(2000))
    with fs.open(f"{tmp_path}/p/t.parquet", "wb") as f:
        frame.write_parquet(f)
    with fs.open(f"{tmp_path}/p/t.csv", "wb") as f:
        frame.write_csv(f)
    assert (tmp_path / "p/t.parquet").read_bytes()[:8] == b"ENVCRYPT"
    with fs.open(f"{tmp_path}/p/t.parquet", "rb") as f:
        assert pl.read_parquet(f, columns=["id", "amount"]).equals(frame.select("id", "amount"))
    with fs.open(f"{tmp_path}/p/t.csv", "rb") as f:
        assert pl.read_csv(f).equals(frame)
