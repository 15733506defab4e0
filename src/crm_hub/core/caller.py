"""Who asked, for the core's use cases: the verified principal and the request id of the call."""

from __future__ import annotations

from dataclasses import dataclass

from crm_hub.auth import Principal

__all__ = ["Caller"]


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
