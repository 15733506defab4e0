"""Serving a FakeSalesforce on a real socket with uvicorn: in a running event loop, or as a process.

Serving makes the socket the fake's ``instance_url`` (``http://127.0.0.1:PORT``, see
``FakeSalesforce.served_at``): it is both the login host and the instance host, so the token answer sends
clients back to it. These are ``crm_hub.testing.fakes``'s functions: ``serving(fake)`` yields that URL,
``serve_forever(fake)`` prints ``fake Salesforce listening on URL`` and serves until interrupted, and
``bind`` makes the listening socket.
"""

from __future__ import annotations

from crm_hub.testing.fakes import bind, serve_forever, serving

__all__ = ["bind", "serve_forever", "serving"]
