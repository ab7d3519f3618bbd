// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title IChunkVerifier
/// @notice The interface of a ZoKrates-exported Groth16 verifier (bn128) for the chunk circuit, whose public
/// inputs are `[context, root, normSq, normBound]` (docs/protocol.md). The structs mirror ZoKrates' `Pairing`
/// library so that the ABI of `verifyTx` is identical to the exported contract's.
interface IChunkVerifier {
    /// @notice A point of G1 in affine coordinates.
    struct G1Point {
        uint256 X;
        uint256 Y;
    }

    /// @notice A point of G2 in affine coordinates (Fp2 elements as [c1, c0], ZoKrates' order).
    struct G2Point {
        uint256[2] X;
        uint256[2] Y;
    }

    /// @notice A Groth16 proof.
    struct Proof {
        G1Point a;
        G2Point b;
        G1Point c;
    }

    /// @notice Whether `proof` proves the circuit's statement for the public `input`.
    /// @param proof The Groth16 proof.
    /// @param input The public inputs `[context, root, normSq, normBound]`, each below the BN254 scalar field.
    /// @return r True if the proof verifies.
    function verifyTx(Proof memory proof, uint256[4] memory input) external view returns (bool r);
}
