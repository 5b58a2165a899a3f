"""Parquet modular encryption with envcrypt keys: write and read time against plain Parquet and
against pyarrow's PME with its own in-memory KmsClient (the cost of the envcrypt bridge itself).

    .venv/bin/python benchmarks/bench_parquet.py [--rows 10000000] [--repeat 3] [--dir /tmp]

The table: two int64 columns, two float64 columns, two string columns of 8-40 bytes; the two
string columns are encrypted (column key ``local:pii``), the footer under ``local:footer``
(a fresh vault in a temp directory).  Files go to local disk.  Figures are medians of
``--repeat`` runs; each PME run uses a fresh CryptoFactory (so each pays its key unwraps).

Targets (issue 9): write <= 1.15x plain, full read <= 1.15x plain, reading only the plaintext
columns <= 1.05x plain; envcrypt's bridge <= 1.05x pyarrow PME with an in-memory KmsClient.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ENCRYPTED = ["name", "email"]
PLAIN = ["id", "count", "score", "ratio"]


def make_table(rows: int) -> pa.Table:
    rng = np.random.default_rng(7)
    pool = np.array([("x" * rng.integers(8, 41)) + str(i) for i in range(4096)], dtype=object)
    pool = np.array([s[-int(rng.integers(8, 41)):] for s in pool], dtype=object)
    return pa.table({
        "id": np.arange(rows, dtype=np.int64), "count": rng.integers(0, 1 << 40, rows),
        "score": rng.random(rows), "ratio": rng.random(rows),
        "name": pa.array(pool[rng.integers(0, len(pool), rows)], pa.string()),
        "email": pa.array(pool[rng.integers(0, len(pool), rows)], pa.string()),
    })


class InMemoryKms(pe.KmsClient):  # type: ignore[misc]
    """pyarrow's PME test client style: master keys in a dict, AES-KWP, base64 (no envcrypt)."""

    KEYS = {"footer": os.urandom(32), "pii": os.urandom(32)}

    def __init__(self, _config: Any) -> None:
        super().__init__()

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

        return base64.b64encode(aes_key_wrap_with_padding(self.KEYS[master_key_identifier], key_bytes)).decode()

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding

        return aes_key_unwrap_with_padding(self.KEYS[master_key_identifier], base64.b64decode(wrapped_key))


def interleaved(cases: dict[str, tuple[Callable[[], Any], Callable[[], None]]], repeat: int) -> dict[str, float]:
    """Median seconds of each case, the cases run round-robin (machine noise hits all alike);
    one untimed warm-up round first.  Each case is ``(run, before)``: ``before`` is not timed."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(repeat + 1):
        for name, (fn, before) in cases.items():
            before()
            start = time.perf_counter()
            fn()
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="directory for the files (default a temp dir)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-parquet-", dir=args.dir))
    os.environ["ENVCRYPT_VAULT"] = str(work / "vault")
    import envcrypt.parquet as ep
    from envcrypt.keys.vault import vault_for

    vault = vault_for(None)
    vault.create_key("footer")
    vault.create_key("pii")
    table = make_table(args.rows)
    mb = table.nbytes / 1e6
    cfg = {"footer_key": "local:footer", "column_keys": {"local:pii": ENCRYPTED}}
    cfg_open = dict(cfg, plaintext_footer=True)
    raw_factory: list[pe.CryptoFactory] = []

    def fresh() -> None:
        ep.clear_factories()
        raw_factory[:] = [pe.CryptoFactory(InMemoryKms)]

    kms = pe.KmsConnectionConfig()
    raw_enc = pe.EncryptionConfiguration(footer_key="footer", column_keys={"pii": ENCRYPTED},
                                         data_key_length_bits=256)
    plain, ours, raw, ours_open = (work / n for n in ("plain.parquet", "ours.parquet", "raw.parquet",
                                                       "open.parquet"))
    ep.write_table(table, ours_open, encryption=cfg_open)
    fresh()
    nothing: Callable[[], None] = lambda: None  # noqa: E731
    w = interleaved({
        "plain": (lambda: pq.write_table(table, plain), nothing),
        "raw": (lambda: pq.write_table(table, raw, encryption_properties=raw_factory[0]
                                       .file_encryption_properties(kms, raw_enc)), fresh),
        "ours": (lambda: ep.write_table(table, ours, encryption=cfg), fresh),
    }, args.repeat)
    r = interleaved({
        "plain": (lambda: pq.read_table(plain), nothing),
        "raw": (lambda: pq.read_table(raw, decryption_properties=raw_factory[0].file_decryption_properties(
            kms, pe.DecryptionConfiguration())), fresh),
        "ours": (lambda: ep.read_table(ours, decryption=cfg), fresh),
        "plain_cols": (lambda: pq.read_table(plain, columns=PLAIN), nothing),
        "open_cols": (lambda: ep.read_table(ours_open, columns=PLAIN), nothing),
        "keys_cols": (lambda: ep.read_table(ours, decryption=cfg, columns=PLAIN), fresh),
    }, args.repeat)
    rows = [
        ("write: plain", w["plain"], None, None),
        ("write: pyarrow PME, in-memory KMS", w["raw"], w["raw"] / w["plain"], None),
        ("write: envcrypt PME", w["ours"], w["ours"] / w["plain"], w["ours"] / w["raw"]),
        ("read all: plain", r["plain"], None, None),
        ("read all: pyarrow PME, in-memory KMS", r["raw"], r["raw"] / r["plain"], None),
        ("read all: envcrypt PME", r["ours"], r["ours"] / r["plain"], r["ours"] / r["raw"]),
        ("read plaintext cols: plain", r["plain_cols"], None, None),
        ("read plaintext cols: PME, plaintext footer, no keys", r["open_cols"],
         r["open_cols"] / r["plain_cols"], None),
        ("read plaintext cols: PME, encrypted footer, keys", r["keys_cols"], r["keys_cols"] / r["plain_cols"], None),
    ]

    print(f"rows={args.rows:,} table={mb:,.0f} MB (Arrow) repeat={args.repeat} "
          f"files: plain {plain.stat().st_size / 1e6:,.0f} MB, PME {ours.stat().st_size / 1e6:,.0f} MB")
    print(f"{'case':55} {'seconds':>8} {'x plain':>8} {'x pyarrow PME':>14}")
    for name, t, vs_plain, vs_raw in rows:
        print(f"{name:55} {t:8.3f} {'' if vs_plain is None else f'{vs_plain:8.3f}':>8} "
              f"{'' if vs_raw is None else f'{vs_raw:14.3f}':>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
