"""The hooks a crm_hub plugin may implement. Import ``hookimpl`` from here to mark implementations.

Hooks are called with keyword arguments only; a hook evolves by gaining parameters, never by changing
them, and implementations may accept any subset of the parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pluggy

from crm_hub.notifications import Notifier
from crm_hub.providers import CrmProvider
from crm_hub.sandbox import Sandbox

__all__ = ["hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("crm_hub")
hookimpl = pluggy.HookimplMarker("crm_hub")


# -- Providers -----------------------------------------------------------------------------------


@hookspec
def register_providers(register: Callable[[CrmProvider], None], config: Mapping[str, str]) -> None:
    """Register CRM providers by calling ``register(provider_instance)`` once per provider.

    ``config`` is the configuration the host hands its plugins: a read-only mapping of setting names to
    values — the environment crm_hub started with, plus what a sandbox points the provider at. Read your
    settings from it (``MySettings.from_env(config)``), never from ``os.environ``.

    Called once, when the plugin host first needs providers; every implementation is called.
    Two providers with the same ``name`` are a configuration error naming both plugins.
    """


# -- Notifications -------------------------------------------------------------------------------


@hookspec
def register_notifiers(register: Callable[[Notifier], None], config: Mapping[str, str]) -> None:
    """Register notifiers by calling ``register(notifier_instance)``; each is told of sync results and
    integration errors (``Notifier.notify``), in the background: a slow or failing notifier never fails or
    delays a sync.

    ``config`` is the host's configuration, as for ``register_providers``.

    Called once, when the plugin host first needs notifiers; every implementation is called.
    """


# -- Sandboxes -----------------------------------------------------------------------------------


@hookspec
def register_sandboxes(register: Callable[[Sandbox], None]) -> None:
    """Register sandboxes by calling ``register(sandbox_instance)``: the plugin's fake CRM, which
    ``crm-hub up --sandbox`` serves locally and points the provider at (see ``crm_hub.sandbox.Sandbox``).

    Called only in sandbox mode, before providers are registered; every implementation is called.
    """
