"""Secrets hygiene: no key byte in a repr, an exception message, a traceback formatted with
``capture_locals=True`` or a DEBUG log record; objects holding a DEK or KEK refuse to pickle;
the vault is 0600 files in a 0700 directory and refuses a group-readable one.

Every 32-byte ``os.urandom`` result of a test (data keys, column keys, vault keys and the
vault master key all come from there) is recorded, and the text under test is searched for
each of them as hex, base64 (standard and URL-safe) and as the body of a ``bytes`` repr."""

from __future__ import annotations

import base64
import io
import logging
import os
import pickle
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import fsspec
import pytest

import envcrypt
from envcrypt.errors import VaultError
from envcrypt.fs import EnvcryptFileSystem
from envcrypt.keys.vault import LocalVault
from tests.secrets_scan import Scanner, read_report

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """Every 32-byte os.urandom result made during the test (keys are born there)."""
    seen: list[bytes] = []
    real = os.urandom

    def urandom(n: int) -> bytes:
        out = real(n)
        if n == 32:
            seen.append(out)
        return out

    monkeypatch.setattr(os, "urandom", urandom)
    yield seen


def _leaks(text: str, keys: list[bytes]) -> list[str]:
    found = []
    for key in keys:
        forms = {"hex": key.hex(), "base64": base64.b64encode(key).decode(),
                 "urlsafe": base64.urlsafe_b64encode(key).decode().rstrip("="), "repr": repr(key)[2:-1]}
        found += [name for name, form in forms.items() if form in text]
    return found


def _traceback(run: Callable[[], object]) -> tuple[BaseException, str]:
    try:
        run()
    except Exception as exc:  # every exception type is formatted the way a crash reporter does
        text = "".join(traceback.TracebackException.from_exception(exc, capture_locals=True).format())
        return exc, text + str(exc) + repr(exc)
    raise AssertionError("expected a failure")


def test_failures_show_no_key_even_with_captured_locals(tmp_path: Path, keys: list[bytes]) -> None:
    LocalVault().create_key("k")
    fs = EnvcryptFileSystem(fs=fsspec.filesystem("file"), key_uri="local:k", skip_instance_cache=True)
    blob = envcrypt.encrypt(b"payload" * 5000, "local:k")
    tampered = bytearray(blob)
    tampered[-100] ^= 1
    (tmp_path / "bad.bin").write_bytes(bytes(tampered))
    (tmp_path / "dir").mkdir()

    def failing_block() -> None:
        with fs.open(str(tmp_path / "w.bin"), "wb") as f:
            f.write(b"x" * 100_000)
            raise RuntimeError("producer failed")

    def failing_stream() -> None:
        with envcrypt.open_writer(io.BytesIO(), "local:k") as w:
            w.write(b"y" * 50_000)
            raise RuntimeError("producer failed")

    scenarios: dict[str, Callable[[], object]] = {
        "tampered decrypt": lambda: envcrypt.decrypt(bytes(tampered), trusted_keys=["local:k"]),
        "tampered fs read": lambda: fs.cat_file(str(tmp_path / "bad.bin")),
        "tampered ranged read": lambda: fs.cat_file(str(tmp_path / "bad.bin"), 30_000, 35_000),
        "second key missing": lambda: envcrypt.encrypt(b"x", ["local:k", "local:missing"]),
        "write to a directory": lambda: fs.open(str(tmp_path / "dir"), "wb"),
        "producer fails in a with block": failing_block,
        "producer fails in a stream": failing_stream,
        "rewrap to a missing key": lambda: envcrypt.rewrap(blob, "local:missing", trusted_keys=["local:k"]),
    }
    pa = pytest.importorskip("pyarrow")
    from envcrypt.columns import decrypt_table, encrypt_table

    table = encrypt_table(pa.table({"c": ["secret"]}), {"c": "local:k"})
    scenarios["column under an untrusted key"] = lambda: decrypt_table(table, trusted_keys=["local:other"])
    scenarios["column key missing"] = lambda: encrypt_table(pa.table({"c": ["x"]}), {"c": "local:missing"})
    assert len(keys) >= 3
    for name, run in scenarios.items():
        exc, text = _traceback(run)
        assert _leaks(text, keys) == [], f"{name}: {type(exc).__name__} shows a key"


def test_reprs_show_no_key_and_key_holders_refuse_to_pickle(tmp_path: Path, keys: list[bytes]) -> None:
    from envcrypt._secret import SecretBytes
    from envcrypt.chunked import new_message
    from envcrypt.keys.cache import DekCache
    from envcrypt.slots import open_slots

    LocalVault().create_key("k")
    cache = DekCache()
    fs = EnvcryptFileSystem(fs=fsspec.filesystem("file"), key_uri="local:k",
                            resolver_options={"dek_cache": cache}, skip_instance_cache=True)
    fs.pipe_file(str(tmp_path / "a.bin"), b"a" * 70_000)
    reader = fs.open(str(tmp_path / "a.bin"), "rb")
    writer = fs.open(str(tmp_path / "b.bin"), "wb")
    stream = envcrypt.open_writer(io.BytesIO(), "local:k")
    blob = envcrypt.encrypt(b"z" * 100, "local:k")
    opened = open_slots(*_parts(blob), ["local:k"], {})
    _, cipher = new_message(bytes(32), b"")
    dek = SecretBytes(os.urandom(32))
    holders = {"ChunkCipher": cipher, "EncryptingWriter": stream, "EnvcryptWriteFile": writer,
               "OpenedSlot": opened, "SecretBytes": dek, "DekCache": cache}
    pa = pytest.importorskip("pyarrow")
    from envcrypt.columns._keys import new_key

    holders["ColumnKey"] = new_key("local:k", None, {})
    others = {"EnvcryptFileSystem": fs, "EnvcryptReadFile": reader, "LocalVault": LocalVault(),
              "DecryptingReader": envcrypt.open_reader(io.BytesIO(blob), trusted_keys=["local:k"])}
    for name, obj in {**holders, **others}.items():
        assert _leaks(repr(obj) + str(obj), keys) == [], f"repr of {name} shows a key"
    for name, obj in holders.items():
        with pytest.raises(TypeError):
            pickle.dumps(obj)
            raise AssertionError(f"{name} pickled")
    for name, obj in others.items():  # these pickle by name (a path, options), never with a key
        try:
            data = pickle.dumps(obj)
        except TypeError:
            continue
        assert _leaks(data.decode("latin-1"), keys) == [] and not any(k in data for k in keys), name
    writer.discard()
    reader.close()
    assert pa is not None


def _parts(blob: bytes) -> tuple[object, bytes]:
    from envcrypt.format import BODY_PREFIX_SIZE, parse_header

    header, size = parse_header(blob)
    return header, blob[size : size + BODY_PREFIX_SIZE]


def test_vault_files_are_private_and_a_group_readable_vault_is_refused(_isolated_vault: Path) -> None:
    LocalVault().create_key("k")
    vault = _isolated_vault
    assert vault.stat().st_mode & 0o777 == 0o700
    for path in vault.rglob("*"):
        assert path.stat().st_mode & 0o777 == (0o700 if path.is_dir() else 0o600), path
    blob = envcrypt.encrypt(b"x", "local:k")
    for victim, mode in ((vault / "keys" / "k.json", 0o640), (vault / "master.key", 0o644), (vault, 0o750),
                         (vault / "keys", 0o755)):
        before = victim.stat().st_mode & 0o777
        victim.chmod(mode)
        try:
            from envcrypt.keys.base import clear_resolver_cache

            clear_resolver_cache()
            with pytest.raises(VaultError, match="permissions"):
                envcrypt.decrypt(blob, trusted_keys=["local:k"])
        finally:
            victim.chmod(before)
    assert envcrypt.decrypt(blob, trusted_keys=["local:k"]) == b"x"


def test_the_log_scanner_finds_a_planted_key() -> None:
    """The scanner that guards the DEBUG run below would see a key if one were logged."""
    scanner = Scanner(os.devnull)
    key = os.urandom(32)
    scanner.remember(key)
    log = logging.getLogger("envcrypt-test-scanner")
    log.propagate = False
    log.addHandler(scanner)
    log.setLevel(logging.DEBUG)
    try:
        b64 = base64.b64encode(key).decode()
        for planted in (key.hex(), b64, f"body: {b'{' + key + b'}'!r}", f'{{"Plaintext": "{b64}"}}'):
            log.debug("request %s", planted)
        log.debug("nothing here %s", os.urandom(32).hex())
    finally:
        log.removeHandler(scanner)
    assert scanner.records == 5 and scanner.findings == 4


def test_botocore_debug_logs_of_kms_calls_hold_no_data_key(moto_server: str, keys: list[bytes],
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """KMS Encrypt sends the DEK and Decrypt returns it; botocore logs both bodies at DEBUG.
    envcrypt does not touch botocore's loggers by itself (a library changes no logging behind
    its user): ``redact_debug_logs()`` is the application's call, made once."""
    boto3 = pytest.importorskip("boto3")
    from envcrypt.keys.aws_kms import redact_debug_logs

    redact_debug_logs()
    arn = boto3.client("kms", endpoint_url=moto_server, region_name="us-east-1").create_key()["KeyMetadata"]["Arn"]
    with caplog.at_level(logging.DEBUG):
        blob = envcrypt.encrypt(b"x" * 1000, f"aws-kms://{arn}", endpoint_url=moto_server, region_name="us-east-1",
                                dek_cache=False)
        assert envcrypt.decrypt(blob, trusted_keys=[f"aws-kms://{arn}"], endpoint_url=moto_server,
                                region_name="us-east-1", dek_cache=False) == b"x" * 1000
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "Plaintext" in text and "<redacted>" in text  # the bodies were logged, the keys were not
    assert _leaks(text, keys) == []


#: a part of the suite that makes and uses local, KMS and column keys, through the core and S3
SUBSET = ["tests/test_roundtrip.py", "tests/test_keys_aws_kms.py", "tests/test_keys_vault.py",
          "tests/test_columns.py::test_every_supported_type_round_trips_with_nulls_and_empty_values",
          "tests/test_fs_s3.py::test_aws_kms_key_through_the_filesystem",
          "tests/test_fs_s3.py::test_write_read_sizes_and_raw_ciphertext"]


@pytest.mark.cloud
@pytest.mark.timeout(600)
def test_a_representative_run_at_debug_logs_no_key(tmp_path: Path) -> None:
    """The opt-in scan (tests/secrets_scan.py) over a representative part of the suite, in a
    subprocess with the root logger at DEBUG; the whole suite is scanned the same way with
    ``ENVCRYPT_SECRETS_SCAN=REPORT pytest``."""
    report = tmp_path / "scan.jsonl"
    env = dict(os.environ, ENVCRYPT_SECRETS_SCAN=str(report), PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-o", "addopts=",
                           *SUBSET], cwd=REPO, env=env, capture_output=True, timeout=580)
    assert done.returncode == 0, done.stdout.decode()[-3000:]
    summary, findings = read_report(str(report))
    assert findings == []
    assert summary["records"] > 1000 and summary["keys"] > 100  # it really ran, and saw keys


def test_the_library_leaves_botocore_logging_alone(moto_server: str) -> None:
    """Using a KMS key adds no filter or handler to any logger (a fresh process)."""
    pytest.importorskip("boto3")
    code = f"""
import logging, boto3, envcrypt
arn = boto3.client("kms", endpoint_url={moto_server!r}, region_name="us-east-1").create_key()["KeyMetadata"]["Arn"]
blob = envcrypt.encrypt(b"x", f"aws-kms://{{arn}}", endpoint_url={moto_server!r}, region_name="us-east-1")
assert envcrypt.decrypt(blob, trusted_keys=[f"aws-kms://{{arn}}"], endpoint_url={moto_server!r},
                        region_name="us-east-1") == b"x"
touched = [name for name, lg in logging.root.manager.loggerDict.items()  # libraries' own NullHandlers aside
           if isinstance(lg, logging.Logger)
           and (lg.filters or any(type(h) is not logging.NullHandler for h in lg.handlers))]
print(touched)
"""
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
