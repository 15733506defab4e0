"""``python -m crm_hub_salesforce.fake --port N``: a fake Salesforce on 127.0.0.1 for manual and multi-process tests.

It prints ``fake Salesforce listening on http://HOST:PORT`` once ready (``--port 0`` picks a free port).
Point crm_hub at it with SALESFORCE_LOGIN_URL=URL and the same SALESFORCE_CLIENT_ID,
SALESFORCE_CLIENT_SECRET and SALESFORCE_REDIRECT_URL as given here; the token answer's instance_url is URL.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from crm_hub.testing import fakes

from crm_hub_salesforce.fake.app import FakeSalesforce

_REDIRECT_URI = "http://127.0.0.1/oauth/salesforce/callback"


def main(argv: Sequence[str] | None = None) -> None:
    parser = fakes.argument_parser("python -m crm_hub_salesforce.fake", __doc__, redirect_uri=_REDIRECT_URI)
    parser.add_argument("--session-ttl", type=float, default=7200.0, help="seconds of inactivity (default 7200)")
    parser.add_argument("--daily-limit", type=int, default=100_000, help="API requests per 24 h (default 100000)")
    parser.add_argument("--rotate-refresh-tokens", action="store_true", help="issue a new refresh token per refresh")
    parser.add_argument("--duplicate-rules", action="store_true", help="refuse new contacts whose email exists")
    parser.add_argument("--no-pkce", action="store_true", help="accept authorizations without a code challenge")

    def fake(args: argparse.Namespace) -> FakeSalesforce:
        return FakeSalesforce(
            **fakes.oauth_client(args),
            session_ttl=args.session_ttl,
            daily_limit=args.daily_limit,
            rotate_refresh_tokens=args.rotate_refresh_tokens,
            duplicate_rules=args.duplicate_rules,
            require_pkce=not args.no_pkce,
        )

    fakes.serve_command(parser, fake, argv)


if __name__ == "__main__":
    main()
