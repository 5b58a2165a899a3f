"""A storage writer's PME files: built from public information only, refused by a reader.

The attacker writes a complete, standard PME file with pyarrow and a KMS client of their own:
the key material names their key, or the trusted key's name over a key they wrapped, or wraps
the data keys under a vault RSA wrap key's *public* key; or they drop a plaintext file in.
"""

from __future__ import annotations

import base64
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pe = pytest.importorskip("pyarrow.parquet.encryption")

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding  # noqa: E402

import envcrypt.parquet as ep  # noqa: E402
from envcrypt.errors import NotEncryptedError, UntrustedKeyError, WrongKeyError  # noqa: E402
from envcrypt.keys.base import WRAP_AES256_KWP, WRAP_RSA_OAEP_SHA256  # noqa: E402
from envcrypt.keys.vault import vault_for  # noqa: E402
from tests.attacks.forge import OAEP  # noqa: E402
from tests.parquet_helpers import typed_table  # noqa: E402

CFG = {"footer_key": "local:footer", "column_keys": {"local:pii": ["ssn", "email"]}, "plaintext_footer": True}
MID = ep._kms.master_key_id


class ForgingKmsClient(pe.KmsClient):  # type: ignore[misc]
    def __init__(self, wrap: Callable[[bytes, str], str]) -> None:
        super().__init__()
        self._wrap = wrap

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        return self._wrap(bytes(key_bytes), master_key_identifier)

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        raise AssertionError("the attacker never reads")


def slot_string(uri: str, algorithm: int, wrapped: bytes) -> str:
    u = uri.encode()
    return base64.b64encode(b"EPK1" + struct.pack(">H", len(u)) + u
                            + struct.pack(">HH", algorithm, len(wrapped)) + wrapped).decode()


def forge(path: Path, wrap: Callable[[bytes, str], str], footer: str, column: str) -> None:
    factory = pe.CryptoFactory(lambda _c: ForgingKmsClient(wrap))
    enc = pe.EncryptionConfiguration(footer_key=MID(footer), column_keys={MID(column): ["ssn", "email"]},
                                     plaintext_footer=True)
    pq.write_table(typed_table(), path, encryption_properties=factory.file_encryption_properties(
        pe.KmsConnectionConfig(), enc))


@pytest.fixture(autouse=True)
def vault_keys(_isolated_vault: Path) -> Any:
    ep.clear_factories()
    vault = vault_for(None)
    vault.create_key("footer")
    vault.create_key("pii")
    yield vault
    ep.clear_factories()


def test_a_file_under_the_attackers_own_key_is_refused_without_a_key_service_call(
        tmp_path: Path, unwraps: list[str]) -> None:
    mine = os.urandom(32)
    path = tmp_path / "forged.parquet"
    forge(path, lambda k, mid: slot_string("local:attacker/1", WRAP_AES256_KWP, aes_key_wrap_with_padding(mine, k)),
          "local:attacker", "local:attacker")
    with pytest.raises(UntrustedKeyError, match="local:attacker/1"):
        ep.read_table(path, decryption=CFG)
    assert unwraps == []


def test_key_material_naming_a_trusted_master_key_over_an_untrusted_slot_is_refused(
        tmp_path: Path, unwraps: list[str]) -> None:
    """The PME master key id comes from the file: it is trusted for nothing."""
    mine = os.urandom(32)
    path = tmp_path / "forged.parquet"
    forge(path, lambda k, mid: slot_string("local:attacker/1", WRAP_AES256_KWP, aes_key_wrap_with_padding(mine, k)),
          "local:footer", "local:pii")
    with pytest.raises(UntrustedKeyError):
        ep.read_table(path, decryption=CFG)
    assert unwraps == []


def test_a_slot_relabelled_with_the_trusted_key_does_not_unwrap(tmp_path: Path) -> None:
    mine = os.urandom(32)
    path = tmp_path / "forged.parquet"
    forge(path, lambda k, mid: slot_string("local:footer/1", WRAP_AES256_KWP, aes_key_wrap_with_padding(mine, k)),
          "local:footer", "local:pii")
    with pytest.raises(WrongKeyError):
        ep.read_table(path, decryption=CFG)


def test_data_keys_wrapped_under_a_vault_rsa_public_key_are_refused(tmp_path: Path, vault_keys: Any,
                                                                    unwraps: list[str]) -> None:
    vault_keys.create_key("rsawrap", "rsa", ops=["wrapKey", "unwrapKey", "encrypt", "decrypt"])
    public = serialization.load_pem_public_key(vault_keys.public_key_pem("rsawrap").encode())
    path = tmp_path / "forged.parquet"
    forge(path, lambda k, mid: slot_string("local:rsawrap/1", WRAP_RSA_OAEP_SHA256,
                                           public.encrypt(k, OAEP)),  # type: ignore[union-attr, call-arg]
          "local:rsawrap", "local:rsawrap")
    with pytest.raises(UntrustedKeyError):
        ep.read_table(path, decryption=CFG)
    assert unwraps == []
    # the stated limit (SECURITY.md): a reader that trusts an RSA wrap key accepts what its public key made
    assert ep.read_table(path, decryption={"trusted_keys": ["local:rsawrap"]}).num_rows == 50


def test_a_plaintext_file_dropped_into_a_dataset_is_refused(tmp_path: Path) -> None:
    ep.write_dataset(typed_table(), tmp_path / "ds", encryption=CFG, basename_template="good-{i}.parquet")
    pq.write_table(typed_table(), tmp_path / "ds" / "planted.parquet")
    with pytest.raises(NotEncryptedError, match="planted"):
        ep.read_dataset(tmp_path / "ds", decryption=CFG)
    with pytest.raises(NotEncryptedError):
        ep.read_table(tmp_path / "ds" / "planted.parquet", decryption=CFG)
