"""``aws-kms://KEY`` key URIs: DEKs wrapped by AWS KMS through boto3.

``KEY`` is a key id, ``alias/NAME`` or a key ARN.  ``wrap`` calls KMS ``Encrypt``
with the object's encryption context as the KMS ``EncryptionContext`` (so the
slot only unwraps for the same context), and the slot records the key ARN KMS
reports (``aws-kms://arn:aws:kms:REGION:ACCOUNT:key/ID``; KMS keeps the backing
key version inside the ciphertext blob).  ``unwrap`` calls ``Decrypt`` with
``KeyId`` pinned to that ARN and the same context.  Wrap algorithm id 16, the
wrapped bytes are the KMS ``CiphertextBlob``.

Retries are botocore's (``standard`` or ``adaptive`` mode), never a home-made
loop.  KMS errors map onto the envcrypt key errors; throttling that outlasts the
retries, timeouts and connection failures become ``ResolverUnavailableError``.

Options name things only: ``region_name``, ``endpoint_url``, ``profile_name``,
``retry_mode``, ``max_attempts``, ``connect_timeout``, ``read_timeout``.
Credentials come from the usual AWS environment, never from options.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from ..errors import (
    EnvcryptError,
    KeyAccessDeniedError,
    KeyDeletedError,
    KeyDisabledError,
    KeyNotFoundError,
    ResolverUnavailableError,
    WrongKeyError,
)
from ..format import KeySlot
from .base import WRAP_AWS_KMS, split_key_uri

__all__ = ["AwsKmsResolver", "map_kms_error"]

T = TypeVar("T")

#: KMS error code -> envcrypt error class (everything else: ResolverUnavailableError)
ERROR_MAP: dict[str, type[EnvcryptError]] = {
    "InvalidCiphertextException": WrongKeyError,
    "IncorrectKeyException": WrongKeyError,
    "AccessDeniedException": KeyAccessDeniedError,
    "InvalidKeyUsageException": KeyAccessDeniedError,
    "UnrecognizedClientException": KeyAccessDeniedError,
    "NotFoundException": KeyNotFoundError,
    "DisabledException": KeyDisabledError,
    "KMSInvalidStateException": KeyDeletedError,
}


def map_kms_error(exc: Exception, key: str) -> EnvcryptError:
    """The envcrypt error for a botocore exception (the caller raises it ``from exc``)."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", ""))
        cls = ERROR_MAP.get(code, ResolverUnavailableError)
        return cls(f"AWS KMS {code} for {key}: {message}".rstrip(": "))
    if isinstance(exc, BotoCoreError):
        return ResolverUnavailableError(f"AWS KMS unreachable for {key}: {type(exc).__name__}")
    raise exc


class AwsKmsResolver:
    """The ``aws-kms`` key resolver (one boto3 KMS client per configuration, thread-safe)."""

    scheme: ClassVar[str] = "aws-kms"
    options: ClassVar[frozenset[str]] = frozenset({
        "region_name", "endpoint_url", "profile_name", "retry_mode", "max_attempts",
        "connect_timeout", "read_timeout",
    })
    #: DEK caching is on by default for KMS (it saves one network call per object)
    cache_by_default: ClassVar[bool] = True

    def __init__(
        self,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        profile_name: str | None = None,
        retry_mode: str = "standard",
        max_attempts: int = 5,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
    ) -> None:
        if retry_mode not in ("standard", "adaptive", "legacy"):
            raise ValueError("retry_mode is 'standard', 'adaptive' or 'legacy'")
        self.region_name, self.endpoint_url, self.profile_name = region_name, endpoint_url, profile_name
        self.retry_mode, self.max_attempts = retry_mode, int(max_attempts)
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self._client: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AwsKmsResolver(region_name={self.region_name!r}, endpoint_url={self.endpoint_url!r})"

    def __reduce__(self) -> Any:
        return (type(self), (self.region_name, self.endpoint_url, self.profile_name, self.retry_mode,
                             self.max_attempts, self.connect_timeout, self.read_timeout))

    @property
    def client(self) -> Any:
        """The boto3 KMS client (created on first use)."""
        with self._lock:
            if self._client is None:
                try:
                    import boto3
                    from botocore.config import Config
                except ImportError as exc:  # pragma: no cover - depends on the install
                    raise ResolverUnavailableError(
                        "aws-kms:// keys need boto3: pip install 'envcrypt[aws]'") from exc
                session = boto3.session.Session(profile_name=self.profile_name)
                config = Config(
                    retries={"mode": self.retry_mode, "total_max_attempts": self.max_attempts},
                    connect_timeout=self.connect_timeout, read_timeout=self.read_timeout,
                )
                self._client = session.client(
                    "kms", region_name=self.region_name, endpoint_url=self.endpoint_url, config=config)
            return self._client

    def _call(self, key: str, fn: Callable[[], T]) -> T:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn()
        except (ClientError, BotoCoreError) as exc:
            raise map_kms_error(exc, key) from exc

    @staticmethod
    def _key_id(key_uri: str) -> str:
        scheme, key = split_key_uri(key_uri)
        if scheme != "aws-kms":
            raise ValueError(f"not an aws-kms:// key URI: {key_uri!r}")
        return key

    def identity(self, key_uri: str) -> str:
        key = self._key_id(key_uri)
        meta = self._call(key, lambda: self.client.describe_key(KeyId=key))["KeyMetadata"]
        return f"aws-kms://{meta['Arn']}"

    def wrap(self, key_uri: str, dek: bytes, encryption_context: Mapping[str, str]) -> KeySlot:
        key = self._key_id(key_uri)
        response = self._call(key, lambda: self.client.encrypt(
            KeyId=key, Plaintext=dek, EncryptionContext=dict(encryption_context)))
        return KeySlot(f"aws-kms://{response['KeyId']}", WRAP_AWS_KMS, bytes(response["CiphertextBlob"]))

    def generate_data_key(self, key_uri: str, size: int, encryption_context: Mapping[str, str]) -> tuple[bytes, KeySlot]:
        """A fresh DEK from KMS ``GenerateDataKey`` and its slot (one call instead of two)."""
        key = self._key_id(key_uri)
        response = self._call(key, lambda: self.client.generate_data_key(
            KeyId=key, NumberOfBytes=size, EncryptionContext=dict(encryption_context)))
        slot = KeySlot(f"aws-kms://{response['KeyId']}", WRAP_AWS_KMS, bytes(response["CiphertextBlob"]))
        return bytes(response["Plaintext"]), slot

    def unwrap(self, slot: KeySlot, encryption_context: Mapping[str, str]) -> bytes:
        if slot.wrap_algorithm != WRAP_AWS_KMS:
            raise WrongKeyError(f"aws-kms keys cannot open wrap algorithm {slot.wrap_algorithm}")
        key = self._key_id(slot.key_uri)
        response = self._call(key, lambda: self.client.decrypt(
            CiphertextBlob=slot.wrapped_dek, KeyId=key, EncryptionContext=dict(encryption_context)))
        if response.get("KeyId") and key.startswith("arn:") and response["KeyId"] != key:
            raise WrongKeyError(f"KMS decrypted the slot with another key than {key}")
        return bytes(response["Plaintext"])
