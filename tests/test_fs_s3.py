"""envcrypt:: over S3: a real moto server through s3fs, raw bytes checked with boto3; pandas and pyarrow."""

from __future__ import annotations

import io
import os
from typing import Any

import fsspec
import pytest

from envcrypt import NotEncryptedError, inspect
from envcrypt.errors import UntrustedKeyError
from envcrypt.format import CHUNK_SIZE
from envcrypt.fs import EnvcryptFileSystem

pytestmark = pytest.mark.cloud

pd = pytest.importorskip("pandas")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
ds = pytest.importorskip("pyarrow.dataset")
boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs")


def _raw(s3: dict[str, Any], key: str) -> bytes:
    return bytes(s3["client"].get_object(Bucket=s3["bucket"], Key=key)["Body"].read())


def _keys(s3: dict[str, Any]) -> list[str]:
    listing = s3["client"].list_objects_v2(Bucket=s3["bucket"])
    return sorted(o["Key"] for o in listing.get("Contents", []))


def _fs(s3: dict[str, Any], **options: Any) -> EnvcryptFileSystem:
    fs, _ = fsspec.core.url_to_fs(f"envcrypt::s3://{s3['bucket']}", envcrypt=options, **s3["options"])
    assert isinstance(fs, EnvcryptFileSystem)
    return fs


def test_write_read_sizes_and_raw_ciphertext(s3: dict[str, Any]) -> None:
    fs = _fs(s3)
    data = b"card=4111111111111111;" * 5000
    fs.pipe_file(f"{s3['bucket']}/dir/a.bin", data)
    raw = _raw(s3, "dir/a.bin")
    assert raw[:8] == b"ENVCRYPT" and b"4111111111111111" not in raw
    info = fs.info(f"{s3['bucket']}/dir/a.bin")
    assert info["size"] == len(data) and info["stored_size"] == len(raw)
    assert fs.cat_file(f"{s3['bucket']}/dir/a.bin", 1000, 70000) == data[1000:70000]
    for i in range(12):
        fs.pipe_file(f"{s3['bucket']}/dir/n{i:02d}", b"x" * (i * 1000))
    fs.invalidate_cache()
    sizes = {e["name"].rsplit("/", 1)[-1]: e["size"] for e in fs.ls(f"{s3['bucket']}/dir", detail=True)}
    assert sizes["a.bin"] == len(data) and all(sizes[f"n{i:02d}"] == i * 1000 for i in range(12))
    assert fs.du(f"{s3['bucket']}/dir") == len(data) + sum(i * 1000 for i in range(12))


def test_exception_in_with_leaves_no_object_not_even_multipart(s3: dict[str, Any]) -> None:
    fs = _fs(s3)
    with pytest.raises(RuntimeError):
        with fs.open(f"{s3['bucket']}/small", "wb") as f:
            f.write(b"tiny")
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        with fs.open(f"{s3['bucket']}/large", "wb", block_size=5 * 2**20) as f:
            for _ in range(3):
                f.write(os.urandom(5 * 2**20))  # parts of a multipart upload go out
            raise RuntimeError("boom")
    assert _keys(s3) == []
    uploads = s3["client"].list_multipart_uploads(Bucket=s3["bucket"]).get("Uploads", [])
    assert uploads == []
    with fs.open(f"{s3['bucket']}/large", "wb", block_size=5 * 2**20) as f:
        f.write(b"y" * (11 * 2**20))
    assert fs.info(f"{s3['bucket']}/large")["size"] == 11 * 2**20
    assert _raw(s3, "large")[:8] == b"ENVCRYPT"


def test_ranged_read_fetches_only_the_chunks(s3: dict[str, Any]) -> None:
    fs = _fs(s3)
    data = os.urandom(64 * CHUNK_SIZE)
    fs.pipe_file(f"{s3['bucket']}/r", data)
    with fs.open(f"{s3['bucket']}/r") as f:
        f.seek(40 * CHUNK_SIZE + 7)
        assert f.read(100) == data[40 * CHUNK_SIZE + 7 : 40 * CHUNK_SIZE + 107]
        assert f.fetched_bytes == CHUNK_SIZE + 16


def test_plaintext_object_is_refused(s3: dict[str, Any]) -> None:
    s3["client"].put_object(Bucket=s3["bucket"], Key="plain.txt", Body=b"hello")
    with pytest.raises(NotEncryptedError):
        _fs(s3).cat_file(f"{s3['bucket']}/plain.txt")
    assert _fs(s3, plaintext="allow").cat_file(f"{s3['bucket']}/plain.txt") == b"hello"


def _frame(n: int = 2000) -> Any:
    return pd.DataFrame({
        "id": range(n),
        "email": [f"user{i}@example.com" for i in range(n)],
        "amount": [i * 0.5 for i in range(n)],
        "region": ["eu" if i % 2 else "us" for i in range(n)],
    })


def test_pandas_csv_json_parquet(s3: dict[str, Any]) -> None:
    df = _frame()
    so = s3["options"]
    base = f"envcrypt::s3://{s3['bucket']}"
    fs = _fs(s3)
    df.to_csv(f"{base}/t.csv", index=False, storage_options=so)
    pd.testing.assert_frame_equal(pd.read_csv(f"{base}/t.csv", storage_options=so), df)
    csv_bytes = df.to_csv(index=False).encode()
    assert fs.info(f"{s3['bucket']}/t.csv")["size"] == len(csv_bytes)
    df.to_json(f"{base}/t.json", orient="records", lines=True, storage_options=so)
    back = pd.read_json(f"{base}/t.json", orient="records", lines=True, storage_options=so)
    pd.testing.assert_frame_equal(back, df)
    df.to_parquet(f"{base}/t.parquet", storage_options=so)
    pd.testing.assert_frame_equal(pd.read_parquet(f"{base}/t.parquet", storage_options=so), df)
    pd.testing.assert_frame_equal(
        pd.read_parquet(f"{base}/t.parquet", columns=["email"], storage_options=so), df[["email"]]
    )
    for key in ("t.csv", "t.json", "t.parquet"):
        raw = _raw(s3, key)
        assert raw[:8] == b"ENVCRYPT" and b"user1@example.com" not in raw and b"PAR1" not in raw[:100]
    plain_parquet = io.BytesIO()
    df.to_parquet(plain_parquet)
    assert fs.info(f"{s3['bucket']}/t.parquet")["size"] == len(plain_parquet.getvalue())


def test_pyarrow_tables_and_partitioned_datasets(s3: dict[str, Any]) -> None:
    fs = _fs(s3)
    bucket = s3["bucket"]
    table = pa.Table.from_pandas(_frame(3000), preserve_index=False)
    pq.write_table(table, f"{bucket}/one.parquet", filesystem=fs)
    assert pq.read_table(f"{bucket}/one.parquet", filesystem=fs).equals(table)
    assert pq.read_table(f"{bucket}/one.parquet", filesystem=fs, columns=["id"]).num_rows == 3000
    pq.write_to_dataset(table, f"{bucket}/lake", partition_cols=["region"], filesystem=fs)
    dataset = ds.dataset(f"{bucket}/lake", filesystem=fs, format="parquet", partitioning="hive")
    got = dataset.to_table().to_pandas().sort_values("id").reset_index(drop=True)
    assert list(got["id"]) == list(range(3000))
    assert set(got["region"].astype(str)) == {"eu", "us"}
    eu = dataset.to_table(filter=ds.field("region") == "eu")
    assert eu.num_rows == 1500
    stored = [k for k in _keys(s3) if k.startswith("lake/")]
    assert len(stored) == 2
    for key in stored:
        raw = _raw(s3, key)
        assert raw[:8] == b"ENVCRYPT" and b"PAR1" not in raw
        plain = fs.cat_file(f"{bucket}/{key}")
        assert plain[:4] == b"PAR1" and fs.info(f"{bucket}/{key}")["size"] == len(plain)


def test_listing_fetches_heads_in_one_concurrent_batch_and_caches_them(s3: dict[str, Any]) -> None:
    import s3fs

    class CountingS3(s3fs.S3FileSystem):  # a real s3fs, counting its batched ranged reads
        batches: list[int] = []

        listings: list[str] = []

        async def _cat_ranges(self, paths: Any, *args: Any, **kwargs: Any) -> Any:
            self.batches.append(len(paths))
            return await super()._cat_ranges(paths, *args, **kwargs)

        async def _lsdir(self, path: str, *args: Any, **kwargs: Any) -> Any:
            if path not in self.dircache or kwargs.get("refresh"):
                self.listings.append(path)
            return await super()._lsdir(path, *args, **kwargs)

    target = CountingS3(client_kwargs={"endpoint_url": s3["endpoint"]}, skip_instance_cache=True)
    fs = EnvcryptFileSystem(fs=target, skip_instance_cache=True)
    for i in range(20):
        fs.pipe_file(f"{s3['bucket']}/many/{i:03d}", b"v" * i)
    fs.invalidate_cache()
    entries = fs.ls(f"{s3['bucket']}/many", detail=True)
    assert [e["size"] for e in entries] == list(range(20))
    assert CountingS3.batches == [20]  # one batch of 20 ranged reads, gathered concurrently
    assert len(CountingS3.listings) == 1  # a fresh listing is never listed again
    fs.ls(f"{s3['bucket']}/many", detail=True)
    assert CountingS3.batches == [20]  # cached by ETag
    assert len(CountingS3.listings) == 1  # and the listing came from s3fs's cache


def test_put_and_get_files(s3: dict[str, Any], tmp_path: Any) -> None:
    fs = _fs(s3)
    (tmp_path / "local").mkdir()
    src = tmp_path / "local" / "in.bin"
    src.write_bytes(os.urandom(3 * 2**20 + 11))
    fs.put_file(str(src), f"{s3['bucket']}/up/in.bin")
    raw = _raw(s3, "up/in.bin")
    assert raw[:8] == b"ENVCRYPT" and fs.info(f"{s3['bucket']}/up/in.bin")["size"] == src.stat().st_size
    fs.get_file(f"{s3['bucket']}/up/in.bin", str(tmp_path / "local" / "out.bin"))
    assert (tmp_path / "local" / "out.bin").read_bytes() == src.read_bytes()
    fs.put(str(tmp_path / "local"), f"{s3['bucket']}/tree", recursive=True)
    assert sorted(fs.find(f"{s3['bucket']}/tree")) == [
        f"{s3['bucket']}/tree/in.bin", f"{s3['bucket']}/tree/out.bin"]


def test_aws_kms_key_through_the_filesystem(s3: dict[str, Any]) -> None:
    kms = boto3.client("kms", endpoint_url=s3["endpoint"], region_name="us-east-1")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    resolver = {"endpoint_url": s3["endpoint"], "region_name": "us-east-1"}
    fs = _fs(s3, key_uri=f"aws-kms://{key_id}", resolver_options=resolver)
    fs.pipe_file(f"{s3['bucket']}/kms.bin", b"wrapped by KMS")
    from envcrypt import inspect

    assert inspect(_raw(s3, "kms.bin")).key_uris[0].startswith("aws-kms://")
    reader = _fs(s3, resolver_options=resolver, trusted_keys=[f"aws-kms://{key_id}"])
    assert reader.cat_file(f"{s3['bucket']}/kms.bin") == b"wrapped by KMS"
    with pytest.raises(UntrustedKeyError):  # a reader configured for local keys only
        _fs(s3, resolver_options=resolver).cat_file(f"{s3['bucket']}/kms.bin")


def test_reader_open_during_a_rewrap_on_s3(s3: dict[str, Any]) -> None:
    from envcrypt.fs import trees

    fs = _fs(s3)
    data = os.urandom(8 * CHUNK_SIZE)
    path = f"{s3['bucket']}/rot.bin"
    fs.pipe_file(path, data)
    with fs.open(path) as f:
        assert f.read(10) == data[:10]
        # a second slot under the same key: a longer header, the body as it is
        assert trees.rewrap_object(fs, path, ["local:default", "local:default/1"])
        f.seek(5 * CHUNK_SIZE)
        assert f.read() == data[5 * CHUNK_SIZE :]
    assert fs.cat_file(path) == data
    walked = [(root, {n: i["size"] for n, i in files.items()}) for root, _, files in fs.walk(s3["bucket"], detail=True)]
    assert walked == [(s3["bucket"], {"rot.bin": len(data)})]


def test_sizes_and_reads_stay_right_when_another_client_rewraps_after_a_cached_listing(
    s3: dict[str, Any],
) -> None:
    import s3fs

    from envcrypt.fs import trees

    def client() -> EnvcryptFileSystem:  # separate instances: two processes
        target = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3["endpoint"]}, skip_instance_cache=True)
        return EnvcryptFileSystem(fs=target, skip_instance_cache=True)

    a, b = client(), client()
    assert a.target is not b.target
    data = os.urandom(100_000)
    path = f"{s3['bucket']}/d/x"
    a.pipe_file(path, data)
    a.invalidate_cache()
    assert [e["size"] for e in a.ls(f"{s3['bucket']}/d")] == [len(data)]  # fills a's s3fs listing cache
    # another process rewraps (longer header: new stored size); its cache forgets the head
    assert trees.rewrap_object(b, path, ["local:default", "local:default/1"])
    assert a.info(path)["size"] == len(data)
    assert [e["size"] for e in a.ls(f"{s3['bucket']}/d")] == [len(data)]
    assert a.cat_file(path) == data


def _separate_client(s3: dict[str, Any], block_size: int = 50 * 2**20, **options: Any) -> EnvcryptFileSystem:
    import s3fs

    target = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3["endpoint"]}, skip_instance_cache=True,
                               default_block_size=block_size)
    return EnvcryptFileSystem(fs=target, skip_instance_cache=True, **options)


def test_a_failed_commit_leaves_no_multipart_upload_open(s3: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import s3fs

    fs = _separate_client(s3)

    def failing_commit(self: Any) -> None:
        raise OSError("network down at CompleteMultipartUpload")

    monkeypatch.setattr(s3fs.core.S3File, "commit", failing_commit)
    with pytest.raises(OSError, match="network down"):
        with fs.open(f"{s3['bucket']}/big", "wb", block_size=5 * 2**20) as f:
            f.write(os.urandom(11 * 2**20))
    monkeypatch.undo()
    assert _keys(s3) == []
    assert s3["client"].list_multipart_uploads(Bucket=s3["bucket"]).get("Uploads", []) == []


@pytest.mark.parametrize("size", [1000, 11 * 2**20])  # one PUT; a multipart upload (5 MiB parts)
def test_rewrap_on_s3_is_conditional(s3: dict[str, Any], monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    from envcrypt.fs import _slots, trees
    from envcrypt.fs._sinks import ConcurrentModificationError
    from envcrypt.keys.vault import LocalVault

    fs = _separate_client(s3, block_size=5 * 2**20)
    other = _separate_client(s3)
    path = f"{s3['bucket']}/cas"
    fs.pipe_file(path, os.urandom(size))
    vault = LocalVault()  # (monkeypatch.undo below also undoes the test's $ENVCRYPT_VAULT)
    vault.rotate_key("default")
    v2 = b"v2 written by an application during the rewrap"
    copy = _slots.shutil.copyfileobj

    def copy_and_race(src: Any, dst: Any, length: int = 0) -> None:
        other.pipe_file(path, v2)
        copy(src, dst, length)

    monkeypatch.setattr(_slots.shutil, "copyfileobj", copy_and_race)
    with pytest.raises(ConcurrentModificationError):
        trees.rewrap_object(fs, path, ["local:default"])
    monkeypatch.undo()
    assert other.cat_file(path) == v2
    assert s3["client"].list_multipart_uploads(Bucket=s3["bucket"]).get("Uploads", []) == []
    vault.rotate_key("default")
    assert trees.rewrap_object(fs, path, ["local:default"])  # a rerun rewraps v2
    assert other.cat_file(path) == v2
    from envcrypt import inspect

    assert inspect(s3["client"].get_object(Bucket=s3["bucket"], Key="cas")["Body"].read()).key_uris == [
        "local:default/3"]


def test_key_policy_prefixes_start_at_the_bucket(s3: dict[str, Any]) -> None:
    from envcrypt import inspect
    from envcrypt.keys.vault import LocalVault

    LocalVault().create_key("tenant-a")
    LocalVault().create_key("tenant-b")
    policy = {"tenants/a/": "local:tenant-a", "tenants/b/": "local:tenant-b"}
    fs = _fs(s3, key_policy=policy)
    bucket = s3["bucket"]
    fs.pipe_file(f"{bucket}/tenants/a/x.csv", b"a")
    fs.pipe_file(f"{bucket}/tenants/b/uploads/tenants/a/x.csv", b"b's upload")
    assert inspect(_raw(s3, "tenants/a/x.csv")).key_uris == ["local:tenant-a/1"]
    assert inspect(_raw(s3, "tenants/b/uploads/tenants/a/x.csv")).key_uris == ["local:tenant-b/1"]
    # the same key through a per-file URL (as pandas opens files)
    so = {"envcrypt": {"key_policy": policy}, **s3["options"]}
    with fsspec.open(f"envcrypt::s3://{bucket}/tenants/a/y.csv", "wb", **so) as f:
        f.write(b"y")
    assert inspect(_raw(s3, "tenants/a/y.csv")).key_uris == ["local:tenant-a/1"]


def test_put_file_uploads_in_concurrent_parts_through_the_target(s3: dict[str, Any], tmp_path: Any) -> None:
    """put_file seals into a local temp file and lets s3fs upload it (multipart here)."""
    from envcrypt.keys.vault import LocalVault

    LocalVault().create_key("parts")
    fs = _fs(s3, key_policy={"mp/": "local:parts"})
    data = os.urandom(11 * 2**20 + 123)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    fs.put_file(str(src), f"{s3['bucket']}/mp/big.bin", chunksize=5 * 2**20)
    raw = _raw(s3, "mp/big.bin")
    assert raw.startswith(b"ENVCRYPT") and data[:4096] not in raw
    assert inspect(raw).key_uris == ["local:parts/1"]
    etag = s3["client"].head_object(Bucket=s3["bucket"], Key="mp/big.bin")["ETag"]
    assert etag.strip('"').endswith("-3")  # a completed 3-part multipart upload
    assert fs.info(f"{s3['bucket']}/mp/big.bin")["size"] == len(data)
    assert fs.cat_file(f"{s3['bucket']}/mp/big.bin") == data
    assert not list((tmp_path).glob("envcrypt-put-*"))
