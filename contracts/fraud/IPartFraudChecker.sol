// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title IPartFraudChecker
/// @notice Checks a part of a verified round signed by a peer's wallet against the root the peer contributed
/// (docs/protocol.md, "Evidence on-chain") and has its escrow slash the peer when they differ.
interface IPartFraudChecker {
    /// @notice What a sender signed with its wallet for one part: its chunks' leaves and the path of their subtree.
    /// @param firstChunk The part's first chunk (a multiple of the number of leaves).
    /// @param leaves (hash, squared norm) of each chunk of the part, flattened: 2 * 2**level words, the chunks past
    /// the update's end as (0, 0).
    /// @param path (hash, squared norm) of each sibling from the part's subtree up to the root's children, flattened.
    /// @param signature The wallet's 65-byte ECDSA signature (r, s, v) of partDigest as an EIP-191 message.
    struct PartEvidence {
        uint256 firstChunk;
        uint256[] leaves;
        uint256[] path;
        bytes signature;
    }

    /// @notice The leaves or the path have a shape no honest sender signs (odd lengths, not a power of two of
    /// leaves, a first chunk not aligned to them, a path of more than 32 levels).
    error MalformedEvidence();
    /// @notice The signature is not `peer`'s (or is malformed).
    error WrongSigner(address signer, address peer);
    /// @notice The signed leaves and path do hash to the contributed root and norm: no lie shown.
    error NoMismatch();

    /// @notice Slash `peer`'s contribution (round, stage) in the escrow from `ev`: reverts with NoMismatch unless
    /// `mismatch` holds; the escrow then checks (root, normSq) against the peer's record, that it is neither
    /// claimed nor slashed, takes its collateral and pays the caller the reporter's share.
    function slashMismatch(
        uint256 experimentId,
        uint256 round,
        uint256 stage,
        address peer,
        uint256 root,
        uint256 normSq,
        PartEvidence calldata ev
    ) external;

    /// @notice True if `ev` is signed by `peer` for (this checker's escrow, experiment, round, stage) and its leaves
    /// and path do not give (root, normSq): the peer sent a part that is not its committed data. Reverts with
    /// WrongSigner or MalformedEvidence.
    function mismatch(
        uint256 experimentId,
        uint256 round,
        uint256 stage,
        address peer,
        uint256 root,
        uint256 normSq,
        PartEvidence calldata ev
    ) external view returns (bool);
}

/// @notice What the checker calls in its escrow (SwarmEscrow.slashMismatch: only the escrow's checker may).
interface IMismatchSlasher {
    function slashMismatch(
        uint256 experimentId,
        uint256 round,
        uint256 stage,
        address peer,
        uint256 root,
        uint256 normSq,
        address reporter
    ) external;
}
