"""Which job a free slot takes next: the pool's scheduling policy, pure.

Work-conserving: a slot always takes a job it can run when one waits; fairness only
decides *which*. Per phase, pipeline-end first (a started sector finishes before a new one
starts), the order is:

1. the slot's home queue (follow-ups whose files are here; priority urgent > deal > cc);
2. the phase's urgent lane (deadline at risk, or aged past SEALPOOL_AGING_*), any miner;
3. the miners' own lanes, by start-time fair queuing over slot time: the miner with the
   lowest virtual time first, each miner's deal lane strictly before its CC lane (or, with
   the pool-wide `deals_first`, every miner's deal lane before any CC lane).

Each miner has a finish tag (one over every phase: a miner's share of the machines is slot
time, whatever it runs; in Redis) that grows by slot seconds / weight: a sector's whole
expected pipeline is charged when it starts (`claim_cost`), and each phase's actual time
corrects it as the phase ends. The
pool's virtual clock is the start tag of the latest claim, and a miner's next job starts
at max(its finish tag, clock): slots go to the lowest start tag, so under contention busy
slot time is shared by weight, a miner back from idle starts at the clock (it cannot bank
credit while it had nothing to run), and an idle miner's share goes to the others at once.

The simulation (sealpool-sim) runs this same module."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from broker_topology.messages import CLAIM_ORDER, LOCAL_PHASES, PIPELINE, Lane, Phase
from broker_topology.naming import Names

#: Virtual time charged for a job whose phase duration nobody has measured yet.
DEFAULT_EXPECTED_S = 60.0


@dataclass(frozen=True)
class MinerShare:
    miner: str
    weight: float


@dataclass(frozen=True)
class Lanes:
    """A phase's queues, in the order a slot asks them (before fairness)."""

    phase: Phase
    home: str | None
    urgent: str
    #: miner -> (deal queue, cc queue)
    miners: Mapping[str, tuple[str, str]]


def phase_lanes(names: Names, locality: str, phase: Phase, miners: Iterable[str]) -> Lanes:
    return Lanes(phase, names.worker_queue(locality, phase) if phase in LOCAL_PHASES else None,
                 names.pool_queue(phase, Lane.URGENT),
                 {m: (names.miner_queue(phase, Lane.DEAL, m),
                      names.miner_queue(phase, Lane.CC, m)) for m in miners})


#: The field of the vtime hash that holds the pool's virtual clock (miner ids have no "~").
CLOCK = "~clock"


def start_tag(vtimes: Mapping[str, float], miner: str) -> float:
    return max(vtimes.get(miner, 0.0), vtimes.get(CLOCK, 0.0))


def miner_order(vtimes: Mapping[str, float], waiting: Iterable[str],
                rng: random.Random | None = None) -> list[str]:
    """Miners with work waiting, lowest start tag first (ties shuffled, so equal miners
    alternate instead of the first name always winning)."""
    shuffle = (rng or random).random
    return sorted(waiting, key=lambda m: (start_tag(vtimes, m), shuffle()))


def claim_order(lanes: Lanes, vtimes: Mapping[str, float], ready: Mapping[str, int], *,
                deals_first: bool = False, rng: random.Random | None = None) -> list[str]:
    """The queues of one phase with ready jobs, in the order a free slot asks them."""
    order = [q for q in (lanes.home, lanes.urgent) if q is not None and ready.get(q, 0) > 0]
    waiting = [m for m, (deal, cc) in lanes.miners.items()
               if ready.get(deal, 0) > 0 or ready.get(cc, 0) > 0]
    by_share = miner_order(vtimes, waiting, rng)
    if deals_first:
        pairs = [lanes.miners[m][0] for m in by_share] + [lanes.miners[m][1] for m in by_share]
    else:
        pairs = [q for m in by_share for q in lanes.miners[m]]
    return order + [q for q in pairs if ready.get(q, 0) > 0]


def slot_order(per_phase: Sequence[Lanes], vtimes: Mapping[str, float],
               ready: Mapping[str, int], *, deals_first: bool = False,
               rng: random.Random | None = None) -> list[str]:
    """Every queue a slot serving these phases may ask, best first: phases pipeline-end
    first, then `claim_order` within each phase."""
    by_phase = {lanes.phase: lanes for lanes in per_phase}
    out: list[str] = []
    for phase in CLAIM_ORDER:
        if phase in by_phase:
            out += claim_order(by_phase[phase], vtimes, ready,
                               deals_first=deals_first, rng=rng)
    return out


def claim_cost(phase: Phase, size: int, expected: Callable[[Phase, int], float]) -> float:
    """The slot time a claim charges its miner: when a sector starts (ap), the expected
    time of its whole pipeline; nothing for its later phases, which were charged then and
    are corrected by their actual times as they end. Charging a sector's work when it is
    chosen, not phase by phase as its follow-ups run from the home queue (FIFO, whoever's
    they are), keeps the choice from working on stale tags: measured in sealpool-sim,
    weights 5:3:2 give 50/30/20 at pool_depth 2 this way, 47/28/25 phase by phase."""
    return sum(expected(p, size) for p in PIPELINE) if phase is Phase.AP else 0.0


def charged(vtimes: dict[str, float], miner: str, seconds: float, weight: float, *,
            chosen: bool = True) -> float:
    """Charge `miner` for a claim of `seconds` slot time; its finish tag moves on by
    seconds / weight. A claim the policy `chosen` between miners (a miner's own lane)
    starts at the miner's start tag, which becomes the pool's clock. Any other claim (the
    home queue, FIFO; the urgent lane) is charged from the miner's finish tag and leaves
    the clock alone: moving the clock there would lift every miner behind it and erase
    the deficits fair queuing is made of. Returns the new finish tag. The Redis script
    charge.lua computes exactly this."""
    start = start_tag(vtimes, miner) if chosen else vtimes.get(miner, 0.0)
    vtimes[miner] = start + seconds / max(weight, 1e-9)
    if chosen:
        vtimes[CLOCK] = start
    return vtimes[miner]
