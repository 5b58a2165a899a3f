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


def test_split_key_uri_refuses_every_time() -> None:
    """Memoized splitting keeps no error: a bad URI is refused on each call."""
    for _ in range(3):
        with pytest.raises(errors.InvalidKeyUriError):
            split_key_uri("local:")


def test_split_key_uri_takes_a_str_subclass() -> None:
    class Uri(str):
        pass

    assert split_key_uri(Uri("LOCAL:k")) == ("local", "k")


class _First:
    """A resolver factory that declares its options (one that does not would accept any)."""

    options = frozenset({"where"})

    def __init__(self, **options: Any) -> None:
        self.given = options


class _Second(_First):
    pass


def _unregister(scheme: str) -> None:
    """No public unregistering: a scheme left registered would widen check_options for others."""
    from envcrypt.keys import base

    base._factories.pop(scheme, None)
    base.clear_resolver_cache()


def test_re_registering_a_scheme_reaches_the_next_lookup() -> None:
    """A repeat lookup is served from a memo of the call; registering the scheme again
    (or clearing the resolver cache) must not leave the old resolver behind."""
    from envcrypt.keys.base import clear_resolver_cache, get_resolver, register_resolver

    register_resolver("memo-test", _First)
    try:
        first = get_resolver("memo-test", where="a")
        assert get_resolver("memo-test", where="a") is first
        assert get_resolver("memo-test", where="b") is not first
        register_resolver("memo-test", _Second)
        second = get_resolver("memo-test", where="a")
        assert type(second) is _Second
        clear_resolver_cache()
        assert get_resolver("memo-test", where="a") is not second
    finally:
        _unregister("memo-test")


def test_an_option_accepted_once_is_checked_again_after_the_registry_changes() -> None:
    from envcrypt.keys.base import check_options, register_resolver

    class Takes:
        options = frozenset({"memo_only_option"})

    class TakesNothing:
        options: frozenset[str] = frozenset()

    register_resolver("memo-check", Takes)
    try:
        check_options({"memo-check"}, {"memo_only_option": 1})
        check_options({"memo-check"}, {"memo_only_option": 1})  # from the memo
        register_resolver("memo-check", TakesNothing)
        with pytest.raises(TypeError, match="memo_only_option"):
            check_options({"memo-check"}, {"memo_only_option": 1})
    finally:
        _unregister("memo-check")
