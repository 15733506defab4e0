"""The HubSpot app's configuration: OAuth client credentials and where HubSpot lives."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from crm_hub.errors import ConfigurationError

__all__ = ["DEFAULT_API_BASE_URL", "DEFAULT_AUTHORIZE_URL", "HubSpotSettings"]

DEFAULT_API_BASE_URL = "https://api.hubapi.com"
DEFAULT_AUTHORIZE_URL = "https://app.hubspot.com/oauth/authorize"

_REQUIRED = ("HUBSPOT_CLIENT_ID", "HUBSPOT_CLIENT_SECRET", "HUBSPOT_REDIRECT_URL")


@dataclass(frozen=True)
class HubSpotSettings:
    """The public OAuth app crm_hub connects teams through. ``repr`` never shows the client secret."""

    client_id: str
    client_secret: str = field(repr=False)
    redirect_url: str
    api_base_url: str = DEFAULT_API_BASE_URL
    authorize_url: str = DEFAULT_AUTHORIZE_URL

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HubSpotSettings:
        """Read ``HUBSPOT_*`` variables; ConfigurationError naming every missing one.

        ``HUBSPOT_API_BASE_URL`` and ``HUBSPOT_AUTHORIZE_URL`` are optional (tests and the fake point them
        elsewhere); the client id, secret and redirect URL are required.
        """
        env = os.environ if environ is None else environ
        missing = [name for name in _REQUIRED if not env.get(name, "").strip()]
        if missing:
            raise ConfigurationError(
                f"The HubSpot plugin (crm-hub-hubspot) is installed but {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not set. Set them, or leave the plugin out with "
                "CRM_HUB_PLUGINS.",
                reason="PROVIDER_NOT_CONFIGURED",
                metadata={"provider": "hubspot", "missing": ",".join(missing)},
            )
        return cls(
            client_id=env["HUBSPOT_CLIENT_ID"].strip(),
            client_secret=env["HUBSPOT_CLIENT_SECRET"].strip(),
            redirect_url=env["HUBSPOT_REDIRECT_URL"].strip(),
            api_base_url=(env.get("HUBSPOT_API_BASE_URL") or DEFAULT_API_BASE_URL).strip().rstrip("/"),
            authorize_url=(env.get("HUBSPOT_AUTHORIZE_URL") or DEFAULT_AUTHORIZE_URL).strip(),
        )
