"""A key's state change reaches the process's DEK cache: after a disable, delete or purge
of ``local:k``, a write with ``dek_cache=True`` is refused instead of being served a cached
DEK wrapped under the key."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

import envcrypt
from envcrypt.errors import KeyAccessDeniedError, KeyDeletedError, KeyDisabledError
from envcrypt.keys.vault import LocalVault


def _wraps(path: Path) -> int:
    LocalVault(path).audit.flush()  # this process's queued lines, whichever vault object queued them
    lines = [json.loads(line) for line in (path / "audit.log").read_text().splitlines()]
    return sum(1 for e in lines if e["op"] == "wrapKey" and e["outcome"] == "ok")


@pytest.mark.parametrize("change, error", [
    (lambda v: v.disable_key("k"), KeyDisabledError),
    (lambda v: v.disable_key("k/1"), KeyDisabledError),
    (lambda v: v.delete_key("k"), KeyDeletedError),
    (lambda v: (v.delete_key("k"), v.purge_key("k")), KeyDeletedError),
    (lambda v: v.set_validity("k", expires=1), KeyDisabledError),
    (lambda v: v.set_ops("k", ["unwrapKey"]), KeyAccessDeniedError),
])
def test_state_change_drops_cached_deks(_isolated_vault: Path, change: Callable[[LocalVault], object],
                                        error: type[Exception]) -> None:
    vault = LocalVault(_isolated_vault)
    vault.create_key("k")
    for data in (b"one", b"two"):
        envcrypt.encrypt(data, "local:k", vault=str(_isolated_vault), dek_cache=True)
    assert _wraps(_isolated_vault) == 1  # the second object was served from the cache
    change(vault)
    with pytest.raises(error):
        envcrypt.encrypt(b"three", "local:k", vault=str(_isolated_vault), dek_cache=True)


@pytest.mark.parametrize("command", ["disable", "delete"])
def test_a_state_change_made_by_another_process_is_seen_before_the_next_cached_write(
    _isolated_vault: Path, command: str
) -> None:
    """The cached DEK lives in this process; the key is disabled or deleted by another one
    (the CLI).  The next write must not succeed under it."""
    import os
    import subprocess
    import sys

    vault = LocalVault(_isolated_vault)
    vault.create_key("k")
    vault.rotate_key("k")  # two versions: the cached slots name local:k/2 exactly
    for data in (b"one", b"two"):
        envcrypt.encrypt(data, "local:k", vault=str(_isolated_vault), dek_cache=True)
    assert _wraps(_isolated_vault) == 1
    env = {**os.environ, "ENVCRYPT_VAULT": str(_isolated_vault)}
    script = f"from envcrypt.cli import main; raise SystemExit(main(['key', '{command}', 'k']))"
    subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True, timeout=60)
    with pytest.raises((KeyDisabledError, KeyDeletedError)):
        envcrypt.encrypt(b"three", "local:k", vault=str(_isolated_vault), dek_cache=True)
