"""Parquet modular encryption with envcrypt keys: round trips, partial reads, interop, typed errors."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pe = pytest.importorskip("pyarrow.parquet.encryption")

import envcrypt.parquet as ep  # noqa: E402
from envcrypt.errors import (  # noqa: E402
    IntegrityError,
    InvalidKeyUriError,
    NotEncryptedError,
    UntrustedKeyError,
    WrongKeyError,
)
from envcrypt.keys.vault import LocalVault, vault_for  # noqa: E402
from tests.parquet_helpers import RawKeyKmsClient, typed_table  # noqa: E402

PII = ["ssn", "email", "tags", "address"]


def config(**extra: Any) -> dict[str, Any]:
    return {"footer_key": "local:footer", "column_keys": {"local:pii": PII}, **extra}


@pytest.fixture(autouse=True)
def _fresh_factories() -> Any:
    """PME caches keys in each CryptoFactory (per process): no test sees another's."""
    ep.clear_factories()
    yield
    ep.clear_factories()


@pytest.fixture
def keys(_isolated_vault: Path) -> dict[str, bytes]:
    """Raw key bytes imported into the vault (BYOK-style), so a test-only client can use them too."""
    raw = {"footer": os.urandom(32), "pii": os.urandom(32)}
    vault = vault_for(None)
    for name, material in raw.items():
        vault.import_key(name, material)
    return raw


@pytest.mark.parametrize("plaintext_footer", [False, True])
@pytest.mark.parametrize("double_wrapping", [True, False])
def test_round_trip_of_every_common_type(tmp_path: Path, keys: dict[str, bytes], plaintext_footer: bool,
                                         double_wrapping: bool) -> None:
    table = typed_table()
    cfg = config(plaintext_footer=plaintext_footer, double_wrapping=double_wrapping)
    path = tmp_path / "t.parquet"
    ep.write_table(table, path, encryption=cfg)
    raw = path.read_bytes()
    assert b"user1@example.com" not in raw and b"001-00-0001" not in raw
    assert raw[-4:] == (b"PAR1" if plaintext_footer else b"PARE")
    back = ep.read_table(path, decryption=cfg)
    assert back.equals(table)
    assert back.schema.field("seen").type == pa.timestamp("us", tz="Europe/Paris")
    assert ep.read_table(path, decryption=cfg, columns=["id", "ssn"]).equals(table.select(["id", "ssn"]))


def test_plaintext_columns_read_without_keys_only_with_a_plaintext_footer(tmp_path: Path,
                                                                           keys: dict[str, bytes]) -> None:
    table = typed_table()
    open_footer, closed = tmp_path / "open.parquet", tmp_path / "closed.parquet"
    ep.write_table(table, open_footer, encryption=config(plaintext_footer=True))
    ep.write_table(table, closed, encryption=config())
    plain = ["id", "score", "name", "seen", "amount"]
    assert ep.read_table(open_footer, columns=plain).equals(table.select(plain))
    assert pq.read_table(open_footer, columns=plain).equals(table.select(plain))  # any Parquet reader
    with pytest.raises(UntrustedKeyError):
        ep.read_table(open_footer, columns=["ssn"])
    with pytest.raises(UntrustedKeyError):
        ep.read_table(closed, columns=plain)


def test_inspect_names_master_keys_and_versions_never_a_key(tmp_path: Path, keys: dict[str, bytes]) -> None:
    path = tmp_path / "t.parquet"
    ep.write_table(typed_table(), path, encryption=config(plaintext_footer=True))
    info = ep.inspect(path)
    assert info["encrypted"] and info["footer"] == "plaintext (signed)"
    assert info["footer_key"]["master_key"] == "local:footer"
    assert info["footer_key"]["key_version"] == "local:footer/1"
    assert {c: k["master_key"] for c, k in info["columns"].items()} == {c: "local:pii" for c in
                                                                          ["ssn", "email", "tags.list.element",
                                                                           "address.city", "address.zip"]}
    assert "id" in info["plaintext_columns"]
    text = repr(info)
    assert "wrapped" not in text.lower() or "wrap_algorithm" in text
    for material in keys.values():
        assert material.hex() not in text
    closed = tmp_path / "c.parquet"
    ep.write_table(typed_table(), closed, encryption=config())
    assert ep.inspect(closed)["footer"] == "encrypted" and ep.inspect(closed)["columns"] is None
    plain = tmp_path / "p.parquet"
    pq.write_table(typed_table(), plain)
    assert ep.inspect(plain) == {"path": str(plain), "encrypted": False, "footer": "plaintext", "algorithm": None}


def _mids() -> dict[str, str]:
    return {ep._kms.master_key_id("local:footer"): "footer", ep._kms.master_key_id("local:pii"): "pii"}


@pytest.mark.parametrize("plaintext_footer", [False, True])
def test_interop_with_pyarrow_pme_and_an_independent_kms_client(tmp_path: Path, keys: dict[str, bytes],
                                                                 plaintext_footer: bool) -> None:
    """envcrypt's files are standard PME: pyarrow's own reader with a test-only client that unwraps
    with the raw key bytes opens them; and envcrypt opens what that client wrote."""
    table = typed_table()
    by_mid = {mid: (f"local:{name}/1", keys[name]) for mid, name in _mids().items()}
    factory = pe.CryptoFactory(lambda _c: RawKeyKmsClient(by_mid))
    kms = pe.KmsConnectionConfig()
    cfg = config(plaintext_footer=plaintext_footer)

    ours = tmp_path / "ours.parquet"
    ep.write_table(table, ours, encryption=cfg)
    props = factory.file_decryption_properties(kms, pe.DecryptionConfiguration())
    assert pq.read_table(ours, decryption_properties=props).equals(table)

    theirs = tmp_path / "theirs.parquet"
    enc = pe.EncryptionConfiguration(
        footer_key=ep._kms.master_key_id("local:footer"),
        column_keys={ep._kms.master_key_id("local:pii"): PII}, plaintext_footer=plaintext_footer)
    pq.write_table(table, theirs, encryption_properties=factory.file_encryption_properties(kms, enc))
    assert ep.read_table(theirs, decryption=cfg).equals(table)


def test_wrong_key_and_untrusted_key_are_typed(tmp_path: Path, keys: dict[str, bytes]) -> None:
    path = tmp_path / "t.parquet"
    ep.write_table(typed_table(), path, encryption=config())
    with pytest.raises(UntrustedKeyError, match="not a trusted key"):
        ep.read_table(path, decryption={"trusted_keys": ["local:other"]})
    with pytest.raises(UntrustedKeyError):  # trusting the column key alone does not open the footer
        ep.read_table(path, decryption={"trusted_keys": ["local:pii"]})
    other = LocalVault(tmp_path / "other-vault")  # same key names, other material: a wrong key
    other.create_key("footer")
    other.create_key("pii")
    with pytest.raises(WrongKeyError):
        ep.read_table(path, decryption=config(resolver_options={"vault": str(tmp_path / "other-vault")}))


def _column_pages(path: Path, cfg: dict[str, Any], name: str) -> tuple[int, int]:
    meta = pq.ParquetFile(path, decryption_properties=ep.decryption_properties(cfg)).metadata
    index = meta.schema.names.index(name)
    column = meta.row_group(0).column(index)
    start = column.dictionary_page_offset or column.data_page_offset
    return start, column.total_compressed_size


@pytest.mark.parametrize("where", ["encrypted page", "footer"])
def test_a_tampered_page_or_footer_is_an_integrity_error(tmp_path: Path, keys: dict[str, bytes], where: str) -> None:
    cfg = config()
    path = tmp_path / "t.parquet"
    ep.write_table(typed_table(500), path, encryption=cfg)
    data = bytearray(path.read_bytes())
    if where == "footer":
        offsets = [len(data) - 40]
    else:
        start, size = _column_pages(path, cfg, "ssn")
        offsets = [start + size // 2]
    for offset in offsets:
        data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    ep.clear_factories()
    with pytest.raises(IntegrityError) as caught:
        ep.read_table(path, decryption=cfg)
    assert isinstance(caught.value.__cause__, OSError)  # mapped at the boundary, raise ... from


def test_a_plaintext_file_is_refused_where_a_pme_file_is_expected(tmp_path: Path, keys: dict[str, bytes]) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(typed_table(), path)
    with pytest.raises(NotEncryptedError):
        ep.read_table(path, decryption=config())
    assert ep.read_table(path).num_rows == 50  # without decryption= it is just a Parquet file


def test_config_is_plain_picklable_and_checked() -> None:
    cfg = ep.PmeConfig.from_any(config(encryption_context={"tenant": "acme"}))
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert ep.PmeConfig.from_any(cfg.to_dict()) == cfg
    assert cfg.trusted() == ("local:footer", "local:pii")
    with pytest.raises(ep.PmeConfigError, match="unknown"):
        ep.PmeConfig.from_any({"footer_key": "local:f", "colum_keys": {}})
    with pytest.raises(ep.PmeConfigError, match="two keys"):
        ep.PmeConfig.from_any({"footer_key": "local:f", "column_keys": {"local:a": ["x"], "local:b": ["x"]}})
    with pytest.raises(InvalidKeyUriError):
        ep.PmeConfig.from_any({"footer_key": "footer"})
    with pytest.raises(InvalidKeyUriError):
        ep.read_table("x.parquet", decryption={})  # a reader trusts at least one key
    client = ep.EnvcryptKmsClient(cfg)
    with pytest.raises(TypeError):
        pickle.dumps(client)
    assert "local:footer" in repr(client)


def test_wrapped_key_string_is_bounded_and_checked() -> None:
    from envcrypt.errors import MalformedHeaderError
    from envcrypt.format import KeySlot

    slot = KeySlot("local:pii/3", 1, b"\x01" * 40)
    assert ep.decode_wrapped(ep.encode_wrapped(slot)) == slot
    for bad in ["", "x" * 20000, "not base64!", "QUJD", ep.encode_wrapped(slot) + "AAAA"]:
        with pytest.raises(MalformedHeaderError):
            ep.decode_wrapped(bad)


def test_dataset_route_with_partitioning(tmp_path: Path, keys: dict[str, bytes]) -> None:
    table = typed_table(60).append_column("part", pa.array([i % 3 for i in range(60)], pa.int32()))
    cfg = config(plaintext_footer=True)
    ep.write_dataset(table, tmp_path / "ds", encryption=cfg, partitioning=["part"], partitioning_flavor="hive")
    files = sorted(p for p in (tmp_path / "ds").rglob("*.parquet"))
    assert len(files) == 3 and all(ep.inspect(f)["encrypted"] for f in files)
    back = ep.read_dataset(tmp_path / "ds", decryption=cfg, partitioning="hive")
    assert back.sort_by("id").select(table.column_names).equals(
        table.cast(back.select(table.column_names).schema))
    some = ep.dataset(tmp_path / "ds", decryption=cfg, partitioning="hive").to_table(
        columns=["id", "ssn"], filter=pa.compute.field("part") == 1)
    assert sorted(some["id"].to_pylist()) == [i for i in range(60) if i % 3 == 1]
    with pytest.raises(ep.PmeConfigError):
        ep.write_dataset(table, tmp_path / "ext", encryption=config(internal_key_material=False))


def test_pandas_helpers_and_the_kwargs_pandas_forwards(tmp_path: Path, keys: dict[str, bytes]) -> None:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"id": range(20), "ssn": [f"s{i}" for i in range(20)], "email": ["e"] * 20,
                       "tags": [["a"]] * 20, "address": [{"city": "x", "zip": 1}] * 20})
    cfg = config()
    ep.write_pandas(df, tmp_path / "a.parquet", encryption=cfg)
    pd.testing.assert_frame_equal(ep.read_pandas(tmp_path / "a.parquet", decryption=cfg), df)
    df.to_parquet(tmp_path / "b.parquet", engine="pyarrow", encryption_properties=ep.encryption_properties(cfg))
    back = pd.read_parquet(tmp_path / "b.parquet", engine="pyarrow",
                           decryption_properties=ep.decryption_properties(cfg))
    pd.testing.assert_frame_equal(back, df)
    assert ep.inspect(tmp_path / "b.parquet")["encrypted"]


def test_pme_inside_the_envcrypt_filesystem(keys: dict[str, bytes]) -> None:
    """Works (PME file sealed again as a whole object), though README says when not to."""
    import fsspec

    so = {"envcrypt": {"key_uri": "local:footer"}}
    fs, root = fsspec.core.url_to_fs("envcrypt::memory://lake", **so)
    ep.write_table(typed_table(), "memory://lake/t.parquet", encryption=config(), filesystem=fs)
    assert fs.target.cat_file("memory://lake/t.parquet")[:8] == b"ENVCRYPT"
    assert ep.read_table("memory://lake/t.parquet", decryption=config(), filesystem=fs).equals(typed_table())
