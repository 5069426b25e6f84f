"""The share arithmetic behind admission: weighted water-filling (pure; the broker-level
test is in integration)."""

from miner_publisher.fairness import SHARE_STALE_S, Share, targets

NOW = 1000.0


def share(miner: str, weight: float = 1.0, backlog: int = 50, age: float = 0.0) -> Share:
    return Share(miner, weight, backlog, NOW - age)


def test_capacity_split_by_weight() -> None:
    got = targets([share("a", 2), share("b"), share("c")], capacity=12, now=NOW)
    assert got == {"a": 6, "b": 3, "c": 3}


def test_idle_miner_leaves_its_share_to_the_others() -> None:
    got = targets([share("a", 2), share("b", backlog=0), share("c")], capacity=12, now=NOW)
    assert got == {"a": 8, "c": 4}


def test_stopped_miner_drops_out_after_the_stale_time() -> None:
    shares = [share("a"), share("b", age=SHARE_STALE_S + 1)]
    assert targets(shares, capacity=8, now=NOW) == {"a": 8}


def test_every_active_miner_keeps_at_least_one_sector() -> None:
    got = targets([share("big", 100), share("tiny", 1)], capacity=4, now=NOW)
    assert got == {"big": 3, "tiny": 1}


def test_no_active_miner_no_targets() -> None:
    assert targets([share("a", backlog=0)], capacity=4, now=NOW) == {}


def test_what_a_miner_cannot_use_goes_to_the_others_by_weight() -> None:
    got = targets([share("a", 1, backlog=2), share("b", 1, backlog=100),
                   share("c", 2, backlog=100)], capacity=14, now=NOW)
    assert got == {"a": 2, "b": 4, "c": 8}
    assert sum(got.values()) == 14  # nothing left idle while there is work for it
