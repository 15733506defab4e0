"""crm_hub.storage.vault: credentials sealed with AES-256-GCM, bound to team and provider, rotatable."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crm_hub.errors import ConfigurationError, InvalidArgument, VaultError
from crm_hub.storage import vault as vault_module
from crm_hub.storage.vault import (
    Vault,
    load_or_create_embedded_key,
    parse_previous_keys,
    vault_from_settings,
)

OLD_KEY = "old-master-secret-4f1b2c9d8e7a6b5c"
NEW_KEY = "new-master-secret-a1b2c3d4e5f60718"
OTHER_KEY = "unrelated-secret-0f9e8d7c6b5a4938"
# Low PBKDF2 cost for tests about envelopes, not about key derivation. The key id always uses
# 100,000 iterations whatever this is, so building a Vault still costs one full run per secret.
FAST = 1_000

ACCESS_TOKEN = "ya29.a0AfH6SMBx-very-secret-access-token"
TOKENS: dict[str, Any] = {
    "access_token": ACCESS_TOKEN,
    "refresh_token": "1//0gRefreshTokenThatMustNeverLeak",
    "expires_at": 1767225600,
    "scope": "crm.objects.contacts.write crm.objects.contacts.read",
    "token_type": "Bearer",
}
TEAM = "team_42"
PROVIDER = "hubspot"


@pytest.fixture(scope="module")
def old_vault() -> Vault:
    return Vault(OLD_KEY, iterations=FAST)


@pytest.fixture(scope="module")
def rotated_vault() -> Vault:
    """After rotation: the new key encrypts, the old one still decrypts."""
    return Vault(NEW_KEY, [OLD_KEY], iterations=FAST)


@pytest.fixture(scope="module")
def new_only_vault() -> Vault:
    """After the old key has been retired."""
    return Vault(NEW_KEY, iterations=FAST)


def _flip_first_byte(b64url: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(b64url + "=" * (-len(b64url) % 4)))
    raw[0] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def _key_file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def count_pbkdf2(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Counts PBKDF2 runs from now on; yields a function returning the count so far."""
    calls = 0
    real = vault_module._pbkdf2_sha512

    def counting(secret: bytes, salt: bytes, iterations: int, length: int) -> bytes:
        nonlocal calls
        calls += 1
        return real(secret, salt, iterations, length)

    monkeypatch.setattr(vault_module, "_pbkdf2_sha512", counting)
    return lambda: calls


# --- sealing and opening ---------------------------------------------------------------------------


def test_round_trip_returns_the_same_credentials(old_vault: Vault) -> None:
    envelope = old_vault.encrypt(TOKENS, team_id=TEAM, provider=PROVIDER)

    assert old_vault.decrypt(envelope, team_id=TEAM, provider=PROVIDER) == TOKENS


def test_envelope_survives_being_stored_as_json(old_vault: Vault) -> None:
    stored = json.dumps(old_vault.encrypt(TOKENS, team_id=TEAM, provider=PROVIDER))

    assert old_vault.decrypt(json.loads(stored), team_id=TEAM, provider=PROVIDER) == TOKENS


def test_envelope_records_key_id_and_contains_no_plaintext(old_vault: Vault) -> None:
    envelope = old_vault.encrypt(TOKENS, team_id=TEAM, provider=PROVIDER)
    stored = json.dumps(envelope)

    assert set(envelope) == {"v", "alg", "kid", "salt", "iv", "ct"}
    assert envelope["v"] == 1
    assert envelope["alg"] == "A256GCM"
    assert envelope["kid"] == old_vault.current_key_id
    for secret_value in (ACCESS_TOKEN, TOKENS["refresh_token"], "access_token", OLD_KEY):
        assert secret_value not in stored


def test_each_encryption_uses_a_fresh_iv(old_vault: Vault) -> None:
    first = old_vault.encrypt(TOKENS, team_id=TEAM, provider=PROVIDER)
    second = old_vault.encrypt(TOKENS, team_id=TEAM, provider=PROVIDER)

    assert first["iv"] != second["iv"]
    assert first["ct"] != second["ct"]


@pytest.mark.parametrize("field", ["ct", "iv", "salt"])
def test_flipped_byte_fails_authentication(old_vault: Vault, field: str) -> None:
    envelope = old_vault.encrypt(TOKENS, team_id=TEAM, provider=PROVIDER)
    tampered = {**envelope, field: _flip_first_byte(envelope[field])}

    with pytest.raises(VaultError, match="ciphertext failed authentication"):
        old_vault.decrypt(tampered, team_id=TEAM, provider=PROVIDER)


def test_ciphertext_copied_to_another_team_fails(old_vault: Vault) -> None:
    envelope = old_vault.encrypt(TOKENS, team_id=TEAM, provider=PROVIDER)

    with pytest.raises(VaultError, match=r"stored under another team/provider"):
        old_vault.decrypt(envelope, team_id="team_43", provider=PROVIDER)


def test_ciphertext_copied_to_another_provider_fails(old_vault: Vault) -> None:
    envelope = old_vault.encrypt(TOKENS, team_id=TEAM, provider=PROVIDER)

    with pytest.raises(VaultError, match=r"stored under another team/provider"):
        old_vault.decrypt(envelope, team_id=TEAM, provider="salesforce")


def test_team_and_provider_cannot_be_shifted_across_the_separator(old_vault: Vault) -> None:
    with pytest.raises(InvalidArgument, match="team_id must not contain NUL"):
        old_vault.encrypt(TOKENS, team_id="team\x00hubspot", provider="x")


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        (lambda e: {k: v for k, v in e.items() if k != "ct"}, "'ct' is not base64url"),
        (lambda e: {**e, "v": 2}, "unsupported version 2"),
        (lambda e: {**e, "v": True}, "unsupported version"),
        (lambda e: {**e, "alg": "A128GCM"}, "unsupported algorithm"),
        (lambda e: {**e, "kid": "not-a-key-id"}, "bad key id"),
        (lambda e: {**e, "iv": e["iv"] + "!"}, "'iv' is not base64url"),
        (lambda e: {**e, "iv": e["iv"][:8]}, "iv must be 12 bytes"),
        (lambda e: {**e, "ct": "AAAA"}, "ciphertext is shorter than the tag"),
        (lambda e: [e], "not a JSON object"),
    ],
    ids=[
        "missing-ct",
        "future-version",
        "bool-version",
        "other-alg",
        "bad-kid",
        "bad-b64",
        "short-iv",
        "short-ct",
        "not-a-mapping",
    ],
)
def test_malformed_envelope_is_refused_as_malformed(
    old_vault: Vault, change: Callable[[dict[str, Any]], Any], detail: str
) -> None:
    envelope = change(old_vault.encrypt(TOKENS, team_id=TEAM, provider=PROVIDER))

    with pytest.raises(VaultError, match="malformed envelope") as raised:
        old_vault.decrypt(envelope, team_id=TEAM, provider=PROVIDER)
    assert detail in raised.value.message


# --- key ids and rotation --------------------------------------------------------------------------


def test_key_id_is_a_slow_pbkdf2_hash_not_a_fast_one() -> None:
    expected = hashlib.pbkdf2_hmac("sha512", OTHER_KEY.encode(), b"crm_hub/vault/key-id", 100_000)[:8].hex()

    vault = Vault(OTHER_KEY, iterations=FAST)

    assert vault.current_key_id == expected
    assert vault.current_key_id != hashlib.sha256(OTHER_KEY.encode()).hexdigest()[:16]
    assert vault.current_key_id != hashlib.sha512(OTHER_KEY.encode()).hexdigest()[:16]


def test_key_id_does_not_depend_on_iterations_or_surrounding_whitespace(old_vault: Vault) -> None:
    assert Vault(f"  {OLD_KEY}\n").current_key_id == old_vault.current_key_id


def test_rotated_vault_decrypts_rows_sealed_with_the_old_key(old_vault: Vault, rotated_vault: Vault) -> None:
    old_row = old_vault.encrypt(TOKENS, team_id=TEAM, provider=PROVIDER)

    assert rotated_vault.decrypt(old_row, team_id=TEAM, provider=PROVIDER) == TOKENS
    assert rotated_vault.needs_rotation(old_row) is True


def test_rows_sealed_with_the_current_key_do_not_need_rotation(rotated_vault: Vault) -> None:
    row = rotated_vault.encrypt(TOKENS, team_id=TEAM, provider=PROVIDER)

    assert row["kid"] == rotated_vault.current_key_id
    assert rotated_vault.needs_rotation(row) is False


def test_reencrypt_moves_a_row_to_the_new_key_so_the_old_key_can_be_retired(
    old_vault: Vault, rotated_vault: Vault, new_only_vault: Vault
) -> None:
    old_row = old_vault.encrypt(TOKENS, team_id=TEAM, provider=PROVIDER)

    new_row = rotated_vault.reencrypt(old_row, team_id=TEAM, provider=PROVIDER)

    assert new_row["kid"] == new_only_vault.current_key_id != old_row["kid"]
    assert rotated_vault.needs_rotation(new_row) is False
    assert new_only_vault.decrypt(new_row, team_id=TEAM, provider=PROVIDER) == TOKENS


def test_reencrypt_keeps_the_team_and_provider_binding(old_vault: Vault, rotated_vault: Vault) -> None:
    new_row = rotated_vault.reencrypt(
        old_vault.encrypt(TOKENS, team_id=TEAM, provider=PROVIDER), team_id=TEAM, provider=PROVIDER
    )

    with pytest.raises(VaultError, match="failed authentication"):
        rotated_vault.decrypt(new_row, team_id="team_43", provider=PROVIDER)


def test_unknown_key_id_fails_with_a_hint_about_previous_keys(old_vault: Vault, new_only_vault: Vault) -> None:
    old_row = old_vault.encrypt(TOKENS, team_id=TEAM, provider=PROVIDER)

    with pytest.raises(VaultError) as raised:
        new_only_vault.decrypt(old_row, team_id=TEAM, provider=PROVIDER)

    message = raised.value.message
    assert "unknown key id" in message
    assert "SECRET_VAULT_PREVIOUS_KEYS" in message
    assert old_vault.current_key_id in message  # which key is missing, by id
    assert raised.value.reason == "VAULT_DECRYPT_FAILED"


def test_duplicate_secrets_are_ignored() -> None:
    vault = Vault(NEW_KEY, [NEW_KEY, OLD_KEY, f" {OLD_KEY} "], iterations=FAST)

    assert len(vault.previous_key_ids) == 1
    assert vault.current_key_id not in vault.previous_key_ids


# --- key derivation is cached ----------------------------------------------------------------------


def test_key_is_derived_once_for_many_encryptions_and_decryptions(count_pbkdf2: Callable[[], int]) -> None:
    vault = Vault(OTHER_KEY)  # default cost: this is what production pays
    after_construction = count_pbkdf2()  # the key id

    envelopes = [vault.encrypt(TOKENS, team_id=TEAM, provider=PROVIDER) for _ in range(50)]
    for envelope in envelopes:
        assert vault.decrypt(envelope, team_id=TEAM, provider=PROVIDER) == TOKENS

    assert after_construction == 1
    assert count_pbkdf2() - after_construction == 1


def test_row_from_another_process_costs_one_derivation_then_is_cached(
    count_pbkdf2: Callable[[], int],
) -> None:
    writer = Vault(OLD_KEY, iterations=FAST)  # another process: its own salt
    rows = [writer.encrypt(TOKENS, team_id=TEAM, provider=PROVIDER) for _ in range(20)]
    reader = Vault(OLD_KEY, iterations=FAST)
    before = count_pbkdf2()

    for row in rows:
        reader.decrypt(row, team_id=TEAM, provider=PROVIDER)

    assert count_pbkdf2() - before == 1


def test_key_cache_is_bounded(monkeypatch: pytest.MonkeyPatch, count_pbkdf2: Callable[[], int]) -> None:
    monkeypatch.setattr(vault_module, "KEY_CACHE_SIZE", 2)
    writers = [Vault(OLD_KEY, iterations=FAST) for _ in range(3)]  # three salts
    rows = [writer.encrypt(TOKENS, team_id=TEAM, provider=PROVIDER) for writer in writers]
    reader = Vault(OLD_KEY, iterations=FAST)
    before = count_pbkdf2()

    for row in [*rows, rows[2], rows[0]]:
        reader.decrypt(row, team_id=TEAM, provider=PROVIDER)

    # Three cold salts, then rows[2] is still cached and rows[0] was evicted.
    assert count_pbkdf2() - before == 4


# --- secrets never leak ----------------------------------------------------------------------------


def test_repr_shows_key_ids_only(rotated_vault: Vault) -> None:
    text = repr(rotated_vault)

    assert rotated_vault.current_key_id in text
    assert all(kid in text for kid in rotated_vault.previous_key_ids)
    assert NEW_KEY not in text
    assert OLD_KEY not in text
    assert str(rotated_vault) == text


def test_decrypt_errors_never_contain_secret_plaintext_or_ciphertext(
    old_vault: Vault, rotated_vault: Vault, new_only_vault: Vault
) -> None:
    envelope = old_vault.encrypt(TOKENS, team_id=TEAM, provider=PROVIDER)
    attempts: list[tuple[Vault, dict[str, Any], str]] = [
        (old_vault, {**envelope, "ct": _flip_first_byte(envelope["ct"])}, TEAM),
        (rotated_vault, envelope, "team_43"),
        (new_only_vault, envelope, TEAM),
        (old_vault, {**envelope, "v": 9}, TEAM),
    ]

    messages = []
    for vault, row, team in attempts:
        with pytest.raises(VaultError) as raised:
            vault.decrypt(row, team_id=team, provider=PROVIDER)
        messages.append(str(raised.value) + repr(raised.value) + repr(raised.value.metadata))
        assert raised.value.__cause__ is None

    for text in messages:
        for forbidden in (OLD_KEY, NEW_KEY, ACCESS_TOKEN, envelope["ct"], envelope["iv"]):
            assert forbidden not in text


@pytest.mark.parametrize("secret", ["", "   ", "\n"])
def test_empty_secret_is_refused(secret: str) -> None:
    with pytest.raises(ConfigurationError, match="SECRET_VAULT_KEY is empty"):
        Vault(secret)


def test_short_secret_is_refused_with_a_way_to_generate_one() -> None:
    with pytest.raises(ConfigurationError) as raised:
        Vault("hunter2-hunter2")  # 15 characters

    assert "too short" in raised.value.message
    assert 'python -c "import secrets; print(secrets.token_urlsafe(32))"' in raised.value.message
    assert "hunter2" not in raised.value.message


def test_short_previous_key_is_refused_and_named_by_position() -> None:
    with pytest.raises(ConfigurationError, match="previous vault key #2 is too short"):
        Vault(NEW_KEY, [OLD_KEY, "short"])


def test_secret_with_a_comma_is_refused_because_it_could_not_be_rotated_out() -> None:
    with pytest.raises(ConfigurationError, match="must not contain ','"):
        Vault("abcdefgh,ijklmnopqrstuvwxyz")


# --- configuration helpers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, []),
        ("", []),
        (" , ,", []),
        ("only-one-key-000000", ["only-one-key-000000"]),
        (" first-key-0000000 ,, second-key-000000 ,", ["first-key-0000000", "second-key-000000"]),
    ],
)
def test_parse_previous_keys_splits_on_commas_and_drops_blanks(value: str | None, expected: list[str]) -> None:
    assert parse_previous_keys(value) == expected


def test_embedded_key_is_created_once_owner_only_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "var" / "data"

    key, created = load_or_create_embedded_key(data_dir)
    again, created_again = load_or_create_embedded_key(data_dir)

    key_file = data_dir / "vault.key"
    assert created is True
    assert created_again is False
    assert again == key
    assert len(key) >= 32
    assert _key_file_mode(key_file) == 0o600
    assert sorted(os.listdir(data_dir)) == ["vault.key"]  # no temporary files left behind
    Vault(key)  # strong enough for the Vault


def test_embedded_key_written_by_a_concurrent_creator_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    theirs = "their-key-written-first-0123456789abcdef"
    real_link = os.link

    def other_process_gets_there_first(src: str, dst: str) -> None:
        Path(dst).write_text(theirs + "\n")
        real_link(src, dst)

    monkeypatch.setattr(os, "link", other_process_gets_there_first)

    key, created = load_or_create_embedded_key(tmp_path)

    assert (key, created) == (theirs, False)
    assert (tmp_path / "vault.key").read_text().strip() == theirs
    assert sorted(os.listdir(tmp_path)) == ["vault.key"]


def test_embedded_key_created_by_many_threads_at_once_is_the_same_for_all(tmp_path: Path) -> None:
    results: list[tuple[str, bool]] = []
    start = threading.Barrier(8)

    def create() -> None:
        start.wait()
        results.append(load_or_create_embedded_key(tmp_path))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len({key for key, _ in results}) == 1
    assert sum(created for _, created in results) == 1


def test_empty_embedded_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "vault.key").write_text("\n")

    with pytest.raises(ConfigurationError, match=r"vault\.key is empty"):
        load_or_create_embedded_key(tmp_path)


@pytest.mark.parametrize("secret_vault_key", [None, "", "  "])
def test_production_without_secret_vault_key_refuses_to_start(tmp_path: Path, secret_vault_key: str | None) -> None:
    with pytest.raises(ConfigurationError, match="SECRET_VAULT_KEY is required when CRM_HUB_ENV=production"):
        vault_from_settings(secret_vault_key=secret_vault_key, previous_keys=None, data_dir=tmp_path, production=True)

    assert not (tmp_path / "vault.key").exists()


def test_development_without_secret_vault_key_warns_and_reuses_the_stored_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="crm_hub.storage.vault"):
        first = vault_from_settings(secret_vault_key=None, previous_keys=None, data_dir=tmp_path, production=False)
        envelope = first.encrypt(TOKENS, team_id=TEAM, provider=PROVIDER)
        restarted = vault_from_settings(secret_vault_key=None, previous_keys=None, data_dir=tmp_path, production=False)

    key = (tmp_path / "vault.key").read_text().strip()
    warnings = [r for r in caplog.records if r.name == "crm_hub.storage.vault" and r.levelno == logging.WARNING]
    assert len(warnings) == 2  # one per start
    assert "created" in warnings[0].getMessage()
    for warning in warnings:
        assert str(tmp_path / "vault.key") in warning.getMessage()
        assert "set SECRET_VAULT_KEY for production" in warning.getMessage()
    assert key not in caplog.text
    assert restarted.decrypt(envelope, team_id=TEAM, provider=PROVIDER) == TOKENS


def test_secret_vault_key_is_used_when_set_and_previous_keys_still_decrypt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, new_only_vault: Vault
) -> None:
    old_row = Vault(OLD_KEY).encrypt(TOKENS, team_id=TEAM, provider=PROVIDER)  # production cost

    with caplog.at_level(logging.DEBUG, logger="crm_hub.storage.vault"):
        vault = vault_from_settings(
            secret_vault_key=NEW_KEY, previous_keys=f"{OLD_KEY}, ", data_dir=tmp_path, production=True
        )

    assert vault.current_key_id == new_only_vault.current_key_id
    assert vault.decrypt(old_row, team_id=TEAM, provider=PROVIDER) == TOKENS
    assert vault.needs_rotation(old_row) is True
    assert not caplog.records
    assert not (tmp_path / "vault.key").exists()
