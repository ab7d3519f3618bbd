"""Attacks on the escrow through a malicious contract: re-entering claim and withdraw while being paid."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from eth_utils import keccak

from swarm.chain import DevChain
from swarm.chain.testing import EscrowWorld

pytestmark = pytest.mark.integration

CLAIM, WITHDRAW = 1, 2
REENTRANT_CALL = keccak(text="ReentrancyGuardReentrantCall()")[:4]


@pytest.fixture(scope="module")
def chain() -> Iterator[DevChain]:
    with DevChain(accounts=3) as c:
        yield c


@pytest.fixture
def world(chain: DevChain) -> Iterator[EscrowWorld]:
    snapshot = chain.rpc("evm_snapshot", [])
    try:
        yield EscrowWorld(chain, token_contract="HookedToken")
    finally:
        chain.rpc("evm_revert", [snapshot])


def _attacker(world: EscrowWorld):
    """Deploy ReentrantPeer, give it tokens and a stake; returns (contract, its address)."""
    address, _ = world.funder.deploy("ReentrantPeer", world.escrow)
    contract = world.funder.contract("ReentrantPeer", address)
    world.mint(address, 1_000)
    world.funder.transact("stake", 200, contract=contract)
    world.funder.transact("setHook", address, True, contract=world.funder.contract("HookedToken", world.token))
    return contract, address


def test_reentering_claim_during_the_payout_is_blocked(world: EscrowWorld) -> None:
    exp = world.create_experiment(pool=5_000, reward_per_round=1_000)
    attacker, address = _attacker(world)
    f = world.funder
    (c,) = world.prove([world.contribution(f, exp, 0, 0, 77, as_peer=address)], exp)
    f.transact("contribute", exp, 0, 0, c.root, c.norm_sq, c.proof.abi_tuple(), contract=attacker)
    world.goto(exp, 0, "after")
    f.finalize(exp, 0)
    f.transact("setAttack", CLAIM, exp, 0, 0, contract=attacker)
    f.transact("claim", exp, 0, 0, contract=attacker)
    assert f.read("reentryAttempts", contract=attacker) == 1
    assert f.read("reentrySuccesses", contract=attacker) == 0
    assert f.read("lastRevert", contract=attacker)[:4] == REENTRANT_CALL
    assert f.read("balance", contract=attacker) == 800 + 1_000  # paid exactly once
    assert f.token_balance(world.escrow) == 200 + 4_000  # its stake and the rest of the pool


def test_reentering_withdraw_during_the_withdrawal_is_blocked(world: EscrowWorld) -> None:
    attacker, _ = _attacker(world)
    f = world.funder
    f.transact("requestUnbond", 150, contract=attacker)
    world.chain.increase_time(world.timing.unbonding_delay)
    f.transact("setAttack", WITHDRAW, 0, 0, 0, contract=attacker)
    f.transact("withdraw", contract=attacker)
    assert f.read("reentryAttempts", contract=attacker) == 1
    assert f.read("reentrySuccesses", contract=attacker) == 0
    assert f.read("balance", contract=attacker) == 800 + 150
    assert f.token_balance(world.escrow) == 50
