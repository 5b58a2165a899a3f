"""A rewrap never revives data whose key another process has just purged.

Reads keep unwrapped DEKs for up to ``max_age``; another process's disable,
delete or purge reaches this process's cached *reads* only when they expire
(SECURITY.md).  A rewrap, though, writes a new lasting object under another
key: served from the cache it would undo the crypto-shredding.  So a rewrite
asks the resolver whether the key may still unwrap before it uses a cached DEK.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import envcrypt
from envcrypt.errors import KeyDeletedError, KeyDisabledError
from envcrypt.fs import EnvcryptFileSystem
from envcrypt.keys.vault import LocalVault


def _in_another_process(vault: Path, code: str) -> None:
    subprocess.run([sys.executable, "-c", "from envcrypt.keys.vault import LocalVault as V\n"
                    f"v = V({str(vault)!r})\n{code}"], check=True, timeout=60)


@pytest.mark.parametrize(("admin", "error"), [("v.delete_key('k'); v.purge_key('k')", KeyDeletedError),
                                              ("v.disable_key('k')", KeyDisabledError)])
def test_rewrap_asks_the_vault_before_it_uses_a_cached_dek(_isolated_vault: Path, admin: str,
                                                           error: type[Exception]) -> None:
    vault = LocalVault(_isolated_vault)
    vault.create_key("k")
    vault.create_key("k2")
    blob = envcrypt.encrypt(b"shred me", "local:k")
    assert envcrypt.decrypt(blob, trusted_keys="local:k") == b"shred me"  # the DEK is now cached here
    _in_another_process(_isolated_vault, admin)
    with pytest.raises(error):
        envcrypt.rewrap(blob, "local:k2", trusted_keys="local:k")


def test_a_copy_to_another_key_asks_too(_isolated_vault: Path, tmp_path: Path) -> None:
    vault = LocalVault(_isolated_vault)
    vault.create_key("k")
    vault.create_key("k2")
    policy = {f"{tmp_path}/a/": "local:k", f"{tmp_path}/b/": "local:k2"}
    fs = EnvcryptFileSystem(target_protocol="file", key_policy=policy, trusted_keys=["local:k", "local:k2"],
                            auto_mkdir=True, skip_instance_cache=True)
    fs.pipe_file(f"{tmp_path}/a/x.bin", b"shred me")
    assert fs.cat_file(f"{tmp_path}/a/x.bin") == b"shred me"
    _in_another_process(_isolated_vault, "v.delete_key('k'); v.purge_key('k')")
    with pytest.raises(KeyDeletedError):
        fs.mv(f"{tmp_path}/a/x.bin", f"{tmp_path}/b/x.bin")
    assert not fs.exists(f"{tmp_path}/b/x.bin")
