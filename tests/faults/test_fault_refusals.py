"""Redis refuses what the gateway asks: back off, say why once, recover."""

from __future__ import annotations

import re
import time

import httpx
import redis


def _reconnects(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    match = re.search(r"^gateway_redis_reconnects_total ([0-9.e+]+)$", text, re.M)
    assert match is not None, text
    return float(match[1])


def test_a_refused_subscribe_backs_off_and_is_reported_once(
    redis_url: str, r: redis.Redis, start_gateway
) -> None:
    # Redis 7's default for a new ACL user: no channel rights at all (resetchannels).
    r.execute_command("ACL", "SETUSER", "nochannels", "on", ">pw", "~*", "+@all",
                      "resetchannels")
    url = redis_url.replace("redis://", "redis://nochannels:pw@")
    try:
        gateway = start_gateway(url, ready=False)
        time.sleep(2.0)
        # Backoff from 50 ms doubling (with jitter) allows at most a handful in 2 s;
        # without it there were thousands.
        reconnects = _reconnects(gateway.url)
        assert reconnects <= 12, f"{reconnects} reconnects in 2 s: no backoff"
        assert httpx.get(f"{gateway.url}/readyz", timeout=5).status_code == 503
        refusals = [line for line in gateway.output().splitlines() if "refused" in line]
        assert len(refusals) == 1, refusals
        assert "NOPERM" in refusals[0] and "&gw:*" in refusals[0]
        # Rights granted: the gateway comes back by itself, and says so.
        r.execute_command("ACL", "SETUSER", "nochannels", "allchannels")
        deadline = time.monotonic() + 15
        while httpx.get(f"{gateway.url}/readyz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, gateway.output()[-2000:]
            time.sleep(0.1)
        assert "work again" in gateway.output()
    finally:
        r.execute_command("ACL", "DELUSER", "nochannels")
