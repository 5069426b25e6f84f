"""The shared durations table: measured from miner-side times, and never poisoned."""

from __future__ import annotations

import math

import pytest
import redis

from broker_topology.messages import Phase
from broker_topology.naming import Names
from miner_publisher.deadlines import Durations, clamp_duration

from .test_miner_fixtures import rds

__all__ = ["rds"]


@pytest.mark.parametrize(("started", "finished", "window", "expected"), [
    (10.0, 40.0, 100.0, 30.0),  # plausible: kept
    (0.0, 1e308, 50.0, 50.0),  # a bogus end: at most the time since dispatch
    (40.0, 10.0, 50.0, 0.0),  # ends before it starts
    (0.0, math.inf, 50.0, 50.0),
])
def test_durations_are_clamped_to_the_time_since_dispatch(
        started: float, finished: float, window: float, expected: float) -> None:
    assert clamp_duration(started, finished, window) == expected


def test_a_nan_span_says_nothing() -> None:
    assert clamp_duration(0.0, math.nan, 50.0) is None


def test_non_finite_values_never_enter_the_table_and_a_poisoned_mean_is_replaced(
        rds: tuple[redis.Redis, Names]) -> None:
    client, names = rds
    durations = Durations(client, names)
    for bad in (math.nan, math.inf, -math.inf, -1.0):
        durations.observe(Phase.PC1, 2048, bad)
    assert durations.table() == {}
    client.hset(names.durations_key, "pc1:2048", '{"mean": NaN}')  # written before the guard
    assert durations.table() == {}
    durations.observe(Phase.PC1, 2048, 12.0)
    assert durations.table() == {(Phase.PC1, 2048): 12.0}
