"""The miner's Lua scripts (`miner_publisher/lua/*.lua`), read once per process."""

from __future__ import annotations

import functools
from importlib.resources import files
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis
    from redis.commands.core import Script


@functools.cache
def source(name: str) -> str:
    return files("miner_publisher").joinpath("lua", name).read_text()


def register(client: redis.Redis, name: str) -> Script:
    """The script `name` (e.g. "transition.lua") bound to `client` (EVALSHA, loaded on
    first use)."""
    return client.register_script(source(name))
