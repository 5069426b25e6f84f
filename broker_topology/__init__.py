"""The wire contract of sealpool: messages, names, topology, and the AMQP link.
The only package both miner_publisher and pool_worker import."""

from __future__ import annotations

from .errors import (
    BrokerError,
    BrokerUnreachable,
    ConfigError,
    DeliveryLost,
    JobError,
    MessageError,
    NeedsData,
    PermanentError,
    SealpoolError,
    TemporaryError,
    TopologyMismatch,
    Unroutable,
)
from .link import Link, connect_blocking
from .messages import (
    CLAIM_ORDER,
    LOCAL_PHASES,
    PIPELINE,
    ErrorClass,
    Job,
    Lane,
    Outcome,
    Phase,
    Progress,
    Result,
    SectorClass,
    job_id,
)
from .naming import POOL_ORIGIN, Names, parse_routing_key, routing_key
from .settings import PoolSettings
from .topology import Topology, miner_topology, pool_topology, worker_topology
from .transport import Delivery, Session, Transport

__all__ = [
    "CLAIM_ORDER",
    "LOCAL_PHASES",
    "PIPELINE",
    "POOL_ORIGIN",
    "BrokerError",
    "BrokerUnreachable",
    "ConfigError",
    "Delivery",
    "DeliveryLost",
    "ErrorClass",
    "Job",
    "JobError",
    "Lane",
    "Link",
    "MessageError",
    "Names",
    "NeedsData",
    "Outcome",
    "PermanentError",
    "Phase",
    "PoolSettings",
    "Progress",
    "Result",
    "SealpoolError",
    "SectorClass",
    "Session",
    "TemporaryError",
    "Topology",
    "TopologyMismatch",
    "Transport",
    "Unroutable",
    "connect_blocking",
    "job_id",
    "miner_topology",
    "parse_routing_key",
    "pool_topology",
    "routing_key",
    "worker_topology",
]
