"""Master key rotation for PME files with external key material (the PME counterpart of rewrap).

With ``internal_key_material=False`` PME keeps a file's wrapped keys in
``_KEY_MATERIAL_FOR_<file>.json`` beside it, so rotation rewrites that small
file only; the Parquet file is untouched.  The rotation itself is pyarrow's
(``CryptoFactory.rotate_master_keys``: unwrap through the old key version, new
KEKs in double wrapping mode, wrap under the newest version), run on a private
local copy of the key material; the result replaces the original only if it
is still the version that was read (the conditional replacement of
``envcrypt.fs._sinks``: If-Match on S3, a stat check on local disks).

Rotation stays within a key (``local:pii/1`` -> ``local:pii``'s newest version,
or a named version): every master key in the material must be named by a
``to`` key.  Moving a file to *another* key is refused: a KEK can be shared by
every file written within the cache lifetime, so handing it to a new key would
open those files too.  Read the file and write it under the new key instead.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow.fs as pafs
import pyarrow.parquet.encryption as pe

from ..errors import KeyAccessDeniedError
from ..keys.base import get_resolver, split_key_uri
from ..slots import TrustedKeysArg, admits, key_name, trusted_key_list
from ._config import PmeConfig
from ._footer import KEY_MATERIAL_PREFIX, key_material, key_material_path
from ._io import require_pme, resolve
from ._kms import EnvcryptKmsClient, connection_config, decode_wrapped, key_uri_of

__all__ = ["rotate"]


def _target_for(master_key_id: str, to: Sequence[str], options: Mapping[str, Any]) -> str | None:
    for uri in to:
        scheme = split_key_uri(uri)[0]
        if split_key_uri(master_key_id)[0] != scheme:
            continue
        if key_name(master_key_id) == key_name(uri) or admits(get_resolver(scheme, **options),
                                                              key_name(uri), master_key_id):
            return uri
    return None


def rotate(where: str, to: str | Sequence[str], *, trusted_keys: TrustedKeysArg = None,
           filesystem: Any = None, storage_options: Mapping[str, Any] | None = None,
           resolver_options: Mapping[str, Any] | None = None,
           encryption_context: Mapping[str, str] | None = None, double_wrapping: bool = True) -> dict[str, Any]:
    """Rewrap the external key material of the PME file ``where`` under the newest version of
    ``to`` (or the version named).  Returns ``{"path", "key_material", "keys": {master key id:
    new key version}}``; ``ConcurrentModificationError`` if the material changed meanwhile."""
    import fsspec

    from ..fs._sinks import open_sink, version_of

    to_uris = [to] if isinstance(to, str) else list(to)
    if not to_uris:
        raise KeyAccessDeniedError("rotate needs at least one key to rotate to")
    for uri in to_uris:
        split_key_uri(uri)
    if filesystem is None:
        filesystem, path = fsspec.core.url_to_fs(where, **dict(storage_options or {}))
    else:
        path = filesystem._strip_protocol(where)
    require_pme(*resolve(path, filesystem))
    material_path = key_material_path(path)
    expect = version_of(filesystem, material_path)
    original = filesystem.cat_file(material_path)
    entries = {ref: key_material(text.encode()) for ref, text in _material(original).items()}
    options = dict(resolver_options or {})
    wrap_as: dict[str, str] = {}
    for entry in entries.values():
        mid = key_uri_of(str(entry.get("masterKeyID")))
        target = _target_for(mid, to_uris, options)
        if target is None:
            raise KeyAccessDeniedError(
                f"{path}: master key {mid} is not one of the keys to rotate to ({', '.join(to_uris)}); "
                "moving PME files to another key means rewriting them (read_table, then write_table)")
        wrap_as[mid] = target
    config = PmeConfig(resolver_options=options, encryption_context=dict(encryption_context or {}))
    trusted = trusted_key_list(trusted_keys, [key_name(u) for u in to_uris])
    factory = pe.CryptoFactory(lambda _c: EnvcryptKmsClient(config, wrap_as=wrap_as, trusted=trusted))
    name = os.path.basename(path)
    with tempfile.TemporaryDirectory(prefix=".envcrypt-pme-") as tmp:
        local = os.path.join(tmp, name)
        local_material = os.path.join(tmp, f"{KEY_MATERIAL_PREFIX}{name}.json")
        with open(local_material, "wb") as f:
            f.write(original)
        factory.rotate_master_keys(connection_config(), local, pafs.LocalFileSystem(),
                                   double_wrapping=double_wrapping, cache_lifetime_seconds=60)
        with open(local_material, "rb") as f:
            rotated = f.read()
    sink = open_sink(filesystem, material_path, expect=expect)
    try:
        sink.raw.write(rotated)
    except BaseException:
        sink.abort()
        raise
    sink.commit()
    keys = {}
    for text in _material(rotated).values():
        entry = key_material(text.encode())
        wrapped = entry.get("wrappedKEK") if entry.get("doubleWrapping") else entry.get("wrappedDEK")
        keys[key_uri_of(str(entry.get("masterKeyID")))] = decode_wrapped(str(wrapped)).key_uri
    return {"path": path, "key_material": material_path, "keys": keys}


def _material(data: bytes) -> dict[str, str]:
    import json

    from ..errors import MalformedHeaderError

    try:
        value = json.loads(data)
    except ValueError as exc:
        raise MalformedHeaderError("PME key material file is not JSON") from exc
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise MalformedHeaderError("not a PME key material file")
    return value
