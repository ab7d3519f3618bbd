"""The journal's transaction reconciler under any sequence of node events (hypothesis state machine, a model node):
blocks mined, reorganizations of any depth below finality, transactions the pool loses, sends that never arrive,
another client of the same key sending what the journal does not know, and a settler that signs only for what is
neither done on-chain nor named in its journal. Invariants: no intent is ever mined twice in the canonical chain
(nothing sent twice), the other client's transactions are never replaced by a resend; at the end every intent is
mined once and the journal is empty (nothing forgotten)."""

from __future__ import annotations

import itertools
from pathlib import Path
from tempfile import TemporaryDirectory

from eth_utils import keccak
from hexbytes import HexBytes
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from web3.exceptions import BlockNotFound, TransactionNotFound, Web3RPCError

from swarm.chain.tx import PendingTx
from swarm.settlement.journal import Journal, TxReconciler, journal_path

FINALITY = 4  # the model node's `finalized` block is head - FINALITY
INTENTS = ["contribute", "answer", "finalize", "claim"]
ME = "0x" + "cd" * 20


class ModelNode:
    """One account's view of a node: a canonical chain of blocks (lists of tx hashes), a pool, the signed bytes."""

    def __init__(self) -> None:
        self.counter = itertools.count()
        self.blocks: list[tuple[str, list[str]]] = [(self._hash(), [])]  # (block hash, txs)
        self.pool: dict[str, int] = {}  # hash -> nonce
        self.nonce_of: dict[str, int] = {}
        self.fee_of: dict[str, int] = {}
        self.evicted: list[tuple[str, str]] = []  # (who sent, transaction replaced by a higher fee at its nonce)
        self.sender = "settler"  # who is sending now

    def _hash(self) -> str:
        return "0x" + keccak(b"block %d" % next(self.counter)).hex()

    @property
    def head(self) -> int:
        return len(self.blocks) - 1

    def mined(self) -> dict[str, int]:
        return {h: n for n, (_, txs) in enumerate(self.blocks) for h in txs}

    def used(self) -> int:
        return len(self.mined())

    def pending_nonce(self) -> int:
        n = self.used()
        while n in self.pool.values():
            n += 1
        return n

    def mine(self) -> None:
        txs, n = [], self.used()
        while (h := next((h for h, k in self.pool.items() if k == n), None)) is not None:
            txs.append(h)
            del self.pool[h]
            n += 1
        self.pool = {h: k for h, k in self.pool.items() if k >= n}  # stale nonces leave the pool
        self.blocks.append((self._hash(), txs))

    def reorg(self, depth: int) -> None:
        """Replace the last `depth` blocks by empty ones (their transactions are gone, as anvil_reorg does)."""
        for i in range(len(self.blocks) - depth, len(self.blocks)):
            self.blocks[i] = (self._hash(), [])

    def send(self, raw: bytes) -> None:
        h = "0x" + keccak(raw).hex()
        nonce = self.nonce_of[h]
        if h in self.pool or h in self.mined():
            raise Web3RPCError("already known")
        if nonce < self.used():
            raise Web3RPCError("nonce too low")
        held = next((k for k, v in self.pool.items() if v == nonce), None)
        if held is not None:
            if self.fee_of[h] <= self.fee_of[held]:
                raise Web3RPCError("replacement transaction underpriced")
            del self.pool[held]
            self.evicted.append((self.sender, held))
        self.pool[h] = nonce


class ModelEth:
    def __init__(self, node: ModelNode) -> None:
        self.node = node

    @property
    def block_number(self) -> int:
        return self.node.head

    def get_transaction_count(self, address: str, tag: str) -> int:
        return self.node.pending_nonce() if tag == "pending" else self.node.used()

    def get_block(self, which: int | str) -> dict:
        n = max(0, self.node.head - FINALITY) if which == "finalized" else int(which)
        if n > self.node.head:
            raise BlockNotFound(str(n))
        return {"number": n, "hash": HexBytes(self.node.blocks[n][0])}

    def get_transaction_receipt(self, h: HexBytes) -> dict:
        n = self.node.mined().get(h.to_0x_hex())
        if n is None:
            raise TransactionNotFound(h.to_0x_hex())
        return {"blockNumber": n, "blockHash": HexBytes(self.node.blocks[n][0]), "status": 1}

    def get_transaction(self, h: HexBytes) -> dict:
        if h.to_0x_hex() in self.node.pool or h.to_0x_hex() in self.node.mined():
            return {"hash": h}
        raise TransactionNotFound(h.to_0x_hex())

    def send_raw_transaction(self, raw: bytes) -> None:
        self.node.send(raw)


class ReconcileMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = TemporaryDirectory()
        identity = {"chain_id": "1", "escrow": "0x" + "ab" * 20, "experiment": "0", "peer": ME, "genesis": "0x00"}
        self.journal = Journal(journal_path(Path(self.tmp.name), chain_id=1, genesis="0x00", escrow=identity["escrow"],
                                            experiment=0, peer=ME), identity)  # fmt: skip
        self.node = ModelNode()
        self.reconciler = TxReconciler(self.journal, type("W3", (), {"eth": ModelEth(self.node)})(), ME)
        self.intent_of: dict[str, str] = {}
        self.local_nonce: int | None = None  # TxSender's cache
        self.versions = itertools.count()

    def teardown(self) -> None:
        try:
            self.settle()
        finally:
            self.journal.close()
            self.tmp.cleanup()

    def done(self, intent: str) -> bool:
        return any(self.intent_of.get(h) == intent for h in self.node.mined())

    def named(self, intent: str) -> bool:
        return any(row.kind == intent for row in self.journal.txs())

    @rule(intent=st.sampled_from(INTENTS), arrives=st.booleans())
    def settler_signs(self, intent: str, arrives: bool) -> None:
        """The settler signs only for what is neither done on-chain nor named in its journal (in flight, mined not
        final); a send may never reach the node (then the sender re-reads its nonce next time)."""
        if self.done(intent) or self.named(intent):
            return
        pending = self.node.pending_nonce()
        nonce = pending if self.local_nonce is None else max(self.local_nonce, pending)
        raw = f"{intent}:{next(self.versions)}:{nonce}".encode()
        p = PendingTx(tx_hash="0x" + keccak(raw).hex(), nonce=nonce, raw=raw, what=intent, fields={"maxFeePerGas": 1})
        self.node.nonce_of[p.tx_hash] = nonce
        self.node.fee_of[p.tx_hash] = 2  # above the other program's: a resend at its nonce would replace it
        self.intent_of[p.tx_hash] = intent
        self.journal.record_tx(p, intent, [[0, 0]])
        if arrives:
            try:
                self.node.send(raw)
                self.local_nonce = nonce + 1
            except Web3RPCError:
                self.local_nonce = None
        else:
            self.local_nonce = None

    @rule()
    def another_program_sends(self) -> None:
        """The same key's other client (the watcher's) sends a transaction the journal does not know."""
        nonce = self.node.pending_nonce()
        raw = f"foreign:{next(self.versions)}:{nonce}".encode()
        h = "0x" + keccak(raw).hex()
        self.node.nonce_of[h], self.node.fee_of[h], self.intent_of[h] = nonce, 1, f"foreign {h}"
        self.node.send(raw)

    @rule()
    def mine(self) -> None:
        self.node.mine()

    @precondition(lambda self: self.node.head > 0)
    @rule(depth=st.integers(1, FINALITY))
    def reorg(self, depth: int) -> None:
        self.node.reorg(min(depth, self.node.head))

    @precondition(lambda self: self.node.pool)
    @rule(data=st.data())
    def pool_loses_one(self, data) -> None:
        del self.node.pool[data.draw(st.sampled_from(sorted(self.node.pool)))]

    @rule()
    def reconcile(self) -> None:
        self.node.sender = "reconciler"
        try:
            self.reconciler.run()
        finally:
            self.node.sender = "settler"

    @invariant()
    def no_other_transaction_replaced(self) -> None:
        """A resend never replaces the other program's transaction. (Signing can, when the node lost ours and the
        sender's nonce cache is ahead of the pool: TxSender's matter, not the journal's.)"""
        assert not [h for who, h in self.node.evicted if who == "reconciler" and self.intent_of[h].startswith("foreign")]

    @invariant()
    def nothing_twice(self) -> None:
        mined = [self.intent_of[h] for h in self.node.mined()]
        assert len(mined) == len(set(mined)), f"an intent mined twice: {mined}"

    def settle(self) -> None:
        """Quiet network: reconcile, let the settler act, mine, until everything is final."""
        for _ in range(8 * FINALITY + 40):
            if self.node.used() not in self.node.pool.values() and (
                any(n > self.node.used() for n in self.node.pool.values())
                or any(r.nonce > self.node.used() for r in self.journal.txs())
            ):  # a nonce gap the other program left (its transaction reorganized away): it sends again
                self.another_program_sends()
            self.reconcile()
            for intent in INTENTS:
                self.settler_signs(intent, True)
            self.mine()
        self.nothing_twice()
        assert all(self.done(i) for i in INTENTS), "an intent was forgotten"
        assert self.journal.txs() == []


TestReconcile = ReconcileMachine.TestCase
TestReconcile.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
