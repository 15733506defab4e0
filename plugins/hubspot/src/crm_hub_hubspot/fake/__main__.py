"""``python -m crm_hub_hubspot.fake --port N``: a fake HubSpot on 127.0.0.1 for manual and multi-process tests.

It prints ``fake HubSpot listening on http://HOST:PORT`` once ready (``--port 0`` picks a free port).
Point crm_hub at it with HUBSPOT_API_BASE_URL=URL and HUBSPOT_AUTHORIZE_URL=URL/oauth/authorize, and the
same HUBSPOT_CLIENT_ID, HUBSPOT_CLIENT_SECRET and HUBSPOT_REDIRECT_URL as given here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from crm_hub.testing import fakes

from crm_hub_hubspot.fake.app import FakeHubSpot

_REDIRECT_URI = "http://127.0.0.1/oauth/hubspot/callback"


def main(argv: Sequence[str] | None = None) -> None:
    parser = fakes.argument_parser("python -m crm_hub_hubspot.fake", __doc__, redirect_uri=_REDIRECT_URI)
    parser.add_argument("--access-token-ttl", type=float, default=1800.0, help="seconds (default 1800)")
    parser.add_argument("--search-index-delay", type=float, default=0.0, help="seconds before new contacts are found")
    parser.add_argument("--rate-limit", type=int, default=110, help="requests per 10 s (default 110; 0: no limit)")

    def fake(args: argparse.Namespace) -> FakeHubSpot:
        return FakeHubSpot(
            **fakes.oauth_client(args),
            access_token_ttl=args.access_token_ttl,
            search_index_delay=args.search_index_delay,
            rate_limit=args.rate_limit or sys.maxsize,
        )

    fakes.serve_command(parser, fake, argv)


if __name__ == "__main__":
    main()
