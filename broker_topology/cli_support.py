"""What all three CLIs share: one-line errors instead of tracebacks, named exit codes,
output as a table or as JSON."""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import click
import pydantic
import redis

from .errors import BrokerError, ConfigError, SealpoolError
from .settings import PoolSettings
from .units import format_bytes, format_cpus, format_duration

if TYPE_CHECKING:
    from rich.table import Table

    from .control import SlotView

EXIT_OK = 0
EXIT_FAILURE = 1  # the operation ran and reports failure (e.g. a check found a problem)
EXIT_USAGE = 2  # bad flags, config or input: nothing was done
EXIT_BROKER = 3  # RabbitMQ unreachable or refused
EXIT_REDIS = 4  # Redis unreachable

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def user_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn expected failures into `error: ...` on stderr and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            fail(str(exc), EXIT_USAGE)
        except (ValueError, pydantic.ValidationError) as exc:
            fail(_one_line(exc), EXIT_USAGE)
        except BrokerError as exc:
            fail(str(exc), EXIT_BROKER)
        except redis.RedisError as exc:
            fail(f"Redis: {exc}", EXIT_REDIS)
        except SealpoolError as exc:
            fail(str(exc), EXIT_FAILURE)

    return wrapper


def _one_line(exc: Exception) -> str:
    if isinstance(exc, pydantic.ValidationError):
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        return f"{where}: {err['msg']}"
    return str(exc).splitlines()[0]


def load_settings(**overrides: Any) -> PoolSettings:
    try:
        return PoolSettings(**{k: v for k, v in overrides.items() if v is not None})
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else "settings"
        raise ConfigError(f"SEALPOOL_{key.upper()} / --{key.replace('_', '-')}: "
                          f"{err['msg']}") from None


def pool_options(fn: F) -> F:
    """--amqp-url, --redis-url, --namespace (each also from its SEALPOOL_* variable)."""
    for name, help_ in reversed([
        ("amqp-url", "RabbitMQ URL [SEALPOOL_AMQP_URL]"),
        ("redis-url", "Redis URL [SEALPOOL_REDIS_URL]"),
        ("namespace", "prefix of every broker and Redis name [SEALPOOL_NAMESPACE]"),
    ]):
        fn = click.option(f"--{name}", default=None, help=help_)(fn)
    return fn


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("pika").setLevel(logging.CRITICAL)


def slots_table(worker: str, slots: Sequence[SlotView], now: float | None = None) -> Table:
    """A worker's slots as `pool-worker list` and `miner-publisher worker info` show them."""
    from rich.table import Table

    now = time.time() if now is None else now
    table = Table(title=f"worker {worker}: {len(slots)} slot(s)")
    for col in ("#", "phases", "temp dir", "cores", "gpu", "job", "paused", "state",
                "last error"):
        table.add_column(col, no_wrap=col in ("#", "paused"), overflow="fold")
    for s in slots:
        job = f"{s.sector} {s.phase} #{s.attempt}" if s.job else "-"
        paused = (f"yes, {format_duration(now - s.paused_since)}" if s.paused and
                  s.paused_since else "yes" if s.paused else "no")
        state = s.state.value
        if s.started_at and s.job:
            state += f" {format_duration(now - s.started_at)}"
        for phase, why in s.held_back.items():
            state += f"\n{phase} held back: {why}"
        phases = ",".join(p.value for p in s.phases)
        if set(s.phases) != set(s.configured_phases):
            phases += f" (of {','.join(p.value for p in s.configured_phases)})"
        gpu = f"{s.gpu.index} {s.gpu.name} {format_bytes(s.gpu.memory)}" if s.gpu else "-"
        cores = format_cpus(s.cores) if s.cores else "all"
        style = {"busy": "green", "blocked": "yellow", "stopped": "dim"}.get(s.state.value, "")
        table.add_row(str(s.index), phases, s.temp_dir, cores, gpu, job, paused, state,
                      s.last_error or "", style=style)
    return table
