// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ISwarmEscrow} from "./ISwarmEscrow.sol";

/// @notice What the certifier needs of its escrow.
interface ICertifiedEscrow {
    function markCertified(
        uint256 experimentId,
        uint256 round,
        uint256 stage,
        address[] calldata contributors,
        uint256 included
    ) external;
}

/// @title SwarmCertifier
/// @notice Checks a (round, stage) group's certificate of its verified averaging and has its escrow mark the
/// certified records (requireCertificate experiments pay only those). Created by SwarmEscrow's constructor (its
/// own contract so the escrow's code stays under the 24,576-byte limit). Rules: contracts/README.md, "Certified
/// participation"; protocol: docs/protocol.md, "Paying only for useful work".
contract SwarmCertifier is ISwarmEscrow {
    /// @dev A secp256k1 signature of certificateDigest (the signer is recovered from it).
    struct Sig {
        uint8 v;
        bytes32 r;
        bytes32 s;
    }

    /// @notice The escrow whose records this certifier marks (its creator).
    ICertifiedEscrow public immutable escrow;

    constructor() {
        escrow = ICertifiedEscrow(msg.sender);
    }

    /// @notice Certify which records of (round, stage) delivered verified parts that were averaged. `contributors`
    /// lists every record of (round, stage) in strictly increasing address order (the escrow checks the count and
    /// that each is recorded, so the list is exactly the records); bit i of `included` marks contributors[i]. More
    /// than 2/3 of the contributors sign certificateDigest, signatures in strictly increasing signer order (so no
    /// signer counts twice). Once per (round, stage), once its submission window is over (in time when sent
    /// before the audit window ends: finalize, then claims, follow); anyone may send it.
    /// @param experimentId The experiment.
    /// @param round The round.
    /// @param stage The stage.
    /// @param contributors The (round, stage)'s recorded peers, increasing.
    /// @param included Bitmap over `contributors` of those whose parts were averaged.
    /// @param sigs The signatures, in increasing signer order.
    function certify(
        uint256 experimentId,
        uint256 round,
        uint256 stage,
        address[] calldata contributors,
        uint256 included,
        Sig[] calldata sigs
    ) external {
        uint256 n = contributors.length;
        if (sigs.length * 3 <= n * 2) revert TooFewSigners(sigs.length, n);
        address prev;
        for (uint256 i = 0; i < n; ++i) {
            if (contributors[i] <= prev) revert NotTheContributors(n, i);
            prev = contributors[i];
        }
        bytes32 digest = certificateDigest(experimentId, round, stage, contributors, included);
        uint256 j;
        for (uint256 i = 0; i < sigs.length; ++i) {
            address signer = ecrecover(digest, sigs[i].v, sigs[i].r, sigs[i].s);
            while (j < n && contributors[j] < signer) ++j;
            if (j == n || contributors[j] != signer) revert BadSigner(signer);
            ++j; // signers strictly increase: a repeated signer is not found again
        }
        escrow.markCertified(experimentId, round, stage, contributors, included);
    }

    /// @notice What each signer signs with its wallet key: the EIP-191 personal-sign hash of
    /// keccak256(abi.encode(chainId, escrow, experimentId, round, stage, contributors, included)), so a
    /// certificate is bound to this chain, escrow, experiment, round and stage.
    function certificateDigest(
        uint256 experimentId,
        uint256 round,
        uint256 stage,
        address[] calldata contributors,
        uint256 included
    ) public view returns (bytes32) {
        bytes32 h = keccak256(
            abi.encode(block.chainid, address(escrow), experimentId, round, stage, contributors, included)
        );
        return keccak256(abi.encodePacked("\x19Ethereum Signed Message:\n32", h));
    }
}
