"""Test settings and tokens shared by the core and RPC tests."""

from __future__ import annotations

from crm_hub.rpc.auth import mint_token

JWT_SECRET = "test-jwt-secret-that-is-long-enough"
VAULT_KEY = "test-vault-key-that-is-long-enough"

Metadata = tuple[tuple[str, str], ...]


def bearer(team: str, role: str = "admin") -> Metadata:
    """Call metadata with a freshly minted token for ``team`` and ``role``."""
    token = mint_token(JWT_SECRET, team_id=team, role=role, subject=f"user-of-{team}")
    return (("authorization", f"Bearer {token}"),)
