"""Hypothesis state machine on a real anvil: after every step the escrow holds exactly stakes + unclaimed
shares + pools, and every account holds exactly what an independent model says it is owed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from swarm.chain import DevChain
from swarm.chain.testing import EscrowWorld, Timing

pytestmark = pytest.mark.integration

N_PEERS, ROUNDS, STAGES, REWARD, MIN_STAKE, REPORTER_BPS = 3, 2, 2, 1_000, 100, 2_000


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[DevChain, EscrowWorld, dict]]:
    with DevChain(accounts=N_PEERS + 2) as chain:
        # audit window < round duration: the model's "after round r" must still be inside round r+1's submission
        # window (audit_end(r) < submission_end(r+1)), or a contribute the model allows reverts SubmissionClosed
        world = EscrowWorld(chain, min_stake=MIN_STAKE, reporter_bps=REPORTER_BPS, timing=Timing(audit_window=60))
        exp = world.create_experiment(num_rounds=ROUNDS, audits=1, reward_per_round=REWARD)
        wanted = [world.contribution(p, exp, r, s, 1_000 + 10 * i + 3 * r + s)
                  for i, p in enumerate(world.peers[:N_PEERS]) for r in range(ROUNDS) for s in range(STAGES)]
        proofs = {(c.peer, c.round, c.stage): c for c in world.prove(wanted, exp)}
        yield chain, world, proofs


class EscrowMachine(RuleBasedStateMachine):
    chain: DevChain
    world: EscrowWorld
    proofs: dict

    @initialize()
    def start(self) -> None:
        self.snapshot = self.chain.rpc("evm_snapshot", [])
        w = self.world
        self.peers = w.peers[:N_PEERS]
        self.auditor = w.peers[N_PEERS]
        self.exp = w.create_experiment(num_rounds=ROUNDS, audits=1, reward_per_round=REWARD)
        self.accounts = [w.funder.address, *[p.address for p in w.peers]]
        self.balance = {a: w.funder.token_balance(a) for a in self.accounts}
        self.escrow_balance = w.funder.token_balance(w.escrow)
        self.stake = {p.address: [0, 0] for p in self.peers}  # active, unbonding (this machine's deposits only)
        self.pool, self.round, self.phase = 0, 0, "train"
        self.records: dict[tuple, dict] = {}
        self.finalized: dict[int, int] = {}  # round -> share
        self.base_stakes = {p.address: self._chain_stake(p.address) for p in self.peers}

    def teardown(self) -> None:
        self.world.revert_to(self.snapshot)

    def _chain_stake(self, addr: str) -> int:
        s = self.world.funder.stake_of(addr)
        return s.active + s.unbonding

    def _move(self, who: str, amount: int) -> None:  # tokens from `who` into the escrow (negative: out)
        self.balance[who] -= amount
        self.escrow_balance += amount

    @rule(i=st.integers(0, N_PEERS - 1), amount=st.integers(MIN_STAKE, 300))
    def stake_tokens(self, i: int, amount: int) -> None:
        p = self.peers[i]
        p.stake(amount)
        self.stake[p.address][0] += amount
        self._move(p.address, amount)

    @rule(amount=st.integers(1, 2_000))
    def fund(self, amount: int) -> None:
        self.world.funder.fund(self.exp, amount)
        self.pool += amount
        self._move(self.world.funder.address, amount)

    @rule(i=st.integers(0, N_PEERS - 1), data=st.data())
    def unbond_and_withdraw(self, i: int, data: st.DataObject) -> None:
        p = self.peers[i]
        active = self.stake[p.address][0]
        if active == 0:
            return
        amount = data.draw(st.integers(1, active))
        p.request_unbond(amount)
        self.stake[p.address] = [active - amount, self.stake[p.address][1] + amount]
        if data.draw(st.booleans()):  # wait out the delay (this ends the rounds) and withdraw
            self.chain.increase_time(self.world.timing.unbonding_delay)
            self.phase, self.round = "over", ROUNDS
            p.withdraw()
            out = self.stake[p.address][1]
            self.stake[p.address][1] = 0
            self._move(p.address, -out)

    @precondition(lambda self: self.phase == "train")
    @rule(i=st.integers(0, N_PEERS - 1), stage=st.integers(0, STAGES - 1))
    def contribute(self, i: int, stage: int) -> None:
        p = self.peers[i]
        key = (p.address, self.round, stage)
        if self.stake[p.address][0] < MIN_STAKE or key in self.records:
            return
        c = self.proofs[(p.address.lower(), self.round, stage)]
        p.contribute(c.model_copy(update={"experiment": self.exp}))
        self.records[key] = {"claimed": False, "slashed": False, "audit": False}

    @precondition(lambda self: self.phase == "audit")
    @rule(data=st.data())
    def open_audit(self, data: st.DataObject) -> None:
        keys = [k for k in self.records if k[1] == self.round and not self.records[k]["audit"]]
        if keys:
            peer, r, stage = data.draw(st.sampled_from(keys))
            self.auditor.open_audit(self.exp, r, stage, peer, 0)
            self.records[(peer, r, stage)]["audit"] = True

    @precondition(lambda self: self.phase in ("train", "audit", "after") and self.round < ROUNDS)
    @rule()
    def advance(self) -> None:
        nxt = {"train": "audit", "audit": "after", "after": "train"}[self.phase]
        if nxt == "train":
            if self.round + 1 >= ROUNDS:
                return
            self.round += 1
        self.world.goto(self.exp, self.round, nxt)
        self.phase = nxt

    @precondition(lambda self: self.phase in ("after", "over"))
    @rule(data=st.data())
    def slash(self, data: st.DataObject) -> None:
        keys = [k for k, v in self.records.items() if v["audit"] and not v["slashed"] and self._audit_over(k[1])]
        if not keys:
            return
        peer, r, stage = key = data.draw(st.sampled_from(keys))
        self.auditor.slash(self.exp, r, stage, peer, 0)
        rec = self.records[key]
        rec["slashed"] = True
        amount = sum(self.stake[peer]) + self.base_stakes[peer]
        self.stake[peer] = [0, 0]
        self.base_stakes[peer] = 0
        reward = amount * REPORTER_BPS // 10_000
        self.pool += amount - reward
        if r in self.finalized and not rec["claimed"]:
            self.pool += self.finalized[r]
        self._move(self.auditor.address, -reward)

    @precondition(lambda self: self.phase in ("after", "over"))
    @rule()
    def finalize(self) -> None:
        for r in range(min(self.round + 1, ROUNDS)):
            if r in self.finalized or not self._audit_over(r):
                continue
            self.world.funder.finalize(self.exp, r)
            valid = sum(1 for k, v in self.records.items() if k[1] == r and not v["slashed"])
            share = min(REWARD, self.pool) // valid if valid else 0
            self.pool -= share * valid
            self.finalized[r] = share

    @rule(data=st.data())
    def claim(self, data: st.DataObject) -> None:
        keys = [k for k, v in self.records.items()
                if k[1] in self.finalized and not v["claimed"] and not v["slashed"] and not v["audit"]]
        if not keys:
            return
        peer, r, stage = key = data.draw(st.sampled_from(keys))
        next(p for p in self.peers if p.address == peer).claim(self.exp, r, stage)
        self.records[key]["claimed"] = True
        self._move(peer, -self.finalized[r])

    def _audit_over(self, r: int) -> bool:
        return self.phase == "over" or r < self.round or (r == self.round and self.phase == "after")

    @invariant()
    def escrow_holds_stakes_unclaimed_shares_and_pools(self) -> None:
        f = self.world.funder
        stakes = sum(self._chain_stake(p.address) for p in self.world.peers)
        unclaimed = sum(f.round_state(self.exp, r).share for (_, r, _), v in self.records.items()
                        if r in self.finalized and not v["claimed"] and not v["slashed"])
        pools = sum(f.experiment(e).pool for e in range(1, f.read("nextExperimentId")))
        assert f.token_balance(self.world.escrow) == stakes + unclaimed + pools
        assert f.token_balance(self.world.escrow) == self.escrow_balance

    @invariant()
    def every_account_holds_exactly_what_it_is_owed(self) -> None:
        f = self.world.funder
        assert {a: f.token_balance(a) for a in self.accounts} == self.balance
        assert f.experiment(self.exp).pool == self.pool


def test_random_sequences_keep_the_books_balanced(setup: tuple[DevChain, EscrowWorld, dict]) -> None:
    EscrowMachine.chain, EscrowMachine.world, EscrowMachine.proofs = setup
    run_state_machine_as_test(EscrowMachine, settings=settings(
        max_examples=8, stateful_step_count=14, deadline=None, suppress_health_check=list(HealthCheck)))
