"""What bounds each goal a run misses: read from profiles, the floor and what-if rounds.

RESULTS.md prints each under its scenario's missed goals. The numbers they quote are from
the runs and profiles named in them; rewrite them when the gateway changes.
"""

from __future__ import annotations

READINGS = {
    "idle": """\
Opening a stream costs the gateway about 140 µs of CPU (`server_us_per_stream` above)
against nchan's 35 µs, and the gateway is at 95 % of a core while the load generator is
not; nchan's rate is capped by the load generator, so the true ratio is lower still. A
500 Hz py-spy profile of 8,000 stream opens (by hand, same build) splits the time so:
uvicorn and uvloop's own work per connection (accept, protocol and parser set-up, two
`getsockname()` calls, the request parse, one `write()` for the response head and another
for the first frame) is about half, and a bare ASGI handler pays it too; `write()` system
calls are a quarter in all (uvicorn's two per stream, and the gateway's SUBSCRIBE and
snapshot read, batched per turn of the event loop but still 13 %); what the contract asks
of every stream and nchan does not do (subscribe, wait for Redis to confirm, then read the
snapshot, README, Event streams) is about 15 %; the rest is spread thin (negotiation, the
access log, request ids, header parsing). This version moved it from 1,790 to about 6,500
streams/s: Starlette's middleware and router left the stream path (`gateway/web/front.py`), the
garbage collector no longer rescans every open stream (`gc.freeze()` after start-up and a
50,000 young-generation threshold), snapshot reads go through one pipelined hiredis
connection instead of redis-py, and nothing per stream looks up the running loop or the
current task (each lookup is a `getpid()` system call on Python 3.11). What would move it
further: RESP3 on the hub's connection, so that SUBSCRIBE and the snapshot read go out in
one write and come back in one round trip with no wait for the confirmation; Python 3.12
(no `getpid()` per loop lookup); a server with less work per connection than uvicorn
(granian). Several processes (`uvicorn --workers`) multiply it, but the goal is per
process.""",
    "json": """\
A JSON GET costs the gateway about 65 µs of CPU. The what-if above measures the access
log (a JSON line with a request id per request) at about a quarter of that: without it the
gateway answers 2.4x the naive app. A bare uvicorn ASGI app answering a constant JSON body
reaches about 49,000 req/s with the same wrk settings on this machine (by hand), so
uvicorn's own HTTP handling is some 20 µs of the 65; the rest is the snapshot read (one
pipelined HMGET, a `write()` and a `read()` per batch), the response and its headers
(ETag, Retry-After, Vary, X-Request-ID), and the way through the access-log middleware to
the endpoint. The naive app's JSON endpoint is a plain Starlette route with one redis-py
GET, quicker than its streams suggest, which makes 3x it a high bar. This version moved
the gateway from 4,200 to 14,000-15,000 req/s (about 1.8x naive): the reads left redis-py for a
pipelined hiredis connection, Starlette's stack left the path, and the access log got
cheaper (no query re-encoding, one JSON encoder, lines written in batches). What would
move it further: a cheaper or sampled access log (`GATEWAY_LOG_LEVEL=warning` turns it
off: 2.4x); a per-process snapshot cache fed by the hub, not done because a GET would then
no longer see its own writes made through another process (a cancel, then a poll) and
could answer an older version than Redis holds; a faster HTTP server.""",
}


