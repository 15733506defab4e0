"""Encryption at rest for CRM credentials (OAuth token sets): AES-256-GCM under a secret from the environment.

A credential dict is serialised as compact, key-sorted JSON and sealed into an *envelope*, a
JSON-serialisable dict stored as-is in the database::

    {"v": 1, "alg": "A256GCM", "kid": "<16 hex>", "salt": "<b64url>", "iv": "<b64url>", "ct": "<b64url>"}

``ct`` is the ciphertext followed by the 16-byte GCM tag; base64url is unpadded, as in JOSE.

Keys
    The master secret (``SECRET_VAULT_KEY``) is stretched into the AES key with PBKDF2-HMAC-SHA512
    (100,000 iterations, 32 bytes) and a random 16-byte salt. PBKDF2 is slow on purpose (tens of
    milliseconds), far too slow to run per request, so the salt is *not* chosen per message: a
    :class:`Vault` picks one random salt for its current key when it is built (so, once per process)
    and encrypts everything with the key derived from it. Every envelope records its salt, and
    decryption derives ``(key id, salt) -> AES key`` once, then serves it from a bounded LRU cache
    (:data:`KEY_CACHE_SIZE` entries). Uniqueness per message comes from the random 96-bit IV; the
    per-process salt also means no single AES key encrypts for longer than one process lives, which
    keeps each key far below GCM's random-IV limit. The cost of this design: the first decryption of
    a row written by another process (another salt) pays one PBKDF2 run, which blocks the calling
    thread; async callers that care can run it in a worker thread.

Key ids and rotation
    Every envelope records the id of the secret that sealed it. The id is the first 16 hex
    characters of PBKDF2-HMAC-SHA512(secret, "crm_hub/vault/key-id", 100,000 iterations): a fast
    hash would let anyone who can read the database test guesses of a weak secret offline. Older
    secrets listed in ``SECRET_VAULT_PREVIOUS_KEYS`` still decrypt; :meth:`Vault.needs_rotation` and
    :meth:`Vault.reencrypt` move rows onto the current secret.

Binding
    The GCM associated data names the team and the provider, so a ciphertext copied onto another
    team's or another provider's row fails authentication instead of handing over the tokens.

Nothing here ever puts a secret, a plaintext or a ciphertext into an exception message or a repr.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import pathlib
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from crm_hub.errors import ConfigurationError, InvalidArgument, VaultError
from crm_hub.observability import metrics
from crm_hub.storage.secret_files import load_or_create_secret

__all__ = [
    "DEFAULT_ITERATIONS",
    "ENVELOPE_VERSION",
    "KEY_CACHE_SIZE",
    "MIN_SECRET_LENGTH",
    "Vault",
    "load_or_create_embedded_key",
    "parse_previous_keys",
    "vault_from_settings",
]

_log = logging.getLogger("crm_hub.storage.vault")

#: Version written into (and the only one accepted from) the envelope's ``"v"`` field.
ENVELOPE_VERSION: Final = 1
#: PBKDF2 iterations for the AES key. Not recorded in the envelope: changing it makes old rows unreadable.
DEFAULT_ITERATIONS: Final = 100_000
#: How many derived (key id, salt) keys a Vault keeps.
KEY_CACHE_SIZE: Final = 256
#: Shortest master secret accepted.
MIN_SECRET_LENGTH: Final = 16

_ALG: Final = "A256GCM"
_KEY_BYTES: Final = 32
_SALT_BYTES: Final = 16
_IV_BYTES: Final = 12
_TAG_BYTES: Final = 16
# Fixed, whatever ``iterations`` a Vault uses, so a secret has the same id everywhere.
_KEY_ID_SALT: Final = b"crm_hub/vault/key-id"
_KEY_ID_ITERATIONS: Final = 100_000
_KEY_ID_HEX_CHARS: Final = 16
_KEY_ID_RE: Final = re.compile(r"[0-9a-f]{16}")
_B64URL_RE: Final = re.compile(r"[A-Za-z0-9_-]*")
_AAD_PREFIX: Final = "crm_hub/credentials/v1"
_EMBEDDED_KEY_FILE: Final = "vault.key"

_GENERATE_HINT: Final = 'generate one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
_UNKNOWN_KID: Final = (
    "unknown key id (was SECRET_VAULT_KEY changed without listing the old key in SECRET_VAULT_PREVIOUS_KEYS?)"
)
_BAD_TAG: Final = "ciphertext failed authentication (tampered, or stored under another team/provider)"
_MALFORMED: Final = "malformed envelope"


def _pbkdf2_sha512(secret: bytes, salt: bytes, iterations: int, length: int) -> bytes:
    """Run PBKDF2-HMAC-SHA512 (the one slow step; tests count calls to it)."""
    return PBKDF2HMAC(algorithm=hashes.SHA512(), length=length, salt=salt, iterations=iterations).derive(secret)


def _key_id(secret: bytes) -> str:
    return _pbkdf2_sha512(secret, _KEY_ID_SALT, _KEY_ID_ITERATIONS, _KEY_ID_HEX_CHARS // 2).hex()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(value: object, field: str) -> bytes:
    # Strict: the stdlib decoder silently skips characters outside the alphabet.
    if not isinstance(value, str) or _B64URL_RE.fullmatch(value) is None:
        raise VaultError(f"{_MALFORMED}: {field!r} is not base64url")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError:  # binascii.Error included
        raise VaultError(f"{_MALFORMED}: {field!r} is not base64url") from None


def _aad(team_id: str, provider: str) -> bytes:
    # NUL separates the fields, so neither may contain one or two different rows could share an AAD.
    for name, value in (("team_id", team_id), ("provider", provider)):
        if "\x00" in value:
            raise InvalidArgument(f"{name} must not contain NUL characters")
    return f"{_AAD_PREFIX}\x00{team_id}\x00{provider}".encode()


def _check_secret(secret: str, what: str) -> str:
    """Return ``secret`` without surrounding whitespace, or refuse it with a message that names ``what``."""
    if not isinstance(secret, str):
        raise ConfigurationError(f"{what} must be a string")
    secret = secret.strip()
    if not secret:
        raise ConfigurationError(f"{what} is empty; {_GENERATE_HINT}")
    if len(secret) < MIN_SECRET_LENGTH:
        raise ConfigurationError(f"{what} is too short (fewer than {MIN_SECRET_LENGTH} characters); {_GENERATE_HINT}")
    if "," in secret:
        # SECRET_VAULT_PREVIOUS_KEYS is comma-separated: such a key could never be rotated out.
        raise ConfigurationError(f"{what} must not contain ','; {_GENERATE_HINT}")
    return secret


class Vault:
    """Seals credential dicts into envelopes and opens them again.

    ``current_key`` encrypts; it and every one of ``previous_keys`` decrypt. Surrounding whitespace
    in a secret is ignored, so a key means the same in ``SECRET_VAULT_KEY`` and in the
    comma-separated ``SECRET_VAULT_PREVIOUS_KEYS``; repeated secrets are ignored. Building a Vault
    costs one PBKDF2 run per distinct secret (its key id). Safe to share between threads.
    """

    def __init__(
        self,
        current_key: str,
        previous_keys: Sequence[str] = (),
        *,
        iterations: int = DEFAULT_ITERATIONS,
    ) -> None:
        if isinstance(previous_keys, str):
            # A bare string would be iterated character by character.
            raise TypeError("previous_keys must be a sequence of secrets, not a string")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ConfigurationError("vault iterations must be a positive integer")
        self._iterations = iterations

        current = _check_secret(current_key, "SECRET_VAULT_KEY")
        distinct: list[str] = [current]
        for number, key in enumerate(previous_keys, start=1):
            checked = _check_secret(key, f"previous vault key #{number}")
            if checked not in distinct:
                distinct.append(checked)

        # key id -> secret; the first entry is the current key.
        self._secrets: dict[str, bytes] = {}
        for secret in distinct:
            self._secrets.setdefault(_key_id(secret.encode()), secret.encode())
        self._current_kid = next(iter(self._secrets))
        self._previous_kids = tuple(kid for kid in self._secrets if kid != self._current_kid)

        self._salt = os.urandom(_SALT_BYTES)
        self._salt_b64 = _b64encode(self._salt)
        self._current_aead: AESGCM | None = None  # derived on first encrypt
        self._cache: OrderedDict[tuple[str, bytes], AESGCM] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Vault(current_key_id={self._current_kid!r}, previous_key_ids={self._previous_kids!r})"

    @property
    def current_key_id(self) -> str:
        """Id of the secret that new envelopes are sealed with."""
        return self._current_kid

    @property
    def previous_key_ids(self) -> tuple[str, ...]:
        """Ids of the older secrets that still decrypt."""
        return self._previous_kids

    def encrypt(self, payload: Mapping[str, Any], *, team_id: str, provider: str) -> dict[str, Any]:
        """Seal ``payload`` (JSON-serialisable) for one team's connection to one provider."""
        plaintext = json.dumps(dict(payload), separators=(",", ":"), sort_keys=True).encode()
        aad = _aad(team_id, provider)
        iv = os.urandom(_IV_BYTES)
        ciphertext = self._encryption_aead().encrypt(iv, plaintext, aad)
        return {
            "v": ENVELOPE_VERSION,
            "alg": _ALG,
            "kid": self._current_kid,
            "salt": self._salt_b64,
            "iv": _b64encode(iv),
            "ct": _b64encode(ciphertext),
        }

    def decrypt(self, envelope: Mapping[str, Any], *, team_id: str, provider: str) -> dict[str, Any]:
        """Open an envelope made by :meth:`encrypt` for the same team and provider.

        Raises :class:`~crm_hub.errors.VaultError` for an unknown key id, a ciphertext that fails
        authentication (tampered, or sealed for another team/provider) or a malformed envelope.
        """
        try:
            return self._open(envelope, team_id=team_id, provider=provider)
        except VaultError:
            metrics.VAULT_DECRYPT_FAILURES.inc()
            raise

    def _open(self, envelope: Mapping[str, Any], *, team_id: str, provider: str) -> dict[str, Any]:
        kid, salt, iv, ciphertext = self._parse(envelope)
        aad = _aad(team_id, provider)
        if kid not in self._secrets:
            known = ", ".join(repr(known_kid) for known_kid in self._secrets)
            raise VaultError(
                f"{_UNKNOWN_KID}; envelope key id {kid!r}, known key ids {known}", metadata={"key_id": kid}
            )
        try:
            plaintext = self._aead(kid, salt).decrypt(iv, ciphertext, aad)
        except InvalidTag:
            raise VaultError(_BAD_TAG, metadata={"key_id": kid}) from None
        try:
            payload = json.loads(plaintext)
        except ValueError:
            # `from None`: the JSON error carries the plaintext.
            raise VaultError(f"{_MALFORMED}: payload is not JSON") from None
        if not isinstance(payload, dict):
            raise VaultError(f"{_MALFORMED}: payload is not a JSON object")
        return payload

    def is_warm(self, envelope: Mapping[str, Any]) -> bool:
        """Opening ``envelope`` needs no key derivation (its key is cached), so it may run on an event loop."""
        try:
            kid, salt, _, _ = self._parse(envelope)
        except VaultError:
            return True  # decrypt fails at once, without deriving anything
        if self._current_aead is not None and kid == self._current_kid and salt == self._salt:
            return True
        with self._lock:
            return (kid, salt) in self._cache

    def needs_rotation(self, envelope: Mapping[str, Any]) -> bool:
        """Whether ``envelope`` was sealed with a key other than the current one.

        Raises :class:`~crm_hub.errors.VaultError` if the envelope is malformed.
        """
        kid, _salt, _iv, _ct = self._parse(envelope)
        return kid != self._current_kid

    def reencrypt(self, envelope: Mapping[str, Any], *, team_id: str, provider: str) -> dict[str, Any]:
        """Open ``envelope`` with whichever known key sealed it and seal it again with the current key."""
        return self.encrypt(
            self.decrypt(envelope, team_id=team_id, provider=provider), team_id=team_id, provider=provider
        )

    def _encryption_aead(self) -> AESGCM:
        # Pinned outside the LRU cache so a burst of old salts can never evict it.
        aead = self._current_aead
        if aead is None:
            aead = self._current_aead = self._aead(self._current_kid, self._salt)
        return aead

    def _aead(self, kid: str, salt: bytes) -> AESGCM:
        if self._current_aead is not None and kid == self._current_kid and salt == self._salt:
            return self._current_aead
        cache_key = (kid, salt)
        with self._lock:
            aead = self._cache.get(cache_key)
            if aead is not None:
                self._cache.move_to_end(cache_key)
                return aead
        # Derive outside the lock: a cold salt must not stall every other thread's warm lookups.
        # Two threads racing on the same salt both derive once; the result is identical.
        aead = AESGCM(_pbkdf2_sha512(self._secrets[kid], salt, self._iterations, _KEY_BYTES))
        with self._lock:
            self._cache[cache_key] = aead
            self._cache.move_to_end(cache_key)
            while len(self._cache) > KEY_CACHE_SIZE:
                self._cache.popitem(last=False)
        return aead

    @staticmethod
    def _parse(envelope: Mapping[str, Any]) -> tuple[str, bytes, bytes, bytes]:
        if not isinstance(envelope, Mapping):
            raise VaultError(f"{_MALFORMED}: not a JSON object")
        version = envelope.get("v")
        # `type(...) is int`: True == 1 in Python.
        if type(version) is not int or version != ENVELOPE_VERSION:
            detail = f"version {version}" if type(version) is int else "version"
            raise VaultError(f"{_MALFORMED}: unsupported {detail}")
        if envelope.get("alg") != _ALG:
            raise VaultError(f"{_MALFORMED}: unsupported algorithm")
        kid = envelope.get("kid")
        if not isinstance(kid, str) or _KEY_ID_RE.fullmatch(kid) is None:
            raise VaultError(f"{_MALFORMED}: bad key id")
        salt = _b64decode(envelope.get("salt"), "salt")
        iv = _b64decode(envelope.get("iv"), "iv")
        ciphertext = _b64decode(envelope.get("ct"), "ct")
        if len(salt) != _SALT_BYTES:
            raise VaultError(f"{_MALFORMED}: salt must be {_SALT_BYTES} bytes")
        if len(iv) != _IV_BYTES:
            raise VaultError(f"{_MALFORMED}: iv must be {_IV_BYTES} bytes")
        if len(ciphertext) < _TAG_BYTES:
            raise VaultError(f"{_MALFORMED}: ciphertext is shorter than the tag")
        return kid, salt, iv, ciphertext


def parse_previous_keys(value: str | None) -> list[str]:
    """Split ``SECRET_VAULT_PREVIOUS_KEYS`` (comma-separated) into secrets, dropping blanks."""
    if not value:
        return []
    return [part.strip() for part in value.split(",") if part.strip()]


def load_or_create_embedded_key(data_dir: pathlib.Path) -> tuple[str, bool]:
    """Return ``(key, created)`` for the development key in ``data_dir / "vault.key"``.

    See ``crm_hub.storage.secret_files.load_or_create_secret``: owner-only, atomic, race-safe. Does not log:
    the caller warns.
    """
    return load_or_create_secret(data_dir / _EMBEDDED_KEY_FILE)


def vault_from_settings(
    *,
    secret_vault_key: str | None,
    previous_keys: str | None,
    data_dir: pathlib.Path,
    production: bool,
) -> Vault:
    """Build the service's Vault from ``SECRET_VAULT_KEY`` and ``SECRET_VAULT_PREVIOUS_KEYS``.

    Without ``SECRET_VAULT_KEY`` (unset or blank), production refuses to start and development
    falls back to a key stored in ``data_dir``, with a warning.
    """
    previous = parse_previous_keys(previous_keys)
    if secret_vault_key is not None and secret_vault_key.strip():
        return Vault(secret_vault_key, previous)
    if production:
        raise ConfigurationError("SECRET_VAULT_KEY is required when CRM_HUB_ENV=production")
    key, created = load_or_create_embedded_key(data_dir)
    _log.warning(
        "SECRET_VAULT_KEY is not set: using a development key %s %s; "
        "set SECRET_VAULT_KEY for production (and keep this file to read credentials stored so far)",
        "created and stored in" if created else "stored in",
        data_dir / _EMBEDDED_KEY_FILE,
    )
    return Vault(key, previous)
