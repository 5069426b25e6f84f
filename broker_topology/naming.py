"""Every broker name, in one place. All of them start with the pool's namespace.

Routing keys are `<origin>.<phase>.<lane>.<miner>`: origin is `pool` for pooled jobs or
the target worker's name for follow-ups that must run where the sector's files are.
"""

from __future__ import annotations

from dataclasses import dataclass

from .messages import Lane, Phase

POOL_ORIGIN = "pool"


@dataclass(frozen=True)
class Names:
    namespace: str

    def exchange(self, kind: str) -> str:
        """kind: jobs, local, escalate, delay, poison, results, control, doorbell."""
        return f"{self.namespace}.{kind}"

    @property
    def jobs(self) -> str:
        return self.exchange("jobs")

    @property
    def local(self) -> str:
        return self.exchange("local")

    @property
    def escalate(self) -> str:
        return self.exchange("escalate")

    @property
    def delay(self) -> str:
        return self.exchange("delay")

    @property
    def poison(self) -> str:
        return self.exchange("poison")

    @property
    def results(self) -> str:
        return self.exchange("results")

    @property
    def control(self) -> str:
        return self.exchange("control")

    @property
    def doorbell(self) -> str:
        return self.exchange("doorbell")

    def pool_queue(self, phase: Phase, lane: Lane) -> str:
        return f"{self.namespace}.q.{phase.value}.{lane.value}"

    def worker_queue(self, worker: str, phase: Phase) -> str:
        return f"{self.namespace}.w.{worker}.{phase.value}"

    def delay_queue(self, seconds: int) -> str:
        return f"{self.namespace}.q.delay.{seconds}s"

    @property
    def poison_queue(self) -> str:
        return f"{self.namespace}.q.poison"

    def results_queue(self, miner: str) -> str:
        return f"{self.namespace}.results.{miner}"

    def redis_key(self, *parts: object) -> str:
        return ":".join([self.namespace, *(str(p) for p in parts)])


def routing_key(origin: str, phase: Phase, lane: Lane | str, miner: str) -> str:
    return f"{origin}.{phase.value}.{Lane(lane).value}.{miner}"


def parse_routing_key(key: str) -> tuple[str, Phase, Lane, str]:
    origin, phase, lane, miner = key.split(".")
    return origin, Phase(phase), Lane(lane), miner
