"""``inspect``: which columns of a PME file are encrypted under which master keys (never a key)."""

from __future__ import annotations

import json
from typing import Any

from ..errors import MalformedHeaderError
from ._footer import key_material, key_material_path
from ._io import Where, read_footer, resolve
from ._kms import decode_wrapped, key_uri_of

__all__ = ["inspect", "load_key_material"]

MAX_MATERIAL_FILE = 64 * 1024 * 1024


def load_key_material(fs: Any, path: str) -> dict[str, str]:
    """The external key material file of ``path``: {key reference: key material JSON text}."""
    with fs.open_input_file(key_material_path(path)) as f:
        data = f.read(MAX_MATERIAL_FILE + 1)
    if len(data) > MAX_MATERIAL_FILE:
        raise MalformedHeaderError(f"{key_material_path(path)}: key material file too large")
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise MalformedHeaderError(f"{key_material_path(path)}: not JSON") from exc
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise MalformedHeaderError(f"{key_material_path(path)}: not a PME key material file")
    return value


def _describe(material: dict[str, Any], where: str) -> dict[str, Any]:
    double = bool(material.get("doubleWrapping"))
    mid = material.get("masterKeyID")
    out: dict[str, Any] = {"master_key": key_uri_of(mid) if isinstance(mid, str) else None, "key_material": where,
                           "double_wrapping": double}
    wrapped = material.get("wrappedKEK") if double else material.get("wrappedDEK")
    try:
        slot = decode_wrapped(str(wrapped))
        out["key_version"], out["wrap_algorithm"] = slot.key_uri, slot.wrap_algorithm
    except MalformedHeaderError:
        out["key_version"] = None  # wrapped by another KMS client than envcrypt's
    return out


def inspect(where: Where, filesystem: Any = None) -> dict[str, Any]:
    """The encryption of a Parquet file from its footer (and external key material), no key used.

    ``columns`` maps each encrypted column to its master key (``None`` for columns under the
    footer key) when the footer is plaintext; an encrypted footer hides the column list, and
    then ``master_keys`` lists the keys its external key material names (if any)."""
    fs, path = resolve(where, filesystem)
    info = read_footer(fs, path)
    result: dict[str, Any] = {"path": path, "encrypted": info.encrypted, "footer": info.footer,
                              "algorithm": info.algorithm}
    if not info.encrypted:
        return result
    external: dict[str, str] | None = None

    def describe(metadata: bytes | None) -> dict[str, Any] | None:
        nonlocal external
        material = key_material(metadata)
        if not material:
            return None
        if "keyReference" in material or material.get("internalStorage") is False:
            if external is None:
                external = load_key_material(fs, path)
            text = external.get(str(material.get("keyReference")))
            if text is None:
                raise MalformedHeaderError(f"{path}: key reference missing from the key material file")
            return _describe(key_material(text.encode()), "external")
        return _describe(material, "internal")

    footer_key = describe(info.footer_key_metadata)
    result["footer_key"] = footer_key
    if info.footer == "encrypted":
        result["columns"] = None
        if external is not None:
            keys = {key_material(t.encode()).get("masterKeyID") for t in external.values()}
            result["master_keys"] = sorted(key_uri_of(str(k)) for k in keys if k)
        return result
    columns: dict[str, Any] = {}
    for column, metadata in info.columns.items():
        described = describe(metadata)
        columns[column] = described if described is not None else footer_key
    result["columns"] = columns
    result["plaintext_columns"] = info.plaintext_columns
    return result
