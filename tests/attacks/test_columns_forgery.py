"""Attacks on encrypted columns by someone who can write the storage and read public keys, but
holds no master key: each hostile table is built the way such an attacker would build it."""

from __future__ import annotations

import json
import os
from base64 import b64decode, b64encode
from pathlib import Path

import pytest

pa = pytest.importorskip("pyarrow")

import envcrypt  # noqa: E402
import envcrypt.columns as ec  # noqa: E402
from envcrypt.columns._meta import META_KEY  # noqa: E402
from envcrypt.errors import IntegrityError, MalformedHeaderError, UntrustedKeyError, WrongKeyError  # noqa: E402
from envcrypt.keys.vault import vault_for  # noqa: E402
from tests.attacks.forge import rsa_forgery  # noqa: E402

WRAP_OPS = ["wrapKey", "unwrapKey", "encrypt", "decrypt"]
POLICY = {"ssn": "local:pii", "email": "local:pii"}


@pytest.fixture(autouse=True)
def _keys(_isolated_vault: Path) -> None:
    vault = vault_for(None)
    vault.create_key("pii")
    vault.create_key("attacker")
    vault.create_key("signer", "rsa")


def table() -> pa.Table:
    return pa.table({"id": list(range(6)), "ssn": [f"00{i}-11-2222" for i in range(6)],
                     "email": [f"u{i}@x" for i in range(6)]})


def meta(t: pa.Table, column: str) -> dict[str, str]:
    return dict(json.loads(t.schema.field(column).metadata[META_KEY]))


def with_meta(t: pa.Table, column: str, value: dict[str, str]) -> pa.Table:
    i = t.schema.get_field_index(column)
    f = t.schema.field(i).with_metadata({META_KEY: json.dumps(value).encode()})
    return t.set_column(i, f, t.column(i))


def with_cells(t: pa.Table, column: str, cells: list[bytes | None]) -> pa.Table:
    i = t.schema.get_field_index(column)
    return t.set_column(i, t.schema.field(i), pa.chunked_array([pa.array(cells, pa.binary())]))


def test_a_tampered_cell_is_an_integrity_error() -> None:
    enc = ec.encrypt_table(table(), POLICY)
    cells = enc.column("ssn").to_pylist()
    cells[3] = cells[3][:20] + bytes([cells[3][20] ^ 1]) + cells[3][21:]
    with pytest.raises(IntegrityError):
        ec.decrypt_table(with_cells(enc, "ssn", cells), POLICY)


def test_a_truncated_cell_is_an_integrity_error() -> None:
    enc = ec.encrypt_table(table(), POLICY)
    for cut in (1, 16, 27):
        cells = enc.column("ssn").to_pylist()
        cells[2] = cells[2][:cut]
        with pytest.raises(IntegrityError):
            ec.decrypt_table(with_cells(enc, "ssn", cells), POLICY)


def test_cells_moved_to_another_column_with_its_metadata_fail() -> None:
    """Same key, same table: ssn cells copied into email (with or without ssn's metadata)."""
    enc = ec.encrypt_table(table(), POLICY)
    moved = with_cells(enc, "email", enc.column("ssn").to_pylist())
    with pytest.raises(IntegrityError):
        ec.decrypt_table(moved, POLICY)
    with pytest.raises(IntegrityError):  # the MAC binds the column name
        ec.decrypt_table(with_meta(moved, "email", meta(enc, "ssn")), POLICY)


def test_rows_swapped_in_from_another_file_fail() -> None:
    """Under a key URI each encrypt_table call has its own column key: a row from another file fails."""
    a, b = ec.encrypt_table(table(), POLICY), ec.encrypt_table(table(), POLICY)
    cells = a.column("ssn").to_pylist()
    cells[1] = b.column("ssn")[1].as_py()
    with pytest.raises(IntegrityError):
        ec.decrypt_table(with_cells(a, "ssn", cells), POLICY)


def test_under_one_column_key_cells_move_between_files_but_not_columns_or_salts() -> None:
    """The stated limit (SECURITY.md): under one column key, a cell of another file of the same
    column opens (that is what lets datasets of many files decrypt); a cell of another column, a
    cell whose salt the attacker replaced (by a random one or by another batch's) does not."""
    token = ec.new_column_key("local:pii")
    policy = {"ssn": token, "email": token}
    a, b = ec.encrypt_table(table(), policy), ec.encrypt_table(table(), policy)
    cells = a.column("ssn").to_pylist()
    cells[1] = b.column("ssn")[4].as_py()
    assert ec.decrypt_table(with_cells(a, "ssn", cells), policy).column("ssn")[1].as_py() == "004-11-2222"
    for forged in (b.column("email")[1].as_py(),                      # another column, same key
                   os.urandom(16) + cells[2][16:],                    # a salt of the attacker's
                   b.column("ssn")[0].as_py()[:16] + cells[2][16:]):  # another batch's salt
        bad = a.column("ssn").to_pylist()
        bad[2] = forged
        with pytest.raises(IntegrityError):
            ec.decrypt_table(with_cells(a, "ssn", bad), policy)


def test_many_forged_salts_stop_at_the_first_one_that_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """20,000 cells under 20,000 planted salts: the read stops at the first salt that fails, so the
    work stays bounded by the batches the column really has."""
    from envcrypt.columns._keys import ColumnKey

    token = ec.new_column_key("local:pii")
    enc = ec.encrypt_table(pa.table({"s": ["x" * 20] * 20_000}), {"s": token})
    cells = [os.urandom(16) + c[16:] for c in enc.column("s").to_pylist()]
    cells[0] = enc.column("s")[0].as_py()
    derived: list[bytes] = []
    real = ColumnKey.gcm_key
    monkeypatch.setattr(ColumnKey, "gcm_key", lambda self, salt: derived.append(salt) or real(self, salt))
    with pytest.raises(IntegrityError):
        ec.decrypt_table(with_cells(enc, "s", cells), {"s": token})
    assert 1 <= len(derived) <= 2


def test_edited_metadata_type_mode_or_format_is_refused() -> None:
    enc = ec.encrypt_table(pa.table({"n": pa.array([1, 2], pa.int64())}), {"n": "local:pii"})
    m = meta(enc, "n")
    m["field"] = b64encode(pa.schema([pa.field("n", pa.float64())]).serialize().to_pybytes()).decode()
    with pytest.raises(IntegrityError):
        ec.decrypt_table(with_meta(enc, "n", m), {"n": "local:pii"})
    m = meta(enc, "n")
    m["field"] = b64encode(pa.schema([pa.field("n", pa.timestamp("s"))]).serialize().to_pybytes()).decode()
    with pytest.raises(IntegrityError):  # same width, other meaning: the MAC still catches it
        ec.decrypt_table(with_meta(enc, "n", m), {"n": "local:pii"})
    m = meta(enc, "n")
    with pytest.raises(MalformedHeaderError):  # a format-1 column (32-byte salt in the metadata)
        ec.decrypt_table(with_meta(enc, "n", {**m, "format": 1, "salt": b64encode(os.urandom(32)).decode()}),
                         {"n": "local:pii"})
    with pytest.raises(MalformedHeaderError):
        ec.decrypt_table(with_meta(enc, "n", {**m, "mode": "deterministic"}), {"n": "local:pii"})


def test_forged_metadata_naming_the_attackers_key_is_untrusted() -> None:
    """The attacker re-encrypts the column under a key of their own and rewrites the metadata."""
    forged = ec.encrypt_table(table(), {"ssn": "local:attacker"})
    with pytest.raises(UntrustedKeyError):
        ec.decrypt_table(forged, {"ssn": "local:pii"})


def test_a_column_key_wrapped_under_a_public_rsa_key_is_refused() -> None:
    vault = vault_for(None)
    vault.create_key("wrapper", "rsa", ops=WRAP_OPS)
    enc = ec.encrypt_table(table(), {"ssn": "local:pii"})
    m = meta(enc, "ssn")
    for name in ("signer", "wrapper"):
        pem = vault.public_key_pem(name)  # public information
        # the attacker's own CEK, sealed in an envcrypt object whose slot they RSA-wrapped
        header = envcrypt.inspect(b64decode(m["key"]))
        blob = rsa_forgery(pem, f"local:{name}/1", os.urandom(32), header.encryption_context)
        with pytest.raises((UntrustedKeyError, WrongKeyError)):
            ec.decrypt_table(with_meta(enc, "ssn", {**m, "key": b64encode(blob).decode()}), {"ssn": "local:pii"})


def test_the_wrong_key_is_a_wrong_key_error() -> None:
    enc = ec.encrypt_table(table(), {"ssn": "local:attacker"})
    with pytest.raises(UntrustedKeyError):
        ec.decrypt_table(enc, ["ssn"], trusted_keys="local:pii")
    m = meta(enc, "ssn")
    other = ec.encrypt_table(table(), {"ssn": "local:pii"})
    swapped = with_meta(enc, "ssn", {**m, "key": meta(other, "ssn")["key"]})
    with pytest.raises(IntegrityError):  # another CEK under a trusted key: the metadata MAC fails
        ec.decrypt_table(swapped, {"ssn": "local:pii"})


def test_an_edited_pandas_dtype_is_an_integrity_error_not_a_cast() -> None:
    """The attacker rewrites the frame's metadata so that an int64 column comes back as int8."""
    pd = pytest.importorskip("pandas")
    enc = ec.encrypt_frame(pd.DataFrame({"n": [1, 300, 70000]}), {"n": "local:pii"})
    m = json.loads(enc.attrs[ec.FRAME_ATTR]["n"])
    f = pa.field("n", pa.int64(), metadata={b"envcrypt.pandas_dtype": b"int8"})
    m["field"] = b64encode(pa.schema([f]).serialize().to_pybytes()).decode()
    enc.attrs = {ec.FRAME_ATTR: {"n": json.dumps(m)}}
    with pytest.raises(IntegrityError):
        ec.decrypt_frame(enc, {"n": "local:pii"})
