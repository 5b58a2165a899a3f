"""envcrypt columns inspect|rotate|new-key: the column keys of a file rewrapped with the cells
copied as they are, a concurrent change never overwritten, and no key ever printed."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import fsspec  # noqa: E402
import pyarrow.feather as feather  # noqa: E402

import envcrypt  # noqa: E402
import envcrypt.cli as cli  # noqa: E402
import envcrypt.columns as ec  # noqa: E402
from envcrypt.columns._meta import META_KEY  # noqa: E402
from envcrypt.columns._rotate import rotate_file  # noqa: E402
from envcrypt.errors import UntrustedKeyError  # noqa: E402
from envcrypt.fs._sinks import ConcurrentModificationError  # noqa: E402
from envcrypt.keys.vault import LocalVaultResolver, vault_for  # noqa: E402


def people(n: int = 500) -> pa.Table:
    return pa.table({"id": list(range(n)), "ssn": [f"{i:09d}" for i in range(n)],
                     "email": [f"u{i % 9}@x.org" for i in range(n)]})


@pytest.fixture()
def written(_isolated_vault: Path, tmp_path: Path) -> tuple[Any, Path, pa.Table, str]:
    vault = vault_for(None)
    vault.create_key("pii")
    vault.create_key("other")
    token = ec.new_column_key("local:pii")
    enc = ec.encrypt_table(people(), {"ssn": token, "email": token}, deterministic=["email"])
    path = tmp_path / "people.parquet"
    pq.write_table(enc, path, row_group_size=200)
    return vault, path, enc, token


def _blob(schema: pa.Schema, column: str) -> bytes:
    return base64.b64decode(json.loads(schema.field(column).metadata[META_KEY])["key"])


def test_the_columns_group_is_registered() -> None:
    assert "envcrypt.cli.columns" in cli.GROUPS
    actions = [a for a in cli.build_parser()._subparsers._group_actions if a.choices]  # type: ignore[union-attr]
    assert "columns" in actions[0].choices


def test_inspect_shows_modes_and_master_keys_and_never_a_key(written: Any, capsys: pytest.CaptureFixture[str]) -> None:
    _, path, enc, _ = written
    assert cli.main(["columns", "inspect", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    info = json.loads(out)
    assert info["format"] == "parquet" and info["plaintext_columns"] == ["id"]
    assert info["encrypted_columns"]["ssn"]["mode"] == "randomized"
    assert info["encrypted_columns"]["email"]["suite"] == "AES-256-SIV"
    assert info["encrypted_columns"]["ssn"]["master_keys"] == ["local:pii/1"]
    assert cli.main(["columns", "inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert "column ssn: randomized (AES-256-GCM), string" in text and "local:pii/1" in text
    cek = envcrypt.decrypt(_blob(enc.schema, "ssn"), trusted_keys=["local:pii"])
    for shown in (out, text):
        for form in (cek.hex(), base64.b64encode(cek).decode(), base64.b64encode(_blob(enc.schema, "ssn")).decode()):
            assert form not in shown


def test_rotate_rewraps_the_column_keys_and_copies_every_cell(written: Any, capsys: pytest.CaptureFixture[str]) -> None:
    vault, path, enc, token = written
    vault.rotate_key("pii")
    assert cli.main(["columns", "rotate", str(path), "--to", "local:pii"]) == 0
    assert "ssn, email" in capsys.readouterr().out
    after = pq.read_table(path)
    for name in ("ssn", "email"):
        assert after.column(name).equals(enc.column(name))  # the same cells, byte for byte
        assert envcrypt.inspect(_blob(after.schema, name)).key_slots[0].key_uri == "local:pii/2"
    assert pq.ParquetFile(path).num_row_groups == 3  # the row groups are kept
    assert ec.decrypt_table(after, {"ssn": token, "email": token}).equals(people())
    # to another master key: the old one must be trusted to open the column keys
    assert cli.main(["columns", "rotate", str(path), "--to", "local:other"]) != 0
    assert "UntrustedKeyError" in capsys.readouterr().err
    assert cli.main(["columns", "rotate", str(path), "--to", "local:other", "--trust", "local:pii"]) == 0
    moved = pq.read_table(path)
    assert moved.column("ssn").equals(enc.column("ssn"))
    assert ec.decrypt_table(moved, ["ssn"], trusted_keys="local:other").column("ssn").equals(people().column("ssn"))
    with pytest.raises(UntrustedKeyError):
        ec.decrypt_table(moved, ["ssn"], trusted_keys="local:pii")


def test_rotate_an_arrow_ipc_file_and_a_file_without_encrypted_columns(written: Any, tmp_path: Path) -> None:
    vault, _, enc, _ = written
    feather.write_feather(enc, tmp_path / "p.feather")
    pq.write_table(people(), tmp_path / "plain.parquet")
    before = (tmp_path / "plain.parquet").read_bytes()
    vault.rotate_key("pii")
    assert cli.main(["columns", "rotate", str(tmp_path / "p.feather"), "--to", "local:pii", "--json"]) == 0
    back = feather.read_table(tmp_path / "p.feather")
    assert back.column("ssn").equals(enc.column("ssn"))
    assert envcrypt.inspect(_blob(back.schema, "ssn")).key_slots[0].key_uri == "local:pii/2"
    assert cli.main(["columns", "rotate", str(tmp_path / "plain.parquet"), "--to", "local:pii"]) == 0
    assert (tmp_path / "plain.parquet").read_bytes() == before


def test_a_concurrent_change_is_never_overwritten(written: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    vault, path, _, _ = written
    vault.rotate_key("pii")
    other = people(3)
    real = LocalVaultResolver.wrap

    def wrap_while_someone_else_writes(self: Any, key_uri: str, dek: bytes, context: Any) -> Any:
        pq.write_table(other, path)  # another writer replaces the file mid-rotation
        return real(self, key_uri, dek, context)

    monkeypatch.setattr(LocalVaultResolver, "wrap", wrap_while_someone_else_writes)
    with pytest.raises(ConcurrentModificationError):
        rotate_file(str(path), "local:pii", fsspec.filesystem("file"))
    assert pq.read_table(path).equals(other)


def test_new_key_prints_a_token(_isolated_vault: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vault_for(None).create_key("pii")
    assert cli.main(["columns", "new-key", "local:pii"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("eck1.") and ec.load_column_key(token).token == token


@pytest.mark.parametrize("group", ["columns", "parquet"])
def test_storage_options_are_keyed_by_protocol_as_in_every_file_command(
    group: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from envcrypt.cli import main

    code = main([group, "inspect", str(tmp_path / "x.parquet"), "-o", '{"endpoint_url": "http://127.0.0.1:1"}'])
    assert code == 2 and "is not a protocol name" in capsys.readouterr().err
