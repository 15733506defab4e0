"""The Salesforce connected app's configuration: OAuth client credentials, the login host, the API version."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from crm_hub.errors import ConfigurationError
from crm_hub.providers import is_secure_url, missing_settings_problem

__all__ = ["DEFAULT_API_VERSION", "DEFAULT_LOGIN_URL", "SalesforceSettings"]

#: Production orgs log in here; sandboxes use https://test.salesforce.com, some orgs their My Domain.
DEFAULT_LOGIN_URL = "https://login.salesforce.com"
DEFAULT_API_VERSION = "v58.0"

_REQUIRED = ("SALESFORCE_CLIENT_ID", "SALESFORCE_CLIENT_SECRET", "SALESFORCE_REDIRECT_URL")
_API_VERSION = re.compile(r"^v?(\d{2,3}\.\d)$")


@dataclass(frozen=True)
class SalesforceSettings:
    """The connected app crm_hub connects teams through. ``repr`` never shows the client secret."""

    client_id: str
    client_secret: str = field(repr=False)
    redirect_url: str
    #: Where the OAuth endpoints live (``/services/oauth2/*``); never hard-coded anywhere else.
    login_url: str = DEFAULT_LOGIN_URL
    #: The REST API version, ``vNN.N``; every API call goes to ``{instance_url}/services/data/{api_version}``.
    api_version: str = DEFAULT_API_VERSION
    #: Required variables that were not set: the provider is registered but cannot connect anyone.
    missing: tuple[str, ...] = ()

    @property
    def problem(self) -> str | None:
        """What an operator must fix before teams can connect Salesforce, or None."""
        return missing_settings_problem("Salesforce", self.missing)

    def __post_init__(self) -> None:
        version = _API_VERSION.match(self.api_version.strip())
        if version is None:
            raise ConfigurationError(
                f"SALESFORCE_API_VERSION must look like v58.0, not {self.api_version[:20]!r}.",
                reason="PROVIDER_NOT_CONFIGURED",
                metadata={"provider": "salesforce", "setting": "SALESFORCE_API_VERSION"},
            )
        object.__setattr__(self, "api_version", f"v{version.group(1)}")
        login = self.login_url.strip().rstrip("/")
        parts = urlsplit(login)
        if not is_secure_url(login) or parts.query or parts.fragment:
            raise ConfigurationError(
                "SALESFORCE_LOGIN_URL must be an https URL such as https://login.salesforce.com, "
                "https://test.salesforce.com or the org's My Domain (plain http only for localhost).",
                reason="PROVIDER_NOT_CONFIGURED",
                metadata={"provider": "salesforce", "setting": "SALESFORCE_LOGIN_URL"},
            )
        object.__setattr__(self, "login_url", login)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SalesforceSettings:
        """Read ``SALESFORCE_*`` variables. Missing required ones are listed in ``missing``, never guessed.

        The client id, secret and redirect URL are required to connect a team (without them the service still
        starts: the provider reports ``configuration_problem()``); ``SALESFORCE_LOGIN_URL`` (default
        https://login.salesforce.com) and ``SALESFORCE_API_VERSION`` (default v58.0) are optional, and a value
        that is set but wrong is a ConfigurationError.
        """
        env = os.environ if environ is None else environ
        return cls(
            client_id=env.get("SALESFORCE_CLIENT_ID", "").strip(),
            client_secret=env.get("SALESFORCE_CLIENT_SECRET", "").strip(),
            redirect_url=env.get("SALESFORCE_REDIRECT_URL", "").strip(),
            missing=tuple(name for name in _REQUIRED if not env.get(name, "").strip()),
            login_url=(env.get("SALESFORCE_LOGIN_URL") or DEFAULT_LOGIN_URL).strip(),
            api_version=(env.get("SALESFORCE_API_VERSION") or DEFAULT_API_VERSION).strip(),
        )
