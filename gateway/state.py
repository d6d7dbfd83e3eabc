"""What the endpoints share: the settings, and the hub and store the lifespan opens."""

from __future__ import annotations

from gateway.hub import Hub
from gateway.keys import DEFAULT_TENANT
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.store import Store

# Until API keys exist every job belongs to one tenant; the tenant is in every key and
# channel name all the same (issue 2, item 8).
TENANT = DEFAULT_TENANT


class AppState:
    hub: Hub
    store: Store
    metrics: Metrics

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
