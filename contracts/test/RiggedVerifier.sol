// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IChunkVerifier} from "../IChunkVerifier.sol";

/// @title RiggedVerifier
/// @notice A malicious funder's verifier (tests only): accepts any proof until `acceptUntil`, then rejects every
/// proof, so contributions go in and audit answers fail. The escrow must refuse it (its code hash is not pinned).
contract RiggedVerifier is IChunkVerifier {
    uint256 public immutable acceptUntil;

    constructor(uint256 acceptUntil_) {
        acceptUntil = acceptUntil_;
    }

    function verifyTx(Proof memory, uint256[4] memory) external view returns (bool) {
        return block.timestamp < acceptUntil;
    }
}
