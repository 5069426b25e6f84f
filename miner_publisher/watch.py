"""Escalation, the stall watchdog and homes given up, driven by the watch index.

Instead of reading every in-flight sector every round, the miner keeps each queued or chain
sector in `watch:<miner>` (store.py) scored by when something can next happen to it: its
slack crossing the escalation threshold, its slack reaching zero (at risk), the watchdog's
limit, its home counting as gone. A round reads only the sectors due, acts, and scores each
again. A transition scores its sector `now`, and no score is further than RECHECK_S ahead,
so durations learned meanwhile are taken into account within a minute. Slack is written
only when it differs meaningfully from the last written value, extrapolated to now."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from broker_topology.messages import LOCAL_PHASES, Phase, job_id
from broker_topology.naming import attempt_ref

from .config import MinerSettings
from .deadlines import Slack, expected, slack
from .homes import home_check, no_restart
from .pipeline import HomeCheck, State, Transition, give_up_home, home_gone
from .publisher import build_job
from .store import Cas, Envelope, Record, SectorStore

log = logging.getLogger(__name__)
#: Sectors looked at per round at most (the rest stay due for the next round).
WATCH_BATCH = 500
#: No sector goes unlooked at for longer than this.
RECHECK_S = 60.0
#: A stored slack is rewritten when it is off by this much (or this fraction) or changed sign.
SLACK_STEP_S = 60.0
SLACK_STEP_FRACTION = 0.05

#: (record, transition, Redis now, history entry) -> what the compare-and-set did.
Commit = Callable[[Record, Transition, float, dict[str, Any]], Cas]


def slack_changed(rec: Record, seconds: float, now: float) -> bool:
    """Is `seconds` meaningfully different from the stored slack carried forward to now?"""
    if rec.slack is None or rec.slack_at is None:
        return True
    carried = rec.slack - (now - rec.slack_at)
    return ((carried < 0) != (seconds < 0)
            or abs(carried - seconds) >= max(SLACK_STEP_S, SLACK_STEP_FRACTION * abs(seconds)))


class Watcher:
    def __init__(self, store: SectorStore, cfg: MinerSettings,
                 publish: Callable[[Envelope], object], commit: Commit,
                 members: Callable[[], list[Any]]) -> None:
        self.store = store
        self.cfg = cfg
        self.publish = publish
        self.commit = commit
        #: The registry index (broker_topology.control.Registered), read once per round.
        self.members = members
        self.observed: dict[tuple[Phase, int], float] = {}
        self._filled = False
        self._round_members: list[Any] | None = None

    def round(self, observed: dict[tuple[Phase, int], float]) -> int:
        """Look at every sector due; returns how many."""
        if not self._filled:  # sectors written before the index existed
            self.store.fill_watch()
            self._filled = True
        self.observed = observed
        now = self.store.redis_now()
        due = self.store.watch_due(now, WATCH_BATCH)
        if not due:
            return 0
        held = {key for key, _ in self.store.held()}
        self._round_members = None
        for number, seen in due:
            rec = self.store.get(number)
            live = rec is not None and rec.sector.state in (State.QUEUED, State.CHAIN)
            nxt = self.check(rec, now, held) if rec is not None and live else None
            self.store.rewatch(number, seen, nxt)
        return len(due)

    def check(self, rec: Record, now: float, held: set[str]) -> float | None:
        """Act on one sector; when to look at it next (None: it left the pipeline)."""
        s = slack(rec.sector, rec.size, rec.deadline, now, self.observed, self.cfg)
        number = rec.sector.number
        if slack_changed(rec, s.seconds, now):
            self.store.mark(number, slack=f"{s.seconds:.1f}", slack_at=f"{now:.3f}")
        if s.late and not rec.at_risk:
            self.store.mark(number, at_risk="1")
            self.store.count("deadline_at_risk")
            log.warning("sector %s/%d cannot make its deadline: %.0fs late at the expected "
                        "pace (%.0fs of work left)", self.store.miner, number, -s.seconds,
                        s.remaining)
        times = [now + RECHECK_S]
        if not s.late:
            times.append(now + s.seconds)  # when it falls behind
        if rec.sector.state is not State.QUEUED:
            return min(times)
        key = attempt_ref(job_id(self.store.miner, number, rec.sector.phase), rec.sector.attempt)
        if key not in held:  # held back: not late, waiting
            fires = self.watchdog(rec, now)
            if fires is not None:
                times.append(fires)
        if rec.escalated != rec.sector.attempt:
            if s.seconds < self.cfg.escalate_slack:
                self.escalate(rec, now, s)
            else:
                times.append(now + s.seconds - self.cfg.escalate_slack)
        gone_at = self.home(rec, now)
        if gone_at is None:
            return None  # given up: the transition scored it afresh
        if gone_at > 0:
            times.append(gone_at)
        return min(times)

    def escalate(self, rec: Record, now: float, s: Slack) -> None:
        """Publish an urgent copy of the current job (of several instances, one does)."""
        env = Envelope(build_job(rec, rec.sector, now), 0.0, True, now)
        if self.store.escalate(rec, env):
            self.publish(env)
            self.store.count("escalated")
            log.info("escalated %s (slack %.0fs)", env.job.job_id, s.seconds)

    def watchdog(self, rec: Record, now: float) -> float | None:
        """Flag (once) a dispatched sector with no progress for much longer than its phase
        should take; else when that would be."""
        if rec.stalled is not None:
            return None
        since = rec.dispatched_at if rec.dispatched_at is not None else rec.updated_at
        limit = max(3 * expected(rec.sector.phase, rec.size, self.observed),
                    self.cfg.stall_floor) + rec.dispatch_delay
        if now - since <= limit:
            return since + limit
        if self.store.flag_stalled(rec, since):
            self.store.count("stalled")
            log.warning("sector %s/%d stalled: no progress at %s attempt %d for %.0fs "
                        "(expected at most %.0fs); see `miner-publisher explain %s/%d/%s`",
                        self.store.miner, rec.sector.number, rec.sector.phase,
                        rec.sector.attempt, now - since, limit, self.store.miner,
                        rec.sector.number, rec.sector.phase)
        return None

    def home(self, rec: Record, now: float) -> float | None:
        """A follow-up waiting for a home that is gone (its job may sit in the home's queue,
        or in a pool lane no other worker serves): give the home up now instead of waiting
        for a needs_data round. Returns when the home would count as gone (0: never, it
        beats or the job does not wait for it), None once given up."""
        s = rec.sector
        if (self.cfg.locality_recovery != "wait" or s.home is None
                or s.phase not in LOCAL_PHASES):
            return 0.0
        check = self.home_check(rec, s.home, now)
        # Unknown to the registry (a storage group whose members all stopped cleanly, for
        # one): only a needs_data round starts that clock.
        absent = check.last_seen if check.last_seen is not None else s.home_lost_at
        if check.alive or absent is None:
            return 0.0
        gone = home_gone(s.home, 0, absent, now, self.cfg, check)
        if gone is None:
            return absent + self.cfg.home_gone_after
        if self.store.r.exists(self.store.names.lease_key(
                job_id(s.miner, s.number, s.phase), s.attempt)):
            return now + RECHECK_S  # running somewhere: its result decides
        t = give_up_home(s, f"{s.phase}: waiting for home {s.home}", gone, check)
        history = {"phase": s.phase.value, "attempt": s.attempt,
                   "worker": f"miner-publisher/{s.miner}", "started_at": now,
                   "finished_at": now, "outcome": "home_gone", "error_class": None,
                   "error": t.note, "note": t.note}
        if self.commit(rec, t, now, history) is not Cas.APPLIED:
            return now  # it moved meanwhile: look again
        self.store.count("homes_given_up")
        log.warning("sector %s/%d: %s", s.miner, s.number, t.note)
        return None

    def home_check(self, rec: Record, home: str, now: float) -> HomeCheck:
        if self._round_members is None:
            self._round_members = self.members()
        return home_check(self._round_members, home, now, no_restart(rec))
