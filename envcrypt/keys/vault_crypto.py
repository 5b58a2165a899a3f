"""Key kinds of the local vault and the cryptographic operations on them.

Every primitive comes from ``cryptography``:

* ``aes256``  32 random bytes.  wrap/unwrap: AES key wrap with padding (RFC 5649,
  the DEK wrap of ``local:`` key slots) or without (RFC 3394, ``A256KW``);
  encrypt/decrypt: AES-256-GCM, ``nonce(12) || ciphertext || tag``.
* ``rsa``     RSA private key (3072 bits when created; 2048..8192 on import), stored
  as PKCS#8 DER.  encrypt/decrypt and wrap/unwrap: RSA-OAEP with SHA-256 and
  MGF1-SHA-256; sign/verify: RSA-PSS, SHA-256, MGF1-SHA-256, salt length 32.
  An rsa key either signs (``sign``, ``verify``: the default) or encrypts
  (``wrapKey``, ``unwrapKey``, ``encrypt``, ``decrypt``: ask for them), never both:
  anyone holding a signing key's public key could otherwise make RSA-OAEP key
  slots the vault would open.
* ``ec-p256`` ECDSA P-256 private key, PKCS#8 DER.  sign/verify: ECDSA-SHA-256, DER
  signatures.
"""

from __future__ import annotations

import os
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap,
    aes_key_wrap_with_padding,
)

from ..errors import IntegrityError, InternalError, InvalidSignatureError, KeyUsageError, WrongKeyError
from .base import WRAP_AES256_KWP, WRAP_RSA_OAEP_SHA256

__all__ = [
    "KINDS", "DEFAULT_OPS", "ALL_OPS", "SIGN_OPS", "ENCRYPT_OPS", "check_ops", "generate", "normalize_import", "load_private",
    "public_pem", "kwp_wrap", "kwp_unwrap", "kw_wrap", "kw_unwrap", "rsa_oaep_encrypt",
    "rsa_oaep_decrypt", "gcm_encrypt", "gcm_decrypt", "sign", "verify", "KindOps", "OPS",
]

AES256 = "aes256"
RSA = "rsa"
EC_P256 = "ec-p256"
KINDS = (AES256, RSA, EC_P256)
ALL_OPS = ("wrapKey", "unwrapKey", "encrypt", "decrypt", "sign", "verify")
DEFAULT_OPS = {
    AES256: ("wrapKey", "unwrapKey", "encrypt", "decrypt"),
    RSA: ("sign", "verify"),
    EC_P256: ("sign", "verify"),
}
#: the two families of operations; an rsa key has operations from one of them only
SIGN_OPS = frozenset({"sign", "verify"})
ENCRYPT_OPS = frozenset({"wrapKey", "unwrapKey", "encrypt", "decrypt"})
#: operations a kind can do at all
SUPPORTED_OPS = {
    AES256: frozenset(DEFAULT_OPS[AES256]),
    RSA: frozenset(ALL_OPS),
    EC_P256: frozenset({"sign", "verify"}),
}
#: the one operation of a BYOK transfer key: it opens import packages, never DEK slots
IMPORT_OP = "import"
TRANSFER_OPS = frozenset({IMPORT_OP})
RSA_CREATE_BITS = 3072
RSA_MIN_BITS, RSA_MAX_BITS = 2048, 8192
AES256_SIZE = 32
GCM_NONCE_SIZE = 12


def check_ops(kind: str, ops: Any, *, transfer: bool = False) -> list[str]:
    """The permitted operations of a new or changed key, sorted; KeyUsageError when ``kind``
    cannot do one of them, or when an rsa key would both sign and encrypt."""
    if isinstance(ops, str) or not all(isinstance(op, str) for op in ops):
        raise KeyUsageError("key operations are a list of names")
    wanted = sorted(set(ops))
    if transfer:
        if kind != RSA or set(wanted) != TRANSFER_OPS:
            raise KeyUsageError(f"a transfer key is an rsa key whose only operation is {IMPORT_OP}")
        return wanted
    if kind not in SUPPORTED_OPS:
        raise KeyUsageError(f"unknown key kind {kind!r} (one of {', '.join(KINDS)})")
    bad = [op for op in wanted if op not in SUPPORTED_OPS[kind]]
    if bad:
        raise KeyUsageError(f"{kind} keys cannot do {', '.join(bad)}")
    if kind == RSA and SIGN_OPS & set(wanted) and ENCRYPT_OPS & set(wanted):
        raise KeyUsageError(
            "an rsa key either signs or encrypts, not both: use --kind rsa --ops sign,verify for a "
            "signing key and a second key, --kind rsa --ops wrapKey,unwrapKey,encrypt,decrypt "
            "(or --kind aes256), to wrap keys and encrypt"
        )
    return wanted

_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


def generate(kind: str) -> bytes:
    """Fresh key material of ``kind``: raw bytes (AES) or PKCS#8 DER (RSA, EC)."""
    if kind == AES256:
        return os.urandom(AES256_SIZE)
    if kind == RSA:
        return _pkcs8(rsa.generate_private_key(public_exponent=65537, key_size=RSA_CREATE_BITS))
    if kind == EC_P256:
        return _pkcs8(ec.generate_private_key(ec.SECP256R1()))
    raise KeyUsageError(f"unknown key kind {kind!r} (one of {', '.join(KINDS)})")


def _pkcs8(key: Any) -> bytes:
    return bytes(key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))


def normalize_import(kind: str, material: bytes) -> bytes:
    """Check imported material for ``kind`` and return it in stored form.

    AES: exactly 32 raw bytes.  RSA/EC: an unencrypted private key in PEM or DER.
    """
    if kind == AES256:
        if len(material) != AES256_SIZE:
            raise KeyUsageError("an aes256 key is exactly 32 bytes")
        return bytes(material)
    if kind not in (RSA, EC_P256):
        raise KeyUsageError(f"unknown key kind {kind!r} (one of {', '.join(KINDS)})")
    if not isinstance(material, (bytes, bytearray, memoryview)):
        raise TypeError("key material is bytes")
    material = bytes(material)
    try:
        if material.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(material, password=None)
        else:
            key = serialization.load_der_private_key(material, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyUsageError("imported key material is not an unencrypted private key") from None
    if kind == RSA:
        if not isinstance(key, rsa.RSAPrivateKey):
            raise KeyUsageError("imported key material is not an RSA private key")
        if not RSA_MIN_BITS <= key.key_size <= RSA_MAX_BITS:
            raise KeyUsageError(f"RSA keys must have {RSA_MIN_BITS}..{RSA_MAX_BITS} bits")
    elif not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyUsageError("imported key material is not an EC P-256 private key")
    return _pkcs8(key)


def load_private(kind: str, material: bytes) -> Any:
    """The key object for stored material (bytes for AES)."""
    if kind == AES256:
        return material
    return serialization.load_der_private_key(material, password=None)


def public_pem(kind: str, key: Any) -> str | None:
    if kind == AES256:
        return None
    return str(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii"))


# ---------------------------------------------------------------- AES key wrap


def kwp_wrap(kek: bytes, key: bytes) -> bytes:
    """RFC 5649 AES key wrap with padding (the ``local:`` DEK wrap)."""
    try:
        return aes_key_wrap_with_padding(kek, key)
    except (ValueError, TypeError):
        raise KeyUsageError("AES key wrap with padding needs a non-empty key (bytes)") from None


def kwp_unwrap(kek: bytes, wrapped: bytes) -> bytes:
    try:
        return aes_key_unwrap_with_padding(kek, wrapped)
    except (InvalidUnwrap, ValueError):
        raise WrongKeyError("the wrapped key does not unwrap under this key") from None


def kw_wrap(kek: bytes, key: bytes) -> bytes:
    """RFC 3394 AES key wrap (``A256KW``): key length a multiple of 8, at least 16."""
    try:
        return aes_key_wrap(kek, key)
    except (ValueError, TypeError):
        raise KeyUsageError("A256KW (RFC 3394) wraps keys of at least 16 bytes, a multiple of 8") from None


def kw_unwrap(kek: bytes, wrapped: bytes) -> bytes:
    try:
        return aes_key_unwrap(kek, wrapped)
    except (InvalidUnwrap, ValueError):
        raise WrongKeyError("the wrapped key does not unwrap under this key") from None


# ---------------------------------------------------------------- RSA-OAEP and AES-GCM


def rsa_oaep_encrypt(public_key: Any, data: bytes) -> bytes:
    """RSA-OAEP, SHA-256, MGF1-SHA-256, no label."""
    try:
        return bytes(public_key.encrypt(data, _OAEP))
    except (ValueError, TypeError):
        limit = public_key.key_size // 8 - 2 * 32 - 2
        raise KeyUsageError(f"RSA-OAEP-SHA256 under this key encrypts at most {limit} bytes") from None


def rsa_oaep_decrypt(private_key: Any, data: bytes) -> bytes:
    try:
        return bytes(private_key.decrypt(data, _OAEP))
    except ValueError:
        raise WrongKeyError("RSA-OAEP decryption failed") from None


def gcm_encrypt(key: bytes, data: bytes, aad: bytes | None) -> bytes:
    nonce = os.urandom(GCM_NONCE_SIZE)
    try:
        return nonce + AESGCM(key).encrypt(nonce, data, aad)
    except (OverflowError, TypeError):
        raise KeyUsageError("AES-GCM data and associated data are bytes of at most 2**31 bytes") from None


def gcm_decrypt(key: bytes, data: bytes, aad: bytes | None) -> bytes:
    if len(data) < GCM_NONCE_SIZE + 16:
        raise IntegrityError()
    try:
        return AESGCM(key).decrypt(data[:GCM_NONCE_SIZE], data[GCM_NONCE_SIZE:], aad)
    except InvalidTag:
        raise IntegrityError() from None


# ---------------------------------------------------------------- signatures


def sign(kind: str, private_key: Any, data: bytes) -> bytes:
    if kind == RSA:
        return bytes(private_key.sign(data, _PSS, hashes.SHA256()))
    if kind == EC_P256:
        return bytes(private_key.sign(data, ec.ECDSA(hashes.SHA256())))
    raise KeyUsageError(f"{kind} keys cannot sign")


def verify(kind: str, public_key: Any, data: bytes, signature: bytes) -> None:
    try:
        if kind == RSA:
            public_key.verify(signature, data, _PSS, hashes.SHA256())
        elif kind == EC_P256:
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        else:
            raise KeyUsageError(f"{kind} keys cannot verify")
    except InvalidSignature:
        raise InvalidSignatureError("the signature does not verify") from None


# ---------------------------------------------------------------- one interface per kind


class KindOps:
    """The operations of one key kind, one shape for all (as ``cryptography``'s AEAD classes
    share one): the vault looks a kind up in :data:`OPS` instead of testing ``kind == RSA``.
    An operation the kind cannot do raises KeyUsageError (the vault's ``ops`` check refuses
    it first)."""

    kind: str = ""
    #: wrap algorithm names this kind wraps with; the first is the default
    wrap_algorithms: tuple[str, ...] = ()
    #: key slot wrap algorithm id (envcrypt.keys.base) -> wrap algorithm name
    slot_algorithms: dict[int, str] = {}

    def _refuse(self, what: str) -> KeyUsageError:
        return KeyUsageError(f"{self.kind} keys cannot {what}")

    def algorithm(self, name: str | None) -> str:
        """The wrap algorithm ``name`` (None: the default) if this kind wraps with it."""
        if not self.wrap_algorithms:
            raise self._refuse("wrap keys")
        if name is None:
            return self.wrap_algorithms[0]
        if name not in self.wrap_algorithms:
            raise KeyUsageError(f"{self.kind} keys wrap with {', '.join(self.wrap_algorithms)}, not {name!r}")
        return name

    def slot_algorithm(self) -> int:
        """The key slot id of this kind's default wrap."""
        default = self.algorithm(None)
        for slot_id, name in self.slot_algorithms.items():
            if name == default:
                return slot_id
        raise InternalError(f"{self.kind} keys have no key slot algorithm for their default wrap {default}")

    def wrap(self, key: Any, data: bytes, algorithm: str) -> bytes:
        raise self._refuse("wrap keys")

    def unwrap(self, key: Any, wrapped: bytes, algorithm: str) -> bytes:
        raise self._refuse("unwrap keys")

    def encrypt(self, key: Any, data: bytes, aad: bytes | None) -> bytes:
        raise self._refuse("encrypt")

    def decrypt(self, key: Any, data: bytes, aad: bytes | None) -> bytes:
        raise self._refuse("decrypt")

    def sign(self, key: Any, data: bytes) -> bytes:
        raise self._refuse("sign")

    def verify(self, key: Any, data: bytes, signature: bytes) -> None:
        raise self._refuse("verify")

    def public_pem(self, key: Any) -> str | None:
        return public_pem(self.kind, key)


class _Aes256(KindOps):
    kind = AES256
    wrap_algorithms = ("A256KWP", "A256KW")
    slot_algorithms = {WRAP_AES256_KWP: "A256KWP"}

    def wrap(self, key: Any, data: bytes, algorithm: str) -> bytes:
        return kw_wrap(key, data) if algorithm == "A256KW" else kwp_wrap(key, data)

    def unwrap(self, key: Any, wrapped: bytes, algorithm: str) -> bytes:
        return kw_unwrap(key, wrapped) if algorithm == "A256KW" else kwp_unwrap(key, wrapped)

    def encrypt(self, key: Any, data: bytes, aad: bytes | None) -> bytes:
        return gcm_encrypt(key, data, aad)

    def decrypt(self, key: Any, data: bytes, aad: bytes | None) -> bytes:
        return gcm_decrypt(key, data, aad)


class _Rsa(KindOps):
    """RSA-OAEP for wrap and encrypt, RSA-PSS for sign (one key never does both: the vault's
    ``ops`` check, :func:`check_ops`)."""

    kind = RSA
    wrap_algorithms = ("RSA-OAEP-256",)
    slot_algorithms = {WRAP_RSA_OAEP_SHA256: "RSA-OAEP-256"}

    def wrap(self, key: Any, data: bytes, algorithm: str) -> bytes:
        return rsa_oaep_encrypt(key.public_key(), data)

    def unwrap(self, key: Any, wrapped: bytes, algorithm: str) -> bytes:
        return rsa_oaep_decrypt(key, wrapped)

    def encrypt(self, key: Any, data: bytes, aad: bytes | None) -> bytes:
        return rsa_oaep_encrypt(key.public_key(), data)

    def decrypt(self, key: Any, data: bytes, aad: bytes | None) -> bytes:
        return rsa_oaep_decrypt(key, data)

    def sign(self, key: Any, data: bytes) -> bytes:
        return sign(RSA, key, data)

    def verify(self, key: Any, data: bytes, signature: bytes) -> None:
        verify(RSA, key.public_key(), data, signature)


class _EcP256(KindOps):
    kind = EC_P256

    def sign(self, key: Any, data: bytes) -> bytes:
        return sign(EC_P256, key, data)

    def verify(self, key: Any, data: bytes, signature: bytes) -> None:
        verify(EC_P256, key.public_key(), data, signature)


#: kind name -> its operations
OPS: dict[str, KindOps] = {ops.kind: ops for ops in (_Aes256(), _Rsa(), _EcP256())}
