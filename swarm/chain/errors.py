"""Errors of the chain layer (dev chain, contract build, chain client), each with an actionable line."""

from __future__ import annotations

from swarm.errors import SwarmError


class ChainError(SwarmError):
    """Something went wrong talking to the L2 chain: a dead RPC, a reverted transaction, a missing key."""

    exit_code = 5
    summary = "chain: "


class DevChainError(ChainError):
    """The embedded dev chain (anvil) could not be started or stopped."""


class BuildError(ChainError):
    """The Solidity sources could not be compiled by solc-js."""


class RevertError(ChainError):
    """A call or transaction reverted; `error_name` is the decoded custom error (or None if unknown)."""

    def __init__(self, message: str, *, error_name: str | None = None, args: tuple = ()) -> None:
        super().__init__(message)
        self.error_name = error_name
        self.error_args = args
