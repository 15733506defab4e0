"""``python -m crm_hub_hubspot.fake --port N``: a fake HubSpot on 127.0.0.1 for manual and multi-process tests.

It prints ``fake HubSpot listening on http://HOST:PORT`` once ready (``--port 0`` picks a free port).
Point crm_hub at it with HUBSPOT_API_BASE_URL=URL and HUBSPOT_AUTHORIZE_URL=URL/oauth/authorize, and the
same HUBSPOT_CLIENT_ID, HUBSPOT_CLIENT_SECRET and HUBSPOT_REDIRECT_URL as given here.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from crm_hub_hubspot.fake.app import FakeHubSpot
from crm_hub_hubspot.fake.server import serve_forever


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m crm_hub_hubspot.fake", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (default 0: any free port)")
    parser.add_argument("--client-id", default="fake-client-id")
    parser.add_argument("--client-secret", default="fake-client-secret")
    parser.add_argument("--redirect-uri", default="http://127.0.0.1/oauth/hubspot/callback")
    parser.add_argument("--access-token-ttl", type=float, default=1800.0, help="seconds (default 1800)")
    parser.add_argument("--search-index-delay", type=float, default=0.0, help="seconds before new contacts are found")
    parser.add_argument("--rate-limit", type=int, default=110, help="requests per 10 s (default 110)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    fake = FakeHubSpot(
        client_id=args.client_id,
        client_secret=args.client_secret,
        redirect_uri=args.redirect_uri,
        access_token_ttl=args.access_token_ttl,
        search_index_delay=args.search_index_delay,
        rate_limit=args.rate_limit,
    )
    serve_forever(fake, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
