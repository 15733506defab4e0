"""What crm_hub.storage.vault costs: one PBKDF2 run, warm encrypt/decrypt, and a decrypt of a row with a cold salt.

Run with the project's virtualenv (crm_hub must be importable)::

    .venv/bin/python bench/bench_vault.py [--ops 20000] [--cold 7]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import cryptography

from crm_hub.storage import vault as vault_module
from crm_hub.storage.vault import DEFAULT_ITERATIONS, Vault

SECRET = "bench-master-secret-" + "x" * 23
TEAM = "team_0123456789"
PROVIDER = "salesforce"

# A typical OAuth token set as a CRM returns it.
TOKENS: dict[str, Any] = {
    "access_token": "00D5g000004ABCD!AQ0AQH" + "k" * 40,
    "refresh_token": "5Aep861TSESvWeug_xvFHRBTTbf_YrTWgEyjBJJJaiVRDWpQ" + "r" * 10,
    "instance_url": "https://acme-corp.my.salesforce.com",
    "id": "https://login.salesforce.com/id/00D5g000004ABCDEAA/0055g00000ABCDEFAA",
    "token_type": "Bearer",
    "issued_at": "1767225600000",
    "expires_at": 1767232800,
    "scope": "api refresh_token offline_access",
}


def _median_seconds(run: Callable[[], object], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    """Run the measurements and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=20_000, help="warm encrypt/decrypt operations")
    parser.add_argument("--cold", type=int, default=7, help="cold-salt decryptions (median reported)")
    args = parser.parse_args()

    plaintext_bytes = len(json.dumps(TOKENS, separators=(",", ":"), sort_keys=True).encode())

    pbkdf2 = _median_seconds(
        lambda: vault_module._pbkdf2_sha512(SECRET.encode(), b"\x00" * 16, DEFAULT_ITERATIONS, 32), repeats=7
    )
    construct = _median_seconds(lambda: Vault(SECRET), repeats=3)

    vault = Vault(SECRET)
    envelope = vault.encrypt(TOKENS, team_id=TEAM, provider=PROVIDER)  # warms the encryption key
    envelope_bytes = len(json.dumps(envelope).encode())

    start = time.perf_counter()
    for _ in range(args.ops):
        vault.encrypt(TOKENS, team_id=TEAM, provider=PROVIDER)
    encrypt_us = (time.perf_counter() - start) / args.ops * 1e6

    start = time.perf_counter()
    for _ in range(args.ops):
        vault.decrypt(envelope, team_id=TEAM, provider=PROVIDER)
    decrypt_us = (time.perf_counter() - start) / args.ops * 1e6

    # Rows written by other processes: each writer has its own salt, so the reader derives once per row.
    cold_rows = [Vault(SECRET).encrypt(TOKENS, team_id=TEAM, provider=PROVIDER) for _ in range(args.cold)]
    reader = Vault(SECRET)
    cold_samples = []
    for row in cold_rows:
        start = time.perf_counter()
        reader.decrypt(row, team_id=TEAM, provider=PROVIDER)
        cold_samples.append(time.perf_counter() - start)
    cold = statistics.median(cold_samples)

    print(
        f"crm_hub.storage.vault on Python {platform.python_version()}, cryptography {cryptography.__version__}, "
        f"{platform.machine()}"
    )
    print(
        f"payload {plaintext_bytes} B of JSON -> envelope {envelope_bytes} B; "
        f"PBKDF2-HMAC-SHA512 x {DEFAULT_ITERATIONS:,}"
    )
    print()
    rows = [
        ("PBKDF2 derivation (one)", f"{pbkdf2 * 1e3:10.1f} ms", "median of 7"),
        ("Vault() with one secret", f"{construct * 1e3:10.1f} ms", "key id; median of 3"),
        ("encrypt, warm key", f"{encrypt_us:10.1f} µs/op", f"{args.ops:,} ops"),
        ("decrypt, warm cache", f"{decrypt_us:10.1f} µs/op", f"{args.ops:,} ops"),
        ("decrypt, cold salt", f"{cold * 1e3:10.1f} ms", f"median of {args.cold}"),
    ]
    print(f"{'operation':<26}{'time':>16}   note")
    print("-" * 62)
    for name, value, note in rows:
        print(f"{name:<26}{value:>16}   {note}")


if __name__ == "__main__":
    main()
