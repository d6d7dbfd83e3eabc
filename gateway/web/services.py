"""What the endpoints share: the settings and what is made of them (CORS, the stream
quota), and the backend, hub, keyring and metrics the app opens."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.auth.keyring import Keyring
from gateway.backend.base import Backend
from gateway.fanout.hub import Hub
from gateway.observability.metrics import Metrics
from gateway.settings import Settings
from gateway.web.cors import Cors
from gateway.web.quota import StreamQuota


@dataclass(eq=False)
class Services:
    settings: Settings
    metrics: Metrics
    cors: Cors = field(init=False)
    quota: StreamQuota = field(init=False)
    # Set by the app's lifespan once they are open; no request arrives before that.
    backend: Backend = None  # type: ignore[assignment]
    hub: Hub = None  # type: ignore[assignment]
    keyring: Keyring = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.cors = Cors(self.settings.cors_origins)
        self.quota = StreamQuota(self.settings.max_streams_per_tenant)
