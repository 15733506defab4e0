"""crm_hub.rpc.auth: bearer tokens become a Principal (team, role) only if signed, unexpired and meant for us."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from crm_hub.core.caller import Principal, Role
from crm_hub.errors import ConfigurationError, PermissionDenied, Unauthenticated
from crm_hub.rpc.auth import TokenVerifier, mint_token
from crm_hub.rpc.errors import status_code_for

SECRET = "auth-test-secret-at-least-32-bytes-long"
OTHER_SECRET = "another-secret-at-least-32-bytes-long!!"
ISSUER = "https://id.example.test/"
AUDIENCE = "crm-hub"


def _public_pem(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return private_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def p256_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _claims(**overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {"sub": "user-1", "team_id": "team-a", "role": "member", "exp": int(time.time()) + 600}
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hand_made_token(header: dict[str, Any], claims: dict[str, Any], sign: Any = None) -> str:
    """A JWT built by hand, for tokens a well-behaved library refuses to produce."""
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
    signature = sign(signing_input.encode()) if sign else b""
    return f"{signing_input}.{_b64url(signature)}"


def _refusal(verifier: TokenVerifier, token: str) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(token)
    return caught.value


# -- Keys and algorithms --------------------------------------------------------------------------


def test_hs256_token_minted_with_the_secret_verifies_into_its_principal() -> None:
    token = mint_token(SECRET, team_id="team-a", role=Role.ADMIN, subject="alice")

    principal = TokenVerifier(secret=SECRET).verify(token)

    assert principal == Principal(subject="alice", team_id="team-a", role=Role.ADMIN)


def test_hs256_token_signed_with_another_secret_is_refused() -> None:
    token = mint_token(OTHER_SECRET, team_id="team-a", role="admin")

    error = _refusal(TokenVerifier(secret=SECRET), token)

    assert error.reason == "TOKEN_INVALID"
    assert error.message == "The token is invalid."


def test_rs256_token_from_public_key_is_accepted(rsa_key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(_claims(role="admin"), rsa_key, algorithm="RS256")

    principal = TokenVerifier(public_key=_public_pem(rsa_key)).verify(token)

    assert principal == Principal(subject="user-1", team_id="team-a", role=Role.ADMIN)


def test_es256_token_from_p256_public_key_is_accepted(p256_key: ec.EllipticCurvePrivateKey) -> None:
    token = jwt.encode(_claims(), p256_key, algorithm="ES256")

    principal = TokenVerifier(public_key=_public_pem(p256_key)).verify(token)

    assert principal == Principal(subject="user-1", team_id="team-a", role=Role.MEMBER)


def test_public_key_with_escaped_newlines_from_an_env_file_is_accepted(rsa_key: rsa.RSAPrivateKey) -> None:
    one_line_pem = _public_pem(rsa_key).replace("\n", "\\n")
    token = jwt.encode(_claims(), rsa_key, algorithm="RS256")

    assert TokenVerifier(public_key=one_line_pem).verify(token).team_id == "team-a"


def test_token_signed_by_another_rsa_key_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(_claims(), stranger, algorithm="RS256")

    assert _refusal(TokenVerifier(public_key=_public_pem(rsa_key)), token).reason == "TOKEN_INVALID"


def test_p384_public_key_is_a_configuration_error() -> None:
    p384_pem = _public_pem(ec.generate_private_key(ec.SECP384R1()))

    with pytest.raises(ConfigurationError, match="P-256"):
        TokenVerifier(public_key=p384_pem)


@pytest.mark.parametrize("value", ["not a key at all", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"])
def test_non_pem_public_key_is_a_configuration_error(value: str) -> None:
    with pytest.raises(ConfigurationError, match="JWT_PUBLIC_KEY is not a PEM public key"):
        TokenVerifier(public_key=value)


def test_private_key_given_as_public_key_is_refused_without_echoing_it(p256_key: ec.EllipticCurvePrivateKey) -> None:
    private_pem = p256_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    key_body = private_pem.splitlines()[1]

    with pytest.raises(ConfigurationError) as caught:
        TokenVerifier(public_key=private_pem)

    assert "JWT_PUBLIC_KEY" in caught.value.message
    assert key_body not in caught.value.message


@pytest.mark.parametrize(
    ("secret", "public_key"),
    [(SECRET, "-----BEGIN PUBLIC KEY-----"), (None, None), ("", "")],
    ids=["both", "neither", "both-empty"],
)
def test_exactly_one_of_secret_and_public_key_must_be_set(secret: str | None, public_key: str | None) -> None:
    with pytest.raises(ConfigurationError, match="exactly one of JWT_SECRET"):
        TokenVerifier(secret=secret, public_key=public_key)


def test_hs256_token_signed_with_the_public_key_is_refused_by_an_rs256_verifier(rsa_key: rsa.RSAPrivateKey) -> None:
    # Algorithm confusion: a verifier that trusted the header's alg would HMAC-check with the PEM as secret.
    pem = _public_pem(rsa_key)
    forged = _hand_made_token(
        {"alg": "HS256", "typ": "JWT"},
        _claims(role="admin"),
        sign=lambda data: hmac.new(pem.encode(), data, hashlib.sha256).digest(),
    )

    assert _refusal(TokenVerifier(public_key=pem), forged).reason == "TOKEN_INVALID"


def test_unsigned_alg_none_token_is_refused() -> None:
    unsigned = _hand_made_token({"alg": "none", "typ": "JWT"}, _claims(role="admin"))

    assert _refusal(TokenVerifier(secret=SECRET), unsigned).reason == "TOKEN_INVALID"


# -- Claims ---------------------------------------------------------------------------------------


def test_token_without_exp_is_refused_naming_the_claim() -> None:
    token = jwt.encode(_claims(exp=None), SECRET, algorithm="HS256")

    error = _refusal(TokenVerifier(secret=SECRET), token)

    assert error.reason == "TOKEN_INVALID"
    assert "'exp'" in error.message


_SOON = int(time.time()) + 600


@pytest.mark.parametrize(
    "overrides",
    [
        {"exp": str(_SOON)},
        {"exp": True},
        {"exp": [_SOON]},
        {"iat": str(_SOON - 600)},
        {"nbf": {"at": 1}},
        {"sub": 7},
        {"sub": ["user-1"]},
        {"team_id": 42},
        {"team_id": {"id": "team-a"}},
        {"role": ["admin"]},
        {"role": True},
        {"aud": 5},
    ],
    ids=lambda overrides: "-".join(f"{name}={type(value).__name__}" for name, value in overrides.items()),
)
def test_claims_of_the_wrong_json_type_are_unauthenticated(overrides: dict[str, Any]) -> None:
    signed = _hand_made_token(
        {"alg": "HS256", "typ": "JWT"},
        _claims(**overrides),
        sign=lambda data: hmac.new(SECRET.encode(), data, hashlib.sha256).digest(),
    )

    error = _refusal(TokenVerifier(secret=SECRET), signed)

    assert error.reason == "TOKEN_INVALID"


def test_expiry_given_as_a_numeric_string_is_refused_naming_the_claim() -> None:
    token = jwt.encode(_claims(exp=str(_SOON)), SECRET, algorithm="HS256")

    error = _refusal(TokenVerifier(secret=SECRET), token)

    assert "'exp'" in error.message
    assert "number" in error.message


def test_expired_token_is_refused_as_expired() -> None:
    token = mint_token(SECRET, team_id="team-a", role="member", ttl_seconds=-120)

    error = _refusal(TokenVerifier(secret=SECRET), token)

    assert error.reason == "TOKEN_EXPIRED"
    assert error.message == "The token has expired."


def test_token_that_expired_within_the_leeway_is_still_accepted() -> None:
    token = mint_token(SECRET, team_id="team-a", role="member", ttl_seconds=-5)

    assert TokenVerifier(secret=SECRET, leeway_seconds=30).verify(token).team_id == "team-a"


def test_issuer_and_audience_are_enforced_when_configured() -> None:
    verifier = TokenVerifier(secret=SECRET, issuer=ISSUER, audience=AUDIENCE)
    token = mint_token(SECRET, team_id="team-a", role="member", issuer=ISSUER, audience=AUDIENCE)

    assert verifier.verify(token).team_id == "team-a"


@pytest.mark.parametrize(
    ("issuer", "audience", "named"),
    [
        ("https://evil.example.test/", AUDIENCE, "issue"),
        (ISSUER, "some-other-service", "audience"),
        (ISSUER, None, "'aud'"),
        (None, AUDIENCE, "'iss'"),
    ],
    ids=["wrong-issuer", "wrong-audience", "missing-audience", "missing-issuer"],
)
def test_token_for_another_issuer_or_audience_is_refused(issuer: str | None, audience: str | None, named: str) -> None:
    verifier = TokenVerifier(secret=SECRET, issuer=ISSUER, audience=AUDIENCE)
    token = mint_token(SECRET, team_id="team-a", role="member", issuer=issuer, audience=audience)

    error = _refusal(verifier, token)

    assert error.reason == "TOKEN_INVALID"
    assert named in error.message.lower()


def test_issuer_and_audience_claims_are_ignored_when_not_configured() -> None:
    token = mint_token(SECRET, team_id="team-a", role="member", issuer="https://anyone/", audience="anything")

    assert TokenVerifier(secret=SECRET).verify(token).team_id == "team-a"


@pytest.mark.parametrize("role", ["owner", "ADMIN", "", None, ["admin"]], ids=repr)
def test_role_must_be_admin_or_member(role: object) -> None:
    token = jwt.encode(_claims(role=role), SECRET, algorithm="HS256")

    error = _refusal(TokenVerifier(secret=SECRET), token)

    assert error.reason == "TOKEN_INVALID"
    assert "role" in error.message


@pytest.mark.parametrize(
    "claims",
    [_claims(team_id=""), _claims(team_id=42), _claims(team_id="t" * 129), _claims(sub=""), _claims(sub=None)],
    ids=["empty-team", "numeric-team", "overlong-team", "empty-subject", "no-subject"],
)
def test_subject_and_team_must_be_non_empty_strings(claims: dict[str, Any]) -> None:
    token = jwt.encode(claims, SECRET, algorithm="HS256")

    assert _refusal(TokenVerifier(secret=SECRET), token).reason == "TOKEN_INVALID"


@pytest.mark.parametrize(
    "token",
    [
        mint_token(SECRET, team_id="team-a", role="member", ttl_seconds=-120),
        mint_token(OTHER_SECRET, team_id="team-a", role="member"),
        mint_token(SECRET, team_id="team-a", role="member", issuer="https://evil.example.test/", audience=AUDIENCE),
        mint_token(SECRET, team_id="team-a", role="member", issuer=ISSUER, audience="elsewhere"),
        jwt.encode(_claims(exp=None), SECRET, algorithm="HS256"),
        jwt.encode(_claims(role="root"), SECRET, algorithm="HS256"),
        "eyJhbGciOiJIUzI1NiJ9.bm90LWpzb24.c2ln",
    ],
    ids=["expired", "forged", "wrong-issuer", "wrong-audience", "no-exp", "bad-role", "garbled"],
)
def test_refusal_message_never_contains_the_token(token: str) -> None:
    verifier = TokenVerifier(secret=SECRET, issuer=ISSUER, audience=AUDIENCE)

    error = _refusal(verifier, token)

    shown = " ".join([str(error), error.message, *error.metadata.values()])
    for part in token.split("."):
        assert part not in shown


def test_verifier_repr_shows_the_algorithm_but_not_the_secret() -> None:
    shown = repr(TokenVerifier(secret=SECRET, issuer=ISSUER))

    assert "HS256" in shown
    assert SECRET not in shown


# -- Roles ----------------------------------------------------------------------------------------


def test_admin_may_do_admin_and_member_things() -> None:
    admin = Principal(subject="alice", team_id="team-a", role=Role.ADMIN)

    admin.require(Role.ADMIN, "connect an integration")
    admin.require(Role.MEMBER, "sync a lead")

    assert admin.role is Role.ADMIN


def test_member_may_do_member_things() -> None:
    member = Principal(subject="bob", team_id="team-a", role=Role.MEMBER)

    member.require(Role.MEMBER, "sync a lead")

    assert member.role is Role.MEMBER


def test_member_is_refused_admin_things_with_permission_denied_naming_the_action() -> None:
    member = Principal(subject="bob", team_id="team-a", role=Role.MEMBER)

    with pytest.raises(PermissionDenied) as caught:
        member.require(Role.ADMIN, "disconnect an integration")

    assert "disconnect an integration" in caught.value.message
    assert "member" in caught.value.message
    assert caught.value.reason == "PERMISSION_DENIED"
    assert status_code_for(caught.value) is grpc.StatusCode.PERMISSION_DENIED


def test_mint_token_refuses_an_unknown_role() -> None:
    with pytest.raises(ValueError, match="owner"):
        mint_token(SECRET, team_id="team-a", role="owner")
