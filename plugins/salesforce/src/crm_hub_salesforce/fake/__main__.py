"""``python -m crm_hub_salesforce.fake --port N``: a fake Salesforce on 127.0.0.1 for manual and multi-process tests.

It prints ``fake Salesforce listening on http://HOST:PORT`` once ready (``--port 0`` picks a free port).
Point crm_hub at it with SALESFORCE_LOGIN_URL=URL and the same SALESFORCE_CLIENT_ID,
SALESFORCE_CLIENT_SECRET and SALESFORCE_REDIRECT_URL as given here; the token answer's instance_url is URL.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from crm_hub_salesforce.fake.app import FakeSalesforce
from crm_hub_salesforce.fake.server import serve_forever


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m crm_hub_salesforce.fake", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (default 0: any free port)")
    parser.add_argument("--client-id", default="fake-client-id")
    parser.add_argument("--client-secret", default="fake-client-secret")
    parser.add_argument("--redirect-uri", default="http://127.0.0.1/oauth/salesforce/callback")
    parser.add_argument("--session-ttl", type=float, default=7200.0, help="seconds of inactivity (default 7200)")
    parser.add_argument("--daily-limit", type=int, default=100_000, help="API requests per 24 h (default 100000)")
    parser.add_argument("--rotate-refresh-tokens", action="store_true", help="issue a new refresh token per refresh")
    parser.add_argument("--duplicate-rules", action="store_true", help="refuse new contacts whose email exists")
    parser.add_argument("--no-pkce", action="store_true", help="accept authorizations without a code challenge")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    fake = FakeSalesforce(
        client_id=args.client_id,
        client_secret=args.client_secret,
        redirect_uri=args.redirect_uri,
        session_ttl=args.session_ttl,
        daily_limit=args.daily_limit,
        rotate_refresh_tokens=args.rotate_refresh_tokens,
        duplicate_rules=args.duplicate_rules,
        require_pkce=not args.no_pkce,
    )
    serve_forever(fake, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
