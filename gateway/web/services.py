"""What the endpoints share: the settings, and the backend, hub, keyring and metrics the
app opens."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.auth.keyring import Keyring
from gateway.backend.base import Backend
from gateway.fanout.hub import Hub
from gateway.observability.metrics import Metrics
from gateway.settings import Settings


@dataclass(eq=False)
class Services:
    settings: Settings
    metrics: Metrics
    # Set by the app's lifespan once they are open; no request arrives before that.
    backend: Backend = None  # type: ignore[assignment]
    hub: Hub = None  # type: ignore[assignment]
    keyring: Keyring = None  # type: ignore[assignment]
