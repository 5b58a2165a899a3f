"""Signed dataset manifests: what per-object encryption alone cannot see.

Each object authenticates itself, but an attacker with write access to the
store can still add objects, delete them, put back an older version, or swap
two objects between paths: every one of them still decrypts.  A manifest lists
every object under a root (relative path, plaintext and stored size, and a
*digest*), signed with a vault signing key (``local:NAME``, rsa or ec-p256).

The digest of an envcrypt object is SHA-256 over its immutable header part
(magic, version, suite, encryption context) and its body prefix (salt and key
commitment).  The salt is fresh for every write, and the commitment binds the
data key, so the digest names one written version of one object — and it
survives a key rotation (a rewrap changes only the key slots).  Objects that
are not encrypted are digested whole.

Re-signing keeps, per path, the digests it had in the previous (valid)
manifest, so ``verify`` can tell a rollback to an older version from any other
replacement.  The manifest itself is ``<root>/.envcrypt-manifest.json``; every
other object under the root is listed, whatever its name (a nested
``sub/.envcrypt-manifest.json`` or a ``.envcrypt-tmp-*`` file is data too).

What ``verify`` checks besides the objects:

- the signed ``root`` is the root being verified (a dataset copied over
  another one, manifest included, fails: ``signed for root ...``); pass
  ``expected_root`` when a dataset was moved on purpose;
- the signer: ``verify`` reports who signed; with ``signer=`` (``--key``) any
  other signer is an error.  Without it, any key the vault can verify with is
  accepted, so a party that can add a signing key to the verifier's vault can
  sign anything: pin the signer;
- ``serial`` grows by one at every signing; ``min_serial`` (``--min-serial``)
  rejects an older manifest.

Not detectable by design: a *whole-dataset rollback* (an older manifest put
back together with the older objects it lists) is a consistent, validly
signed state.  Only state kept outside the store catches it: remember the
last serial you saw and pass it as ``min_serial``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import EnvcryptError
from ..format import BODY_PREFIX_SIZE, FIXED_PREFIX_SIZE
from ._heads import Head, fetch_heads
from .filesystem import EnvcryptFileSystem

__all__ = ["MANIFEST_NAME", "sign_manifest", "verify_manifest", "Manifest", "Verification"]

MANIFEST_NAME = ".envcrypt-manifest.json"
FORMAT = "envcrypt-manifest/1"


class ManifestError(EnvcryptError):
    """The manifest is missing, malformed, or its signature does not verify."""


def _digest(fs: EnvcryptFileSystem, path: str, head: Head) -> str:
    if head.encrypted and head.complete:
        context_length = int.from_bytes(head.data[12:16], "big")
        immutable = head.data[: FIXED_PREFIX_SIZE + context_length]
        prefix = head.data[head.header_size : head.header_size + BODY_PREFIX_SIZE]
        return "sha256:" + hashlib.sha256(b"envcrypt-object\x00" + immutable + prefix).hexdigest()
    digest = hashlib.sha256(b"plain-object\x00")
    with fs.target.open(path, "rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def _scan(fs: EnvcryptFileSystem, root: str) -> dict[str, dict[str, Any]]:
    found = fs.target.find(root, detail=True)
    manifest = root.rstrip("/") + "/" + MANIFEST_NAME
    infos = [i for n, i in found.items() if i.get("type") == "file" and n != manifest]
    heads = fetch_heads(fs.target, infos)
    base = root.rstrip("/") + "/"
    objects = {}
    for info, head in zip(infos, heads, strict=True):
        rel = info["name"][len(base) :] if info["name"].startswith(base) else info["name"]
        objects[rel] = {
            "size": head.size, "stored_size": head.stored_size, "encrypted": head.encrypted,
            "digest": _digest(fs, info["name"], head),
        }
    return objects


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


@dataclass
class Manifest:
    body: dict[str, Any]  # what is signed
    signature: bytes
    key_uri: str  # the exact signing key version

    @property
    def count(self) -> int:
        return len(self.body["objects"])

    @property
    def serial(self) -> int:
        value = self.body.get("serial", 0)
        return value if isinstance(value, int) else 0

    def summary(self) -> dict[str, Any]:
        return {"objects": self.count, "key_uri": self.key_uri, "signed_at": self.body["signed_at"],
                "serial": self.serial, "root": self.body.get("root")}

    def dumps(self) -> bytes:
        signed = {"key_uri": self.key_uri, "signature": base64.b64encode(self.signature).decode()}
        return json.dumps({"manifest": self.body, "signed": signed}, sort_keys=True, indent=1).encode()


def _vault_option(fs: EnvcryptFileSystem) -> Any:
    return fs.resolver_options.get("vault")


def _load(fs: EnvcryptFileSystem, root: str) -> Manifest:
    path = root.rstrip("/") + "/" + MANIFEST_NAME
    try:
        raw = json.loads(fs.target.cat_file(path))
        body, signed = raw["manifest"], raw["signed"]
        signature, key_uri = base64.b64decode(signed["signature"]), str(signed["key_uri"])
    except FileNotFoundError:
        raise ManifestError(f"no manifest at {path}") from None
    except (ValueError, KeyError, TypeError):
        raise ManifestError(f"malformed manifest at {path}") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT or not isinstance(body.get("objects"), dict):
        raise ManifestError(f"malformed manifest at {path}")
    return Manifest(body, signature, key_uri)


def _check_signature(fs: EnvcryptFileSystem, manifest: Manifest) -> str:
    from ..keys.vault import verify

    return verify(manifest.key_uri, _canonical(manifest.body), manifest.signature, vault=_vault_option(fs))


def sign_manifest(fs: EnvcryptFileSystem, root: str, key_uri: str) -> Manifest:
    """Scan ``root``, sign a manifest of it with vault key ``key_uri``, and store it there."""
    from ..keys.vault import sign_versioned

    root = fs._strip_protocol(root)
    objects = _scan(fs, root)
    history: dict[str, list[str]] = {}
    try:
        previous = _load(fs, root)
        _check_signature(fs, previous)
    except EnvcryptError:
        previous = None
    if previous is not None:
        for rel, entry in previous.body["objects"].items():
            old = list(previous.body.get("history", {}).get(rel, []))
            if rel in objects and objects[rel]["digest"] != entry["digest"]:
                old.append(entry["digest"])
            if old and rel in objects:
                history[rel] = old
    serial = previous.serial + 1 if previous is not None else 1
    body = {"format": FORMAT, "root": root, "signed_at": int(time.time()), "serial": serial,
            "objects": objects, "history": history}
    exact, signature = sign_versioned(key_uri, _canonical(body), vault=_vault_option(fs))
    manifest = Manifest(body, signature, exact)
    fs.target.pipe_file(root.rstrip("/") + "/" + MANIFEST_NAME, manifest.dumps())
    return manifest


@dataclass
class Verification:
    signed_by: str | None
    serial: int = 0
    signer_checked: bool = False
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    swapped: list[tuple[str, str]] = field(default_factory=list)  # (path, path whose object it holds)
    changed: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not (self.added or self.removed or self.rolled_back or self.swapped
                                           or self.changed)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "signed_by": self.signed_by, "signer_checked": self.signer_checked,
                "serial": self.serial, "error": self.error, "added": self.added,
                "removed": self.removed, "rolled_back": self.rolled_back,
                "swapped": [{"path": a, "holds": b} for a, b in self.swapped], "changed": self.changed}

    def text(self) -> str:
        if self.error:
            return f"INVALID: {self.error}"
        pinned = "" if self.signer_checked else " (signer not pinned: pass --key to require it)"
        lines = [f"manifest #{self.serial} signed by {self.signed_by}{pinned}"]
        lines += [f"added       {p}" for p in self.added]
        lines += [f"removed     {p}" for p in self.removed]
        lines += [f"rolled back {p}" for p in self.rolled_back]
        lines += [f"swapped     {a} (holds the object of {b})" for a, b in self.swapped]
        lines += [f"changed     {p}" for p in self.changed]
        lines.append("ok" if self.ok else "MISMATCH")
        return "\n".join(lines)


def _same_key(exact: str, wanted: str) -> bool:
    """``exact`` (a signing key version, ``local:NAME/3``) is ``wanted`` (``local:NAME`` or that version)."""
    return exact == wanted or exact.rsplit("/", 1)[0] == wanted


def verify_manifest(fs: EnvcryptFileSystem, root: str, *, signer: str | None = None, min_serial: int = 0,
                    expected_root: str | None = None) -> Verification:
    """Check the objects under ``root`` against its signed manifest (see the module docstring)."""
    root = fs._strip_protocol(root)
    try:
        manifest = _load(fs, root)
        exact = _check_signature(fs, manifest)
    except EnvcryptError as exc:
        return Verification(None, error=f"{type(exc).__name__}: {exc}")
    result = Verification(exact, serial=manifest.serial, signer_checked=signer is not None)
    want_root = fs._strip_protocol(expected_root) if expected_root is not None else root
    if signer is not None and not _same_key(exact, signer):
        result.error = f"signed by {exact}, not by {signer}"
    elif manifest.body.get("root") != want_root:
        result.error = f"signed for root {manifest.body.get('root')!r}, not {want_root!r}"
    elif manifest.serial < min_serial:
        result.error = f"manifest serial {manifest.serial} is older than the minimum {min_serial}"
    if result.error:
        return result
    expected: dict[str, dict[str, Any]] = manifest.body["objects"]
    history: dict[str, list[str]] = manifest.body.get("history", {})
    actual = _scan(fs, root)
    by_digest = {entry["digest"]: rel for rel, entry in expected.items()}
    result.added = sorted(set(actual) - set(expected))
    result.removed = sorted(set(expected) - set(actual))
    for rel in sorted(set(actual) & set(expected)):
        got = actual[rel]["digest"]
        if got == expected[rel]["digest"] and actual[rel]["size"] == expected[rel]["size"]:
            continue
        if got in history.get(rel, []):
            result.rolled_back.append(rel)
        elif got in by_digest and by_digest[got] != rel:
            result.swapped.append((rel, by_digest[got]))
        else:
            result.changed.append(rel)
    return result
