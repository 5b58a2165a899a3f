"""The batch AEAD of envcrypt.columns against plain `cryptography` and Wycheproof: every cell is a
standard AES-GCM / AES-SIV message, and the pure and compiled cores give the same bytes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV

from envcrypt import _kernel
from envcrypt.columns import _engine
from envcrypt.errors import IntegrityError
from tests.conftest import VECTORS

CORES = ["pure", "compiled"] if _engine.compiled_available() else ["pure"]


def _cells(lengths: list[int], seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    off = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=off[1:])
    return rng.integers(0, 256, int(off[-1]), dtype=np.uint8), off


def _seal(mode: str, key: bytes, ad: bytes, src: np.ndarray, off: np.ndarray, valid: np.ndarray,
          use: str | None, counter: int = 0) -> tuple[np.ndarray, np.ndarray]:
    overhead = _engine.GCM_OVERHEAD if mode == "gcm" else _engine.SIV_OVERHEAD
    out_off = np.zeros(len(off), np.int64)
    np.cumsum(np.where(valid, np.diff(off) + overhead, 0), out=out_off[1:])
    dst = np.empty(int(out_off[-1]), np.uint8)
    _engine.seal(mode, key, ad, src, off, valid, dst, out_off, counter, use=use)
    return dst, out_off


@pytest.mark.parametrize("use", CORES)
def test_every_gcm_cell_of_length_0_to_300_is_plain_aesgcm(use: str) -> None:
    lengths = list(range(301)) * 2
    src, off = _cells(lengths)
    valid = np.ones(len(lengths), np.bool_)
    valid[5::17] = False
    key, ad = os.urandom(32), b"envcrypt.columns/v1\x00" + os.urandom(16) + b"email"
    dst, out_off = _seal("gcm", key, ad, src, off, valid, use, counter=1000)
    aead = AESGCM(key)
    for i, _n in enumerate(lengths):
        cell = dst[out_off[i]:out_off[i + 1]].tobytes()
        if not valid[i]:
            assert cell == b""
            continue
        plain = src[off[i]:off[i + 1]].tobytes()
        nonce = (1000 + i).to_bytes(12, "big")
        assert cell == nonce + aead.encrypt(nonce, plain, ad)
        assert aead.decrypt(cell[:12], cell[12:], ad) == plain
    back = np.zeros(len(src), np.uint8)
    _engine.open_("gcm", key, ad, dst, out_off, valid, back, off, use=use)
    mask = np.repeat(valid, lengths)
    assert (back[mask] == src[mask]).all()


@pytest.mark.parametrize("use", CORES)
def test_every_siv_cell_of_length_0_to_300_is_plain_aessiv(use: str) -> None:
    lengths = list(range(301))
    src, off = _cells(lengths, seed=3)
    valid = np.ones(len(lengths), np.bool_)
    key, ad = os.urandom(64), b"ad-of-the-column"
    dst, out_off = _seal("siv", key, ad, src, off, valid, use)
    siv = AESSIV(key)
    for i in range(len(lengths)):
        plain = src[off[i]:off[i + 1]].tobytes()
        assert dst[out_off[i]:out_off[i + 1]].tobytes() == siv.encrypt(plain, [ad])
    back = np.zeros(len(src), np.uint8)
    _engine.open_("siv", key, ad, dst, out_off, valid, back, off, use=use)
    assert (back == src).all()


@pytest.mark.skipif(len(CORES) < 2, reason="the compiled core is not built in this install")
@pytest.mark.parametrize("mode", ["gcm", "siv"])
def test_pure_and_compiled_cores_give_the_same_bytes(mode: str) -> None:
    rng = np.random.default_rng(11)
    lengths = rng.integers(0, 64, 40_000).tolist()  # past the two-thread threshold
    src, off = _cells(lengths, seed=5)
    valid = rng.random(len(lengths)) > 0.1
    key = os.urandom(32 if mode == "gcm" else 64)
    pure, o1 = _seal(mode, key, b"ad", src, off, valid, "pure", counter=2**40)
    compiled, o2 = _seal(mode, key, b"ad", src, off, valid, "compiled", counter=2**40)
    assert (o1 == o2).all() and pure.tobytes() == compiled.tobytes()
    for use in CORES:
        back = np.zeros(len(src), np.uint8)
        _engine.open_(mode, key, b"ad", compiled, o1, valid, back, off, use=use)
        mask = np.repeat(valid, lengths)
        assert (back[mask] == src[mask]).all()


def _gcm_vectors() -> list[dict[str, object]]:
    data = json.loads((VECTORS / "aes_gcm_test.json").read_text())
    return [dict(t, keySize=g["keySize"]) for g in data["testGroups"]
            if g["ivSize"] == 96 and g["tagSize"] == 128 for t in g["tests"]]


@pytest.mark.parametrize("use", CORES)
def test_wycheproof_aes_gcm_96_bit_nonces(use: str) -> None:
    """Every 96-bit-nonce case of aes_gcm_test.json through the batch open (one run of all cells
    per key), and through the batch seal where the IV is a counter nonce (first 4 bytes zero)."""
    cases = _gcm_vectors()
    assert len(cases) > 50
    opened = sealed = 0
    for case in cases:
        key, iv = bytes.fromhex(str(case["key"])), bytes.fromhex(str(case["iv"]))
        ad, msg = bytes.fromhex(str(case["aad"])), bytes.fromhex(str(case["msg"]))
        cell = iv + bytes.fromhex(str(case["ct"])) + bytes.fromhex(str(case["tag"]))
        src = np.frombuffer(cell, np.uint8).copy()
        valid = np.ones(1, np.bool_)
        dst = np.zeros(max(len(cell) - 28, 0), np.uint8)
        args = (key, ad, src, np.array([0, len(cell)], np.int64), valid, dst, np.array([0, len(dst)], np.int64))
        if case["result"] == "invalid":
            with pytest.raises(IntegrityError):
                _engine.open_("gcm", *args, use=use)
            assert not dst.any()  # nothing unauthenticated is left
            continue
        _engine.open_("gcm", *args, use=use)
        assert dst.tobytes() == msg
        opened += 1
        if iv[:4] == b"\0\0\0\0":
            plain = np.frombuffer(msg, np.uint8).copy()
            out, _ = _seal("gcm", key, ad, plain, np.array([0, len(msg)], np.int64), valid, use,
                           counter=int.from_bytes(iv[4:], "big"))
            assert out.tobytes() == cell
            sealed += 1
    assert opened > 30 and sealed >= 1


@pytest.mark.parametrize("use", CORES)
@pytest.mark.parametrize("mode", ["gcm", "siv"])
def test_one_bad_cell_fails_the_run_and_zeroes_the_output(use: str, mode: str) -> None:
    lengths = [10] * 50_000
    src, off = _cells(lengths)
    valid = np.ones(len(lengths), np.bool_)
    key = os.urandom(32 if mode == "gcm" else 64)
    dst, out_off = _seal(mode, key, b"ad", src, off, valid, use)
    dst[out_off[40_000] + 20] ^= 1
    back = np.zeros(len(src), np.uint8)
    with pytest.raises(IntegrityError):
        _engine.open_(mode, key, b"ad", dst, out_off, valid, back, off, use=use)
    assert not back.any()


@pytest.mark.skipif(len(CORES) < 2, reason="the compiled core is not built in this install")
def test_the_compiled_core_refuses_spans_outside_its_buffers() -> None:
    src = np.zeros(10, np.uint8)
    valid = np.ones(1, np.bool_)
    dst = np.zeros(100, np.uint8)
    with pytest.raises(ValueError):
        _engine.seal("gcm", bytes(32), b"", src, np.array([0, 11], np.int64), valid, dst,
                     np.array([0, 39], np.int64), use="compiled")


def _seal_salted(key: bytes, salt: bytes, src: np.ndarray, off: np.ndarray, valid: np.ndarray, use: str,
                 first_row: int) -> tuple[np.ndarray, np.ndarray]:
    out_off = np.zeros(len(off), np.int64)
    np.cumsum(np.where(valid, np.diff(off) + _engine.SALTED_OVERHEAD, 0), out=out_off[1:])
    dst = np.empty(int(out_off[-1]), np.uint8)
    _engine.seal_salted(key, salt, b"ad", src, off, valid, dst, out_off, first_row, use=use)
    return dst, out_off


@pytest.mark.skipif(len(CORES) < 2, reason="the compiled core is not built in this install")
def test_salted_cells_are_the_same_bytes_in_both_cores_and_open_across_batches() -> None:
    rng = np.random.default_rng(12)
    lengths = rng.integers(0, 64, 40_000).tolist()  # past the two-thread threshold
    src, off = _cells(lengths, seed=6)
    valid = rng.random(len(lengths)) > 0.1
    keys = {os.urandom(16): os.urandom(32) for _ in range(3)}
    (s1, k1), (s2, k2), (s3, k3) = keys.items()
    pure, o1 = _seal_salted(k1, s1, src, off, valid, "pure", 2**40)
    compiled, o2 = _seal_salted(k1, s1, src, off, valid, "compiled", 2**40)
    assert (o1 == o2).all() and pure.tobytes() == compiled.tobytes()
    i = int(np.flatnonzero(valid)[5])
    cell = compiled[o1[i] : o1[i + 1]].tobytes()
    nonce = (2 * (2**40 + i) + 1).to_bytes(12, "big")
    assert cell[:16] == s1 and cell[16:28] == nonce
    assert AESGCM(k1).decrypt(nonce, cell[28:], b"ad") == src[off[i] : off[i + 1]].tobytes()
    # rows of three batches mixed in one run (as a concatenated or filtered table): each opens by its salt
    parts = [_seal_salted(k, s, src, off, valid, "compiled", 0)[0] for s, k in ((s1, k1), (s2, k2), (s3, k3))]
    pick = rng.integers(0, 3, len(lengths))
    mixed = np.concatenate([parts[p][o1[j] : o1[j + 1]] for j, p in enumerate(pick)])
    mask = np.repeat(valid, lengths)
    for use in CORES:
        back = np.zeros(len(src), np.uint8)
        _engine.open_salted(keys.__getitem__, b"ad", mixed, o1, valid, back, off, use=use)
        assert (back[mask] == src[mask]).all()
        back = np.zeros(len(src), np.uint8)
        _engine.open_salted(keys.__getitem__, b"ad", compiled, o1, valid, back, off, use=use)
        assert (back[mask] == src[mask]).all()
        # a cell moved under another salt does not open, and nothing is returned
        bad = compiled.copy()
        bad[o1[i] : o1[i] + 16] = np.frombuffer(s2, np.uint8)
        back = np.zeros(len(src), np.uint8)
        with pytest.raises(IntegrityError):
            _engine.open_salted(keys.__getitem__, b"ad", bad, o1, valid, back, off, use=use)
        assert not back.any()


@pytest.fixture
def hybrid() -> Iterator[None]:
    if not _kernel.available():
        pytest.skip("the compiled core is not built in this install")
    _kernel.use("hybrid")
    yield
    _kernel.use(None)


def test_hybrid_deterministic_cells_are_the_pure_bytes(hybrid: None) -> None:
    """The calling thread (cryptography) and the helper (kernel) share a run: the same bytes."""
    rng = np.random.default_rng(21)
    lengths = rng.integers(0, 80, 6 * _engine.SIV_PIECE_CELLS + 11).tolist()
    src, off = _cells(lengths, seed=9)
    valid = rng.random(len(lengths)) > 0.1
    key = os.urandom(64)
    pure, o1 = _seal("siv", key, b"ad", src, off, valid, "pure")
    shared, o2 = _seal("siv", key, b"ad", src, off, valid, None)
    assert (o1 == o2).all() and pure.tobytes() == shared.tobytes()
    back = np.zeros(len(src), np.uint8)
    _engine.open_("siv", key, b"ad", shared, o1, valid, back, off)
    mask = np.repeat(valid, lengths)
    assert (back[mask] == src[mask]).all()


@pytest.mark.parametrize("bad", [0, _engine.SIV_PIECE_CELLS + 3, 5 * _engine.SIV_PIECE_CELLS - 1])
def test_hybrid_deterministic_open_fails_whole_whichever_thread_sees_the_bad_cell(hybrid: None, bad: int) -> None:
    lengths = [12] * (5 * _engine.SIV_PIECE_CELLS)
    src, off = _cells(lengths)
    valid = np.ones(len(lengths), np.bool_)
    key = os.urandom(64)
    dst, out_off = _seal("siv", key, b"ad", src, off, valid, "pure")
    dst[out_off[bad] + 3] ^= 1
    back = np.zeros(len(src), np.uint8)
    with pytest.raises(IntegrityError):
        _engine.open_("siv", key, b"ad", dst, out_off, valid, back, off)
    assert not back.any()
