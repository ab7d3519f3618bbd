"""What settling an experiment cost in gas, read back from the chain's receipts (the demo's summary prints it)."""

from __future__ import annotations

from dataclasses import dataclass

from swarm.chain.client import ChainClient


@dataclass(frozen=True)
class GasReport:
    """Gas of an experiment's contributions, finalizations and claims, per peer-round (one recorded contribution)."""

    peer_rounds: int  # contributions recorded
    batched: int  # of which in a contributeBatch
    batches: int  # contributeBatch transactions that recorded at least one
    contribute_gas: int  # all transactions that recorded contributions (single contributes and batches)
    finalize_gas: int
    claim_gas: int  # claim and claimMany

    @property
    def per_peer_round(self) -> float:
        total = self.contribute_gas + self.finalize_gas + self.claim_gas
        return total / self.peer_rounds if self.peer_rounds else 0.0

    def line(self) -> str:
        if not self.peer_rounds:
            return "gas: no contribution recorded"
        singles = self.peer_rounds - self.batched
        return (f"gas: {self.per_peer_round:,.0f} per peer-round over {self.peer_rounds} contributions "
                f"({self.batched} in {self.batches} batches, {singles} sent alone; contributing "
                f"{self.contribute_gas / self.peer_rounds:,.0f}, finalize {self.finalize_gas / self.peer_rounds:,.0f}"
                f", claims {self.claim_gas / self.peer_rounds:,.0f} per peer-round; from the receipts; audits, "
                "seed arming and allowBatches not counted)")


def gas_report(client: ChainClient, experiment: int, from_block: int = 0) -> GasReport:
    """The GasReport of `experiment` from the Contributed, BatchContributed, RoundFinalized and Claimed events
    since `from_block` and the receipts of the transactions that emitted them (each transaction counted once)."""

    def events(name: str) -> list[dict]:
        return client.events(name, from_block, where={"experimentId": experiment})

    def gas(txs: set[str]) -> int:
        return sum(int(client._reader.rpc("reading a receipt", client.w3.eth.get_transaction_receipt, tx)["gasUsed"])
                   for tx in txs)  # fmt: skip

    contributed = events("Contributed")
    batches = [b for b in events("BatchContributed") if b["included"]]
    return GasReport(
        peer_rounds=len(contributed), batched=sum(int(b["included"]) for b in batches), batches=len(batches),
        contribute_gas=gas({e["tx"] for e in contributed}), finalize_gas=gas({e["tx"] for e in events("RoundFinalized")}),
        claim_gas=gas({e["tx"] for e in events("Claimed")}),
    )  # fmt: skip
