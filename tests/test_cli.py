"""The ``crm-hub`` command, run in-process: token, migrate, plugins, rotate-keys — what an operator types and sees."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import inspect, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from crm_hub.core.caller import Role
from crm_hub.rpc.auth import TokenVerifier
from crm_hub.service.cli import main
from crm_hub.service.config import DEFAULT_METRICS_ADDRESS
from crm_hub.storage import Credential, CredentialRepository, Database, TeamRepository, upgrade, utcnow
from crm_hub.storage.vault import Vault
from tests.support.fake_distribution import FakeSite, fake_site_in
from tests.support.fresh_database import fresh_database_url

pytestmark = pytest.mark.usefixtures("restore_logging")

JWT_SECRET = "cli-test-jwt-secret-at-least-32-bytes"
OLD_VAULT_KEY = "cli-old-vault-key-0123456789abcdef"
NEW_VAULT_KEY = "cli-new-vault-key-fedcba9876543210"
TOKENS = {"access_token": "access-secret-1", "refresh_token": "refresh-secret-1"}
REFRESHED_TOKENS = {"access_token": "access-secret-2", "refresh_token": "refresh-secret-2"}
PROVIDER = "hubspot"
_OUR_VARIABLES = ("CRM_HUB_", "DATABASE_URL", "JWT_", "SECRET_VAULT_", "SLACK_WEBHOOK_URL")


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A clean environment whose data directory is the test's own; returns that directory."""
    for name in list(os.environ):
        if name.startswith(_OUR_VARIABLES):
            monkeypatch.delenv(name)
    data_dir = tmp_path / "var"
    monkeypatch.setenv("CRM_HUB_DATA_DIR", str(data_dir))
    # Only the plugins a test installs itself: the environment may hold others.
    monkeypatch.setenv("CRM_HUB_PLUGINS", "")
    return data_dir


@pytest.fixture
def fake_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSite]:
    with fake_site_in(tmp_path, monkeypatch) as site:
        yield site


@pytest.fixture
async def empty_database_url(database_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """A database of this test's own, with no schema, on the backend of ``database_url``."""
    async with fresh_database_url(database_url, tmp_path) as url:
        yield url


@pytest.fixture
async def migrated_database_url(empty_database_url: str) -> str:
    await upgrade(empty_database_url)
    return empty_database_url


@pytest.fixture(scope="module")
def old_vault() -> Vault:
    return Vault(OLD_VAULT_KEY)


@pytest.fixture(scope="module")
def new_vault() -> Vault:
    """The new key alone: what the service runs with once the old key is retired."""
    return Vault(NEW_VAULT_KEY)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


async def run_async(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    """``run`` from an async test: main() starts its own event loop, so it gets a thread of its own."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(args))
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def _team() -> str:
    return f"cli-team-{uuid.uuid4().hex[:10]}"


# -- token ----------------------------------------------------------------------------------------


def test_token_prints_a_jwt_that_jwt_secret_verifies(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JWT_SECRET", JWT_SECRET)

    result = run(capsys, "token", "--team", "team-acme", "--role", "admin")

    assert result.code == 0
    principal = TokenVerifier(secret=JWT_SECRET).verify(result.out.strip())
    assert (principal.team_id, principal.role, principal.subject) == ("team-acme", Role.ADMIN, "dev")


def test_token_is_a_member_token_by_default_and_carries_the_subject(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JWT_SECRET", JWT_SECRET)

    result = run(capsys, "token", "--team", "team-acme", "--subject", "alice@example.test")

    principal = TokenVerifier(secret=JWT_SECRET).verify(result.out.strip())
    assert (principal.role, principal.subject) == (Role.MEMBER, "alice@example.test")


def test_token_carries_the_configured_issuer_and_audience(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JWT_SECRET", JWT_SECRET)
    monkeypatch.setenv("JWT_ISSUER", "https://id.example.test/")
    monkeypatch.setenv("JWT_AUDIENCE", "crm-hub")

    result = run(capsys, "token", "--team", "team-acme")

    verifier = TokenVerifier(secret=JWT_SECRET, issuer="https://id.example.test/", audience="crm-hub")
    assert verifier.verify(result.out.strip()).team_id == "team-acme"


def test_token_with_an_unknown_role_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["token", "--team", "team-acme", "--role", "owner"])

    assert caught.value.code == 2
    assert "invalid choice: 'owner'" in capsys.readouterr().err


def test_token_without_jwt_secret_in_development_generates_one_secret_and_reuses_it(
    capsys: pytest.CaptureFixture[str], environment: Path
) -> None:
    first = run(capsys, "token", "--team", "team-acme", "--role", "admin")
    secret_file = environment / "jwt.secret"
    secret = secret_file.read_text().strip()
    second = run(capsys, "token", "--team", "team-acme")

    assert (first.code, second.code) == (0, 0)
    assert "JWT_SECRET is not set" in first.err
    assert "JWT_SECRET is not set" not in second.err, "the secret is generated once, then reused quietly"
    assert secret_file.read_text().strip() == secret
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    verifier = TokenVerifier(secret=secret)
    assert verifier.verify(first.out.strip()).role is Role.ADMIN
    assert verifier.verify(second.out.strip()).role is Role.MEMBER


def test_token_without_jwt_secret_in_production_is_a_configuration_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, environment: Path
) -> None:
    monkeypatch.setenv("CRM_HUB_ENV", "production")

    result = run(capsys, "token", "--team", "team-acme")

    assert result.code == 2
    assert result.out == ""
    assert result.err.strip() == (
        "crm-hub: configuration error: JWT_SECRET or JWT_PUBLIC_KEY is required when CRM_HUB_ENV=production."
    )
    assert not (environment / "jwt.secret").exists()


def test_token_refuses_when_the_service_verifies_with_a_public_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    public_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    monkeypatch.setenv("JWT_PUBLIC_KEY", public_pem.decode())

    result = run(capsys, "token", "--team", "team-acme")

    assert result.code == 2
    assert "JWT_PUBLIC_KEY" in result.err


# -- migrate --------------------------------------------------------------------------------------


async def test_migrate_creates_the_schema_and_is_idempotent(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, empty_database_url: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", empty_database_url)

    first = await run_async(capsys, "migrate")
    second = await run_async(capsys, "migrate")

    assert (first.code, second.code) == (0, 0)
    assert "database is up to date" in first.err
    assert "database is up to date" in second.err
    database = Database(empty_database_url)
    try:
        async with database.engine.connect() as connection:
            tables = set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))
            versions = (await connection.exec_driver_sql("SELECT version_num FROM alembic_version")).all()
    finally:
        await database.close()
    assert {"teams", "credentials", "integrations", "leads", "timeline_events", "oauth_states"} <= tables
    assert len(versions) == 1


def test_migrate_with_an_unsupported_database_url_says_so_without_echoing_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://crm:hunter2-password@db/crm")

    result = run(capsys, "migrate")

    assert result.code == 2
    assert "configuration error: Bad database URL: scheme 'mysql' is not supported" in result.err
    assert "hunter2-password" not in result.err


# -- plugins --------------------------------------------------------------------------------------


def test_plugins_lists_no_provider_when_no_plugin_is_enabled(capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "plugins")

    assert result.code == 0
    lines = result.out.splitlines()
    assert lines, "the command must say something"
    # Nothing but built-in features (which provide no CRM), or the sentence saying there is nothing.
    assert all(line == "No crm_hub plugins are installed." or line.endswith("providers: -") for line in lines)


def test_plugins_lists_an_installed_plugin_with_its_distribution_version_and_providers(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, fake_site: FakeSite
) -> None:
    fake_site.install("crm-hub-fakecrm", version="2.5.0", entry_point="fakecrm", provider="fakecrm")
    fake_site.activate()
    monkeypatch.setenv("CRM_HUB_PLUGINS", "crm-hub-fakecrm")

    result = run(capsys, "plugins")

    assert result.code == 0
    (line,) = [line for line in result.out.splitlines() if line.startswith("fakecrm ")]
    assert line.split() == ["fakecrm", "crm-hub-fakecrm", "2.5.0", "providers:", "fakecrm"]


def test_plugins_with_a_broken_plugin_exits_2_naming_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, fake_site: FakeSite
) -> None:
    fake_site.install("crm-hub-broken", entry_point="broken", source="import a_module_that_is_not_installed\n")
    fake_site.activate()
    monkeypatch.setenv("CRM_HUB_PLUGINS", "broken")

    result = run(capsys, "plugins")

    assert result.code == 2
    assert "crm-hub: configuration error: Plugin 'broken'" in result.err
    assert "a_module_that_is_not_installed" in result.err


def test_plugins_with_a_misspelled_hook_exits_2_naming_the_hook(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, fake_site: FakeSite
) -> None:
    typo = """
    from crm_hub.hookspecs import hookimpl


    @hookimpl
    def register_provider(register):
        pass
    """
    fake_site.install("crm-hub-typo", entry_point="typo", source=typo)
    fake_site.activate()
    monkeypatch.setenv("CRM_HUB_PLUGINS", "typo")

    result = run(capsys, "plugins")

    assert result.code == 2
    assert "register_provider" in result.err


# -- rotate-keys ----------------------------------------------------------------------------------


async def _store_credentials(url: str, vault: Vault, teams: list[str], tokens: dict[str, Any]) -> None:
    database = Database(url)
    try:
        async with database.session() as session:
            for team in teams:
                await TeamRepository(session).ensure(team)
                envelope = vault.encrypt(tokens, team_id=team, provider=PROVIDER)
                await CredentialRepository(session).put(team, PROVIDER, envelope)
    finally:
        await database.close()


async def _stored_envelopes(url: str) -> dict[str, dict[str, Any]]:
    database = Database(url)
    try:
        async with database.session() as session:
            rows = (await session.scalars(select(Credential))).all()
            return {row.team_id: dict(row.encrypted) for row in rows}
    finally:
        await database.close()


def _use_rotated_keys(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("SECRET_VAULT_KEY", NEW_VAULT_KEY)
    monkeypatch.setenv("SECRET_VAULT_PREVIOUS_KEYS", OLD_VAULT_KEY)


async def test_rotate_keys_reencrypts_every_credential_with_the_new_key(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    migrated_database_url: str,
    old_vault: Vault,
    new_vault: Vault,
) -> None:
    teams = [_team(), _team()]
    await _store_credentials(migrated_database_url, old_vault, teams, TOKENS)
    _use_rotated_keys(monkeypatch, migrated_database_url)

    first = await run_async(capsys, "rotate-keys")
    envelopes = await _stored_envelopes(migrated_database_url)
    second = await run_async(capsys, "rotate-keys")

    assert first.code == 0
    assert first.out.strip() == "Re-encrypted 2 credential(s) with the current key; 0 already used it."
    assert sorted(envelopes) == sorted(teams)
    for team, envelope in envelopes.items():
        assert envelope["kid"] == new_vault.current_key_id != old_vault.current_key_id
        assert new_vault.decrypt(envelope, team_id=team, provider=PROVIDER) == TOKENS
    assert second.code == 0
    assert second.out.strip() == "Re-encrypted 0 credential(s) with the current key; 2 already used it."
    for secret in (NEW_VAULT_KEY, OLD_VAULT_KEY, *TOKENS.values()):
        assert secret not in first.out + first.err


async def test_rotate_keys_without_the_old_key_exits_2_naming_previous_keys(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, migrated_database_url: str, old_vault: Vault
) -> None:
    await _store_credentials(migrated_database_url, old_vault, [_team()], TOKENS)
    _use_rotated_keys(monkeypatch, migrated_database_url)
    monkeypatch.delenv("SECRET_VAULT_PREVIOUS_KEYS")

    result = await run_async(capsys, "rotate-keys")

    assert result.code == 2
    assert "SECRET_VAULT_PREVIOUS_KEYS" in result.err


def _write_now(url: str, team: str, envelope: dict[str, Any]) -> None:
    """Another replica's write, committed at once, through a connection of its own."""
    sync_url = make_url(url)
    if sync_url.get_backend_name() == "sqlite":
        sync_url = sync_url.set(drivername="sqlite")
    engine = sqlalchemy.create_engine(sync_url)
    try:
        with Session(engine) as session:
            session.execute(
                update(Credential)
                .where(Credential.team_id == team, Credential.provider == PROVIDER)
                .values(encrypted=envelope, updated_at=utcnow())
            )
            session.commit()
    finally:
        engine.dispose()


async def test_rotate_keys_never_overwrites_tokens_refreshed_meanwhile(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    migrated_database_url: str,
    old_vault: Vault,
    new_vault: Vault,
) -> None:
    team = _team()
    await _store_credentials(migrated_database_url, old_vault, [team], TOKENS)
    _use_rotated_keys(monkeypatch, migrated_database_url)
    reencrypt = Vault.reencrypt

    def refresh_lands_meanwhile(self: Vault, envelope: dict[str, Any], *, team_id: str, provider: str) -> Any:
        # The server refreshes the tokens (sealing them with the current key) after rotate-keys read the row.
        _write_now(
            migrated_database_url, team_id, new_vault.encrypt(REFRESHED_TOKENS, team_id=team_id, provider=provider)
        )
        return reencrypt(self, envelope, team_id=team_id, provider=provider)

    monkeypatch.setattr(Vault, "reencrypt", refresh_lands_meanwhile)

    result = await run_async(capsys, "rotate-keys")

    assert result.code == 0
    envelope = (await _stored_envelopes(migrated_database_url))[team]
    assert new_vault.decrypt(envelope, team_id=team, provider=PROVIDER) == REFRESHED_TOKENS


@pytest.mark.parametrize("command", ["up", "gateway"])
def test_production_refuses_a_plaintext_gateway_beyond_loopback_before_starting_anything(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setenv("CRM_HUB_ENV", "production")
    monkeypatch.setenv("CRM_HUB_HTTP_ADDRESS", "0.0.0.0:8443")

    result = run(capsys, command)

    assert result.code == 2
    assert "refuses to listen in plaintext on 0.0.0.0:8443" in result.err
    assert "CRM_HUB_TLS_CERT" in result.err
    assert "CRM_HUB_BEHIND_TLS_PROXY" in result.err


def test_the_default_metrics_address_is_the_conventional_exporter_port_on_loopback() -> None:
    assert DEFAULT_METRICS_ADDRESS == "127.0.0.1:9464"


@pytest.mark.parametrize(("given", "served"), [(None, "default"), ("off", "off"), ("127.0.0.1:9999", "127.0.0.1:9999")])
def test_up_serves_metrics_on_the_default_address_unless_told_otherwise(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, given: str | None, served: str
) -> None:
    import crm_hub.service.cli
    import crm_hub.service.run

    seen: list[Any] = []

    async def record_run_up(settings: Any, gateway: Any, **_: Any) -> int:
        seen.append(settings.metrics_address)
        return 0

    with socket.socket() as free:  # a port nothing listens on stands in for the default, whatever runs here
        free.bind(("127.0.0.1", 0))
        default = f"127.0.0.1:{free.getsockname()[1]}"
    monkeypatch.setattr(crm_hub.service.cli, "DEFAULT_METRICS_ADDRESS", default)
    monkeypatch.setattr(crm_hub.service.run, "run_up", record_run_up)
    if given is not None:
        monkeypatch.setenv("CRM_HUB_METRICS_ADDRESS", given)

    assert run(capsys, "up").code == 0
    assert seen == [default if served == "default" else served]


def test_up_runs_without_metrics_when_the_default_address_is_taken_and_says_so(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import crm_hub.service.cli
    import crm_hub.service.run

    seen: list[Any] = []

    async def record_run_up(settings: Any, gateway: Any, **_: Any) -> int:
        seen.append(settings.metrics_address)
        return 0

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setattr(crm_hub.service.cli, "DEFAULT_METRICS_ADDRESS", f"127.0.0.1:{taken.getsockname()[1]}")
        monkeypatch.setattr(crm_hub.service.run, "run_up", record_run_up)
        result = run(capsys, "up")

    assert (result.code, seen) == (0, ["off"])
    assert "the default metrics address is in use" in result.err
