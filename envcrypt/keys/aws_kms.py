"""``aws-kms://KEY`` key URIs: DEKs wrapped by AWS KMS through boto3.

``KEY`` is a key id, ``alias/NAME`` or a key ARN.  ``wrap`` calls KMS ``Encrypt``
with the object's encryption context as the KMS ``EncryptionContext`` (so the
slot only unwraps for the same context), and the slot records the key ARN KMS
reports (``aws-kms://arn:aws:kms:REGION:ACCOUNT:key/ID``; KMS keeps the backing
key version inside the ciphertext blob).  ``unwrap`` calls ``Decrypt`` with
``KeyId`` pinned to that ARN and the same context.  Wrap algorithm id 16, the
wrapped bytes are the KMS ``CiphertextBlob``.

**Trusted keys** (``trusts``): a slot is accepted only when it names a key the
reader trusts, and ``Decrypt`` is only ever called with a trusted key as ``KeyId``
(so KMS itself refuses a blob made under another key).  A trusted key is a key
ARN (that key), a key id (the key of that id), an alias name or alias ARN (the key
the alias points to now, looked up once a minute with ``DescribeKey``: trust the
old key's ARN too after re-pointing an alias), or a **discovery filter**
``aws-kms://discovery/PARTITION/ACCOUNT[,ACCOUNT...]``, an explicit opt-in that
accepts any key of those accounts (as the AWS Encryption SDK's discovery mode
with its account filter).

Retries are botocore's (``standard`` or ``adaptive`` mode), never a home-made
loop.  KMS errors map onto the envcrypt key errors; throttling that outlasts the
retries, timeouts and connection failures become ``ResolverUnavailableError``.

Options name things only: ``region_name``, ``endpoint_url``, ``profile_name``,
``retry_mode``, ``max_attempts``, ``connect_timeout``, ``read_timeout``.
Credentials come from the usual AWS environment, never from options.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from ..errors import (
    EnvcryptError,
    InvalidKeyUriError,
    KeyAccessDeniedError,
    KeyDeletedError,
    KeyDisabledError,
    KeyNotFoundError,
    ResolverUnavailableError,
    WrongKeyError,
)
from ..format import KeySlot
from ._log_redact import install_kms_redaction as redact_debug_logs
from .base import WRAP_AWS_KMS, split_key_uri

__all__ = ["AwsKmsResolver", "map_kms_error", "redact_debug_logs"]

# redact_debug_logs(): botocore logs KMS request and response bodies at DEBUG, data keys included
# ("Plaintext"); an application that may turn DEBUG on calls it once (SECURITY.md, "Logs").

T = TypeVar("T")

DISCOVERY = "discovery/"
ALIAS_TTL = 60.0  # seconds an alias -> key ARN lookup is trusted
MISSING_BOTO3 = "aws-kms:// keys need boto3, which is not installed: pip install 'envcrypt[aws]'"

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
        self._aliases: dict[str, tuple[float, str]] = {}

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
                    raise ResolverUnavailableError(MISSING_BOTO3) from exc
                session = boto3.session.Session(profile_name=self.profile_name)
                config = Config(
                    retries={"mode": self.retry_mode, "total_max_attempts": self.max_attempts},
                    connect_timeout=self.connect_timeout, read_timeout=self.read_timeout,
                )
                self._client = session.client(
                    "kms", region_name=self.region_name, endpoint_url=self.endpoint_url, config=config)
            return self._client

    def _call(self, key: str, fn: Callable[[], T]) -> T:
        try:
            from botocore.exceptions import BotoCoreError, ClientError
        except ImportError as exc:
            raise ResolverUnavailableError(MISSING_BOTO3) from exc

        try:
            return fn()
        except (ClientError, BotoCoreError) as exc:
            raise map_kms_error(exc, key) from exc

    @staticmethod
    def _key_id(key_uri: str) -> str:
        scheme, key = split_key_uri(key_uri)
        if scheme != "aws-kms":
            raise ValueError(f"not an aws-kms:// key URI: {key_uri!r}")
        if not key_uri[len(scheme) + 1:].startswith("//") or key.startswith("/"):
            raise InvalidKeyUriError(
                f"not an aws-kms key URI: {key_uri!r} (aws-kms://KEY-ID, aws-kms://alias/NAME, aws-kms://arn:...)")
        return key

    def trusts(self, trusted_uri: str, slot_uri: str) -> bool:
        """Whether a reader trusting ``trusted_uri`` accepts a slot naming ``slot_uri`` (see the
        module docstring).  Slots this resolver writes name key ARNs."""
        want, have = self._key_id(trusted_uri), self._key_id(slot_uri)
        if not have.startswith("arn:"):
            return have == want  # not what wrap writes; accepted only as named
        fields = have.split(":", 5)
        if len(fields) != 6 or fields[2] != "kms" or not fields[5].startswith("key/"):
            return False
        if want.startswith(DISCOVERY):
            partition, _, accounts = want[len(DISCOVERY):].partition("/")
            allowed = {a for a in accounts.split(",") if a}
            if not partition or not allowed:
                raise InvalidKeyUriError(
                    f"a KMS discovery filter names a partition and accounts: {trusted_uri!r} "
                    "(aws-kms://discovery/aws/111122223333)")
            return fields[1] == partition and fields[4] in allowed
        if want.startswith("arn:") and ":key/" in want:
            return have == want
        if not want.startswith(("arn:", "alias/")):
            return fields[5] == f"key/{want}"  # a key id
        return have == self._alias_target(want)

    def _alias_target(self, alias: str) -> str:
        now = time.monotonic()
        with self._lock:
            cached = self._aliases.get(alias)
        if cached is not None and now - cached[0] < ALIAS_TTL:
            return cached[1]
        arn = str(self._call(alias, lambda: self.client.describe_key(KeyId=alias))["KeyMetadata"]["Arn"])
        with self._lock:
            self._aliases[alias] = (now, arn)
        return arn

    def identity(self, key_uri: str) -> str:
        key = self._key_id(key_uri)
        meta = self._call(key, lambda: self.client.describe_key(KeyId=key))["KeyMetadata"]
        return f"aws-kms://{meta['Arn']}"

    def wrap(self, key_uri: str, dek: bytes, encryption_context: Mapping[str, str]) -> KeySlot:
        key = self._key_id(key_uri)
        response = self._call(key, lambda: self.client.encrypt(
            KeyId=key, Plaintext=dek, EncryptionContext=dict(encryption_context)))
        return KeySlot(f"aws-kms://{response['KeyId']}", WRAP_AWS_KMS, bytes(response["CiphertextBlob"]))

    def unwrap(self, slot: KeySlot, encryption_context: Mapping[str, str]) -> bytes:
        if slot.wrap_algorithm != WRAP_AWS_KMS:
            raise WrongKeyError(f"aws-kms keys cannot open wrap algorithm {slot.wrap_algorithm}")
        key = self._key_id(slot.key_uri)
        response = self._call(key, lambda: self.client.decrypt(
            CiphertextBlob=slot.wrapped_dek, KeyId=key, EncryptionContext=dict(encryption_context)))
        if response.get("KeyId") and key.startswith("arn:") and response["KeyId"] != key:
            raise WrongKeyError(f"KMS decrypted the slot with another key than {key}")
        return bytes(response["Plaintext"])
