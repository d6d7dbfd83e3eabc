"""``gateway demo``: the gateway with simulated conversion workers (docs/dashboard.md)."""
