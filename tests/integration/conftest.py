"""Fixtures of the chain tests: one anvil per test module, and a freshly deployed escrow world per test that is
rolled back (evm_revert) when the test ends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from swarm.chain import DevChain
from swarm.chain.testing import EscrowWorld


@pytest.fixture(scope="module")
def chain() -> Iterator[DevChain]:
    with DevChain(accounts=6) as c:
        yield c


@pytest.fixture
def world(chain: DevChain) -> Iterator[EscrowWorld]:
    snapshot = chain.rpc("evm_snapshot", [])
    try:
        yield EscrowWorld(chain)
    finally:
        chain.rpc("evm_revert", [snapshot])
