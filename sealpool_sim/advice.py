"""The ratio advisor (miner_publisher.ratio) on a simulated run: the machines of the
scenario, the durations the run observed, and the scenario changed as it suggests."""

from __future__ import annotations

from miner_publisher.ratio import Advice, MachineGroup, advise

from .scenario import Scenario
from .trace import Trace


def machine_groups(scenario: Scenario) -> list[MachineGroup]:
    return [MachineGroup(m.name, m.count,
                         tuple(s.phases for s in m.slots for _ in range(s.count)))
            for m in scenario.machines]


def advice_for(scenario: Scenario, trace: Trace, rate_h: float | None = None) -> Advice:
    """What `miner-publisher ratio` says about this pool after the run (its durations
    table would hold what the run observed)."""
    return advise(trace.durations, machine_groups(scenario), rate_h,
                  "target" if rate_h is not None else "capacity")


def follow(scenario: Scenario, advice: Advice) -> Scenario:
    """The scenario with the machine the advice says buys the most added."""
    best = max((c for c in advice.changes if c.what.endswith(" machine")),
               key=lambda c: c.after_h, default=None)
    if best is None:
        return scenario
    name = best.what.removeprefix("+1 ").removesuffix(" machine")
    machines = tuple(m.model_copy(update={"count": m.count + 1}) if m.name == name else m
                     for m in scenario.machines)
    return scenario.model_copy(update={"machines": machines})
