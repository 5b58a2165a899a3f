"""PME key rotation with external key material (only the key material file is rewritten), and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pa = pytest.importorskip("pyarrow")

import envcrypt.parquet as ep  # noqa: E402
from envcrypt.errors import KeyAccessDeniedError, UntrustedKeyError  # noqa: E402
from envcrypt.fs._sinks import ConcurrentModificationError  # noqa: E402
from envcrypt.keys.vault import LocalVaultResolver, vault_for  # noqa: E402
from tests.parquet_helpers import typed_table  # noqa: E402

CFG = {"footer_key": "local:footer", "column_keys": {"local:pii": ["ssn", "email"]},
       "internal_key_material": False}


@pytest.fixture
def written(tmp_path: Path, _isolated_vault: Path) -> Any:
    ep.clear_factories()
    vault = vault_for(None)
    vault.create_key("footer")
    vault.create_key("pii")
    path = tmp_path / "t.parquet"
    ep.write_table(typed_table(), path, encryption=CFG)
    yield vault, path, tmp_path / "_KEY_MATERIAL_FOR_t.parquet.json"
    ep.clear_factories()


def test_rotation_rewrites_only_the_key_material(written: Any) -> None:
    vault, path, material = written
    before = path.read_bytes()
    vault.rotate_key("footer")
    vault.rotate_key("pii")
    result = ep.rotate(str(path), ["local:footer", "local:pii"])
    assert result["keys"] == {"local:footer": "local:footer/2", "local:pii": "local:pii/2"}
    assert path.read_bytes() == before
    ep.clear_factories()
    only_new = {"trusted_keys": ["local:footer/2", "local:pii/2"]}
    assert ep.read_table(path, decryption=only_new).equals(typed_table())
    info = ep.inspect(path)
    assert info["footer_key"]["key_version"] == "local:footer/2" and info["master_keys"] == ["local:footer",
                                                                                               "local:pii"]
    vault.disable_key("footer/1")  # the old version is no longer needed
    ep.clear_factories()
    assert ep.read_table(path, decryption=CFG).num_rows == 50


def test_rotation_to_another_key_is_refused(written: Any) -> None:
    vault, path, material = written
    before = material.read_bytes()
    vault.create_key("other")
    with pytest.raises(KeyAccessDeniedError, match="rewriting"):
        ep.rotate(str(path), ["local:other", "local:pii"])
    with pytest.raises(UntrustedKeyError):  # the old material must name keys the rotation trusts
        ep.rotate(str(path), ["local:footer", "local:pii"], trusted_keys=["local:pii"])
    assert material.read_bytes() == before


def test_a_concurrent_change_of_the_key_material_is_never_overwritten(written: Any,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    vault, path, material = written
    vault.rotate_key("footer")
    real = LocalVaultResolver.wrap

    def wrap_while_someone_else_writes(self: Any, key_uri: str, dek: bytes, context: Any) -> Any:
        material.write_text(material.read_text() + " ")  # another writer, mid-rotation
        return real(self, key_uri, dek, context)

    monkeypatch.setattr(LocalVaultResolver, "wrap", wrap_while_someone_else_writes)
    with pytest.raises(ConcurrentModificationError):
        ep.rotate(str(path), ["local:footer", "local:pii"])
    assert "local:footer/2" not in material.read_text()


def test_cli_inspect_and_rotate(written: Any, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    import envcrypt.cli as cli

    monkeypatch.setattr(cli, "GROUPS", (*cli.GROUPS, "envcrypt.cli.parquet")
                        if "envcrypt.cli.parquet" not in cli.GROUPS else cli.GROUPS)
    vault, path, _ = written
    assert cli.main(["parquet", "inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["footer_key"]["master_key"] == "local:footer"
    vault.rotate_key("pii")
    assert cli.main(["parquet", "rotate", str(path), "--to", "local:footer", "--to", "local:pii"]) == 0
    assert "local:pii -> local:pii/2" in capsys.readouterr().out
    assert cli.main(["parquet", "rotate", str(path), "--to", "local:pii"]) == 2
    assert "KeyAccessDeniedError" in capsys.readouterr().err
    assert cli.main(["parquet", "inspect", str(path)]) == 0
    assert "local:pii/2" not in capsys.readouterr().out  # encrypted footer: the footer key only
