"""Serving a FakeHubSpot on a real socket with uvicorn: in a running event loop, or as a process.

These are ``crm_hub.testing.fakes``'s functions: ``serving(fake)`` yields the base URL
(``http://127.0.0.1:PORT``; port 0 picks a free one), ``serve_forever(fake)`` prints
``fake HubSpot listening on URL`` and serves until interrupted, and ``bind`` makes the listening socket.
"""

from __future__ import annotations

from crm_hub.testing.fakes import bind, serve_forever, serving

__all__ = ["bind", "serve_forever", "serving"]
