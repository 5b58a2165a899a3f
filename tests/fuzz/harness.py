"""Fuzz targets: each takes attacker bytes and must end in a result or an ``envcrypt.errors``
class, never ``struct.error``, ``IndexError``, ``UnicodeDecodeError``, ``KeyError``,
``MemoryError`` or any other exception.

Shared by the bounded hypothesis tests (``test_fuzz.py``, run in CI) and the longer runs of
``./dev fuzz`` (``python -m tests.fuzz``: hypothesis with many more examples, and atheris's
coverage-guided fuzzer when it is installed).

A target gets a ``Setting`` once (a private vault with a key, a valid object, a valid vault
record, a signed manifest, a column's metadata) and mutates from there, so the fuzzers reach
past the first length check.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envcrypt.errors import EnvcryptError

#: exceptions a target may end in
ALLOWED: tuple[type[BaseException], ...] = (EnvcryptError,)


@dataclass
class Setting:
    """Valid material to mutate, made once per process in a private temporary vault."""

    root: Path
    vault: Path
    blob: bytes = b""
    record: bytes = b""
    manifest: bytes = b""
    column_meta: bytes = b""
    extra: dict[str, Any] = field(default_factory=dict)


_setting: Setting | None = None


def setting() -> Setting:
    """The process's Setting (``$ENVCRYPT_VAULT`` points at its vault from here on)."""
    global _setting
    if _setting is not None:
        os.environ["ENVCRYPT_VAULT"] = str(_setting.vault)
        return _setting
    import fsspec

    import envcrypt
    from envcrypt.fs import EnvcryptFileSystem
    from envcrypt.fs.manifest import MANIFEST_NAME, sign_manifest
    from envcrypt.keys.base import clear_resolver_cache
    from envcrypt.keys.vault import LocalVault

    root = Path(tempfile.mkdtemp(prefix="envcrypt-fuzz-"))
    vault = root / "vault"
    os.environ["ENVCRYPT_VAULT"] = str(vault)
    clear_resolver_cache()
    LocalVault().create_key("k")
    LocalVault().create_key("signer", "ec-p256")
    s = Setting(root, vault)
    s.blob = envcrypt.encrypt(os.urandom(40_000), "local:k", encryption_context={"t": "a"})
    s.record = (vault / "keys" / "k.json").read_bytes()
    data = root / "data"
    fs = EnvcryptFileSystem(fs=fsspec.filesystem("file"), key_uri="local:k", skip_instance_cache=True)
    fs.pipe_file(str(data / "x.bin"), b"x" * 100)
    sign_manifest(fs, str(data), "local:signer")
    s.manifest = (data / MANIFEST_NAME).read_bytes()
    s.extra["manifest_path"] = data / MANIFEST_NAME
    s.extra["fs"] = fs
    try:
        import pyarrow as pa

        from envcrypt.columns import encrypt_table
        from envcrypt.columns._meta import META_KEY

        table = encrypt_table(pa.table({"c": ["a", "b"]}), {"c": "local:k"})
        s.column_meta = table.schema.field("c").metadata[META_KEY]
    except ImportError:  # pyarrow missing: the column target has nothing to mutate
        pass
    _setting = s
    return s


def _allowed(run: Callable[[], object]) -> None:
    try:
        run()
    except ALLOWED:
        pass


# ---------------------------------------------------------------- targets


def header(data: bytes) -> None:
    """The header parser (prefix, context, slots) and the size arithmetic behind it."""
    from envcrypt.format import header_length_hint, object_plaintext_size, parse_header

    _allowed(lambda: header_length_hint(data))

    def parse() -> None:
        _, size = parse_header(data)
        try:
            object_plaintext_size(size, len(data))
        except ValueError:  # the documented answer for an impossible stored size
            pass

    _allowed(parse)


def slots(block: bytes) -> None:
    """The key slot parser, reached through a header whose slot block is ``block``."""
    from envcrypt.format import FIXED_PREFIX_SIZE, MAGIC, parse_header

    prefix = MAGIC + bytes([1, 1, 0, 0]) + (2).to_bytes(4, "big") + b"\0\0"
    assert len(prefix) == FIXED_PREFIX_SIZE + 2
    _allowed(lambda: parse_header(prefix + len(block).to_bytes(4, "big") + block))


def object_bytes(data: bytes) -> None:
    """A whole object, as ``decrypt`` and ``inspect`` see it (trusting the setting's key)."""
    import envcrypt

    setting()
    _allowed(lambda: envcrypt.inspect(data))
    _allowed(lambda: envcrypt.decrypt(data, trusted_keys=["local:k"]))


def vault_record(data: bytes) -> None:
    """A key record file as a vault-directory writer leaves it, then the key used."""
    import envcrypt
    from envcrypt.keys.base import clear_resolver_cache
    from envcrypt.keys.vault import LocalVault

    s = setting()
    path = s.vault / "keys" / "k.json"
    path.write_bytes(data)
    try:
        clear_resolver_cache()
        _allowed(lambda: LocalVault().show_key("k"))
        _allowed(lambda: envcrypt.decrypt(s.blob, trusted_keys=["local:k"]))
    finally:
        path.write_bytes(s.record)
        clear_resolver_cache()


def manifest(data: bytes) -> None:
    """A manifest file as a storage writer leaves it: verification reports, never crashes."""
    from envcrypt.fs.manifest import verify_manifest

    s = setting()
    path: Path = s.extra["manifest_path"]
    path.write_bytes(data)
    try:
        _allowed(lambda: verify_manifest(s.extra["fs"], str(path.parent)))
    finally:
        path.write_bytes(s.manifest)


def column_meta(data: bytes) -> None:
    """The encrypted column metadata parser."""
    from envcrypt.columns._meta import ColumnMeta

    _allowed(lambda: ColumnMeta.parse(data, "c"))


def key_uri(text: str) -> None:
    """Any text as a key URI: refused (typed) or parsed; NUL, control characters, ``..`` parts
    and over-long parts never reach a resolver."""
    from envcrypt.keys.base import split_key_uri

    try:
        scheme, rest = split_key_uri(text)
    except ALLOWED:
        return
    bad = any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text) or len(text) > 2048
    bad = bad or any(p in (".", "..") or len(p) > 1024 for p in text.partition(":")[2].removeprefix("//").split("/"))
    if bad:
        raise AssertionError(f"accepted a key URI that must be refused: {text!r}")


TARGETS: dict[str, Callable[[bytes], None]] = {
    "header": header, "slots": slots, "object": object_bytes, "vault_record": vault_record,
    "manifest": manifest, "column_meta": column_meta,
}


def seeds(name: str) -> list[bytes]:
    """Valid inputs of a target, for the mutating fuzzers to start from."""
    s = setting()
    from envcrypt.format import parse_header

    size = parse_header(s.blob)[1]
    return {
        "header": [s.blob[:size], s.blob[: size + 100]],
        "slots": [s.blob[size - len(_slot_block(s.blob)) : size]],
        "object": [s.blob],
        "vault_record": [s.record],
        "manifest": [s.manifest],
        "column_meta": [s.column_meta] if s.column_meta else [b"{}"],
    }[name]


def _slot_block(blob: bytes) -> bytes:
    from envcrypt.format import FIXED_PREFIX_SIZE

    context_length = int.from_bytes(blob[12:16], "big")
    at = FIXED_PREFIX_SIZE + context_length
    length = int.from_bytes(blob[at : at + 4], "big")
    return blob[at + 4 : at + 4 + length]


def json_variants(data: bytes) -> list[bytes]:
    """Structure-aware mutations of a JSON document: each field (at any depth) replaced by an
    odd value, and each field removed."""
    import copy

    try:
        value = json.loads(data)
    except ValueError:
        return []
    odd: list[Any] = [None, 0, -1, 2**70, "", "\0", "..", [], {}, "A" * 5000, 1.5, True, "a\ud800"]
    paths: list[tuple[Any, ...]] = []

    def collect(node: Any, path: tuple[Any, ...]) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                paths.append((*path, k))
                collect(v, (*path, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                paths.append((*path, i))
                collect(v, (*path, i))

    collect(value, ())
    out = []
    for path in paths:
        for replacement in [*odd, _DELETE]:
            doc = copy.deepcopy(value)
            parent = doc
            for step in path[:-1]:
                parent = parent[step]
            if replacement is _DELETE:
                del parent[path[-1]]
            else:
                parent[path[-1]] = replacement
            out.append(json.dumps(doc).encode("utf-8", "surrogatepass"))
    return out


_DELETE = object()
