"""envcrypt.columns: every supported type round-trips cell by cell, rows move freely, deterministic
cells compare equal, and tables travel through Parquet, Feather, duckdb and polars."""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import pyarrow.compute as pc  # noqa: E402
import pyarrow.feather as feather  # noqa: E402

import envcrypt.columns as ec  # noqa: E402
from envcrypt.columns import _engine  # noqa: E402
from envcrypt.errors import IntegrityError, UnsupportedTypeError  # noqa: E402
from envcrypt.keys.vault import vault_for  # noqa: E402

CORES = ["pure", "compiled"] if _engine.compiled_available() else ["pure"]
UTC = datetime.UTC


@pytest.fixture(autouse=True)
def _keys(_isolated_vault: Path) -> None:
    vault = vault_for(None)
    vault.create_key("pii")
    vault.create_key("other")


def every_type(n: int = 40) -> pa.Table:
    def nul(values: list[object]) -> list[object]:
        return [None if i % 7 == 3 else v for i, v in enumerate(values)]

    r = range(n)
    cols = {
        "id": pa.array(r, pa.int64()),
        "i8": pa.array(nul([i % 100 - 50 for i in r]), pa.int8()),
        "i16": pa.array(nul([(i * 300) % 30000 for i in r]), pa.int16()),
        "i32": pa.array(nul([i * 70000 % 2**31 for i in r]), pa.int32()),
        "u64": pa.array(nul([2**63 + i for i in r]), pa.uint64()),
        "f16": pa.array(nul([None] * n), pa.float16()),
        "f32": pa.array(nul([i / 3 for i in r]), pa.float32()),
        "f64": pa.array(nul([i / 7 for i in r]), pa.float64()),
        "flag": pa.array(nul([i % 2 == 0 for i in r]), pa.bool_()),
        "s": pa.array(nul([("é" * (i % 5)) + str(i) if i % 4 else "" for i in r]), pa.string()),
        "ls": pa.array(nul([f"long-{i}" for i in r]), pa.large_string()),
        "sv": pa.array(nul([f"view-{i}" for i in r]), pa.string_view()),
        "b": pa.array(nul([bytes([i % 256]) * (i % 9) for i in r]), pa.binary()),
        "lb": pa.array(nul([bytes(i % 5) for i in r]), pa.large_binary()),
        "fsb": pa.array(nul([bytes([i % 256]) * 4 for i in r]), pa.binary(4)),
        "d32": pa.array(nul([datetime.date(2020, 1, 1) + datetime.timedelta(days=i) for i in r]), pa.date32()),
        "d64": pa.array(nul([datetime.date(2020, 1, 1) + datetime.timedelta(days=i) for i in r]), pa.date64()),
        "ts": pa.array(nul([datetime.datetime(2026, 1, 1, tzinfo=UTC) + datetime.timedelta(seconds=i) for i in r]),
                       pa.timestamp("us", tz="Europe/Paris")),
        "tsn": pa.array(nul([i * 10**9 for i in r]), pa.timestamp("ns")),
        "t64": pa.array(nul([i * 1000 for i in r]), pa.time64("us")),
        "dur": pa.array(nul([i for i in r]), pa.duration("ms")),
        "dec": pa.array(nul([decimal.Decimal(i) / 100 for i in r]), pa.decimal128(12, 2)),
        "dec256": pa.array(nul([decimal.Decimal(i) * 10**40 for i in r]), pa.decimal256(60, 0)),
        "dict": pa.array(nul([f"c{i % 3}" for i in r])).dictionary_encode(),
        "nul": pa.nulls(n),
    }
    fields = [pa.field(k, v.type, metadata={"doc": f"the {k} column"} if k == "s" else None)
              for k, v in cols.items()]
    return pa.table(list(cols.values()), schema=pa.schema(fields, metadata={b"owner": b"tests"}))


ENCRYPTED = [c for c in every_type().schema.names if c != "id"]


@pytest.mark.parametrize("core", CORES)
def test_every_supported_type_round_trips_with_nulls_and_empty_values(core: str) -> None:
    table = every_type()
    policy = {c: "local:pii" for c in ENCRYPTED}
    enc = ec.encrypt_table(table, policy, core=core)
    for name in ENCRYPTED:
        assert enc.schema.field(name).type == pa.binary()
        assert enc.column(name).null_count == table.column(name).null_count
    assert enc.column("id").equals(table.column("id"))
    dec = ec.decrypt_table(enc, policy, core=core)
    assert dec.schema.equals(table.schema, check_metadata=True)
    assert dec.equals(table)


def test_pure_and_compiled_decrypt_each_others_tables() -> None:
    table = every_type()
    policy = {c: "local:pii" for c in ENCRYPTED}
    for a in CORES:
        for b in CORES:
            assert ec.decrypt_table(ec.encrypt_table(table, policy, core=a), policy, core=b).equals(table)


def test_nested_types_raise_unsupported_type_error() -> None:
    table = pa.table({"tags": pa.array([["a"], []], pa.list_(pa.string())),
                      "addr": pa.array([{"x": 1}, None], pa.struct([("x", pa.int32())]))})
    for name in table.schema.names:
        with pytest.raises(UnsupportedTypeError, match=name):
            ec.encrypt_table(table, {name: "local:pii"})


def test_rows_reordered_filtered_sliced_and_partitioned_still_decrypt() -> None:
    table = every_type(500).drop_columns(["sv"])  # pyarrow has no take kernel for string_view
    policy = {"s": "local:pii", "i32": "local:pii", "ts": "local:pii"}
    enc = ec.encrypt_table(table, policy)
    order = pc.sort_indices(enc, [("i16", "descending")])
    shuffled = enc.take(order)
    assert ec.decrypt_table(shuffled, policy).equals(table.take(order))
    mask = pc.greater(enc.column("id"), 250)
    assert ec.decrypt_table(enc.filter(mask), policy).equals(table.filter(mask))
    assert ec.decrypt_table(enc.slice(13, 77), policy).equals(table.slice(13, 77))
    parts = [enc.slice(i, 100) for i in range(0, 500, 100)]
    back = pa.concat_tables([ec.decrypt_table(p, policy) for p in parts])
    assert back.equals(table)
    assert ec.decrypt_table(pa.concat_tables(parts), policy).equals(table)  # many chunks


def test_randomized_cells_differ_and_deterministic_cells_repeat() -> None:
    token = ec.new_column_key("local:pii")
    table = pa.table({"email": ["a@x", "b@x", "a@x", None], "mail2": ["a@x"] * 4})
    rnd = ec.encrypt_table(table, {"email": "local:pii"})
    cells = rnd.column("email").to_pylist()
    assert cells[0] != cells[2]
    det = ec.encrypt_table(table, {"email": token, "mail2": token}, deterministic=["email", "mail2"])
    cells = det.column("email").to_pylist()
    assert cells[0] == cells[2] != cells[1] and cells[3] is None
    assert det.column("mail2")[0].as_py() != cells[0]  # another column: another AD
    key = ec.load_column_key(token)
    hit = det.filter(pc.equal(det.column("email"), pa.scalar(ec.encrypt_value("a@x", key, column="email"))))
    assert hit.num_rows == 2
    assert ec.decrypt_table(det, {"email": token, "mail2": token}).equals(table)
    assert ec.encrypt_value(None, key, column="email") is None
    n = pa.table({"n": pa.array([5, 6], pa.int32())})
    enc_n = ec.encrypt_table(n, {"n": token}, deterministic=["n"])
    assert enc_n.column("n")[0].as_py() == ec.encrypt_value(5, key, column="n", type=pa.int32())


def test_deterministic_mode_needs_a_stable_key_and_refuses_booleans() -> None:
    table = pa.table({"flag": [True, False], "s": ["a", "b"]})
    with pytest.raises(ec.ColumnPolicyError, match="new_column_key"):
        ec.encrypt_table(table, {"s": "local:pii"}, deterministic=["s"])
    with pytest.raises(UnsupportedTypeError, match="boolean"):
        ec.encrypt_table(table, {"flag": ec.new_column_key("local:pii")}, deterministic=["flag"])


_WRITER = """
import sys, pyarrow as pa, pyarrow.parquet as pq, envcrypt.columns as ec
token, path, start = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = pa.table({"email": [f"user{i}@x" for i in range(start, start + 50)], "n": list(range(start, start + 50))})
pq.write_table(ec.encrypt_table(t, {"email": token}, deterministic=["email"]), path)
"""


def test_a_join_on_the_encrypted_column_of_two_files_from_two_processes(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    token = ec.new_column_key("local:pii")
    for name, start in (("a", 0), ("b", 30)):
        subprocess.run([sys.executable, "-c", _WRITER, token, str(tmp_path / f"{name}.parquet"), str(start)],
                       check=True)
    a, b = pq.read_table(tmp_path / "a.parquet"), pq.read_table(tmp_path / "b.parquet")
    joined = a.join(b, "email", join_type="inner", right_suffix="_b")
    assert joined.num_rows == 20
    con = duckdb.connect()
    rows = con.execute(f"select count(*) from '{tmp_path / 'a.parquet'}' x join '{tmp_path / 'b.parquet'}' y "
                       "on x.email = y.email").fetchone()
    assert rows == (20,)
    dec = ec.decrypt_table(joined.select(["email", "n"]), {"email": token}, schema=a.schema)  # join drops metadata
    assert sorted(dec.column("email").to_pylist()) == sorted(f"user{i}@x" for i in range(30, 50))


def test_parquet_feather_and_the_envcrypt_filesystem(tmp_path: Path) -> None:
    import fsspec

    table = every_type(200).drop_columns(["sv"])  # Parquet and Feather store string_view as string
    policy = {"s": "local:pii", "dec": "local:pii", "ts": "local:pii", "dict": "local:pii"}
    enc = ec.encrypt_table(table, policy)
    pq.write_table(enc, tmp_path / "t.parquet")
    feather.write_feather(enc, tmp_path / "t.feather")
    names = list(policy)
    assert ec.decrypt_table(pq.read_table(tmp_path / "t.parquet"), policy).select(names).equals(table.select(names))
    assert ec.decrypt_table(feather.read_table(tmp_path / "t.feather"), policy).equals(table)
    fs = fsspec.filesystem("envcrypt", target_protocol="file", key_uri="local:other")
    with fs.open(str(tmp_path / "whole.parquet"), "wb") as f:
        pq.write_table(enc, f)
    with fs.open(str(tmp_path / "whole.parquet"), "rb") as f:
        assert ec.decrypt_table(pq.read_table(f), policy).select(names).equals(table.select(names))


def test_duckdb_and_polars_read_the_plain_columns_without_any_key(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    pl = pytest.importorskip("polars")
    table = every_type(100).drop_columns(["dec256", "sv"])  # polars: no decimal256, no views
    pq.write_table(ec.encrypt_table(table, {"s": "local:pii", "f64": "local:pii"}), tmp_path / "t.parquet")
    got = duckdb.connect().execute(
        f"select id, i32 from '{tmp_path / 't.parquet'}' where id >= 90 order by id desc").fetchall()
    assert got[0][0] == 99 and len(got) == 10
    frame = pl.read_parquet(tmp_path / "t.parquet").filter(pl.col("id") < 5).sort("id", descending=True)
    assert frame["id"].to_list() == [4, 3, 2, 1, 0] and frame["s"].dtype == pl.Binary
    back = ec.decrypt_table(frame.to_arrow(), {"s": "local:pii", "f64": "local:pii"},
                            schema=pq.read_schema(tmp_path / "t.parquet"))
    assert back.column("f64").to_pylist() == table.column("f64").to_pylist()[:5][::-1]


def test_the_policy_pickles_and_keys_do_not() -> None:
    policy = ec.ColumnPolicy(columns={"s": ec.new_column_key("local:pii")}, deterministic=("s",))
    assert pickle.loads(pickle.dumps(policy)) == policy
    key = ec.load_column_key(policy.columns["s"])
    with pytest.raises(TypeError):
        pickle.dumps(key)
    assert "ColumnKey" in repr(key) and key.token == policy.columns["s"]


def test_rotation_rewrites_only_the_field_metadata() -> None:
    table = every_type(50)
    enc = ec.encrypt_table(table, {"s": "local:pii", "i32": "local:pii"})
    rotated = ec.rotate(enc, "local:other", trusted_keys="local:pii")
    for name in ("s", "i32"):
        assert rotated.column(name).equals(enc.column(name))  # the same cells
        assert rotated.schema.field(name).metadata != enc.schema.field(name).metadata
    assert ec.decrypt_table(rotated, ["s", "i32"], trusted_keys="local:other").equals(table)
    from envcrypt.errors import UntrustedKeyError

    with pytest.raises(UntrustedKeyError):
        ec.decrypt_table(rotated, ["s"], trusted_keys="local:pii")


def _people(start: int, n: int) -> pa.Table:
    r = range(start, start + n)
    return pa.table({"id": pa.array(r, pa.int64()),
                     "ssn": pa.array([None if i % 5 == 2 else f"{i:03d}-05-1120" for i in r]),
                     "score": pa.array([i / 3 for i in r], pa.float64()),
                     "email": pa.array([f"user{i % 7}@x.org" for i in r])})


def test_tables_of_several_encrypt_calls_concatenate_and_decrypt() -> None:
    token = ec.new_column_key("local:pii")
    policy = {"columns": {"ssn": token, "score": token, "email": token}, "deterministic": ["email"]}
    parts = [_people(0, 40), _people(40, 1), _people(41, 300)]
    encrypted = [ec.encrypt_table(p, policy) for p in parts]
    assert len({e.schema.field("ssn").metadata[b"envcrypt.column"] for e in encrypted}) == 1  # same metadata
    assert len({e.column("ssn")[0].as_py()[:16] for e in encrypted}) == 3  # a salt per call, in each cell
    both = pa.concat_tables(encrypted)
    assert ec.decrypt_table(both, policy).equals(pa.concat_tables(parts))
    order = pc.sort_indices(both, [("score", "descending")])  # rows of all calls interleaved
    assert ec.decrypt_table(both.take(order), policy).equals(pa.concat_tables(parts).take(order))


def test_a_dataset_of_three_files_with_rows_shuffled_across_them(tmp_path: Path) -> None:
    import numpy as np
    import pyarrow.dataset as ds

    token = ec.new_column_key("local:pii")
    policy = {"ssn": token, "score": token}
    parts = [_people(0, 100), _people(100, 57), _people(157, 211)]
    rows = pa.concat_tables([ec.encrypt_table(p, policy) for p in parts])
    shuffle = np.random.default_rng(3).permutation(rows.num_rows)
    mixed = rows.take(shuffle)  # every file now holds rows of every encrypt call
    lake = tmp_path / "lake"
    lake.mkdir()
    for i, (lo, hi) in enumerate(((0, 120), (120, 250), (250, mixed.num_rows))):
        pq.write_table(mixed.slice(lo, hi - lo), lake / f"part-{i}.parquet")
    dataset = ds.dataset(lake, format="parquet")
    back = ec.decrypt_table(dataset.to_table(), policy).sort_by("id")
    assert back.equals(pa.concat_tables(parts))
    only = ec.decrypt_table(dataset.to_table(filter=ds.field("id") >= 200), policy)
    assert sorted(only.column("id").to_pylist()) == list(range(200, 368))


def test_one_cell_decrypts_with_plain_aesgcm_as_format_md_says() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    import envcrypt

    enc = ec.encrypt_table(_people(0, 2), {"ssn": "local:pii"})
    meta = json.loads(enc.schema.field("ssn").metadata[b"envcrypt.column"])
    assert meta["format"] == 2 and set(meta) == {"format", "mode", "suite", "field", "key", "mac"}
    blob = base64.b64decode(meta["key"])
    cek = envcrypt.decrypt(blob, trusted_keys=["local:pii"])
    key_id = bytes.fromhex(envcrypt.inspect(blob).encryption_context["envcrypt:column-key"])
    ad = b"envcrypt.columns/v2\x00" + key_id + b"ssn"
    for row, cell in enumerate(enc.column("ssn").to_pylist()):
        salt, nonce, body = cell[:16], cell[16:28], cell[28:]
        assert nonce == (2 * row + 1).to_bytes(12, "big")
        k = HKDF(hashes.SHA256(), 32, salt, b"envcrypt columns v2 AES-256-GCM").derive(cek)
        assert AESGCM(k).decrypt(nonce, body, ad) == f"{row:03d}-05-1120".encode()


def test_rows_of_calls_under_fresh_column_keys_say_how_to_share_one() -> None:
    a, b = (ec.encrypt_table(_people(0, 5), {"ssn": "local:pii"}) for _ in range(2))
    with pytest.raises(IntegrityError, match="new_column_key"):
        ec.decrypt_table(pa.concat_tables([a, b]), {"ssn": "local:pii"})


def test_a_decrypted_string_cell_that_is_not_utf8_fails_even_when_the_cells_join_into_utf8() -> None:
    import numpy as np

    from envcrypt.columns import _cells

    euro = "€".encode()  # 3 bytes: a lead byte and two continuation bytes
    cases = [
        ([b"ab", euro, b"", "é".encode()], True),
        ([b"a" + euro[:1], euro[1:] + b"b"], False),  # split character: the joined bytes are UTF-8
        ([euro[:2], euro[2:]], False),
        ([b"ok", b"\xff"], False),
        ([b"", b"", b"\x80"], False),
        ([], True),
    ]
    for values, ok in cases:
        data = np.frombuffer(b"".join(values), np.uint8).copy()
        offsets = np.zeros(len(values) + 1, np.int64)
        np.cumsum([len(v) for v in values], out=offsets[1:])
        valid = np.ones(len(values), np.bool_)
        for t in (pa.string(), pa.large_string()):
            if ok:
                assert _cells.from_cells(t, data, offsets, valid).to_pylist() == [v.decode() for v in values]
            else:
                with pytest.raises(IntegrityError, match="UTF-8"):
                    _cells.from_cells(t, data, offsets, valid)
