"""The ``crm-hub`` command: serve, up, gateway, worker, migrate, token, plugins, status, rotate-keys."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import socket
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError

from crm_hub.core.caller import Caller, Principal, Role
from crm_hub.core.status import IntegrationState, StatusReporter
from crm_hub.errors import ConfigurationError, StorageUnavailable, VaultError
from crm_hub.plugins import PluginHost
from crm_hub.rpc.auth import mint_token
from crm_hub.service.application import Application, jwt_secret_for
from crm_hub.service.config import DEFAULT_METRICS_ADDRESS, Settings, check_listener_security
from crm_hub.service.log import configure_logging
from crm_hub.storage import CredentialRepository, Database, normalize_database_url, upgrade
from crm_hub.storage.vault import vault_from_settings

if TYPE_CHECKING:
    from crm_hub.gateway import GatewaySettings

__all__ = ["main"]

logger = logging.getLogger("crm_hub")


def _serve(settings: Settings, _: argparse.Namespace) -> int:
    from crm_hub.service.run import serve

    application = Application.from_settings(settings)
    asyncio.run(serve(application))
    return 0


def _up(settings: Settings, args: argparse.Namespace) -> int:
    from crm_hub.gateway import GatewayError, GatewaySettings
    from crm_hub.service.run import run_up

    if settings.metrics_address is None:  # everything in one process: its metrics and readiness too
        settings = dataclasses.replace(settings, metrics_address=_default_metrics_address())
    gateway = GatewaySettings.from_env()
    _check_gateway_listener(settings, gateway)
    try:
        if args.sandbox:
            return asyncio.run(_up_in_sandbox(settings, gateway))
        return asyncio.run(run_up(settings, gateway))
    except GatewayError as error:
        print(f"crm-hub: the gateway did not start: {error}", file=sys.stderr)
        return 1


def _default_metrics_address() -> str:
    """DEFAULT_METRICS_ADDRESS, or "off" when something else listens there: the default must not stop a start
    (an address the operator names does, when it cannot be served)."""
    host, _, port = DEFAULT_METRICS_ADDRESS.rpartition(":")
    with socket.socket() as probe:
        try:
            probe.bind((host, int(port)))
        except OSError:
            logger.warning(
                "the default metrics address is in use: metrics are off; set CRM_HUB_METRICS_ADDRESS to serve them",
                extra={"address": DEFAULT_METRICS_ADDRESS},
            )
            return "off"
    return DEFAULT_METRICS_ADDRESS


async def _up_in_sandbox(settings: Settings, gateway: GatewaySettings) -> int:
    """``crm-hub up --sandbox``: every installed provider pointed at its bundled fake, served on loopback."""
    from crm_hub.service.run import run_up

    plugins = PluginHost(allowlist=settings.plugins)
    http = gateway.http_address
    async with contextlib.AsyncExitStack() as stack:
        for sandbox in plugins.sandboxes():
            redirect_url = f"{gateway.scheme}://{http.host}:{http.port}/oauth/{sandbox.name}/callback"
            environment = await stack.enter_async_context(sandbox.serve(host="127.0.0.1", redirect_url=redirect_url))
            plugins.add_config(environment)  # read by the provider when its plugin registers it, just below
            logger.info("sandbox serving", extra={"provider": sandbox.name, "redirect_url": redirect_url})
        return await run_up(settings, gateway, application=Application.from_settings(settings, plugins=plugins))


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from crm_hub.queue import ProcrastinateQueue

    if args.concurrency is not None:
        settings = dataclasses.replace(settings, worker_concurrency=args.concurrency)
    application = Application.from_settings(settings)
    if not isinstance(application.jobs.queue, ProcrastinateQueue):
        raise ConfigurationError(
            "crm-hub worker runs sync jobs from PostgreSQL (DATABASE_URL=postgresql://...); on the embedded SQLite "
            "database, crm-hub serve and crm-hub up run them themselves."
        )
    from crm_hub.service.run import run_worker

    asyncio.run(run_worker(application))
    return 0


def _gateway(settings: Settings, _: argparse.Namespace) -> int:
    from crm_hub.gateway import GatewaySettings, run_gateway

    gateway = GatewaySettings.from_env()
    _check_gateway_listener(settings, gateway)
    return asyncio.run(run_gateway(gateway))


def _check_gateway_listener(settings: Settings, gateway: GatewaySettings) -> None:
    check_listener_security(
        settings, str(gateway.http_address), tls=gateway.tls, tls_settings="CRM_HUB_TLS_CERT and CRM_HUB_TLS_KEY"
    )


def _migrate(settings: Settings, _: argparse.Namespace) -> int:
    url = normalize_database_url(settings.database_url, data_dir=settings.data_dir)
    asyncio.run(upgrade(url))
    logger.info("database is up to date", extra={"dialect": url.partition(":")[0]})
    return 0


def _token(settings: Settings, args: argparse.Namespace) -> int:
    if settings.jwt_public_key and not settings.jwt_secret:
        raise ConfigurationError(
            "JWT_PUBLIC_KEY is set, so the service only accepts tokens signed by your identity provider; "
            "crm-hub token can only mint HS256 tokens from JWT_SECRET."
        )
    secret = jwt_secret_for(settings)
    print(
        mint_token(
            secret,
            team_id=args.team,
            role=args.role,
            subject=args.subject,
            ttl_seconds=args.ttl,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
    )
    return 0


def _plugins(settings: Settings, _: argparse.Namespace) -> int:
    host = PluginHost(allowlist=settings.plugins)
    registry = host.providers()
    plugins = host.plugins()
    if not plugins:
        print("No crm_hub plugins are installed.")
    for plugin in plugins:
        provided = [name for name in registry.names() if registry.origin(name).name == plugin.name]
        origin = f"{plugin.distribution} {plugin.version}".strip() or "in-process"
        print(f"{plugin.name:<32} {origin:<28} providers: {', '.join(provided) or '-'}")
    return 0


def _status(settings: Settings, args: argparse.Namespace) -> int:
    from crm_hub.service import status_report

    try:
        report, problems = asyncio.run(_read_status(settings, args.team))
    except (StorageUnavailable, DBAPIError) as error:
        # Never the error's text: a driver's message may hold the URL or the statement.
        problem = error.message if isinstance(error, StorageUnavailable) else type(error.orig).__name__
        print(
            f"crm-hub: cannot read the database ({problem}) Is DATABASE_URL right, and has `crm-hub migrate` run?",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(status_report.render_json(args.team, report))
    else:
        print(status_report.render_text(args.team, report, problems=problems, now=datetime.now(UTC)))
    return 0


async def _read_status(settings: Settings, team: str) -> tuple[dict[str, IntegrationState], dict[str, str | None]]:
    """The team's status as GetStatus reports it, and each installed provider's configuration problem.

    Only the database and the plugins: no vault, no JWT secret, so it needs none of the service's secrets.
    """
    plugins = PluginHost(allowlist=settings.plugins)
    registry = plugins.providers()  # a broken plugin is a configuration error, before the database is opened
    database = Database(normalize_database_url(settings.database_url, data_dir=settings.data_dir))
    # The caller an RPC of a team member would be; status needs no more than the member role.
    caller = Caller(
        Principal(subject="crm-hub status", team_id=team, role=Role.MEMBER), request_id=f"cli-{uuid.uuid4().hex}"
    )
    try:
        report = await StatusReporter(database, plugins).report(caller)
    finally:
        for provider in registry:
            await provider.aclose()
        for notifier in plugins.notifiers():
            await notifier.aclose()
        await database.close()
    return report, {provider.name: provider.configuration_problem() for provider in registry}


def _team_id(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("a team id is required")
    return value


async def _rotate(settings: Settings) -> tuple[int, int]:
    vault = vault_from_settings(
        secret_vault_key=settings.secret_vault_key,
        previous_keys=settings.secret_vault_previous_keys,
        data_dir=settings.data_dir,
        production=settings.production,
    )
    database = Database(normalize_database_url(settings.database_url, data_dir=settings.data_dir))
    rotated = current = 0
    try:
        # First check that every row can be opened, so a missing previous key changes nothing at all.
        async with database.session() as reader:
            async for chunk in CredentialRepository(reader).all_for_rotation():
                for row in chunk:
                    vault.decrypt(row.encrypted, team_id=row.team_id, provider=row.provider)
        async with database.session() as reader:
            async for chunk in CredentialRepository(reader).all_for_rotation():
                async with database.session() as writer:
                    repository = CredentialRepository(writer)
                    for row in chunk:
                        if not vault.needs_rotation(row.encrypted):
                            current += 1
                            continue
                        sealed = vault.reencrypt(row.encrypted, team_id=row.team_id, provider=row.provider)
                        if await repository.replace_encrypted(
                            row.id, row.team_id, row.provider, sealed, if_unchanged_since=row.updated_at
                        ):
                            rotated += 1
                    await writer.commit()
    finally:
        await database.close()
    return rotated, current


def _rotate_keys(settings: Settings, _: argparse.Namespace) -> int:
    rotated, current = asyncio.run(_rotate(settings))
    print(f"Re-encrypted {rotated} credential(s) with the current key; {current} already used it.")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crm-hub", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="serve gRPC on CRM_HUB_GRPC_ADDRESS").set_defaults(run=_serve)
    up = commands.add_parser("up", help="serve gRPC and the REST gateway (Envoy) on CRM_HUB_HTTP_ADDRESS")
    up.add_argument(
        "--sandbox", action="store_true", help="point every installed provider at its bundled fake CRM, served locally"
    )
    up.set_defaults(run=_up)
    commands.add_parser("gateway", help="run only Envoy, in front of CRM_HUB_GRPC_UPSTREAMS").set_defaults(run=_gateway)
    worker = commands.add_parser("worker", help="run sync jobs from PostgreSQL until SIGTERM (as many as you like)")
    worker.add_argument("--concurrency", type=int, help="batches run at once, for different CRM accounts (default 8)")
    worker.set_defaults(run=_worker)
    commands.add_parser("migrate", help="bring the database schema up to date").set_defaults(run=_migrate)
    token = commands.add_parser("token", help="mint a short-lived development token from JWT_SECRET")
    token.add_argument("--team", required=True, help="team_id claim")
    token.add_argument("--role", choices=[role.value for role in Role], default=Role.MEMBER.value)
    token.add_argument("--subject", default="dev", help="sub claim (default: dev)")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default: 3600)")
    token.set_defaults(run=_token)
    commands.add_parser("plugins", help="list loaded plugins and their providers").set_defaults(run=_plugins)
    status = commands.add_parser(
        "status", help="a team's integrations: connection, last sync, lead counts, success rate, rate budgets"
    )
    status.add_argument("--team", required=True, type=_team_id, help="the team's id (team_id claim of its tokens)")
    status.add_argument("--json", action="store_true", help="print the REST answer of GET /integrations/status")
    status.set_defaults(run=_status)
    commands.add_parser("rotate-keys", help="re-encrypt every stored credential with SECRET_VAULT_KEY").set_defaults(
        run=_rotate_keys
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        configure_logging(settings.log_level, settings.log_format, personal_data=settings.log_personal_data)
        return int(args.run(settings, args))
    except ConfigurationError as error:
        print(f"crm-hub: configuration error: {error.message}", file=sys.stderr)
        return 2
    except VaultError as error:
        print(
            f"crm-hub: a stored credential cannot be decrypted: {error.message} "
            "List every key still in use in SECRET_VAULT_PREVIOUS_KEYS; nothing was changed.",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
