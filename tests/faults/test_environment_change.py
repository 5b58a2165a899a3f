"""A process that switches vaults (``$ENVCRYPT_VAULT``) and calls ``clear_resolver_cache``:
the process-wide DEK cache must not serve a DEK and slots wrapped under the *old* vault's
key of the same name, or what it writes next opens for nobody holding only the new vault
(found by the hostile-storage tests running after another test's cached ``local:k``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import fsspec
import pytest

from envcrypt.fs import EnvcryptFileSystem
from envcrypt.keys.base import clear_resolver_cache
from envcrypt.keys.vault import LocalVault

REPO = Path(__file__).resolve().parents[2]
READ = """
import sys, fsspec
from envcrypt.fs import EnvcryptFileSystem
fs = EnvcryptFileSystem(fs=fsspec.filesystem("file"), key_uri="local:k", skip_instance_cache=True)
sys.stdout.buffer.write(fs.cat_file(sys.argv[1]))
"""


def test_a_vault_switch_does_not_reuse_the_old_vaults_cached_dek(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def write(vault: Path, name: str) -> None:
        monkeypatch.setenv("ENVCRYPT_VAULT", str(vault))
        clear_resolver_cache()
        if not (vault / "keys" / "k.json").exists():
            LocalVault().create_key("k")
        fs = EnvcryptFileSystem(fs=fsspec.filesystem("file"), key_uri="local:k",
                                resolver_options={"dek_cache": True}, skip_instance_cache=True)
        fs.pipe_file(str(tmp_path / name), name.encode() * 100)

    write(tmp_path / "vault-a", "a.bin")
    write(tmp_path / "vault-b", "b.bin")
    env = dict(os.environ, ENVCRYPT_VAULT=str(tmp_path / "vault-b"), PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", READ, str(tmp_path / "b.bin")], env=env, capture_output=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout == b"b.bin" * 100
