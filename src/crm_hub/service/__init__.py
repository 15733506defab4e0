"""The service: what composes crm_hub's layers and runs them as processes. The top layer — it imports every
layer below it, and none of them imports it.

- ``config``: Settings, read once from the environment (the README's configuration table).
- ``application``: the composition root: the database, vault, plugin host and core services from Settings.
- ``run``: the processes: ``serve`` (gRPC), ``run_up`` (gRPC and Envoy), ``run_worker`` (sync jobs).
- ``cli``: the ``crm-hub`` command.
- ``log``: logging set-up (JSON lines without personal data).
"""

from __future__ import annotations

from crm_hub.service.application import Application
from crm_hub.service.config import Settings

__all__ = ["Application", "Settings"]
