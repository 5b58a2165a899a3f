"""Bounded fuzzing (CI): hypothesis over every parser an attacker can feed, starting from valid
inputs and mutating them, plus structure-aware JSON mutations of the vault record, the
manifest and the column metadata.  Only ``envcrypt.errors`` classes may come out (see
``harness``); ``./dev fuzz`` runs the same targets far longer.  ``ENVCRYPT_FUZZ_EXAMPLES``
sets the examples per target (default 150)."""

from __future__ import annotations

import os
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import harness

EXAMPLES = int(os.environ.get("ENVCRYPT_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="ENVCRYPT_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _fuzz_vault() -> None:
    harness.setting()  # its own vault (overrides the per-test one: setup is costly)


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed with a few edits: bit flips, byte overwrites, inserted/deleted runs, truncation,
    and length fields set to extremes."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "byte", "insert", "delete", "truncate", "big"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(max_size=64))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == "truncate":
            del data[at:]
        elif kind == "big" and len(data) >= at + 4:
            data[at : at + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x01\x00\x00", b"\x7f\xff\xff\xff",
                                                      b"\x00\x00\xff\xff"]))
    return bytes(data)


@pytest.mark.parametrize("target", sorted(harness.TARGETS))
def test_mutated_inputs_end_in_typed_errors(target: str) -> None:
    if target == "column_meta":
        pytest.importorskip("pyarrow")
    fuzz = harness.TARGETS[target]
    seeds = harness.seeds(target)

    @FUZZ
    @given(mutated(seeds) | st.binary(max_size=300))
    def run(data: bytes) -> None:
        fuzz(data)

    run()


@pytest.mark.parametrize("target", ["vault_record", "manifest", "column_meta"])
def test_every_json_field_replaced_ends_in_typed_errors(target: str) -> None:
    if target == "column_meta":
        pytest.importorskip("pyarrow")
    variants = harness.json_variants(harness.seeds(target)[0])
    assert len(variants) > 20
    for data in variants:
        harness.TARGETS[target](data)


@FUZZ
@given(st.text(max_size=80) | st.sampled_from([
    "local:..", "local:a/../b", "local:a\0b", "aws-kms://alias/\nx", "local:" + "a" * 3000,
    "aws-kms://" + "b" * 1100, "local:./k", "lo cal:k", "local:k\x7f", "local:k\x85"]))
def test_key_uris_with_dots_controls_or_long_parts_are_refused(text: str) -> None:
    harness.key_uri(text)


def test_bad_key_uris_never_reach_a_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    """A recording resolver for a scheme of its own: a refused URI never constructs or calls it."""
    import envcrypt
    from envcrypt.errors import InvalidKeyUriError
    from envcrypt.keys import base
    from envcrypt.keys.base import register_resolver

    monkeypatch.setattr(base, "_factories", dict(base._factories))  # the spy leaves with the test

    calls: list[str] = []

    def factory(**options: object) -> object:
        calls.append("built")
        raise AssertionError("a resolver was built for a refused key URI")

    register_resolver("spy", factory)
    for bad in ("spy:..", "spy:a/../b", "spy:a\0b", "spy:x\ty", "spy:" + "a" * 2100, "spy://" + "p" * 1500 + "/k"):
        with pytest.raises(InvalidKeyUriError):
            envcrypt.encrypt(b"x", bad)
        with pytest.raises(InvalidKeyUriError):
            envcrypt.decrypt(harness.setting().blob, trusted_keys=[bad])
    assert calls == []


@pytest.mark.parametrize("length_at", [12, "slots"])
def test_a_declared_length_allocates_nothing_before_it_is_bounded(length_at: object) -> None:
    """A header declaring a 4 GiB context or slot block in a few bytes: refused with a typed
    error and well under a megabyte allocated."""
    from envcrypt.errors import MalformedHeaderError
    from envcrypt.format import parse_header

    blob = bytearray(harness.setting().blob[:200])
    at = 12 if length_at == 12 else 16 + int.from_bytes(blob[12:16], "big")
    blob[at : at + 4] = b"\xff\xff\xff\xff"
    tracemalloc.start()
    try:
        with pytest.raises(MalformedHeaderError):
            parse_header(bytes(blob))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
