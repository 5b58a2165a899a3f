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


def median_time(fn: Callable[[], Any], repeat: int, before: Callable[[], None] = lambda: None) -> float:
    times = []
    before()
    fn()  # warm-up (page cache, allocator, imports), not timed
    for _ in range(repeat):
        before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
    rows: list[tuple[str, float, float | None, float | None]] = []

    t_plain_w = median_time(lambda: pq.write_table(table, plain), args.repeat)
    t_ours_w = median_time(lambda: ep.write_table(table, ours, encryption=cfg), args.repeat, fresh)
    t_raw_w = median_time(lambda: pq.write_table(table, raw, encryption_properties=raw_factory[0]
                                                 .file_encryption_properties(kms, raw_enc)), args.repeat, fresh)
    ep.write_table(table, ours_open, encryption=cfg_open)
    rows += [("write: plain", t_plain_w, None, None),
             ("write: pyarrow PME, in-memory KMS", t_raw_w, t_raw_w / t_plain_w, None),
             ("write: envcrypt PME", t_ours_w, t_ours_w / t_plain_w, t_ours_w / t_raw_w)]

    t_plain_r = median_time(lambda: pq.read_table(plain), args.repeat)
    t_ours_r = median_time(lambda: ep.read_table(ours, decryption=cfg), args.repeat, fresh)
    t_raw_r = median_time(lambda: pq.read_table(raw, decryption_properties=raw_factory[0]
                                                .file_decryption_properties(kms, pe.DecryptionConfiguration())),
                          args.repeat, fresh)
    rows += [("read all: plain", t_plain_r, None, None),
             ("read all: pyarrow PME, in-memory KMS", t_raw_r, t_raw_r / t_plain_r, None),
             ("read all: envcrypt PME", t_ours_r, t_ours_r / t_plain_r, t_ours_r / t_raw_r)]

    t_plain_p = median_time(lambda: pq.read_table(plain, columns=PLAIN), args.repeat)
    t_open_p = median_time(lambda: ep.read_table(ours_open, columns=PLAIN), args.repeat)
    t_keys_p = median_time(lambda: ep.read_table(ours, decryption=cfg, columns=PLAIN), args.repeat, fresh)
    rows += [("read plaintext cols: plain", t_plain_p, None, None),
             ("read plaintext cols: PME, plaintext footer, no keys", t_open_p, t_open_p / t_plain_p, None),
             ("read plaintext cols: PME, encrypted footer, keys", t_keys_p, t_keys_p / t_plain_p, None)]

    print(f"rows={args.rows:,} table={mb:,.0f} MB (Arrow) repeat={args.repeat} "
          f"files: plain {plain.stat().st_size / 1e6:,.0f} MB, PME {ours.stat().st_size / 1e6:,.0f} MB")
    print(f"{'case':55} {'seconds':>8} {'x plain':>8} {'x pyarrow PME':>14}")
    for name, t, vs_plain, vs_raw in rows:
        print(f"{name:55} {t:8.3f} {'' if vs_plain is None else f'{vs_plain:8.3f}':>8} "
              f"{'' if vs_raw is None else f'{vs_raw:14.3f}':>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
