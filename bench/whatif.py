"""What-if rounds: the same gateway with one thing changed, to measure where a cost lies.

A profile says where the time goes; a what-if says how much of it one change would give
back, measured rather than guessed. Each runs one short round (not in the medians) when
its scenario's goal is not met, beside a round of the unchanged gateway run just before.
Nothing here changes the gateway: settings come from the environment, and a Python line
run before ``gateway serve`` stands in for a change of code.
"""

from __future__ import annotations

import asyncio
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.contenders import Contender, Gateway
from bench.measure import median
from bench.plan import Bench
from bench.report import fmt
from bench.scenarios import SCENARIOS


@dataclass(frozen=True)
class WhatIf:
    scenario: str
    change: str  # what is different, for a reader
    metrics: tuple[str, ...]  # compared between the two rounds
    env: dict[str, str] = field(default_factory=dict)
    prelude: str | None = None


WHAT_IFS = (
    # The gateway tunes the garbage collector itself now (gateway/runtime.py); what is left of
    # a stream's opening beside the Redis read and the subscription is the access log.
    WhatIf("idle", "no access log (`GATEWAY_LOG_LEVEL=warning`)",
           ("rate@1000", "rate@5000", "server_us_per_stream@5000", "mem_kib@5000"),
           env={"GATEWAY_LOG_LEVEL": "warning"}),
    # The JSON profile shows the access log (one JSON line per request) beside Redis.
    WhatIf("json", "no access log (`GATEWAY_LOG_LEVEL=warning`)", ("cold_rps", "etag_rps"),
           env={"GATEWAY_LOG_LEVEL": "warning"}),
)


def _variant(bench: Bench, what: WhatIf) -> Callable[[], Contender]:
    return lambda: Gateway(bench.workdir, env=what.env, prelude=what.prelude)


async def run(bench: Bench, scenarios: set[str]) -> None:
    """The what-ifs of these scenarios; their text goes with the scenario's profiles.

    Each is a pair of rounds back to back, the gateway as it is and then changed, so that
    drift over the run (this is a shared 2-core machine) does not pose as an effect.
    """
    for n, what in enumerate(w for w in WHAT_IFS if w.scenario in scenarios):
        print(f"bench: what-if {what.scenario}: {what.change} ...", file=sys.stderr, flush=True)
        bench.extra_round = True
        try:
            pair = [await asyncio.wait_for(SCENARIOS[what.scenario](bench, make, 1), 240)
                    for make in (_variant(bench, WhatIf(what.scenario, "", ())),
                                 _variant(bench, what))]
        except Exception as exc:  # a what-if is a hint: its failure must not cost the run
            traceback.print_exc()
            bench.note(f"what-if {what.scenario} failed: {type(exc).__name__}: {exc}"
                       .splitlines()[0])
            continue
        finally:
            bench.extra_round = False
        before, after = pair
        changed = [f"{m} {fmt(median([r[m] for r in before if m in r]))} -> "
                   f"{fmt(median([r[m] for r in after if m in r]))}" for m in what.metrics
                   if any(m in r for r in before) and any(m in r for r in after)]
        bench.extra_profiles[f"{what.scenario}-whatif{n}"] = (
            f"What-if (two rounds back to back, not in the medians): the gateway as it is, "
            f"then with {what.change}: " + "; ".join(changed) + ".")
