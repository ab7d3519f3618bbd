"""What a wallet has earned in one experiment, read from the escrow itself, and claiming all of it in one go.

Every money figure a volunteer sees (panel, `swarm-peer status`, the summary on exit) comes from `EarningsReader`,
never from what the peer believes it did: claimed = the escrow's `Claimed` events, claimable = shares of finalized
rounds whose record is valid and unclaimed, stake = `stakes(wallet)`. A record's fate is read from the escrow's
`Slashed`/`Claimed` events as well as from `getRecord`: the escrow keeps a peer's records in a ring of RECORD_RING
(64) slots per stage, so once a round's slot is reused, `getRecord` shows that round as empty; a closed record must
still count as slashed or claimed then, never as claimable.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel

from swarm.chain.client import ChainClient
from swarm.chain.errors import ChainError, RevertError

logger = logging.getLogger(__name__)

CLAIM_BATCH = 50  # (round, stage) pairs per claimMany transaction (keeps each under any L2's block gas limit)


class Earnings(BaseModel):
    """One wallet's money in one experiment at one block. Amounts are in the token's base units."""

    address: str
    experiment: int
    escrow: str
    symbol: str = "tokens"
    decimals: int = 18
    block: int
    stake: int  # active stake in the escrow
    unbonding: int = 0
    min_stake: int = 0
    balance: int = 0  # the wallet's token balance
    contributions: int = 0  # on-chain records of this wallet in the experiment
    claimed: int = 0  # sum of this wallet's Claimed events in the experiment
    claimed_rounds: int = 0
    claimable: int = 0  # shares of finalized rounds, valid and not yet claimed
    claimable_rounds: list[tuple[int, int]] = []  # (round, stage)
    to_finalize: list[
        tuple[int, int]
    ] = []  # audit window over, round not finalized yet (anyone may finalize)
    waiting: int = 0  # records whose submission or audit window is still open
    blocked: int = 0  # records with an unanswered audit: never claimable
    slashed: int = 0  # records slashed

    def amount(self, units: int) -> str:
        return format_amount(units, self.decimals, self.symbol)


def format_amount(units: int, decimals: int = 18, symbol: str = "") -> str:
    """`units` base units as an exact decimal number of tokens: '12.5 SWT' (no rounding: it is what the chain says)."""
    whole, frac = divmod(abs(units), 10**decimals)
    text = f"{whole}" + (f".{frac:0{decimals}d}".rstrip("0") if frac else "")
    return f"{'-' if units < 0 else ''}{text} {symbol}".strip()


class EarningsReader:
    """Reads `address`'s earnings in `experiment`; keeps an event cursor so that each read only scans new blocks."""

    def __init__(self, client: ChainClient, experiment: int, address: str) -> None:
        self.client, self.experiment, self.address = client, experiment, address
        self._me = address.lower()
        self._next_block = 0
        self._mine: set[tuple[int, int]] = set()
        self._claimed: dict[tuple[int, int], int] = {}
        self._slashed: set[tuple[int, int]] = set()
        self._gone: set[tuple[int, int]] = set()  # closed records whose closing event we never saw
        self._token: tuple[str, int] | None = None

    def read(self) -> Earnings:
        """The wallet's earnings now; raises ChainError when the RPC cannot be read."""
        c, exp = self.client, self.experiment
        head = c.block_number()
        state = c.experiment(exp)
        if self._next_block == 0:  # nothing of the experiment can be older than its first round's opening
            self._next_block = first_block_at(c, state.start, head)
        if head >= self._next_block:
            self._scan(self._next_block, head)
            self._next_block = head + 1
        now = c.block_timestamp()
        stake = c.stake_of(self.address)
        symbol, decimals = self._token_info()
        out: dict[str, Any] = {"claimable": 0, "waiting": 0, "blocked": 0, "slashed": len(self._slashed)}
        claimable: list[tuple[int, int]] = []
        to_finalize: list[tuple[int, int]] = []
        rounds: dict[int, Any] = {}
        for r, s in sorted(self._mine - self._claimed.keys() - self._slashed - self._gone):
            rec = c.record(exp, r, s, self.address)
            rnd = rounds.get(r) or rounds.setdefault(r, c.round_state(exp, r))
            if not rec.exists:  # its ring slot holds a later round's record: closed, but not by an event we saw
                self._gone.add((r, s))
                logger.warning("experiment %d round %d stage %d: the escrow no longer holds this record (its slot "
                               "was reused) and no Claimed/Slashed event was seen; not counted", exp, r, s)  # fmt: skip
            elif rec.slashed:
                out["slashed"] += 1
            elif rec.claimed:  # claimed after our event scan: the share is what _claim paid
                self._claimed[(r, s)] = rnd.share
            elif rec.audits_opened & ~rec.audits_answered and (rnd.finalized or now >= state.audit_end(r)):
                out["blocked"] += 1
            elif rnd.finalized:
                out["claimable"] += rnd.share
                claimable.append((r, s))
            elif now >= state.audit_end(r):
                to_finalize.append((r, s))
            else:
                out["waiting"] += 1
        return Earnings(
            address=self.address, experiment=exp, escrow=str(c.escrow_address), symbol=symbol, decimals=decimals,
            block=head, stake=stake.active, unbonding=stake.unbonding, min_stake=self._min_stake(),
            balance=c.token_balance(self.address), contributions=len(self._mine), claimed=sum(self._claimed.values()),
            claimed_rounds=len(self._claimed), claimable_rounds=claimable, to_finalize=to_finalize, **out,
        )  # fmt: skip

    def _scan(self, first: int, last: int) -> None:
        c, where = self.client, {"experimentId": self.experiment, "peer": self.address}
        for e in c.events("Contributed", first, last, where=where):
            self._mine.add((int(e["round"]), int(e["stage"])))
        for e in c.events("Claimed", first, last, where=where):
            key = (int(e["round"]), int(e["stage"]))
            self._mine.add(key)
            self._claimed[key] = int(e["amount"])
        for e in c.events("Slashed", first, last, where=where):
            key = (int(e["round"]), int(e["stage"]))
            self._mine.add(key)
            self._slashed.add(key)

    def _token_info(self) -> tuple[str, int]:
        if self._token is None:
            c = self.client
            try:
                self._token = (
                    str(c.read("symbol", contract=c.token)),
                    int(c.read("decimals", contract=c.token)),
                )
            except ChainError:  # a token without the optional metadata
                self._token = ("tokens", 18)
        return self._token

    def _min_stake(self) -> int:
        return int(self.client.read("minStake"))


def first_block_at(client: ChainClient, timestamp: int, head: int) -> int:
    """The first block whose timestamp is >= `timestamp` (binary search: ~log2(head) block reads), 0 if all are."""
    lo, hi = 0, head
    while lo < hi:
        mid = (lo + hi) // 2
        try:
            stamp = int(client.w3.eth.get_block(mid)["timestamp"])
        except Exception as exc:  # noqa: BLE001 -- web3 raises connection errors of many types
            raise ChainError(
                f"cannot read block {mid} from the L2 RPC: {type(exc).__name__}: {exc}"
            ) from None
        if stamp < timestamp:
            lo = mid + 1
        else:
            hi = mid
    return max(0, lo - 1)  # one block of margin


class ClaimOutcome(BaseModel):
    claimed: int  # base units received by this claim (the Claimed events of its transactions)
    rounds: list[tuple[int, int]]
    finalized: list[int]  # rounds this claim finalized first
    transactions: list[str]
    earnings: Earnings  # read after claiming


def claim_all(client: ChainClient, experiment: int) -> ClaimOutcome:
    """Finalize every round of ours whose audit window is over, then claim every claimable share (claimMany)."""
    reader = EarningsReader(client, experiment, client.address)
    before = reader.read()
    finalized = []
    for r in sorted({r for r, _ in before.to_finalize}):
        try:
            client.finalize(experiment, r)
            finalized.append(r)
        except RevertError as exc:
            if exc.error_name != "AlreadyFinalized":  # someone else finalized it meanwhile: fine
                raise
    earnings = reader.read() if finalized else before
    pairs = list(earnings.claimable_rounds)
    claimed, txs = 0, []
    for i in range(0, len(pairs), CLAIM_BATCH):
        batch = pairs[i : i + CLAIM_BATCH]
        receipt = client.claim_many(experiment, [r for r, _ in batch], [s for _, s in batch])
        tx = receipt["transactionHash"].to_0x_hex()
        txs.append(tx)
        block = receipt["blockNumber"]
        claimed += sum(int(e["amount"]) for e in client.events("Claimed", block, block) if e["tx"] == tx)
        logger.info("claimed %d round(s) of experiment %d in %s", len(batch), experiment, tx)
    return ClaimOutcome(
        claimed=claimed, rounds=pairs, finalized=finalized, transactions=txs, earnings=reader.read()
    )
