"""crm_hub.service.config: Settings read once from the environment, validated, and safe to log."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from crm_hub.errors import ConfigurationError
from crm_hub.service.application import Application
from crm_hub.service.config import DEFAULT_GRPC_ADDRESS, Settings

DB_PASSWORD = "db-pa55word-that-must-not-leak"
VAULT_KEY = "vault-key-that-must-not-leak-0123"
OLD_VAULT_KEY = "old-vault-key-that-must-not-leak-456"
JWT_SECRET = "jwt-secret-that-must-not-leak-789abc"


def test_defaults_serve_on_localhost_with_the_embedded_data_dir_in_development() -> None:
    settings = Settings.from_env({})

    assert settings.grpc_address == DEFAULT_GRPC_ADDRESS == "127.0.0.1:50051"
    assert settings.data_dir == Path("./var")
    assert settings.environment == "development"
    assert settings.production is False
    assert settings.database_url is None
    assert settings.secret_vault_key is None
    assert settings.jwt_secret is None
    assert settings.jwt_public_key is None
    assert settings.plugins is None
    assert (settings.log_level, settings.log_format) == ("INFO", "json")


def test_from_env_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_HUB_GRPC_ADDRESS", "0.0.0.0:6000")
    monkeypatch.setenv("CRM_HUB_DATA_DIR", "/srv/crm-hub")

    settings = Settings.from_env()

    assert settings.grpc_address == "0.0.0.0:6000"
    assert settings.data_dir == Path("/srv/crm-hub")


@pytest.mark.parametrize("value", ["production", "Production", " PRODUCTION "])
def test_production_environment_is_recognised_in_any_case(value: str) -> None:
    settings = Settings.from_env({"CRM_HUB_ENV": value})

    assert settings.environment == "production"
    assert settings.production is True


def test_blank_environment_means_development() -> None:
    assert Settings.from_env({"CRM_HUB_ENV": "  "}).environment == "development"


@pytest.mark.parametrize("value", ["staging", "prod", "dev"])
def test_unknown_environment_is_a_configuration_error_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({"CRM_HUB_ENV": value})

    assert "CRM_HUB_ENV" in caught.value.message
    assert repr(value) in caught.value.message


@pytest.mark.parametrize(
    ("environ", "plugins"),
    [
        ({}, None),
        ({"CRM_HUB_PLUGINS": ""}, ()),
        ({"CRM_HUB_PLUGINS": " , "}, ()),
        ({"CRM_HUB_PLUGINS": "a, b"}, ("a", "b")),
        ({"CRM_HUB_PLUGINS": "crm-hub-hubspot,,salesforce "}, ("crm-hub-hubspot", "salesforce")),
    ],
    ids=["unset-loads-all", "empty-loads-none", "only-commas-loads-none", "two-names", "blanks-dropped"],
)
def test_plugin_allowlist_parsing(environ: dict[str, str], plugins: tuple[str, ...] | None) -> None:
    assert Settings.from_env(environ).plugins == plugins


def test_blank_secrets_count_as_unset() -> None:
    settings = Settings.from_env({"SECRET_VAULT_KEY": "   ", "JWT_SECRET": "", "DATABASE_URL": " "})

    assert (settings.secret_vault_key, settings.jwt_secret, settings.database_url) == (None, None, None)


def test_unknown_log_format_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="CRM_HUB_LOG_FORMAT"):
        Settings.from_env({"CRM_HUB_LOG_FORMAT": "xml"})


def test_unknown_log_level_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="CRM_HUB_LOG_LEVEL"):
        Settings.from_env({"CRM_HUB_LOG_LEVEL": "loud"})


def test_repr_never_shows_the_database_password_vault_keys_or_jwt_secret() -> None:
    settings = Settings.from_env(
        {
            "CRM_HUB_ENV": "production",
            "DATABASE_URL": f"postgresql://crm:{DB_PASSWORD}@db.internal:5432/crm",
            "SECRET_VAULT_KEY": VAULT_KEY,
            "SECRET_VAULT_PREVIOUS_KEYS": OLD_VAULT_KEY,
            "JWT_SECRET": JWT_SECRET,
            "JWT_ISSUER": "https://id.example.test/",
        }
    )

    shown = repr(settings)

    assert "environment='production'" in shown
    assert "https://id.example.test/" in shown
    for secret in (DB_PASSWORD, VAULT_KEY, OLD_VAULT_KEY, JWT_SECRET):
        assert secret not in shown
    assert str(settings) == shown


def test_setting_both_jwt_secret_and_jwt_public_key_is_a_configuration_error(tmp_path: Path) -> None:
    public_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    settings = Settings(
        data_dir=tmp_path,
        jwt_secret=JWT_SECRET,
        jwt_public_key=public_pem.decode(),
        secret_vault_key=VAULT_KEY,
        plugins=(),
    )

    with pytest.raises(ConfigurationError, match="JWT_SECRET"):
        Application.from_settings(settings)
