"""A paid peer's settler alone in a process, for the kill -9 tests (tests/integration/test_settle_crash.py).

argv: RPC ESCROW EXPERIMENT DATA_DIR; the wallet key comes from SWARM_WALLET_KEY (never argv). Each stdin line
"round stage root" hands the settler a round (stand-in commitment: proofs by real zokrates-js); each of its
SettlementEvents goes to stdout as one JSON line, after {"kind": "ready"}. Leaves when stdin closes.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from types import SimpleNamespace

from swarm.chain.client import ChainClient
from swarm.chain.testing import StandInProver
from swarm.chain.wallet import Wallet
from swarm.settlement.settler import RoundSettler, SettlementEvent


def emit(kind: str, round: int = -1, stage: int = -1, detail: dict | None = None) -> None:
    print(json.dumps({"kind": kind, "round": round, "stage": stage, "detail": detail or {}}), flush=True)


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    rpc, escrow, experiment, data_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    client = ChainClient(rpc, Wallet.from_env(), escrow=escrow)

    def on_event(e: SettlementEvent) -> None:
        emit(e.kind, e.round, e.stage, e.detail)

    with RoundSettler(client, experiment, prover=StandInProver(), on_event=on_event, poll_s=0.2,
                      data_dir=data_dir) as settler:  # fmt: skip
        emit("ready", detail={"rounds": sorted(settler.rounds)})
        for line in sys.stdin:
            r, s, root = (int(x) for x in line.split())
            n = client.num_chunks(experiment, s)
            settler(SimpleNamespace(round=r, stage=s, commitment=SimpleNamespace(root=root, norm_sq=100, num_chunks=n)))


if __name__ == "__main__":
    main()
