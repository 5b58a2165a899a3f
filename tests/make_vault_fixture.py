"""Builds ``tests/vectors/vault_v2/``: a vault directory written by the vault code of
commit 7ec2b8f (vault.json format 2 with its mac, index.json generations, hash-chained
audit log), plus objects encrypted under its keys (``blobs/``, ``expected.json``).

``python -m tests.make_vault_fixture`` wrote it once.  The directory is kept forever:
``tests/test_vault_compat.py`` opens it with the current code (every key kind, versions,
a disabled version, a soft-deleted and a purged key, a secret) and checks that it still
reads, still verifies, and still takes new writes.  Never regenerate it to make a test
pass; add a new directory for a new on-disk format.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import envcrypt
from envcrypt.keys.vault import LocalVault

HERE = Path(__file__).parent / "vectors" / "vault_v2"


def main() -> None:
    if HERE.exists():
        shutil.rmtree(HERE)
    vault_dir = HERE / "vault"
    vault = LocalVault(vault_dir)
    vault.create_key("data")
    vault.rotate_key("data")
    vault.disable_key("data/1")
    vault.create_key("wrap-rsa", "rsa", ops=["wrapKey", "unwrapKey", "encrypt", "decrypt"])
    vault.create_key("signer", "ec-p256")
    vault.create_key("gone")
    vault.delete_key("gone")
    vault.create_key("shredded")
    vault.delete_key("shredded")
    vault.purge_key("shredded")
    vault.secrets.set("db-password", b"hunter2")
    blobs = HERE / "blobs"
    blobs.mkdir()
    expected = {}
    for name, uri in (("data.bin", "local:data"), ("rsa.bin", "local:wrap-rsa")):
        plaintext = f"compat object under {uri}".encode()
        (blobs / name).write_bytes(envcrypt.encrypt(plaintext, uri, vault=str(vault_dir)))
        expected[name] = {"key_uri": uri, "plaintext": plaintext.decode()}
    _, signature = vault.sign("signer", b"signed by the fixture")
    expected["signature.hex"] = {"key_uri": "local:signer/1", "data": "signed by the fixture",
                                 "signature": signature.hex()}
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
