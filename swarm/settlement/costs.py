"""What settling an experiment cost in gas, read back from the chain's receipts (the demo's summary prints it)."""

from __future__ import annotations

from dataclasses import dataclass

from swarm.chain.client import ChainClient


@dataclass(frozen=True)
class GasReport:
    """Gas of an experiment's contributions, finalizations and claims. Per peer-round = contributing gas per
    recorded contribution + finalize gas per contribution of the finalized rounds + claim gas per claimed one (each
    part over what it covers, so a run that ends before every round is claimed still gives a fair figure)."""

    contributions: int  # recorded
    batched: int  # of which in a contributeBatch
    batches: int  # contributeBatch transactions that recorded at least one
    contribute_gas: int  # every transaction that recorded contributions (single contributes and batches)
    finalized: int  # contributions of the finalized rounds
    rounds_finalized: int
    finalize_gas: int
    claims: int  # records claimed
    claim_gas: int  # claim and claimMany transactions

    @staticmethod
    def _per(gas: int, n: int) -> float:
        return gas / n if n else 0.0

    @property
    def per_peer_round(self) -> float:
        return (self._per(self.contribute_gas, self.contributions) + self._per(self.finalize_gas, self.finalized)
                + self._per(self.claim_gas, self.claims))  # fmt: skip

    def line(self) -> str:
        if not self.contributions:
            return "gas: no contribution recorded"
        return (f"gas: {self.per_peer_round:,.0f} per peer-round = contributing "
                f"{self._per(self.contribute_gas, self.contributions):,.0f} ({self.contributions} contributions, "
                f"{self.batched} of them in {self.batches} batches) + finalize "
                f"{self._per(self.finalize_gas, self.finalized):,.0f} ({self.rounds_finalized} rounds) + claim "
                f"{self._per(self.claim_gas, self.claims):,.0f} ({self.claims} claimed); from the receipts; audits, "
                "seed arming and allowBatches not counted")


def gas_report(client: ChainClient, experiment: int, from_block: int = 0) -> GasReport:
    """The GasReport of `experiment` from the Contributed, BatchContributed, RoundFinalized and Claimed events
    since `from_block` and the receipts of the transactions that emitted them (each transaction counted once)."""

    def events(name: str) -> list[dict]:
        return client.events(name, from_block, where={"experimentId": experiment})

    def gas(txs: set[str]) -> int:
        return sum(int(client._reader.rpc("reading a receipt", client.w3.eth.get_transaction_receipt, tx)["gasUsed"])
                   for tx in txs)  # fmt: skip

    contributed, finalized, claimed = events("Contributed"), events("RoundFinalized"), events("Claimed")
    batches = [b for b in events("BatchContributed") if b["included"]]
    return GasReport(
        contributions=len(contributed), batched=sum(int(b["included"]) for b in batches), batches=len(batches),
        contribute_gas=gas({e["tx"] for e in contributed}), finalized=sum(int(e["contributions"]) for e in finalized),
        rounds_finalized=len(finalized), finalize_gas=gas({e["tx"] for e in finalized}), claims=len(claimed),
        claim_gas=gas({e["tx"] for e in claimed}),
    )  # fmt: skip
