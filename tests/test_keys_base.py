"""Key URI parsing (envcrypt/keys/base.py), from the table in tests/vectors/key_uris.json."""

from __future__ import annotations

from typing import Any

import pytest

from envcrypt import errors
from envcrypt.keys.base import split_key_uri

from .vector_files import case_id, load

URIS = load("key_uris.json")


@pytest.mark.parametrize("case", URIS["valid"], ids=case_id)
def test_split_key_uri(case: dict[str, Any]) -> None:
    assert split_key_uri(case["uri"]) == (case["scheme"], case["rest"])


@pytest.mark.parametrize("case", [c for c in URIS["invalid"] if c["split"]], ids=case_id)
def test_split_key_uri_refuses(case: dict[str, Any]) -> None:
    with pytest.raises(getattr(errors, case["error"])):
        split_key_uri(case["uri"])


@pytest.mark.parametrize("case", [c for c in URIS["invalid"] if not c["split"]], ids=case_id)
def test_split_key_uri_leaves_names_to_the_resolver(case: dict[str, Any]) -> None:
    """These split fine; the local resolver's name rules refuse them (test_keys_errors.py)."""
    scheme, rest = split_key_uri(case["uri"])
    assert scheme == "local" and rest


def test_a_key_uri_is_a_str() -> None:
    with pytest.raises(TypeError):
        split_key_uri(b"local:k")  # type: ignore[arg-type]
