"""Who asked, for the core's use cases: the verified principal and the request id of the call.

The identity is the core's own type; the edge that verifies tokens (``crm_hub.rpc.auth``) produces it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from crm_hub.errors import PermissionDenied

__all__ = ["Caller", "Principal", "Role"]


class Role(enum.StrEnum):
    ADMIN = "admin"
    MEMBER = "member"


@dataclass(frozen=True)
class Principal:
    """The verified caller: a user (``subject``) acting for one team with one role."""

    subject: str
    team_id: str
    role: Role

    def require(self, role: Role, action: str) -> None:
        """Raise PermissionDenied unless this caller holds ``role`` (admin satisfies every role)."""
        if role is Role.ADMIN and self.role is not Role.ADMIN:
            raise PermissionDenied(f"Only a team admin may {action}; your role is '{self.role}'.")


@dataclass(frozen=True)
class Caller:
    principal: Principal
    request_id: str

    @property
    def team_id(self) -> str:
        return self.principal.team_id

    @property
    def actor(self) -> str:
        return self.principal.subject
