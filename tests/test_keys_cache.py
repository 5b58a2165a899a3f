"""DEK cache: bounds by age, object count and bytes; KMS call counts; thread safety."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

import envcrypt
from envcrypt.format import KeySlot, parse_header
from envcrypt.keys.base import get_resolver
from envcrypt.keys.cache import DekCache, default_cache
from tests.time_helpers import Clock

CTX = {"dataset": "orders"}


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    default_cache().clear()
    yield
    default_cache().clear()


SLOTS = (KeySlot("local:k/1", 1, b"w" * 40),)


def test_encryption_entry_bounded_by_objects() -> None:
    cache = DekCache(max_objects=3)
    cache.put_encryption("k", b"d" * 32, SLOTS, None)  # object 1
    assert cache.take_encryption("k", None) is not None  # 2
    assert cache.take_encryption("k", None) is not None  # 3
    assert cache.take_encryption("k", None) is None  # a 4th object would exceed the limit
    assert cache.take_encryption("k", None) is None  # and the entry is gone


def test_encryption_entry_bounded_by_bytes() -> None:
    cache = DekCache(max_bytes=1000)
    cache.put_encryption("k", b"d" * 32, SLOTS, 400)
    assert cache.take_encryption("k", 600) is not None  # exactly 1000
    assert cache.take_encryption("k", 1) is None
    cache.put_encryption("big", b"d" * 32, SLOTS, 1001)  # larger than the budget: not cached
    assert cache.take_encryption("big", 0) is None


def test_entries_bounded_by_age() -> None:
    clock = Clock()
    cache = DekCache(max_age=10, clock=clock)
    cache.put_encryption("e", b"d" * 32, SLOTS, 1)
    cache.put_decryption("d", b"d" * 32)
    clock.now += 9.9
    assert cache.take_encryption("e", 1) is not None and cache.take_decryption("d") is not None
    clock.now += 0.1
    assert cache.take_encryption("e", 1) is None and cache.take_decryption("d") is None


def test_decryption_entry_bounded_by_uses_and_entries() -> None:
    cache = DekCache(max_objects=2, max_entries=2)
    cache.put_decryption("a", b"a" * 32)
    assert cache.take_decryption("a") == b"a" * 32
    assert cache.take_decryption("a") is None
    for name in ("x", "y", "z"):
        cache.put_decryption(name, b"x" * 32)
    assert len(cache) == 2 and cache.take_decryption("x") is None


def test_thread_safe_object_budget() -> None:
    cache = DekCache(max_objects=100)
    cache.put_encryption("k", b"d" * 32, SLOTS, None)
    hits = Counter[str]()
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(200):
            if cache.take_encryption("k", None) is not None:
                with lock:
                    hits["hit"] += 1

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert hits["hit"] == 99  # never more uses than the budget, across threads


def test_cache_refuses_pickle_and_hides_keys() -> None:
    import pickle

    cache = DekCache()
    cache.put_decryption("k", b"\x11" * 32)
    assert "11" * 8 not in repr(cache)
    with pytest.raises(TypeError):
        pickle.dumps(cache)


# ---------------------------------------------------------------- through the envelope, local keys


def _slot_bytes(blob: bytes) -> bytes:
    return parse_header(blob)[0].key_slots[0].wrapped_dek


def test_local_default_is_off_and_can_be_turned_on() -> None:
    a, b = envcrypt.encrypt(b"x"), envcrypt.encrypt(b"y")
    assert _slot_bytes(a) != _slot_bytes(b)
    c, d = envcrypt.encrypt(b"x", dek_cache=True), envcrypt.encrypt(b"y", dek_cache=True)
    assert _slot_bytes(c) == _slot_bytes(d)
    # one DEK, two messages: the salts (and so the bodies' keys) still differ
    hc, hd = parse_header(c)[1], parse_header(d)[1]
    assert c[hc:hc + 24] != d[hd:hd + 24]
    assert envcrypt.decrypt(c) == b"x" and envcrypt.decrypt(d) == b"y"


def test_cache_key_includes_context_and_keys() -> None:
    from envcrypt.keys.vault import LocalVault

    LocalVault().create_key("other")
    base = envcrypt.encrypt(b"x", dek_cache=True, encryption_context=CTX)
    assert _slot_bytes(base) != _slot_bytes(envcrypt.encrypt(b"x", dek_cache=True, encryption_context={"d": "x"}))
    assert _slot_bytes(base) != _slot_bytes(envcrypt.encrypt(b"x", "local:other", dek_cache=True, encryption_context=CTX))


def test_local_dek_cache_skips_vault_unwraps(_isolated_vault: Any) -> None:
    blobs = [envcrypt.encrypt(b"x%d" % i, dek_cache=True) for i in range(5)]
    for blob in blobs:
        envcrypt.decrypt(blob, dek_cache=True)
    from envcrypt.keys.vault import LocalVault

    ops = Counter(e["op"] for e in LocalVault().audit.entries())
    assert ops["wrapKey"] == 1 and ops["unwrapKey"] == 1


# ---------------------------------------------------------------- KMS call counts on moto


@pytest.fixture(scope="module")
def kms_alias(moto_server: str) -> str:
    boto3 = pytest.importorskip("boto3")
    kms = boto3.client("kms", endpoint_url=moto_server, region_name="us-east-1")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/cache-test", TargetKeyId=key_id)
    return "aws-kms://alias/cache-test"


@pytest.fixture
def kms_calls(moto_server: str) -> Counter[str]:
    calls: Counter[str] = Counter()
    resolver: Any = get_resolver("aws-kms", endpoint_url=moto_server, region_name="us-east-1")

    def count(model: Any, **kwargs: Any) -> None:
        calls[model.name] += 1

    resolver.client.meta.events.register("before-call.kms", count)
    return calls


@pytest.mark.cloud
def test_kms_cache_on_by_default(moto_server: str, kms_alias: str, kms_calls: Counter[str]) -> None:
    opts = {"endpoint_url": moto_server, "region_name": "us-east-1"}
    blobs = [envcrypt.encrypt(b"row %d" % i, kms_alias, encryption_context=CTX, **opts) for i in range(40)]
    assert [envcrypt.decrypt(b, trusted_keys=kms_alias, **opts) for b in blobs] == [b"row %d" % i for i in range(40)]
    assert kms_calls == {"Encrypt": 1, "Decrypt": 1, "DescribeKey": 1}  # the trusted alias is looked up once


@pytest.mark.cloud
def test_kms_without_cache_calls_per_object(moto_server: str, kms_alias: str, kms_calls: Counter[str]) -> None:
    opts = {"endpoint_url": moto_server, "region_name": "us-east-1", "dek_cache": False}
    blobs = [envcrypt.encrypt(b"row", kms_alias, **opts) for _ in range(5)]
    for blob in blobs:
        envcrypt.decrypt(blob, trusted_keys=kms_alias, **opts)
    assert kms_calls == {"Encrypt": 5, "Decrypt": 5, "DescribeKey": 1}


@pytest.mark.cloud
def test_kms_no_reuse_past_limits(moto_server: str, kms_alias: str, kms_calls: Counter[str]) -> None:
    clock = Clock()
    cache = DekCache(max_objects=4, max_bytes=10_000, max_age=60, clock=clock)
    opts = {"endpoint_url": moto_server, "region_name": "us-east-1", "dek_cache": cache}
    blobs = [envcrypt.encrypt(b"r", kms_alias, **opts) for _ in range(10)]
    assert kms_calls["Encrypt"] == 3  # 4 + 4 + 2 objects
    assert len({_slot_bytes(b) for b in blobs}) == 3
    for _ in range(2):
        for blob in blobs:
            envcrypt.decrypt(blob, trusted_keys=kms_alias, **opts)
    # 8 opens under each of the first two DEKs (2 calls each: 4 uses per call), 4 under the third
    assert kms_calls["Decrypt"] == 5
    big = b"z" * 6000
    envcrypt.encrypt(big, kms_alias, **opts)
    envcrypt.encrypt(big, kms_alias, **opts)  # 2 + 6000 + 6000 bytes would pass the budget
    assert kms_calls["Encrypt"] == 4
    clock.now += 61
    envcrypt.encrypt(b"r", kms_alias, **opts)
    envcrypt.encrypt(b"r", kms_alias, **opts)
    assert kms_calls["Encrypt"] == 5  # the aged entry was replaced once, then reused


@pytest.mark.cloud
def test_env_switch_turns_default_off(moto_server: str, kms_alias: str, kms_calls: Counter[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVCRYPT_DEK_CACHE", "0")
    opts = {"endpoint_url": moto_server, "region_name": "us-east-1"}
    for _ in range(3):
        envcrypt.encrypt(b"r", kms_alias, **opts)
    assert kms_calls["Encrypt"] == 3


@pytest.mark.cloud
def test_streaming_writer_uses_the_cache(moto_server: str, kms_alias: str, kms_calls: Counter[str]) -> None:
    import io

    opts = {"endpoint_url": moto_server, "region_name": "us-east-1"}
    outs = []
    for i in range(3):
        buf = io.BytesIO()
        with envcrypt.open_writer(buf, kms_alias, **opts) as w:
            w.write(b"stream %d" % i)
        outs.append(buf.getvalue())
    for i, blob in enumerate(outs):
        assert envcrypt.open_reader(io.BytesIO(blob), trusted_keys=kms_alias, **opts).read() == b"stream %d" % i
    assert kms_calls == {"Encrypt": 1, "Decrypt": 1, "DescribeKey": 1}


def test_cache_key_includes_resolver_options(tmp_path: Any) -> None:
    from envcrypt.keys.vault import LocalVault

    for name in ("a", "b"):
        LocalVault(tmp_path / name).create_key("k")
    in_a = envcrypt.encrypt(b"x", "local:k", vault=str(tmp_path / "a"), dek_cache=True)
    in_b = envcrypt.encrypt(b"x", "local:k", vault=str(tmp_path / "b"), dek_cache=True)
    assert _slot_bytes(in_a) != _slot_bytes(in_b)
    assert envcrypt.decrypt(in_b, trusted_keys="local:k", vault=str(tmp_path / "b"), dek_cache=True) == b"x"
    with pytest.raises(envcrypt.WrongKeyError):  # vault a's cached DEK is not offered for vault b
        envcrypt.decrypt(in_b, trusted_keys="local:k", vault=str(tmp_path / "a"), dek_cache=True)


def _dek_of(blob: bytes) -> bytes:
    return parse_header(blob)[0].key_slots[0].wrapped_dek


def _streamed_deks(cache: DekCache, count: int, data: bytes) -> list[bytes]:
    import io

    deks = []
    for _ in range(count):
        buf = io.BytesIO()
        with envcrypt.open_writer(buf, "local:default", dek_cache=cache) as w:
            w.write(data)
        deks.append(_dek_of(buf.getvalue()))
    return deks


def test_streaming_writes_are_charged_to_the_byte_budget() -> None:
    """open_writer knows no size up front: it charges what it sealed at close, and the
    entry is retired once over budget (at most one write in flight overshoots it)."""
    cache = DekCache(max_bytes=1000)
    deks = _streamed_deks(cache, 4, b"x" * 800)
    # 800 (under budget: reused once), 1600 (over: retired), then a fresh DEK
    assert deks[0] == deks[1] and deks[1] != deks[2] and deks[2] == deks[3]
    # a single stream over the budget is never reused
    big = _streamed_deks(cache, 2, b"y" * 5000)
    assert big[0] != big[1] and deks[3] not in big
    # known sizes still charge up front
    one = {_dek_of(envcrypt.encrypt(b"x" * 800, "local:default", dek_cache=cache)) for _ in range(3)}
    assert len(one) == 3


def test_fsspec_writes_are_charged_to_the_byte_budget() -> None:
    import fsspec

    cache = DekCache(max_bytes=1000)
    fs = fsspec.filesystem("envcrypt", target_protocol="memory", key_uri="local:default",
                           resolver_options={"dek_cache": cache}, skip_instance_cache=True)
    memory = fsspec.filesystem("memory")
    deks = []
    for i in range(4):
        with fs.open(f"/dekbudget/{i}.bin", "wb") as f:
            f.write(b"x" * 800)
        deks.append(_dek_of(memory.cat_file(f"/dekbudget/{i}.bin")))
        assert fs.cat_file(f"/dekbudget/{i}.bin") == b"x" * 800
    memory.rm("/dekbudget", recursive=True)
    assert deks[0] == deks[1] and deks[1] != deks[2] and deks[2] == deks[3]


def test_cache_entries_never_show_the_dek() -> None:
    cache = DekCache()
    dek = b"\x8f" * 32
    cache.put_encryption("k", dek, SLOTS, 1)
    entry = cache._encrypt["k"]
    for text in (repr(cache), repr(entry), str(entry)):
        assert repr(dek)[2:-1] not in text and dek.hex() not in text and "dek" not in text
    from envcrypt.keys.cache import StreamCharge

    charge = StreamCharge(cache, "k", dek)
    assert repr(charge) == "<StreamCharge>"
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(charge)
