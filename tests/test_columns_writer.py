"""Parquet writer settings for encrypted columns: dictionary, statistics and codec per column."""

from __future__ import annotations

import io

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import envcrypt.columns as ec  # noqa: E402
from envcrypt.keys.vault import vault_for  # noqa: E402


def test_encrypted_columns_get_no_dictionary_no_statistics_and_their_own_codec() -> None:
    vault_for(None).create_key("pii")
    table = pa.table({"id": list(range(50)), "email": [f"user{i % 7}@x" for i in range(50)],
                      "nested": [{"x": i % 3} for i in range(50)], "ssn": [i % 5 for i in range(50)]})
    enc = ec.encrypt_table(table, {"email": "local:pii", "ssn": "local:pii"})
    opts = ec.parquet_write_options(enc)
    buf = io.BytesIO()
    pq.write_table(enc, buf, **opts)
    meta = pq.ParquetFile(io.BytesIO(buf.getvalue())).metadata.row_group(0)
    cols = {meta.column(i).path_in_schema: meta.column(i) for i in range(meta.num_columns)}
    assert set(cols) == {"id", "email", "nested.x", "ssn"}
    for name in ("email", "ssn"):
        assert cols[name].compression == "LZ4"
        assert not any("DICTIONARY" in e for e in cols[name].encodings)
        assert not cols[name].is_stats_set
    for name in ("id", "nested.x"):  # pyarrow's defaults kept for the plain columns
        assert cols[name].compression == "SNAPPY"
        assert any("DICTIONARY" in e for e in cols[name].encodings)
        assert cols[name].is_stats_set
    back = ec.decrypt_table(pq.read_table(io.BytesIO(buf.getvalue())), {"email": "local:pii", "ssn": "local:pii"})
    assert back.equals(table)


def test_the_codecs_can_be_chosen() -> None:
    vault_for(None).create_key("pii")
    enc = ec.encrypt_table(pa.table({"a": [1], "b": ["x"]}), {"b": "local:pii"})
    opts = ec.parquet_write_options(enc.schema, compression="zstd", encrypted_compression="none")
    assert opts["compression"] == {"a": "zstd", "b": "none"}
