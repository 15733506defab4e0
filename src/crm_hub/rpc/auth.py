"""JWT verification into the caller's Principal (a core type), and minting development tokens.

Tokens carry ``sub``, ``team_id`` and ``role`` (``admin`` or ``member``) and must carry ``exp``.
HS256 with ``JWT_SECRET``, or RS256/ES256 with ``JWT_PUBLIC_KEY`` (PEM); ``JWT_ISSUER`` and
``JWT_AUDIENCE`` are checked when set.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from crm_hub.core.caller import Principal, Role
from crm_hub.errors import ConfigurationError, Unauthenticated

__all__ = ["TokenVerifier", "mint_token"]

_REQUIRED_CLAIMS = ("exp", "sub", "team_id", "role")
#: NumericDate claims (RFC 7519 §2): JSON numbers. PyJWT also takes numeric strings ("exp": "9999999999")
#: and booleans (int(True) == 1); a token of ours never carries those, so they are refused.
_TIME_CLAIMS = ("exp", "iat", "nbf")
_MAX_TEAM_ID_LENGTH = 128
#: Verified tokens remembered (until they expire), so a client's repeated calls skip the signature check.
_VERIFIED_CACHE_SIZE = 4096


class TokenVerifier:
    """Verifies bearer tokens. Configure exactly one of ``secret`` (HS256) or ``public_key`` (PEM)."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        public_key: str | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        leeway_seconds: int = 30,
    ) -> None:
        if bool(secret) == bool(public_key):
            raise ConfigurationError("Set exactly one of JWT_SECRET (HS256) or JWT_PUBLIC_KEY (RS256/ES256).")
        self._key: Any
        if secret:
            self._key, self._algorithms = secret, ["HS256"]
        else:
            assert public_key is not None
            self._key, self._algorithms = _load_public_key(public_key)
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds
        self._verified: dict[str, tuple[Principal, float]] = {}

    def __repr__(self) -> str:
        return f"TokenVerifier(algorithms={self._algorithms}, issuer={self._issuer!r}, audience={self._audience!r})"

    def verify(self, token: str) -> Principal:
        """The token's principal, or Unauthenticated. A token seen before is answered from a small cache until
        it expires (verifying the signature costs more than the rest of a cheap RPC)."""
        cached = self._verified.get(token)
        if cached is not None and cached[1] > time.time():
            return cached[0]
        principal, expires = self._verify(token)
        if len(self._verified) >= _VERIFIED_CACHE_SIZE:
            self._verified.pop(next(iter(self._verified)))  # the oldest entry: dicts keep insertion order
        self._verified[token] = (principal, expires)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options={"require": list(_REQUIRED_CLAIMS), "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            # The signature checked out (PyJWT verifies it before the claims); an "exp" of true is int 1 to PyJWT.
            _check_claim_types(jwt.decode(token, options={"verify_signature": False}))
            raise Unauthenticated("The token has expired.", reason="TOKEN_EXPIRED") from None
        except jwt.MissingRequiredClaimError as error:
            raise Unauthenticated(f"The token has no '{error.claim}' claim.", reason="TOKEN_INVALID") from None
        except (jwt.InvalidIssuerError, jwt.InvalidAudienceError) as error:
            raise Unauthenticated(
                f"The token was not issued for this service: {error}.", reason="TOKEN_INVALID"
            ) from None
        except jwt.InvalidTokenError:
            # Deliberately vague: say nothing about which check failed on a forged or garbled token.
            raise Unauthenticated("The token is invalid.", reason="TOKEN_INVALID") from None
        _check_claim_types(claims)
        return _principal_from_claims(claims), float(claims["exp"]) + self._leeway


def _check_claim_types(claims: dict[str, Any]) -> None:
    """The registered claims in their RFC 7519 JSON types; PyJWT coerces some and skips unchecked ones."""
    for name in _TIME_CLAIMS:
        value = claims.get(name)
        if name in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise Unauthenticated(
                f"The token's '{name}' claim must be a number (seconds since 1970).", reason="TOKEN_INVALID"
            )
    audience = claims.get("aud")
    if "aud" in claims and not (
        isinstance(audience, str) or (isinstance(audience, list) and all(isinstance(a, str) for a in audience))
    ):
        raise Unauthenticated("The token's 'aud' claim must be a string or a list of strings.", reason="TOKEN_INVALID")
    for name in ("iss", "jti"):
        if name in claims and not isinstance(claims[name], str):
            raise Unauthenticated(f"The token's '{name}' claim must be a string.", reason="TOKEN_INVALID")


def _principal_from_claims(claims: dict[str, Any]) -> Principal:
    subject, team_id, role = claims.get("sub"), claims.get("team_id"), claims.get("role")
    if not isinstance(subject, str) or not subject:
        raise Unauthenticated("The token's 'sub' claim must be a non-empty string.", reason="TOKEN_INVALID")
    if not isinstance(team_id, str) or not team_id or len(team_id) > _MAX_TEAM_ID_LENGTH:
        raise Unauthenticated(
            f"The token's 'team_id' claim must be a non-empty string of at most {_MAX_TEAM_ID_LENGTH} characters.",
            reason="TOKEN_INVALID",
        )
    try:
        parsed_role = Role(str(role))
    except ValueError:
        raise Unauthenticated("The token's 'role' claim must be 'admin' or 'member'.", reason="TOKEN_INVALID") from None
    return Principal(subject=subject, team_id=team_id, role=parsed_role)


def _load_public_key(pem: str) -> tuple[Any, list[str]]:
    try:
        key = load_pem_public_key(pem.replace("\\n", "\n").encode())
    except ValueError as error:
        raise ConfigurationError(f"JWT_PUBLIC_KEY is not a PEM public key: {error}") from None
    if isinstance(key, rsa.RSAPublicKey):
        return key, ["RS256"]
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key, ["ES256"]
    raise ConfigurationError("JWT_PUBLIC_KEY must be an RSA key (RS256) or a P-256 EC key (ES256).")


def mint_token(
    secret: str,
    *,
    team_id: str,
    role: Role | str,
    subject: str = "dev",
    ttl_seconds: int = 3600,
    issuer: str | None = None,
    audience: str | None = None,
) -> str:
    """An HS256 token for development and tests (``crm-hub token``)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": subject,
        "team_id": team_id,
        "role": str(Role(role)),
        "iat": now,
        "exp": now + ttl_seconds,
    }
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")
