"""Wycheproof vectors through the exact wrap functions the vault uses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from envcrypt.errors import WrongKeyError
from envcrypt.keys import vault_crypto as vc

VECTORS = Path(__file__).resolve().parent / "vectors" / "wycheproof"


def _tests(name: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    data = json.loads((VECTORS / name).read_text())
    return [(group, test) for group in data["testGroups"] for test in group["tests"]]


def _run_wrap(name: str, wrap: Any, unwrap: Any) -> tuple[int, int]:
    valid = invalid = 0
    for _, t in _tests(name):
        key, msg, ct = (bytes.fromhex(t[k]) for k in ("key", "msg", "ct"))
        if t["result"] == "valid":
            assert wrap(key, msg) == ct, t["tcId"]
            assert unwrap(key, ct) == msg, t["tcId"]
            valid += 1
        elif t["result"] == "invalid":
            with pytest.raises(WrongKeyError):
                unwrap(key, ct)
            invalid += 1
    return valid, invalid


def test_aes_kwp_vectors() -> None:
    valid, invalid = _run_wrap("aes_kwp_test.json", vc.kwp_wrap, vc.kwp_unwrap)
    assert valid > 50 and invalid > 100


def test_aes_kw_vectors() -> None:
    valid, invalid = _run_wrap("aes_wrap_test.json", vc.kw_wrap, vc.kw_unwrap)
    assert valid > 30 and invalid > 50


def test_rsa_oaep_vectors() -> None:
    data = json.loads((VECTORS / "rsa_oaep_2048_sha256_mgf1sha256_test.json").read_text())
    valid = invalid = 0
    for group in data["testGroups"]:
        key = serialization.load_der_private_key(bytes.fromhex(group["privateKeyPkcs8"]), None)
        for t in group["tests"]:
            if t["label"]:
                continue  # the vault uses OAEP without a label
            ct, msg = bytes.fromhex(t["ct"]), bytes.fromhex(t["msg"])
            if t["result"] == "valid":
                assert vc.rsa_oaep_decrypt(key, ct) == msg, t["tcId"]
                assert vc.rsa_oaep_decrypt(key, vc.rsa_oaep_encrypt(key.public_key(), msg)) == msg
                valid += 1
            elif t["result"] == "invalid":
                with pytest.raises(WrongKeyError):
                    vc.rsa_oaep_decrypt(key, ct)
                invalid += 1
    assert valid > 5 and invalid > 5


def test_rsa_oaep_vector_through_the_vault(_isolated_vault: Path) -> None:
    """An imported Wycheproof key decrypts a vector ciphertext through LocalVault.decrypt."""
    from envcrypt.keys.vault import LocalVault

    data = json.loads((VECTORS / "rsa_oaep_2048_sha256_mgf1sha256_test.json").read_text())
    group = data["testGroups"][0]
    vault = LocalVault(_isolated_vault)
    uri = vault.import_key("wp", bytes.fromhex(group["privateKeyPkcs8"]), kind="rsa",
                           ops=["wrapKey", "unwrapKey", "encrypt", "decrypt"])
    t = next(t for t in group["tests"] if t["result"] == "valid" and not t["label"] and t["msg"])
    assert vault.decrypt(uri, bytes.fromhex(t["ct"])) == bytes.fromhex(t["msg"])
    bad = next(t for t in group["tests"] if t["result"] == "invalid" and not t["label"])
    with pytest.raises(WrongKeyError):
        vault.decrypt(uri, bytes.fromhex(bad["ct"]))
