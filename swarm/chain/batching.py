"""Who submits a round's batch (contracts/README.md, "Batched verification"; docs/protocol.md).

Every peer hears the round's proven contributions on gossip. The contributors it heard, ranked by
keccak256(abi.encode(experimentId, round, peer)), take the duty in that order: the first sends one
contributeBatch of everything heard at the middle of the submission window, the k-th takes over
(k - 1) * INCLUSION_MARGIN later for what the Contributed events still lack, and a peer still missing one
INCLUSION_MARGIN before the window closes sends its own contribute. Every peer computes the same order from the
same gossip, so exactly one is expected to pay the gas, and the escrow's batchFee pays it back.
"""

from __future__ import annotations

from collections.abc import Iterable

from eth_abi import encode
from eth_utils import keccak
from web3 import Web3

from swarm.chain.safety import INCLUSION_MARGIN_S


def duty_order(experiment: int, round: int, peers: Iterable[str]) -> list[str]:
    """The round's submitters in order of duty (checksummed addresses, each once)."""
    unique = {Web3.to_checksum_address(p) for p in peers}
    rank = lambda p: keccak(encode(["uint256", "uint256", "address"], [experiment, round, p]))
    return sorted(unique, key=rank)


def duty_time(position: int, submission_opens: int, submission_end: int) -> int:
    """When the submitter at `position` (0-based) in duty_order sends its batch: the middle of the submission
    window [submission_opens, submission_end), then one INCLUSION_MARGIN later per position; never later than
    one margin before the window closes, when every missing peer sends its own contribute."""
    start = submission_opens + (submission_end - submission_opens) // 2
    return min(start + position * INCLUSION_MARGIN_S, submission_end - INCLUSION_MARGIN_S)
