"""``envcrypt encrypt|decrypt|demo``: single streams (files, stdin/stdout) and the quick-start job."""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

from .. import CHUNK_SIZE, open_reader, open_writer
from ._exit import allow_quick_exit
from ._files import Output, open_input, regular_size

#: bytes per buffer of a copy; the writer's sealing batch is set to the same size, so it seals
#: straight from the buffer (no staging copy) and the input file fills it with one readinto.
#: 1 MiB (64 chunks): measured against 2 and 4 MiB, and against a second thread for the file I/O
#: (read-ahead, write-behind: no gain, or a loss, on two shared cores), with
#: benchmarks/bench_peers.py
COPY_BUFFER = 1024 * 1024


VAULT_HELP = "local vault directory for local: keys (default $ENVCRYPT_VAULT); never created by a read"


def _parser(sub: Any, name: str, helptext: str, example: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=helptext, description=helptext, epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    return p


def register(sub: Any) -> None:
    p = _parser(sub, "encrypt", "encrypt a file (or stdin) into an envcrypt object",
                "envcrypt encrypt data.csv data.csv.envc --key local:sales --context dataset=sales")
    p.add_argument("src", help="input path, or - for stdin")
    p.add_argument("dst", help="output path, or - for stdout")
    p.add_argument("--vault", metavar="DIR", help=VAULT_HELP)
    p.add_argument("--key", action="append", dest="keys", metavar="KEY_URI",
                   help="master key URI (repeat for several key slots); default $ENVCRYPT_KEY_URI or local:default")
    p.add_argument("--context", action="append", default=[], metavar="K=V",
                   help="authenticated encryption context pair (repeatable)")
    p.set_defaults(func=_encrypt)

    p = _parser(sub, "decrypt", "decrypt an envcrypt object",
                "envcrypt decrypt data.csv.envc data.csv --trust local:sales")
    p.add_argument("src", help="envcrypt object path, or - for stdin")
    p.add_argument("dst", help="output path, or - for stdout (a file appears only once it authenticated)")
    p.add_argument("--vault", metavar="DIR", help=VAULT_HELP)
    p.add_argument("--context", action="append", default=[], metavar="K=V",
                   help="require this encryption context pair (repeatable)")
    p.add_argument("--trust", action="append", default=None, metavar="KEY_URI",
                   help="a key the object may be opened with (repeatable; default $ENVCRYPT_KEY_URI or "
                        "local:default): a key slot naming any other key is not accepted")
    p.set_defaults(func=_decrypt)

    p = _parser(sub, "demo", "the quick-start job: encrypt a generated dataset on the local vault",
                "envcrypt demo --out /tmp/demo --rows 1000")
    p.add_argument("--out", default="demo-out", help="directory for the demo files (default ./demo-out)")
    p.add_argument("--rows", type=int, default=200_000, help="rows of generated data (default 200000)")
    p.set_defaults(func=_demo)


def _pairs(items: list[str]) -> dict[str, str] | None:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--context takes KEY=VALUE, not {item!r}")
        out[key] = value
    return out or None


def _vault(args: argparse.Namespace) -> dict[str, Any]:
    """The resolver option ``vault`` when ``--vault`` is given."""
    return {"vault": args.vault} if args.vault else {}


class _Stdout:
    """The output ``-``: plaintext or ciphertext streamed as it is produced (nothing to publish)."""

    def __init__(self) -> None:
        self._out = sys.stdout.buffer

    def write(self, data: memoryview) -> None:
        self._out.write(data)

    def commit(self) -> None:
        self._out.flush()

    def abort(self) -> None:
        pass


class _Sink:
    """What an EncryptingWriter writes into: the sealed output, straight from its buffer."""

    def __init__(self, out: Output | _Stdout) -> None:
        self._out = out

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._out.write(view)
        return len(view)


@contextlib.contextmanager
def _streams(src_path: str, dst_path: str) -> Iterator[tuple[IO[bytes], Output | _Stdout]]:
    """Input and output (``-`` for stdin/stdout); a file output appears only on success."""
    src: IO[bytes] = sys.stdin.buffer if src_path == "-" else open_input(src_path)
    try:
        out = _Stdout() if dst_path == "-" else Output(dst_path)
    except BaseException:
        if src is not sys.stdin.buffer:
            src.close()
        raise
    try:
        yield src, out
        out.commit()
    except BaseException:
        out.abort()
        raise
    finally:
        if src is not sys.stdin.buffer:
            src.close()


def _copy_size(src: IO[bytes]) -> int:
    """The copy buffer for ``src``: COPY_BUFFER, or less for a small regular file.

    Zero-filling buffers the copy will never use is a visible share of a
    small file's run time; a file that grows while read is still copied whole.
    """
    size = regular_size(src)
    if size is None:
        return COPY_BUFFER
    return max(CHUNK_SIZE, min(COPY_BUFFER, -(-(size + 1) // CHUNK_SIZE) * CHUNK_SIZE))


def _encrypt(args: argparse.Namespace) -> int:
    with _streams(args.src, args.dst) as (src, out):
        size = _copy_size(src)
        with open_writer(cast(IO[bytes], _Sink(out)), args.keys, encryption_context=_pairs(args.context),
                         batch_chunks=size // CHUNK_SIZE, **_vault(args)) as writer:
            # the writer seals straight from this buffer (its batch is the buffer's size) into its
            # own, which the sink writes out as it is
            view = memoryview(bytearray(size))
            while n := src.readinto(view):  # type: ignore[attr-defined]  # FileIO / BufferedReader
                writer.write(view[:n])
    allow_quick_exit()  # everything is closed, the output published
    return 0


def _decrypt(args: argparse.Namespace) -> int:
    with _streams(args.src, args.dst) as (src, out):
        reader = open_reader(src, trusted_keys=args.trust, encryption_context=_pairs(args.context), **_vault(args))
        # the stored size bounds the plaintext; the reader fills the buffer with authenticated
        # bytes only: on a failure, what went before is in the unnamed output, which is dropped
        with reader:
            view = memoryview(bytearray(_copy_size(src)))
            while n := reader.readinto(view):
                out.write(view[:n])
    allow_quick_exit()  # everything is closed, the output published
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Encrypt a generated CSV with the default key on the local vault; prove it is ciphertext."""
    import csv  # the demo's imports stay off the encrypt/decrypt start-up path
    import random

    from .. import decrypt, encrypt, inspect
    from ..keys.base import default_key_uri
    from ..keys.vault import default_vault_path

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    text = io.StringIO()
    w = csv.writer(text)
    w.writerow(["customer_id", "email", "card_last4", "amount_eur"])
    for i in range(args.rows):
        w.writerow([i, f"user{i}@example.com", f"{rng.randrange(10000):04d}", f"{rng.random() * 500:.2f}"])
    plaintext = text.getvalue().encode()
    key_uri = default_key_uri()
    print(f"vault     {default_vault_path()}")
    print(f"key       {key_uri}")

    blob = encrypt(plaintext, key_uri, encryption_context={"dataset": "customers", "demo": "1"})
    path = out / "customers.csv.envc"
    path.write_bytes(blob)
    stored = path.read_bytes()
    info = inspect(stored)
    print(f"wrote     {path}  ({len(stored):,} bytes stored for {len(plaintext):,} plaintext bytes)")
    print(f"header    key slots {info.key_uris}, context {dict(info.encryption_context)}")
    print(f"stored    {stored[info.header_size:info.header_size + 32].hex()}...")
    leaked = [s for s in (b"customer_id", b"@example.com", b"user1") if s in stored]
    if leaked:
        print(f"FAIL: plaintext found in the stored bytes: {leaked}")
        return 1
    print("check     no plaintext marker appears in the stored bytes")

    back = decrypt(stored)
    if back != plaintext:
        print("FAIL: decrypted bytes differ")
        return 1
    with open(path, "rb") as f:
        reader = open_reader(f)
        reader.seek(len(plaintext) // 2)
        sample = reader.read(60)
    print(f"roundtrip decrypted {len(back):,} bytes, identical to the original")
    print(f"random    read at {len(plaintext) // 2:,}: {sample!r}")
    tampered = bytearray(stored)
    tampered[-100] ^= 1
    try:
        decrypt(bytes(tampered))
    except Exception as exc:
        print(f"tamper    flipping one stored bit -> {type(exc).__name__}")
    else:
        print("FAIL: a tampered object decrypted")
        return 1
    if _demo_dataframe(out, args.rows) != 0:
        return 1
    print("ok")
    return 0


def _demo_dataframe(out: Path, rows: int) -> int:
    """The same data as a pandas DataFrame through ``envcrypt::file://``, read back by column."""
    try:
        import fsspec
        import pandas as pd
        import pyarrow  # noqa: F401  (the Parquet engine)
    except ImportError:
        print("pandas    (pandas/pyarrow not installed: pip install 'envcrypt[arrow]' for this part)")
        return 0
    df = pd.DataFrame({
        "customer_id": range(rows),
        "email": [f"user{i}@example.com" for i in range(rows)],
        "amount_eur": [round((i * 7919 % 50000) / 100, 2) for i in range(rows)],
    })
    url = f"envcrypt::file://{out.resolve()}/customers.parquet"
    df.to_parquet(url)
    fs, path = fsspec.core.url_to_fs(url)
    info = fs.info(path)
    stored = Path(path).read_bytes()
    back = pd.read_parquet(url, columns=["amount_eur"])
    same = back["amount_eur"].equals(df["amount_eur"])
    print(f"pandas    {url}: {info['size']:,} plaintext bytes (what fsspec reports), "
          f"{len(stored):,} stored; column read back {'identical' if same else 'DIFFERENT'}")
    if not same or b"@example.com" in stored or stored[:4] == b"PAR1":
        print("FAIL: the Parquet file is not sealed or did not read back")
        return 1
    return 0
