"""Key resolver benchmark: local vault wrap/unwrap rates, and KMS calls for many small objects.

    .venv/bin/python benchmarks/bench_keys.py [--objects 1000] [--repeat 3]

1. Local vault: DEK wrap and unwrap through ``LocalVaultResolver`` (state checks,
   sealed key material, one audit line per operation), against the bare
   ``cryptography`` AES-KWP call measured in the same run.
2. Many small objects with the local vault: 1 KiB ``envcrypt.encrypt`` + ``decrypt``
   pairs per second through a ``local:`` key, without and with the DEK cache, against
   one-shot AES-256-GCM of the same 1 KiB and, when ``tink`` is installed, Tink's
   ``KmsEnvelopeAead`` with a local AES-256-GCM key as the "KMS" (skipped otherwise).
   Every pair pays the vault's record check (kept in memory while its files are
   unchanged: two ``lstat`` per operation) and queued audit lines (group commit).
3. AWS KMS on a moto server started here on a free port: write N small objects
   to S3 (envcrypt with an ``aws-kms://`` key) and read them back, with and
   without the DEK cache, against plain unencrypted put/get of the same objects.
   KMS calls are counted with a botocore event hook.

Figures are medians of ``--repeat`` runs; ratios are against the baselines above.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.keywrap import (
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

import envcrypt
from envcrypt.format import KeySlot
from envcrypt.keys.base import clear_resolver_cache, get_resolver
from envcrypt.keys.cache import default_cache
from envcrypt.keys.vault import LocalVault, LocalVaultResolver


def rate(fn: Callable[[], None], seconds: float = 0.5) -> float:
    """Operations per second of ``fn`` over about ``seconds``."""
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        n += 1
    return n / elapsed


def median_rate(fn: Callable[[], None], repeat: int) -> float:
    return statistics.median(rate(fn) for _ in range(repeat))


def bench_local(repeat: int) -> list[tuple[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        vault = LocalVault(Path(tmp) / "vault")
        vault.create_key("bench")
        resolver = LocalVaultResolver(vault)
        kek, dek = os.urandom(32), os.urandom(32)
        wrapped = aes_key_wrap_with_padding(kek, dek)
        slot = resolver.wrap("local:bench", dek, {})
        exact = KeySlot(slot.key_uri, slot.wrap_algorithm, slot.wrapped_dek)
        rows = [
            ("AES-KWP wrap (cryptography, baseline)", median_rate(lambda: aes_key_wrap_with_padding(kek, dek), repeat)),
            ("AES-KWP unwrap (cryptography, baseline)", median_rate(lambda: aes_key_unwrap_with_padding(kek, wrapped), repeat)),
            ("local: wrap (vault + audit line)", median_rate(lambda: resolver.wrap("local:bench", dek, {}), repeat)),
            ("local: unwrap (vault + audit line)", median_rate(lambda: resolver.unwrap(exact, {}), repeat)),
        ]
    return rows


def pair_rate(fn: Callable[[], None], repeat: int) -> float:
    """Median pairs per second of ``fn`` (one encrypt + decrypt)."""
    fn()
    return median_rate(fn, repeat)


def bench_pairs(repeat: int) -> list[tuple[str, float]]:
    import time as _time

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    data = os.urandom(1024)
    gcm, nonce = AESGCM(os.urandom(32)), os.urandom(12)
    rows = [("AES-256-GCM one-shot 1 KiB (baseline)",
             pair_rate(lambda: gcm.decrypt(nonce, gcm.encrypt(nonce, data, None), None), repeat))]
    try:
        import tink
        from tink import aead
    except ImportError:
        print("(tink not installed: pip install tink for the Tink baseline)")
    else:
        aead.register()
        remote = tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM).primitive(aead.Aead)
        envelope = aead.KmsEnvelopeAead(aead.aead_key_templates.AES256_GCM, remote)
        rows.append(("Tink KmsEnvelopeAead, local key (baseline)",
                     pair_rate(lambda: envelope.decrypt(envelope.encrypt(data, b""), b""), repeat)))
    with tempfile.TemporaryDirectory() as tmp:
        where = str(Path(tmp) / "vault")
        LocalVault(where).create_key("bench")
        _time.sleep(1.1)  # past the vault's racy window: the key record is kept from now on

        def pair(cache: bool) -> None:
            blob = envcrypt.encrypt(data, "local:bench", vault=where, dek_cache=cache)
            envcrypt.decrypt(blob, trusted_keys="local:bench", vault=where, dek_cache=cache)

        rows.append(("envcrypt local: vault, no DEK cache", pair_rate(lambda: pair(False), repeat)))
        rows.append(("envcrypt local: vault, DEK cache", pair_rate(lambda: pair(True), repeat)))
        flush = getattr(LocalVault(where).audit, "flush", None)
        if flush is not None:
            flush()  # the queued audit lines, before the directory goes
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_kms(objects: int, repeat: int) -> list[dict[str, Any]]:
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        kms = boto3.client("kms", endpoint_url=endpoint, region_name="us-east-1")
        key_uri = f"aws-kms://{kms.create_key()['KeyMetadata']['Arn']}"
        s3.create_bucket(Bucket="bench")
        payloads = [os.urandom(200) + b"row %d" % i for i in range(objects)]
        opts: dict[str, Any] = {"endpoint_url": endpoint, "region_name": "us-east-1"}
        calls: Counter[str] = Counter()
        resolver: Any = get_resolver("aws-kms", **opts)
        resolver.client.meta.events.register("before-call.kms", lambda model, **kw: calls.update([model.name]))

        def plain(run: int) -> None:
            for i, data in enumerate(payloads):
                s3.put_object(Bucket="bench", Key=f"plain/{run}/{i}", Body=data)
            for i, data in enumerate(payloads):
                assert s3.get_object(Bucket="bench", Key=f"plain/{run}/{i}")["Body"].read() == data

        def encrypted(run: int, cache: bool) -> None:
            default_cache().clear()
            ctx = {"run": str(run)}
            prefix = f"{'cache' if cache else 'nocache'}/{run}"
            for i, data in enumerate(payloads):
                blob = envcrypt.encrypt(data, key_uri, encryption_context=ctx, dek_cache=cache, **opts)
                s3.put_object(Bucket="bench", Key=f"{prefix}/{i}", Body=blob)
            for i, data in enumerate(payloads):
                blob = s3.get_object(Bucket="bench", Key=f"{prefix}/{i}")["Body"].read()
                assert envcrypt.decrypt(blob, trusted_keys=key_uri, dek_cache=cache, **opts) == data

        results = []
        cases: list[tuple[str, Callable[[int], None]]] = [
            ("plain S3 put+get (baseline)", plain),
            ("envcrypt + KMS, no DEK cache", lambda r: encrypted(r, False)),
            ("envcrypt + KMS, DEK cache", lambda r: encrypted(r, True)),
        ]
        for name, fn in cases:
            times, counts = [], []
            for run in range(repeat):
                calls.clear()
                start = time.perf_counter()
                fn(run)
                times.append(time.perf_counter() - start)
                counts.append(sum(calls.values()))
            results.append({"name": name, "seconds": statistics.median(times),
                            "kms_calls": statistics.median(counts)})
        return results
    finally:
        server.stop()
        clear_resolver_cache()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-kms", action="store_true")
    parser.add_argument("--only-pairs", action="store_true", help="only the 1 KiB encrypt+decrypt pairs")
    args = parser.parse_args()

    pairs = bench_pairs(args.repeat)
    tink_rate = next((r for n, r in pairs if n.startswith("Tink")), None)
    print(f"\n1 KiB encrypt+decrypt pairs (median of {args.repeat} runs)")
    print(f"{'case':44} {'pairs/s':>10} {'vs GCM':>8} {'vs Tink':>8}")
    for name, rate_ in pairs:
        vs_tink = f"{rate_ / tink_rate:8.3f}" if tink_rate else f"{'-':>8}"
        print(f"{name:44} {rate_:10,.0f} {rate_ / pairs[0][1]:8.4f} {vs_tink}")
    if tink_rate:
        best = pairs[-2][1]
        print(f"\nno-cache pairs vs Tink: {best / tink_rate:.3f} (target >= 0.5): "
              f"{'OK' if best >= 0.5 * tink_rate else 'MISSED'}")
    if args.only_pairs:
        return 0

    local = bench_local(args.repeat)
    print(f"\nLocal vault DEK wrap/unwrap (median of {args.repeat} runs)")
    print(f"{'operation':44} {'ops/s':>12} {'vs baseline':>12}")
    for i, (name, ops) in enumerate(local):
        baseline = local[i % 2][1]
        print(f"{name:44} {ops:12,.0f} {ops / baseline:12.3f}")

    if not args.skip_kms:
        kms = bench_kms(args.objects, args.repeat)
        base = kms[0]["seconds"]
        print(f"\nWrite + read back {args.objects:,} small objects on a moto server "
              f"(S3 + KMS; median of {args.repeat} runs)")
        print(f"{'case':34} {'KMS calls':>10} {'wall s':>8} {'objects/s':>10} {'time vs plain':>14}")
        for row in kms:
            print(f"{row['name']:34} {row['kms_calls']:10.0f} {row['seconds']:8.2f} "
                  f"{2 * args.objects / row['seconds']:10,.0f} {row['seconds'] / base:14.2f}")
        cached = kms[2]["kms_calls"]
        print(f"\nKMS calls with the DEK cache: {cached:.0f} (target <= 10): {'OK' if cached <= 10 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
