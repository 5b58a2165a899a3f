"""The format's golden vectors (tests/vectors/envcrypt_v1.json) still hold."""

from __future__ import annotations

import io
import json

import pytest

import envcrypt
from envcrypt import errors
from envcrypt.keys.base import register_resolver

from .golden import KEKS, VECTOR_FILE, GoldenResolver, build_object, plaintext

VECTORS = json.loads(VECTOR_FILE.read_text())
VALID = [t for t in VECTORS["tests"] if t["result"] == "valid"]
INVALID = [t for t in VECTORS["tests"] if t["result"] == "invalid"]
TRUSTED = sorted(KEKS)  # a reader names the master keys it accepts


@pytest.fixture(autouse=True)
def _golden_resolver() -> None:
    register_resolver("golden", GoldenResolver)


def test_vector_file_has_both_kinds() -> None:
    assert len(VALID) >= 5 and len(INVALID) >= 20
    assert {t["error"] for t in INVALID} >= {
        "NotEncryptedError", "UnsupportedVersionError", "MalformedHeaderError", "WrongKeyError", "IntegrityError",
    }


@pytest.mark.parametrize("vector", VALID, ids=lambda t: t["comment"])
def test_code_still_builds_the_golden_object(vector: dict) -> None:
    built = build_object(vector["plaintextLength"], vector["encryptionContext"], vector["keyUris"])
    assert built.hex() == vector["object"]


@pytest.mark.parametrize("vector", VALID, ids=lambda t: t["comment"])
def test_golden_object_decrypts(vector: dict) -> None:
    blob = bytes.fromhex(vector["object"])
    expected = plaintext(vector["plaintextLength"])
    assert envcrypt.decrypt(blob, trusted_keys=TRUSTED) == expected
    assert envcrypt.decrypt(blob, trusted_keys=TRUSTED, encryption_context=vector["encryptionContext"]) == expected
    assert envcrypt.open_reader(io.BytesIO(blob), trusted_keys=TRUSTED).read() == expected
    with pytest.raises(errors.UntrustedKeyError):  # the default key is not one of the golden keys
        envcrypt.decrypt(blob)
    info = envcrypt.inspect(blob)
    assert info.plaintext_size == vector["plaintextLength"]
    assert info.key_uris == vector["keyUris"]
    assert dict(info.encryption_context) == vector["encryptionContext"]


@pytest.mark.parametrize("vector", INVALID, ids=lambda t: t["comment"])
def test_golden_negative_raises_its_error(vector: dict) -> None:
    blob = bytes.fromhex(vector["object"])
    error = getattr(errors, vector["error"])
    with pytest.raises(error):
        envcrypt.decrypt(blob, trusted_keys=TRUSTED)
    with pytest.raises(error):
        reader = envcrypt.open_reader(io.BytesIO(blob), trusted_keys=TRUSTED)
        reader.read()
