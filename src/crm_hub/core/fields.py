"""A CRM's contact fields (cached per team) and the team's mapping of lead fields onto them."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime

from crm_hub.core.caller import Caller
from crm_hub.core.credentials import CredentialStore
from crm_hub.core.leads import LEAD_FIELD_NAME
from crm_hub.core.retry import RetryPolicy
from crm_hub.errors import FailedPrecondition, FieldViolation, MappingInvalid
from crm_hub.observability.tracing import traced
from crm_hub.plugins import PluginHost
from crm_hub.providers import CrmField, CrmProvider, FieldType
from crm_hub.storage import Database, Integration, IntegrationRepository

__all__ = ["FIELDS_CACHE_SECONDS", "FieldCatalog", "validate_mapping"]

#: How long a team's field list is reused before the CRM is asked again.
FIELDS_CACHE_SECONDS = 300.0
MAX_MAPPING_ENTRIES = 200

#: Lead fields with a known meaning, and the CRM field types that can hold them.
_KNOWN_LEAD_FIELDS: dict[str, frozenset[FieldType]] = {
    "email": frozenset({"email", "string", "textarea"}),
    "phone": frozenset({"phone", "string", "textarea"}),
    "website": frozenset({"url", "string", "textarea"}),
}


class FieldCatalog:
    def __init__(
        self,
        database: Database,
        plugins: PluginHost,
        credentials: CredentialStore,
        *,
        cache_seconds: float = FIELDS_CACHE_SECONDS,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._database = database
        self._plugins = plugins
        self._credentials = credentials
        self._cache_seconds = cache_seconds
        self._retry = retry or RetryPolicy()
        #: (team, provider) → (fresh until, the integration's last status change, fields).
        self._cache: dict[tuple[str, str], tuple[float, datetime | None, list[CrmField]]] = {}

    @traced("list fields")
    async def list_fields(self, caller: Caller, provider: str) -> list[CrmField]:
        crm = self._plugins.providers().get(provider)
        async with self._database.session() as session:
            integration = await IntegrationRepository(session).get(caller.team_id, crm.name)
        return await self.fields_of(caller, crm, integration)

    async def fields_of(self, caller: Caller, crm: CrmProvider, integration: Integration | None) -> list[CrmField]:
        """The provider's fields for this team, from the cache while it is fresh and the integration has not
        changed since: a connect or disconnect on any replica (a new ``last_seen_at``) makes every replica ask
        the CRM again, not serve the previous account's fields for minutes."""
        key = (caller.team_id, crm.name)
        changed = integration.last_seen_at if integration is not None else None
        cached = self._cache.get(key)
        if cached is not None and cached[0] > time.monotonic() and cached[1] == changed:
            return cached[2]
        fields = await self._credentials.call(
            caller, crm, lambda tokens: self._retry.run(lambda: crm.list_fields(tokens))
        )
        self._cache[key] = (time.monotonic() + self._cache_seconds, changed, fields)
        return fields

    def forget(self, team_id: str, provider: str) -> None:
        """Drop the cached fields (on connect and disconnect: the account may have changed)."""
        self._cache.pop((team_id, provider), None)

    async def get_mapping(self, caller: Caller, provider: str) -> dict[str, str]:
        crm = self._plugins.providers().get(provider)
        async with self._database.session() as session:
            integration = await IntegrationRepository(session).get(caller.team_id, crm.name)
        if integration is None:
            return {}
        return dict(integration.settings.get("mapping") or {})

    @traced("save mapping")
    async def save_mapping(self, caller: Caller, provider: str, mapping: Mapping[str, str]) -> dict[str, str]:
        """Validate the mapping against the CRM's fields, then save it; nothing is saved if any entry is bad."""
        crm = self._plugins.providers().get(provider)
        async with self._database.session() as session:
            integration = await IntegrationRepository(session).get(caller.team_id, crm.name)
        fields = await self.fields_of(caller, crm, integration)
        validate_mapping(mapping, fields, provider_label=crm.label)
        async with self._database.session() as session:
            repository = IntegrationRepository(session)
            integration = await repository.get(caller.team_id, crm.name)
            if integration is None:
                raise FailedPrecondition(
                    f"The {crm.name} integration was never connected.", reason="PROVIDER_NOT_CONNECTED"
                )
            await repository.save_settings(caller.team_id, crm.name, {**integration.settings, "mapping": dict(mapping)})
        return dict(mapping)


def validate_mapping(mapping: Mapping[str, str], fields: list[CrmField], *, provider_label: str) -> None:
    """Every target exists and is writable, types fit, no target is fed twice, required fields are fed."""
    by_name = {field.name: field for field in fields}
    violations: list[FieldViolation] = []
    if not mapping:
        violations.append(FieldViolation("mapping", "map at least one lead field onto a CRM field"))
    if len(mapping) > MAX_MAPPING_ENTRIES:
        violations.append(FieldViolation("mapping", f"at most {MAX_MAPPING_ENTRIES} entries"))
    fed_by: dict[str, str] = {}
    for lead_field, target in sorted(mapping.items()):
        where = f"mapping[{lead_field[:64]}]"
        if not LEAD_FIELD_NAME.fullmatch(lead_field):
            violations.append(FieldViolation(where, "lead field names use letters, digits, _ . - (at most 64)"))
            continue
        field = by_name.get(target)
        if field is None:
            violations.append(FieldViolation(where, f"{target[:100]!r} is not a {provider_label} contact field"))
            continue
        if not field.writable:
            violations.append(FieldViolation(where, f"{provider_label} field {target!r} is read-only"))
        allowed = _KNOWN_LEAD_FIELDS.get(lead_field)
        if allowed is not None and field.type not in allowed:
            violations.append(
                FieldViolation(where, f"a lead's {lead_field} cannot go into {target!r}, a {field.type} field")
            )
        if target in fed_by:
            violations.append(FieldViolation(where, f"{target!r} is already fed by lead field {fed_by[target]!r}"))
        else:
            fed_by[target] = lead_field
    if mapping:
        for field in fields:
            if field.required and field.writable and field.name not in fed_by:
                violations.append(
                    FieldViolation(
                        "mapping",
                        f"{provider_label} requires {field.name!r} ({field.label}); map a lead field onto it",
                    )
                )
    if violations:
        raise MappingInvalid(
            f"The mapping cannot be saved: {len(violations)} problem(s). "
            + "; ".join(f"{v.field}: {v.description}" for v in violations[:5]),
            field_violations=violations,
        )
