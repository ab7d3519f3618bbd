// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IChunkVerifier} from "./IChunkVerifier.sol";

/// @title IBatchChunkVerifier
/// @notice A chunk verifier (IChunkVerifier) that also checks many proofs of its key at once (zk/batch_verifier.py
/// generates one from a verification key): one pairing call of n + 3 pairs instead of n calls of 4.
interface IBatchChunkVerifier is IChunkVerifier {
    /// @notice Whether every proof of `batch` proves its statement.
    /// @param batch 12 words per proof: A.x, A.y, B.x[c0, c1], B.y[c0, c1], C.x, C.y, then the public inputs
    /// [context, root, normSq, normBound].
    /// @return r True if every proof verifies (false for an empty or misaligned batch or an input >= R).
    function verifyBatch(uint256[] calldata batch) external view returns (bool r);
}
