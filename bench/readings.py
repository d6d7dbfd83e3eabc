"""What bounds each goal a run misses: read from profiles, the floor and what-if rounds.

RESULTS.md prints each under its scenario's missed goals. The numbers they quote are from
the runs and profiles named in them; rewrite them when the gateway changes.
"""

from __future__ import annotations

READINGS = {
    "idle": """\
Opening a stream costs the gateway 401 to 489 µs of CPU (`server_us_per_stream` below),
the floor 167 to 198 and nchan 89 to 101; the floor's and nchan's rates are also capped
by the load generator (near 90 % of a core and more), so the true ratios are lower
still. Where a stream's opening goes, beside the floor: a py-spy profile (400 Hz; 12,000 stream
opens each in three rounds of 4,000, 100 at a time, by hand on this machine, build of
2026-11-25) of the gateway and of the floor, each sample put in the first of these that its
stack names, innermost first. Profiling inflates both alike; the ratio holds.

| per stream (µs, under py-spy) | gateway | floor |
| --- | ---: | ---: |
| uvicorn, uvloop, the event loop (accept, protocol, parser, addresses) | 137 | 133 |
| the response's writes (the head and the first frame: one `write()`; the floor's two) | 42 | 41 |
| the floor's handler | - | 24 |
| Redis: SUBSCRIBE and HMGET written (a `write()` each) | 36 | - |
| Redis: replies read and handed on | 8 | - |
| the subscription: hub, subscriber, the wait for Redis' confirmation | 32 | - |
| the snapshot read: the HMGET request, its record | 35 | - |
| routing, context, credential, Accept, Last-Event-ID | 52 | - |
| the server's additions (head limits, the sweep timer, lean events) | 28 | - |
| the opening event: encoding, frames | 14 | - |
| the watcher, the tenant's quota, the stream task | 12 | - |
| the access line | 8 | 1 |
| in all | 405 | 199 |

What bounds it: the contract's subscribe-then-read (README, Event streams: the snapshot
is read only once Redis confirmed the subscription, so that no change falls between) is
111 µs of the 206 µs the gateway adds, more than half. It is two more system calls each
way to Redis, and on this VM a `write()` costs 15 to 20 µs (the floor's response
writes say so: 41 µs for two), plus the futures and the timers that bound the waits.
nchan keeps its messages in its own memory and the floor subscribes to nothing, so neither
pays it; nchan's column is also capped by the load generator (its `client_cpu` near
100 %). The rest is a dozen steps of under 10 µs each. Issue 12 moved: the head and the
first frame in one `write()`, no `getpid()` left per stream (the current task found on a
kept loop, no `asyncio.Event`, log records without the caller's frame), Last-Event-ID,
If-None-Match and Prefer from the one header scan, the access line around `logging`. What
would move it further: RESP3 on the hub's connection, so that SUBSCRIBE and HMGET go out
in one `write()` and come back in one read (at most the 36 + 8 µs of Redis writes and
reads above, less what the merged reply costs). It is not done yet: with RESP3 a refused
SUBSCRIBE answers with an ordinary error, not a push, so that connection must track the
kind of reply every command it sent will get, in order, or a refusal would be taken for a
read's reply and the channel left silently unsubscribed. Past that, a server with less
work per connection than uvicorn: the 137 µs both columns pay.""",
    "json": """\
A snapshot GET against the floor's constant JSON answer on the same server stack (the JSON
rows above): the floor is the bound a per-request Python server reaches here, 3.3 times
the gateway. A 500 Hz py-spy profile of the gateway under `wrk` (by hand, build of
2026-11-25) puts the time in: the response's one `write()` (12 %, as much as the floor's
whole handler), the HMGET to Redis (its request, futures and timer, pipelined with the
other connections' on one socket: about 12 % with its `write()` and read), uvicorn's
request parse and response framing (about a quarter), and thin slices of routing, the
credential, the record's JSON and ETag, Starlette's `Response` and the access line
(2 % to 4 % each). The naive app's JSON route is one redis-py GET on a plain Starlette
route, much quicker than its streams, which makes 3x it a high bar: the floor itself is
6.8x.

A per-process snapshot cache kept exact by the hub's subscription
looked at and not built: (1) it could answer only for a job some stream in this process
watches, after its subscription is confirmed; in this scenario, as for most polling
clients, none does, so every GET would still go to Redis, unless GETs subscribed
themselves, which costs a SUBSCRIBE and an UNSUBSCRIBE (a `write()` each) per poll, more
than the HMGET it saves. (2) Read-your-writes: a worker's update and a client's cancel
return once Redis holds them, but the PUBLISH reaches this process's hub a moment later;
a GET in between, from the same client, would answer the older version (a cancel, then a
poll that shows `cancel_requested: false`). Keeping that promise needs the version from
Redis on every GET, a round trip, which is what the cache was to save. The upper bound of
what it could give is the floor column (a constant body, nothing read).""",
    "fanout": """\
Per watcher, the fan-out is now bound by the `write()` system call, one per watcher as
for nchan: in the profile above `write()` is 60 % of the samples, and the Python around
it (the watcher's version check, the direct write) about 17 %. Since 2026-11-25 the hub
writes each event through the server's `gateway.direct_write` (one call, the chunk
framed once per message) instead of a `send` coroutine per watcher: against the build
before it in one run (`--baseline`, three rounds of this plan), the p50 went from
18.2 to 16.0 ms (0.88x), the p99 from 29.2 to 33.3 ms (its rounds ranged from 26.6 to
35.2). What is left: "first → last receipt" (the fan-out itself) is 1.08x the floor's
and 1.21x nchan's, and "publish → first receipt", the way in, adds about 0.7 ms that
nchan does not pay: the worker's EVALSHA, the update script, Redis' PUBLISH and the
gateway's read of it, against nchan's one POST to itself. That way in is the contract
(every change goes through the one Lua script and Redis, README, Workers). "Round by
round" lists each round: every contender's rounds move by 1.07x to 1.18x between the
best and the worst, the gateway's ratio to nchan from 1.14x to 1.34x. Python 3.12 and a
server whose per-write work is in C would be the next steps.""",
    "latency": """\
One watcher, 100 updates/s: the gateway's p50 is 3.0x nchan's here, as in an earlier
run on a machine about twice as fast (0.60 against 0.22 ms, 2.7x): the absolute goal
of 1 ms moved with the machine, not the gateway (on this one nchan takes 0.38 ms and the
naive app 1.19). Of the 1.12 ms, the way in (the worker's call through redis-py, the
update script, PUBLISH) is most: the profile shows the gateway busy 13 % of the time,
half of it in the one `write()`.""",
    "heartbeat": """\
10,000 idle streams with a 15 s heartbeat: 1.80 % of a core against the floor's 1.47 %
and nchan's 1.36 %, on a machine about twice as slow as the one of the run before issue
12 (1.09 % then, 1.44x nchan; 1.33x now). A quarter of the samples are the heartbeats'
`write()` calls (one per stream per period, as the floor's and nchan's); the hub's one
timer walks the streams in 5 %. The floor, with the same timer and writes and nothing
else, is at 1.47 %: what the gateway adds is the send-timeout and end-of-life checks per
stream per tick (`Hub._timer_loop`).""",
}
