"""Read-only views for the CLI: sector rows for `status` (table, watch and --json)."""

from __future__ import annotations

from typing import Any

from broker_topology.messages import Phase
from broker_topology.units import sector_size_name

from .config import MinerSettings
from .deadlines import Durations, slack
from .pipeline import State
from .store import Record, SectorStore


def sector_rows(store: SectorStore, cfg: MinerSettings | None = None) -> list[dict[str, Any]]:
    records = store.all()
    histories = store.histories([r.sector.number for r in records])
    observed = Durations(store.r, store.names).table()
    cfg = cfg or MinerSettings()
    now = store.redis_now()
    rows = []
    for rec in records:
        s = rec.sector
        finished = s.state in (State.DONE, State.FAILED)
        rows.append({
            "sector": s.number, "miner": s.miner, "class": rec.sector_class.value,
            "size": sector_size_name(rec.size), "state": s.state.value, "phase": s.phase.value,
            "attempt": s.attempt, "home": s.home, "chain_step": s.chain_step,
            "error": s.error, "deadline": rec.deadline,
            "slack_s": None if finished else round(_slack(rec, now, observed, cfg), 1),
            "deadline_at_risk": rec.at_risk, "escalated": rec.escalated > 0,
            # The watchdog's flag: no progress since `stalled_since` (much longer than the
            # phase should take).
            "stalled": rec.stalled is not None and not finished,
            "stalled_since": None if finished else rec.stalled,
            "created_at": rec.created_at,
            "updated_at": rec.updated_at, "history": histories[s.number],
        })
    return rows


def _slack(rec: Record, now: float, observed: dict[tuple[Phase, int], float],
           cfg: MinerSettings) -> float:
    """The running miner's slack (its settings), carried forward to now; else our own."""
    if rec.slack is not None:
        return rec.slack - (now - rec.slack_at if rec.slack_at is not None else 0.0)
    return slack(rec.sector, rec.size, rec.deadline, now, observed, cfg).seconds


def summary(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        key = row["state"] if row["state"] in ("done", "failed") else row["phase"]
        counts[key] = counts.get(key, 0) + 1
    return counts
