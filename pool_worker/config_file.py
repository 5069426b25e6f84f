"""The worker config file (TOML) and where each value comes from.

Precedence, highest first: command-line flags, environment (SEALPOOL_WORKER_*), the config
file, defaults (pydantic-settings' own order with the file as the lowest source). So one
file serves identical machines, and a flag or a variable overrides it on one of them.

Errors name the key and where it was set: `worker.toml:12: slots[1].cores: ...` for the
file (tomllib reports the line of syntax errors; for values, the key's line is found by
scanning the file), `--slots: ...` for a flag, `SEALPOOL_WORKER_SLOTS: ...` for the
environment. Relative paths in the file are taken from the file's directory."""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pydantic
from pydantic_settings import InitSettingsSource, PydanticBaseSettingsSource

from broker_topology.errors import ConfigError
from broker_topology.messages import Phase
from broker_topology.settings import PoolSettings

from .config import WorkerSettings

ENV_PREFIX = "SEALPOOL_WORKER_"
_TOML_POSITION = re.compile(r"\(at line (\d+), column \d+\)")
_BARE = r"[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'"
_DOTTED = rf"(?:{_BARE})(?:\s*\.\s*(?:{_BARE}))*"
_HEADER = re.compile(rf"^\s*(\[\[?)\s*({_DOTTED})\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(rf"^\s*({_DOTTED})\s*=")
_EXECUTOR_KINDS = ("external", "simulated")
_PHASE_NAMES = frozenset(p.value for p in Phase)
_SECRET = re.compile(r"pass|secret|token|key|credential", re.IGNORECASE)


@dataclass(frozen=True)
class ConfigSource:
    """Where the settings came from, to say where a bad value was set."""

    path: Path | None = None
    text: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    flags: dict[str, Any] = field(default_factory=dict)

    def where(self, loc: tuple[Any, ...]) -> str:
        """`file:line: key`, `--flag`, `SEALPOOL_WORKER_KEY` or just the key."""
        loc = normalize(loc)
        key = dotted(loc)
        top = str(loc[0]) if loc else ""
        if top in self.flags:
            return f"--{top.replace('_', '-')}"
        env = ENV_PREFIX + top.upper()
        if top and env in os.environ:
            return env if len(loc) == 1 else f"{env} ({key})"
        if self.path is not None and top in self.data:
            line = locate(self.text, loc)
            return f"{self.path}:{line}: {key}" if line else f"{self.path}: {key}"
        return key or "config"

    def error(self, loc: tuple[Any, ...], message: str) -> ConfigError:
        return ConfigError(f"{self.where(loc)}: {message}")


def normalize(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """A pydantic error location as a path of keys: without dict-key markers and the tag
    of the executor union."""
    out: list[Any] = []
    for i, part in enumerate(loc):
        if part == "[key]":
            continue
        if i == 2 and loc[0] == "executors" and part in _EXECUTOR_KINDS:
            continue
        out.append(part)
    return tuple(out)


def dotted(loc: tuple[Any, ...]) -> str:
    """("slots", 1, "cores") -> "slots[1].cores"."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _keys(text: str) -> tuple[str, ...]:
    return tuple(p.strip().strip("\"'") for p in re.findall(_BARE, text))


def key_lines(text: str) -> dict[tuple[Any, ...], int]:
    """First line of every key and table in a TOML text, by path (array-of-tables entries
    by index): enough to point at the line of a bad value."""
    lines: dict[tuple[Any, ...], int] = {}
    counts: dict[tuple[str, ...], int] = {}
    table: tuple[Any, ...] = ()
    in_string: str | None = None
    for n, line in enumerate(text.splitlines(), 1):
        if in_string is not None:
            if line.count(in_string) % 2 == 1:
                in_string = None
            continue
        if header := _HEADER.match(line):
            path = _keys(header.group(2))
            if header.group(1) == "[[":
                counts[path] = counts.get(path, 0) + 1
                table = (*_in_arrays(path[:-1], counts), path[-1], counts[path] - 1)
            else:
                table = _in_arrays(path, counts)
            lines.setdefault(table, n)
        elif key := _KEY.match(line):
            lines.setdefault((*table, *_keys(key.group(1))), n)
            for quote in ('"""', "'''"):
                if line.count(quote) % 2 == 1:
                    in_string = quote
    return lines


def _in_arrays(path: tuple[str, ...], counts: dict[tuple[str, ...], int]) -> tuple[Any, ...]:
    """[a.b] under [[a]] means the last `a` entry: insert its index."""
    out: list[Any] = []
    for i, part in enumerate(path):
        out.append(part)
        if path[:i + 1] in counts:
            out.append(counts[path[:i + 1]] - 1)
    return tuple(out)


def locate(text: str, loc: tuple[Any, ...]) -> int | None:
    """Line of the key at `loc`, or of its nearest enclosing key or table."""
    lines = key_lines(text)
    for end in range(len(loc), 0, -1):
        if (line := lines.get(tuple(loc[:end]))) is not None:
            return line
    return None


def read(path: Path) -> ConfigSource:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"--config {path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        pos = _TOML_POSITION.search(message)
        line = pos.group(1) if pos else (
            str(len(text.splitlines())) if "(at end of document)" in message else None)
        where = f"{path}:{line}" if line else str(path)
        message = _TOML_POSITION.sub("", message).replace("(at end of document)", "")
        raise ConfigError(f"{where}: not valid TOML: {message.strip()}") from None
    return ConfigSource(path, text, _anchor(data, path.parent.resolve()))


def _anchor(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative paths in the file are relative to the file's directory."""
    def fix(value: Any) -> Any:
        if isinstance(value, str) and value and not os.path.isabs(value):
            return str(base / value)
        return value

    data = dict(data)
    for key in ("data_dir", "sealed_dir"):
        if key in data:
            data[key] = fix(data[key])
    if isinstance(data.get("slots"), list):
        data["slots"] = [{**s, "temp_dir": fix(s["temp_dir"])}
                         if isinstance(s, dict) and "temp_dir" in s else s
                         for s in data["slots"]]
    if isinstance(data.get("executors"), dict):
        executors = {}
        for phase, spec in data["executors"].items():
            command = spec.get("command") if isinstance(spec, dict) else None
            if isinstance(command, list) and command and isinstance(command[0], str) \
                    and "/" in command[0]:
                spec = {**spec, "command": [fix(command[0]), *command[1:]]}
            executors[phase] = spec
        data["executors"] = executors
    return data


def load(path: Path | None, flags: dict[str, Any]) -> tuple[WorkerSettings, ConfigSource]:
    """Settings from flags > environment > file > defaults, and where each came from."""
    source = read(path) if path is not None else ConfigSource()
    source = ConfigSource(source.path, source.text, source.data,
                          {k: v for k, v in flags.items() if v is not None})
    file_data = source.data

    class _FromFile(WorkerSettings):
        @classmethod
        def settings_customise_sources(
                cls, settings_cls: type[Any], init_settings: PydanticBaseSettingsSource,
                env_settings: PydanticBaseSettingsSource,
                dotenv_settings: PydanticBaseSettingsSource,
                file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return init_settings, env_settings, InitSettingsSource(settings_cls, file_data)

    try:
        settings = _FromFile(**source.flags)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        raise source.error(tuple(err["loc"]), message) from None
    return WorkerSettings.model_construct(**dict(settings)), source


def mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def effective(pool: PoolSettings, cfg: WorkerSettings) -> str:
    """Everything this worker runs with, one `key = value` line each, secrets masked:
    logged at start."""
    pool_data = pool.model_dump(mode="json")
    for key in ("amqp_url", "redis_url"):
        pool_data[key] = mask_url(pool_data[key])
    worker = cfg.model_dump(mode="json")
    for spec in worker.get("executors", {}).values():
        if isinstance(spec.get("env"), dict):
            spec["env"] = {k: "***" if _SECRET.search(k) else v for k, v in spec["env"].items()}
    lines = [f"{k} = {json.dumps(_sorted(v))}" for k, v in sorted(pool_data.items())]
    for key, value in sorted(worker.items()):
        if key in ("slots", "executors") and value:
            items = enumerate(value) if key == "slots" else sorted(value.items())
            lines += [f"{key}[{i}] = {json.dumps(_sorted(v))}" for i, v in items]
        else:
            lines.append(f"{key} = {json.dumps(_sorted(value))}")
    return "\n".join(lines)


def _sorted(value: Any) -> Any:
    """Sets come out of model_dump in any order: sort lists of strings."""
    if isinstance(value, dict):
        return {k: _sorted(v) for k, v in value.items()}
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return sorted(value) if value and value[0] in _PHASE_NAMES else value
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value
