"""Hypothesis state machine on a real anvil: after every step the escrow holds exactly stakes + unclaimed
shares + pools + open audit bonds, every account (and the burn address) holds exactly what an independent model
says, and each peer's locked collateral is minStake per contribution still liable.

Besides honest peers and an auditor there is an attacker: it stakes, contributes to the funder's experiment and
to an experiment it created itself (as its funder), audits and slashes itself there, funds and reclaims its own
pool. The model gives it no path by which a slash comes back to it. The auditor also submits batches of the
stakers' contributions (contributeBatch, checked by the batch verifier): each recorded for its peer, a batch fee
per entry from the pool to the auditor, entries already recorded or without free collateral skipped.
The funder's experiment requires certificates (issue 13): the auditor sends a (round, stage)'s certificate,
signed by all its contributors, marking a random subset as averaged; a claim of an unmarked record pays 0 and
returns its share to the pool.
"""

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

from swarm.chain import DevChain, RevertError
from swarm.chain.testing import EscrowWorld, Timing
from swarm.rounds.parts import sign_digest
from swarm.settlement.certificate import certificate_hash, sort_addresses

pytestmark = pytest.mark.integration

N_PEERS, ROUNDS, STAGES, REWARD, MIN_STAKE, REPORTER_BPS, BOND, BATCH_FEE = 3, 2, 2, 1_000, 100, 2_000, 10, 3
MAIN, OWN = "main", "own"  # the funder's experiment, the attacker's experiment


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[DevChain, EscrowWorld, dict]]:
    with DevChain(accounts=N_PEERS + 3) as chain:
        # audit window < round duration: the model's "after round r" must still be inside round r+1's submission
        # window (audit_end(r) < submission_end(r+1)), or a contribute the model allows reverts SubmissionClosed
        world = EscrowWorld(chain, min_stake=MIN_STAKE, reporter_bps=REPORTER_BPS, timing=Timing(audit_window=60),
                            audit_bond=BOND, batch_fee=BATCH_FEE, verifier_contract="BatchStandInChunkVerifier")  # fmt: skip
        exp = world.create_experiment(num_rounds=ROUNDS, audits=1, reward_per_round=REWARD)
        stakers = world.peers[:N_PEERS] + [world.peers[N_PEERS + 1]]
        wanted = [world.contribution(p, exp, r, s, 1_000 + 10 * i + 3 * r + s)
                  for i, p in enumerate(stakers) for r in range(ROUNDS) for s in range(STAGES)]
        # the proof's public inputs do not name the experiment: one proof serves both experiments (same shape)
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
        self.honest = w.peers[:N_PEERS]
        self.auditor = w.peers[N_PEERS]
        self.attacker = w.peers[N_PEERS + 1]
        self.stakers = [*self.honest, self.attacker]
        start = w.funder.block_timestamp() + 5
        self.exps = {
            MAIN: w.create_experiment(num_rounds=ROUNDS, audits=1, reward_per_round=REWARD, start=start,
                                      require_certificate=True),
            OWN: w.create_experiment(num_rounds=ROUNDS, audits=1, reward_per_round=REWARD, start=start,
                                     client=self.attacker),
        }  # fmt: skip
        self.funders = {MAIN: w.funder, OWN: self.attacker}
        for p in self.stakers:  # anyone may batch their contributions to the main experiment
            p.allow_batches(self.exps[MAIN])
        self.burn = w.funder.read("BURN_ADDRESS")
        self.accounts = [w.funder.address, *[p.address for p in w.peers], self.burn]
        self.balance = {a: w.funder.token_balance(a) for a in self.accounts}
        self.escrow_balance = w.funder.token_balance(w.escrow)
        self.stake = {p.address: [0, 0] for p in self.stakers}  # active, unbonding
        self.pool = {MAIN: 0, OWN: 0}
        self.round, self.phase = 0, "train"
        self.records: dict[tuple, dict] = {}  # (exp, peer, round, stage) -> claimed, slashed, opener
        self.finalized: dict[tuple[str, int], int] = {}  # (exp, round) -> share
        self.bonds = 0
        self.certified: set[tuple[int, int]] = set()  # (round, stage) of MAIN with a certificate
        self.chain_id = w.funder.chain_id()
        w.goto(self.exps[MAIN], 0, "train")

    def teardown(self) -> None:
        self.world.revert_to(self.snapshot)

    def _move(self, who: str, amount: int) -> None:  # tokens from `who` into the escrow (negative: out)
        self.balance[who] -= amount
        self.escrow_balance += amount

    def _locked(self, addr: str) -> int:
        return MIN_STAKE * sum(1 for (_, p, _, _), v in self.records.items()
                               if p == addr and not v["claimed"] and not v["slashed"])  # fmt: skip

    @rule(i=st.integers(0, N_PEERS), amount=st.integers(MIN_STAKE, 300))
    def stake_tokens(self, i: int, amount: int) -> None:
        p = self.stakers[i]
        p.stake(amount)
        self.stake[p.address][0] += amount
        self._move(p.address, amount)

    @rule(amount=st.integers(1, 2_000), own=st.booleans())
    def fund(self, amount: int, own: bool) -> None:
        which = OWN if own else MAIN
        funder = self.funders[which]
        funder.fund(self.exps[which], amount)
        self.pool[which] += amount
        self._move(funder.address, amount)

    @rule(i=st.integers(0, N_PEERS), data=st.data())
    def unbond_and_withdraw(self, i: int, data: st.DataObject) -> None:
        p = self.stakers[i]
        active = self.stake[p.address][0]
        free = active - self._locked(p.address)
        amount = data.draw(st.integers(1, max(1, active)))
        if amount > free:  # locked collateral cannot leave
            with pytest.raises(RevertError, match="InsufficientStake"):
                p.request_unbond(amount)
            return
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
    @rule(i=st.integers(0, N_PEERS), stage=st.integers(0, STAGES - 1), own=st.booleans())
    def contribute(self, i: int, stage: int, own: bool) -> None:
        p = self.stakers[i]
        which = OWN if own and p is self.attacker else MAIN
        key = (which, p.address, self.round, stage)
        if key in self.records:
            return
        c = self.proofs[(p.address.lower(), self.round, stage)].model_copy(update={"experiment": self.exps[which]})
        if self.stake[p.address][0] - self._locked(p.address) < MIN_STAKE:  # one stake cannot back two
            with pytest.raises(RevertError, match="CollateralUnavailable"):
                p.contribute(c)
            return
        p.contribute(c)
        self.records[key] = {"claimed": False, "slashed": False, "opener": None, "certified": False}

    @precondition(lambda self: self.phase == "train")
    @rule(chosen=st.lists(st.tuples(st.integers(0, N_PEERS), st.integers(0, STAGES - 1)), min_size=1, max_size=4))
    def batch_contribute(self, chosen: list[tuple[int, int]]) -> None:
        """The auditor (not a staker) submits the stakers' contributions to the main experiment in one batch."""
        batch, recorded = [], []
        free = {p.address: self.stake[p.address][0] - self._locked(p.address) for p in self.stakers}
        for i, stage in chosen:
            p = self.stakers[i]
            key = (MAIN, p.address, self.round, stage)
            batch.append(self.proofs[(p.address.lower(), self.round, stage)].model_copy(
                update={"experiment": self.exps[MAIN]}))  # fmt: skip
            if key not in self.records and key not in recorded and free[p.address] >= MIN_STAKE:
                recorded.append(key)
                free[p.address] -= MIN_STAKE
        result = self.auditor.contribute_batch(batch, precheck=False)
        assert len(result.included) == len(recorded) and len(result.skipped) == len(batch) - len(recorded)
        for key in recorded:
            self.records[key] = {"claimed": False, "slashed": False, "opener": None, "certified": False}
        fee = min(BATCH_FEE * len(recorded), self.pool[MAIN])  # to the submitter, from the pool
        assert result.fee == fee
        self.pool[MAIN] -= fee
        self._move(self.auditor.address, -fee)

    @precondition(lambda self: self.phase == "audit")
    @rule(data=st.data())
    def open_audit(self, data: st.DataObject) -> None:
        keys = [k for k, v in self.records.items() if k[2] == self.round and v["opener"] is None]
        if keys:
            which, peer, r, stage = key = data.draw(st.sampled_from(keys))
            opener = self.attacker if which == OWN else self.auditor  # the attacker audits itself at home
            opener.open_audit(self.exps[which], r, stage, peer, 0)
            self.records[key]["opener"] = opener.address
            self._move(opener.address, BOND)
            self.bonds += BOND

    @rule(data=st.data())
    def certify(self, data: st.DataObject) -> None:
        """All contributors of a (round, stage) of the funder's experiment sign; the auditor sends it."""
        over = [(r, s) for (w, _, r, s) in self.records if w == MAIN and (r, s) not in self.certified
                and (r < self.round or self.phase != "train")]  # fmt: skip
        if not over:
            return
        r, stage = data.draw(st.sampled_from(sorted(set(over))))
        members = sort_addresses(p for (w, p, rr, s) in self.records if (w, rr, s) == (MAIN, r, stage))
        included = data.draw(st.integers(0, (1 << len(members)) - 1))
        h = certificate_hash(self.chain_id, self.world.escrow, self.exps[MAIN], r, stage, members, included)
        wallets = {p.address: p.wallet.account for p in self.stakers}
        self.auditor.certify(self.exps[MAIN], r, stage, members, included,
                             [sign_digest(wallets[a], h) for a in members])  # fmt: skip
        self.certified.add((r, stage))
        for i, peer in enumerate(members):
            self.records[(MAIN, peer, r, stage)]["certified"] = bool(included >> i & 1)

    @precondition(lambda self: self.phase in ("train", "audit", "after") and self.round < ROUNDS)
    @rule()
    def advance(self) -> None:
        nxt = {"train": "audit", "audit": "after", "after": "train"}[self.phase]
        if nxt == "train":
            if self.round + 1 >= ROUNDS:
                return
            self.round += 1
        self.world.goto(self.exps[MAIN], self.round, nxt)
        self.phase = nxt

    @precondition(lambda self: self.phase in ("after", "over"))
    @rule(data=st.data())
    def slash(self, data: st.DataObject) -> None:
        keys = [k for k, v in self.records.items() if v["opener"] and not v["slashed"] and self._audit_over(k[2])]
        if not keys:
            return
        which, peer, r, stage = key = data.draw(st.sampled_from(keys))
        caller = data.draw(st.sampled_from([self.attacker, self.auditor, self.world.funder]))
        caller.slash(self.exps[which], r, stage, peer, 0)
        rec = self.records[key]
        rec["slashed"] = True
        self.stake[peer][0] -= MIN_STAKE  # only this contribution's collateral
        reward = MIN_STAKE * REPORTER_BPS // 10_000
        self._move(rec["opener"], -(reward + BOND))  # the opener is paid, whoever calls
        self.bonds -= BOND
        self._move(self.burn, -(MIN_STAKE - reward))  # the rest is burned: no pool receives it

    @precondition(lambda self: self.phase in ("after", "over"))
    @rule(own=st.booleans())
    def finalize(self, own: bool) -> None:
        which = OWN if own else MAIN
        for r in range(min(self.round + 1, ROUNDS)):
            if (which, r) in self.finalized or not self._audit_over(r):
                continue
            self.funders[which].finalize(self.exps[which], r)
            valid = sum(1 for k, v in self.records.items() if k[0] == which and k[2] == r and not v["opener"])
            share = min(REWARD, self.pool[which]) // valid if valid else 0
            self.pool[which] -= share * valid
            self.finalized[(which, r)] = share

    @rule(data=st.data())
    def claim(self, data: st.DataObject) -> None:
        keys = [k for k, v in self.records.items()
                if (k[0], k[2]) in self.finalized and not v["claimed"] and not v["opener"]]  # fmt: skip
        if not keys:
            return
        which, peer, r, stage = key = data.draw(st.sampled_from(keys))
        next(p for p in self.stakers if p.address == peer).claim(self.exps[which], r, stage)
        self.records[key]["claimed"] = True
        if which == MAIN and not self.records[key]["certified"]:  # not averaged: its share goes back to the pool
            self.pool[MAIN] += self.finalized[(which, r)]
        else:
            self._move(peer, -self.finalized[(which, r)])

    @precondition(lambda self: self.phase == "over")
    @rule()
    def attacker_reclaims_its_pool(self) -> None:
        pending = {r for (w, _, r, _) in self.records if w == OWN and (OWN, r) not in self.finalized}
        if pending:  # it cannot take what its finished rounds owe
            with pytest.raises(RevertError, match="RoundsNotFinalized"):
                self.attacker.reclaim_pool(self.exps[OWN])
        elif self.pool[OWN]:
            self.attacker.reclaim_pool(self.exps[OWN])
            self._move(self.attacker.address, -self.pool[OWN])
            self.pool[OWN] = 0

    def _audit_over(self, r: int) -> bool:
        return self.phase == "over" or r < self.round or (r == self.round and self.phase == "after")

    @invariant()
    def escrow_holds_stakes_unclaimed_shares_pools_and_bonds(self) -> None:
        f = self.world.funder
        stakes = 0
        for p in self.stakers:
            s = f.stake_of(p.address)
            stakes += s.active + s.unbonding
            assert s.locked == self._locked(p.address)  # minStake per contribution still liable
            assert [s.active, s.unbonding] == self.stake[p.address]
        unclaimed = sum(self.finalized[(w, r)] for (w, _, r, _), v in self.records.items()
                        if (w, r) in self.finalized and not v["claimed"] and not v["opener"])  # fmt: skip
        pools = sum(f.experiment(e).pool for e in range(1, f.read("nextExperimentId")))
        assert f.token_balance(self.world.escrow) == stakes + unclaimed + pools + self.bonds
        assert f.token_balance(self.world.escrow) == self.escrow_balance

    @invariant()
    def every_account_holds_exactly_what_it_is_owed(self) -> None:
        f = self.world.funder
        assert {a: f.token_balance(a) for a in self.accounts} == self.balance
        assert {w: f.experiment(e).pool for w, e in self.exps.items()} == self.pool


def test_random_sequences_keep_the_books_balanced(setup: tuple[DevChain, EscrowWorld, dict]) -> None:
    EscrowMachine.chain, EscrowMachine.world, EscrowMachine.proofs = setup
    run_state_machine_as_test(EscrowMachine, settings=settings(
        max_examples=8, stateful_step_count=16, deadline=None, suppress_health_check=list(HealthCheck)))
