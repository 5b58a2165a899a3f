"""Column encryption throughput: envcrypt.columns vs a per-cell AESGCM loop, and Parquet costs.

    .venv/bin/python benchmarks/bench_columns.py --cells 1000000 --rows 10000000 --repeat 3

Prints medians (the machine is shared and noisy) and ratios measured in the same run:
1. ``--cells`` string cells of 8-40 bytes: encrypt/decrypt cells/s, pure and compiled cores,
   randomized and deterministic, vs a per-cell ``AESGCM.encrypt`` loop;
2. a ``--rows`` table with two encrypted columns written to / read from Parquet (write includes
   encryption, read includes decryption) vs the plain table, and vs Parquet modular encryption
   of the same columns (envcrypt.parquet).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from _timing import median_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-parquet", action="store_true", help="only the cell throughput")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="envcrypt-bench-") as tmp:
        os.environ["ENVCRYPT_VAULT"] = os.path.join(tmp, "vault")
        run(args, tmp)


def run(args: argparse.Namespace, tmp: str) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    import envcrypt.columns as ec
    import envcrypt.parquet as ep
    from envcrypt.columns import _engine
    from envcrypt.keys.vault import vault_for

    vault = vault_for(None)
    for name in ("pii", "footer"):
        vault.create_key(name)
    rng = np.random.default_rng(1)
    n = args.cells
    lengths = rng.integers(8, 41, n)
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    data = rng.integers(97, 123, int(offsets[-1]), dtype=np.uint8)
    strings = pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    table = pa.table({"s": strings})
    token = ec.new_column_key("local:pii")
    # "default": core=None, i.e. the kernel mode of envcrypt._kernel (hybrid when built: deterministic
    # cells shared by cryptography on this thread and the kernel on the helper)
    cores = ["pure", "compiled", "default"] if _engine.compiled_available() else ["pure"]

    values = strings.to_pylist()[: min(n, 300_000)]
    aead, ad, nonce = AESGCM(os.urandom(32)), b"ad", os.urandom(12)
    loop = median_time(lambda: [aead.encrypt(nonce, v.encode(), ad) for v in values], args.repeat)
    loop_rate = len(values) / loop
    print(f"cells: {n:,} strings of 8-40 bytes; medians of {args.repeat}; cpu_count={os.cpu_count()}")
    print(f"{'per-cell AESGCM.encrypt loop':44s} {loop_rate / 1e6:6.2f} M cells/s   1.00x")
    for core in cores:
        for mode, policy, det in (("randomized", {"s": "local:pii"}, []), ("deterministic", {"s": token}, ["s"])):
            use = None if core == "default" else core
            enc = ec.encrypt_table(table, policy, det, core=use)
            t_enc = median_time(lambda p=policy, d=det, c=use: ec.encrypt_table(table, p, d, core=c), args.repeat)
            t_dec = median_time(lambda e=enc, p=policy, c=use: ec.decrypt_table(e, p, core=c), args.repeat)
            for what, t in (("encrypt", t_enc), ("decrypt", t_dec)):
                rate = n / t
                print(f"{core + ' ' + mode + ' ' + what:44s} {rate / 1e6:6.2f} M cells/s "
                      f"{rate / loop_rate:6.2f}x")

    if args.skip_parquet:
        return
    rows = args.rows
    ids = pa.array(np.arange(rows, dtype=np.int64))
    r2 = rng.integers(8, 41, rows)
    o2 = np.zeros(rows + 1, np.int64)
    np.cumsum(r2, out=o2[1:])
    big = pa.Array.from_buffers(pa.large_string(), rows, [None, pa.py_buffer(o2),
                                                           pa.py_buffer(rng.integers(97, 123, int(o2[-1]), dtype=np.uint8))])
    plain = pa.table({"id": ids, "name": big.cast(pa.string()), "score": pa.array(rng.random(rows)),
                      "ssn": pa.array(rng.integers(0, 10**9, rows))})
    policy = {"name": "local:pii", "ssn": "local:pii"}
    path = os.path.join(tmp, "t.parquet")
    pme = {"footer_key": "local:footer", "column_keys": {"local:pii": ["name", "ssn"]}}
    def write_encrypted() -> None:
        enc = ec.encrypt_table(plain, policy)
        pq.write_table(enc, path, **ec.parquet_write_options(enc))

    stages: dict[str, list[float]] = {"encrypt_table": [], "decrypt_table": []}
    cases: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
        "plain": (lambda: pq.write_table(plain, path), lambda: pq.read_table(path)),
        "envcrypt.columns (default writer)": (lambda: pq.write_table(ec.encrypt_table(plain, policy), path),
                                              lambda: ec.decrypt_table(pq.read_table(path), policy)),
        "envcrypt.columns": (lambda: write_encrypted(), lambda: ec.decrypt_table(pq.read_table(path), policy)),
        "Parquet modular encryption": (lambda: ep.write_table(plain, path, encryption=pme),
                                       lambda: ep.read_table(path, decryption=pme)),
    }
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
    for _ in range(args.repeat):  # round-robin: noise hits every case alike
        for name, (write, read) in cases.items():
            t = time.perf_counter()
            write()
            w = time.perf_counter() - t
            t = time.perf_counter()
            read()
            results[name].append((w, time.perf_counter() - t))
        t = time.perf_counter()
        enc_table = ec.encrypt_table(plain, policy)
        stages["encrypt_table"].append(time.perf_counter() - t)
        t = time.perf_counter()
        ec.decrypt_table(enc_table, policy)
        stages["decrypt_table"].append(time.perf_counter() - t)
    base_w = statistics.median(w for w, _ in results["plain"])
    base_r = statistics.median(r for _, r in results["plain"])
    print(f"\nParquet, {rows:,} rows, 2 of 4 columns encrypted (name: string 8-40 B, ssn: int64)")
    for name, res in results.items():
        w, r = statistics.median(x for x, _ in res), statistics.median(y for _, y in res)
        print(f"{name:36s} write {w:7.3f} s ({w / base_w:5.2f}x plain)   read {r:7.3f} s ({r / base_r:5.2f}x plain)")
    # where the time goes: the cell AEAD alone (no Parquet), against the plain write/read
    cells = 2 * rows
    for stage, base in (("encrypt_table", base_w), ("decrypt_table", base_r)):
        t = statistics.median(stages[stage])
        print(f"  {stage} alone: {t:7.3f} s = {t / base:5.2f}x plain {'write' if stage[0] == 'e' else 'read'}, "
              f"{t / cells * 1e9:6.0f} ns per cell ({cells:,} cells); the 1.3x target leaves "
              f"{0.3 * base / cells * 1e9:5.1f} ns per cell")


if __name__ == "__main__":
    main()
