"""The sector state machine, pure: given a sector and an event, what comes next.

    ap -> pc1 -> pc2 -> [chain: precommit, wait seed] -> c1 -> c2 -> [chain: commit] -> fin -> done

Each phase is attempted until it succeeds or its error class stops it:
temporary -> the same phase again (attempt + 1, after a backoff) up to the phase's limit;
permanent -> failed; needs_data -> the same phase again, routed to the sector's home, until
the home counts as gone (then: start over at ap elsewhere, or failed saying why);
crash (the broker's delivery limit) -> failed.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from broker_topology.messages import ErrorClass, Outcome, Phase, Result

from .config import MinerSettings


class State(StrEnum):
    PENDING = "pending"  # created; waits for the miner's share of the pool (admission)
    QUEUED = "queued"  # a job for (phase, attempt) is published; waiting for its result
    CHAIN = "chain"  # waiting for a chain step (precommit + seed, or commit)
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Sector:
    miner: str
    number: int
    state: State
    phase: Phase
    attempt: int
    home: str | None = None
    chain_step: str | None = None
    due_at: float | None = None
    error: str | None = None
    #: Highest attempt ever issued per phase: attempt numbers are never reused, so a done
    #: marker, lease or late result of an earlier run can never stand in for a new one.
    attempts: Mapping[str, int] = field(default_factory=dict)
    #: The attempt this run of the phase started with (the attempt limit counts from it).
    base_attempt: int = 1
    #: needs_data rounds of this run of the phase, and when the first came (Redis clock).
    home_rounds: int = 0
    home_lost_at: float | None = None

    @property
    def tries(self) -> int:
        return self.attempt - self.base_attempt + 1


def enter(sector: Sector, phase: Phase, **changes: Any) -> Sector:
    """The sector starting `phase` afresh, with the next unused attempt number."""
    attempt = sector.attempts.get(phase.value, 0) + 1
    changes = {"home_rounds": 0, "home_lost_at": None, **changes}
    return replace(sector, phase=phase, attempt=attempt, base_attempt=attempt,
                   attempts={**sector.attempts, phase.value: attempt}, **changes)


@dataclass(frozen=True)
class Transition:
    sector: Sector
    #: Publish a job for (sector.phase, sector.attempt) after this many seconds (None: don't).
    dispatch_after: float | None
    #: Why the sector left its path, for its history (a home given up).
    note: str | None = None


@dataclass(frozen=True)
class HomeCheck:
    """What the miner knows of a sector's home when a job comes back without the data."""

    #: The latest beat of the home, or of a member of its storage group (Redis clock);
    #: None when the registry names no such worker.
    last_seen: float | None
    #: A worker of the home beats now.
    alive: bool
    #: Why the sector cannot start over elsewhere (a deal without unsealed data); None: it can.
    no_restart: str | None = None


_NEXT = {Phase.AP: Phase.PC1, Phase.PC1: Phase.PC2, Phase.C1: Phase.C2}
#: Phases followed by a chain step, and the phase after it.
_CHAIN = {Phase.PC2: ("precommit", Phase.C1), Phase.C2: ("commit", Phase.FIN)}


def is_current(sector: Sector, result: Result) -> bool:
    """Only the first result of the attempt the sector waits for counts (fencing)."""
    return (sector.state is State.QUEUED and sector.phase is result.phase
            and sector.attempt == result.attempt)


def on_result(sector: Sector, result: Result, cfg: MinerSettings, now: float,
              rng: random.Random | None = None, home: HomeCheck | None = None) -> Transition:
    """`now` is on the Redis clock; `home` is what the registry says of the sector's home
    (None: unknown), used by a needs_data result."""
    assert is_current(sector, result)
    if result.outcome is Outcome.OK:
        where = (result.home or result.worker) if result.phase is Phase.AP else sector.home
        return _after_success(replace(sector, home=where), cfg, now)
    reason = f"{result.phase}: {result.error_class}: {result.error or 'no detail'}"
    if result.error_class is ErrorClass.NEEDS_DATA:
        return on_missing_data(sector, reason, cfg, now, home)
    if result.error_class in (ErrorClass.PERMANENT, ErrorClass.CRASH):
        return Transition(replace(sector, state=State.FAILED, error=reason), None)
    return retry_or_fail(sector, reason, cfg, rng)


def retry_or_fail(sector: Sector, reason: str, cfg: MinerSettings,
                  rng: random.Random | None = None) -> Transition:
    """A temporary failure of the current attempt: the next attempt after a backoff, or
    failed once the phase's attempt limit is used up."""
    if sector.tries >= cfg.max_attempts.get(sector.phase, 3):
        return Transition(replace(sector, state=State.FAILED,
                                  error=f"{reason} (after {sector.tries} attempts)"), None)
    retry = replace(sector, attempt=sector.attempt + 1, error=reason,
                    attempts={**sector.attempts, sector.phase.value: sector.attempt + 1})
    return Transition(retry, backoff(sector.attempt, cfg, rng or random.Random()))


def on_missing_data(sector: Sector, reason: str, cfg: MinerSettings, now: float = 0.0,
                    home: HomeCheck | None = None) -> Transition:
    """The job reached a worker without the sector's files: its home did not take it in
    time (gone, or busy past the locality wait). Policy `restart`: start the sector over at
    ap on whichever worker is free (ap stages the unsealed data that pc1 needs; the old
    home's files are abandoned). Policy `wait`: send it home again after a pause, without
    using up attempts, until the home counts as gone (`home_gone`); then start over at ap
    like `restart` when that can rebuild the data, else fail saying why."""
    if cfg.locality_recovery == "restart" and sector.phase is not Phase.AP:
        restarted = enter(replace(sector, home=None), Phase.AP,
                          error=f"{reason}; restarted at ap (home {sector.home} lost)")
        return Transition(restarted, 0.0)
    rounds = sector.home_rounds + 1
    since = sector.home_lost_at if sector.home_lost_at is not None else now
    gone = home_gone(sector.home, rounds, since, now, cfg, home)
    if gone is not None:
        return give_up_home(sector, reason, gone, home)
    again = replace(sector, attempt=sector.attempt + 1, base_attempt=sector.base_attempt + 1,
                    attempts={**sector.attempts, sector.phase.value: sector.attempt + 1},
                    home_rounds=rounds, home_lost_at=since,
                    error=f"{reason}; waiting for home {sector.home} "
                          f"(round {rounds} of {cfg.home_rounds})")
    return Transition(again, cfg.home_wait)


def home_gone(home_name: str | None, rounds: int, since: float, now: float,
              cfg: MinerSettings, home: HomeCheck | None) -> str | None:
    """Why the sector's home counts as gone, None while it may still take the job: no
    beat from it (or its storage group) for `home_gone_after` (measured from its last beat,
    or from the first needs_data round when the registry does not know it), or
    `home_rounds` needs_data rounds in a row."""
    who = f"home {home_name}" if home_name else "no home"
    if home is None or not home.alive:
        known = home is not None and home.last_seen is not None
        absent = home.last_seen if home is not None and home.last_seen is not None else since
        if now - absent >= cfg.home_gone_after:
            return (f"{who} gone: " + ("no heartbeat" if known else "not in the registry")
                    + f" for {now - absent:.0f}s (home_gone_after {cfg.home_gone_after:g}s)")
    if rounds >= cfg.home_rounds:
        return f"{who} did not take the job in {rounds} rounds (home_rounds {cfg.home_rounds})"
    return None


def give_up_home(sector: Sector, reason: str, gone: str, home: HomeCheck | None
                 ) -> Transition:
    """The home is gone: start over at ap anywhere (CC from zeros, a deal from its
    unsealed data), or fail when that cannot rebuild the sector (or it already is at ap)."""
    blocker = "ap itself found no data" if sector.phase is Phase.AP else (
        home.no_restart if home is not None else None)
    if blocker is not None:
        error = f"{reason}; {gone}, and {blocker}"
        return Transition(replace(sector, state=State.FAILED, error=error), None,
                          note=f"failed: {gone}, and {blocker}")
    note = f"restarted at ap: {gone}"
    return Transition(enter(replace(sector, home=None), Phase.AP, error=f"{reason}; {note}"),
                      0.0, note=note)


def backoff(failed_attempt: int, cfg: MinerSettings, rng: random.Random) -> float:
    """Exponential with full jitter in the upper half: spreads retries of a burst."""
    ceiling = min(cfg.retry_cap, cfg.retry_base * 2 ** (failed_attempt - 1))
    return rng.uniform(ceiling / 2, ceiling)


def _after_success(sector: Sector, cfg: MinerSettings, now: float) -> Transition:
    phase = sector.phase
    if phase is Phase.FIN:
        return Transition(replace(sector, state=State.DONE, error=None), None)
    if phase in _CHAIN:
        step, _ = _CHAIN[phase]
        wait = (cfg.chain_precommit + cfg.chain_seed) if step == "precommit" else cfg.chain_commit
        waiting = replace(sector, state=State.CHAIN, chain_step=step, due_at=now + wait,
                          error=None)
        return on_chain_due(waiting) if wait <= 0 else Transition(waiting, None)
    return Transition(enter(sector, _NEXT[phase], error=None), 0.0)


def on_chain_due(sector: Sector) -> Transition:
    """The chain step finished: start the phase after it."""
    assert sector.state is State.CHAIN
    _, nxt = next(v for v in _CHAIN.values() if v[0] == sector.chain_step)
    return Transition(enter(sector, nxt, state=State.QUEUED, chain_step=None, due_at=None), 0.0)
