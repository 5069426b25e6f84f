"""The chain adapter: what the miner asks of the Filecoin chain. The built-in one simulates
it: the waits (precommit landing, seed, commit) come from MinerSettings.chain_*, and the
sealing ticket is random, as chain randomness is to the sealer."""

from __future__ import annotations

import secrets
from typing import Protocol


class Chain(Protocol):
    def ticket(self) -> str:
        """32 bytes of sealing randomness (hex), drawn when the sector enters pc1."""
        ...


class SimulatedChain:
    def ticket(self) -> str:
        return secrets.token_hex(32)
