"""The HubSpot app's configuration: OAuth client credentials and where HubSpot lives."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from crm_hub.errors import ConfigurationError
from crm_hub.providers import RateLimit, is_secure_url, missing_settings_problem

__all__ = ["DEFAULT_API_BASE_URL", "DEFAULT_AUTHORIZE_URL", "DEFAULT_RATE_LIMIT", "HubSpotSettings"]

DEFAULT_API_BASE_URL = "https://api.hubapi.com"
DEFAULT_AUTHORIZE_URL = "https://app.hubspot.com/oauth/authorize"

_REQUIRED = ("HUBSPOT_CLIENT_ID", "HUBSPOT_CLIENT_SECRET", "HUBSPOT_REDIRECT_URL")
DEFAULT_RATE_LIMIT = RateLimit(name="10s", requests=110, per_seconds=10.0)


@dataclass(frozen=True)
class HubSpotSettings:
    """The public OAuth app crm_hub connects teams through. ``repr`` never shows the client secret."""

    client_id: str
    client_secret: str = field(repr=False)
    redirect_url: str
    api_base_url: str = DEFAULT_API_BASE_URL
    authorize_url: str = DEFAULT_AUTHORIZE_URL
    #: The account's request limit crm_hub keeps to (``HUBSPOT_RATE_LIMIT``): a public OAuth app's is 110 per
    #: 10 s per installing account; None leaves it to HubSpot's 429s.
    rate_limit: RateLimit | None = field(default_factory=lambda: DEFAULT_RATE_LIMIT)
    #: Required variables that were not set: the provider is registered but cannot connect anyone.
    missing: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for setting, url in (
            ("HUBSPOT_API_BASE_URL", self.api_base_url),
            ("HUBSPOT_AUTHORIZE_URL", self.authorize_url),
        ):
            if not is_secure_url(url):
                # Tokens and the client secret travel to these URLs: https only (plain http for a local fake).
                raise ConfigurationError(
                    f"{setting} must be an https URL (plain http only for a fake on this machine), not {url[:80]!r}.",
                    reason="PROVIDER_NOT_CONFIGURED",
                    metadata={"provider": "hubspot", "setting": setting},
                )

    @property
    def problem(self) -> str | None:
        """What an operator must fix before teams can connect HubSpot, or None."""
        return missing_settings_problem("HubSpot", self.missing)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HubSpotSettings:
        """Read ``HUBSPOT_*`` variables. Missing required ones are listed in ``missing``, never guessed.

        ``HUBSPOT_API_BASE_URL`` and ``HUBSPOT_AUTHORIZE_URL`` are optional (tests and the fake point them
        elsewhere); the client id, secret and redirect URL are required to connect a team. Without them the
        service still starts: the provider reports ``configuration_problem()`` in status and on connect.
        """
        env = os.environ if environ is None else environ
        missing = tuple(name for name in _REQUIRED if not env.get(name, "").strip())
        return cls(
            client_id=env.get("HUBSPOT_CLIENT_ID", "").strip(),
            client_secret=env.get("HUBSPOT_CLIENT_SECRET", "").strip(),
            redirect_url=env.get("HUBSPOT_REDIRECT_URL", "").strip(),
            missing=missing,
            api_base_url=(env.get("HUBSPOT_API_BASE_URL") or DEFAULT_API_BASE_URL).strip().rstrip("/"),
            authorize_url=(env.get("HUBSPOT_AUTHORIZE_URL") or DEFAULT_AUTHORIZE_URL).strip(),
            rate_limit=RateLimit.parse(env["HUBSPOT_RATE_LIMIT"], setting="HUBSPOT_RATE_LIMIT")
            if env.get("HUBSPOT_RATE_LIMIT", "").strip()
            else DEFAULT_RATE_LIMIT,
        )
