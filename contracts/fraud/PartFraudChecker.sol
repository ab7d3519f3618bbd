// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IMismatchSlasher, IPartFraudChecker} from "./IPartFraudChecker.sol";
import {Poseidon} from "./Poseidon.sol";

/// @title PartFraudChecker
/// @notice Recomputes, with Poseidon on chain, the Merkle-sum root of a signed part (its chunks' leaves and the
/// path of their subtree, zk/commit.py) and says whether it differs from the root its signer contributed. No ZK:
/// the wallet's signature makes the part the signer's own statement, and the hash makes it checkable. The escrow
/// deploys one in its constructor (the heavy code stays out of the escrow's 24 KB); anyone calls `slashMismatch`
/// here with a signed part, and a mismatch makes the escrow slash the signer at once, the caller paid. The signed
/// digest names this chain and the escrow, so evidence made for another escrow or chain is worthless here.
contract PartFraudChecker is IPartFraudChecker {
    /// @notice The BN254 scalar field (hashes are below it).
    uint256 public constant FIELD = 21888242871839275222246405745257275088548364400416034343698204186575808495617;
    /// @notice Norms of leaves and siblings are below 2**128 (zk.circuit.NORM_BITS).
    uint256 public constant NORM_LIMIT = 1 << 128;
    /// @notice Domain tag of the signed digest.
    bytes32 public constant PART_TAG = keccak256("swarm.part-evidence.v1");
    uint256 private constant MAX_PATH = 32;
    /// @notice The escrow that deployed this checker: the only one it slashes for, and the one signatures name.
    address public immutable escrow;

    constructor() {
        escrow = msg.sender;
    }

    /// @inheritdoc IPartFraudChecker
    function slashMismatch(
        uint256 experimentId,
        uint256 round,
        uint256 stage,
        address peer,
        uint256 root,
        uint256 normSq,
        PartEvidence calldata ev
    ) external {
        if (!mismatch(experimentId, round, stage, peer, root, normSq, ev)) revert NoMismatch();
        IMismatchSlasher(escrow).slashMismatch(experimentId, round, stage, peer, root, normSq, msg.sender);
    }

    /// @inheritdoc IPartFraudChecker
    function mismatch(
        uint256 experimentId,
        uint256 round,
        uint256 stage,
        address peer,
        uint256 root,
        uint256 normSq,
        PartEvidence calldata ev
    ) public view returns (bool) {
        address signer = signerOf(escrow, experimentId, round, stage, ev);
        if (signer != peer || signer == address(0)) revert WrongSigner(signer, peer);
        (uint256 r, uint256 n, bool wellFormed) = partRoot(ev.firstChunk, ev.leaves, ev.path);
        return !wellFormed || r != root || n != normSq;
    }

    /// @notice The digest a sender's wallet signs (as an EIP-191 message) for one part sent to `escrow`'s
    /// experiment `experimentId`, round `round`, stage `stage` on this chain.
    function partDigest(
        address escrow,
        uint256 experimentId,
        uint256 round,
        uint256 stage,
        uint256 firstChunk,
        uint256[] calldata leaves,
        uint256[] calldata path
    ) public view returns (bytes32) {
        return keccak256(
            abi.encode(
                PART_TAG, block.chainid, escrow, experimentId, round, stage, firstChunk,
                keccak256(abi.encodePacked(leaves)), keccak256(abi.encodePacked(path))
            )
        );
    }

    /// @notice The wallet that signed `ev` for (escrow, experiment, round, stage); address(0) if none.
    function signerOf(address escrow, uint256 experimentId, uint256 round, uint256 stage, PartEvidence calldata ev)
        public
        view
        returns (address)
    {
        bytes32 digest = partDigest(escrow, experimentId, round, stage, ev.firstChunk, ev.leaves, ev.path);
        bytes32 message = keccak256(abi.encodePacked("\x19Ethereum Signed Message:\n32", digest));
        bytes calldata sig = ev.signature;
        if (sig.length != 65) return address(0);
        bytes32 r = bytes32(sig[0:32]);
        bytes32 s = bytes32(sig[32:64]);
        uint8 v = uint8(sig[64]);
        if (v < 27) v += 27;
        return ecrecover(message, v, r, s);
    }

    /// @notice (root, squared norm) of the tree a part's leaves and path describe, as zk/commit.py computes them:
    /// node = (Poseidon(lh, ln, rh, rn), ln + rn), root = Poseidon(top hash, top norm). `wellFormed` is false when a
    /// hash is not below FIELD, a norm not below 2**128, or the first chunk's subtree index has bits above the
    /// path (no honest sender signs any of these).
    function partRoot(uint256 firstChunk, uint256[] calldata leaves, uint256[] calldata path)
        public
        pure
        returns (uint256 root, uint256 normSq, bool wellFormed)
    {
        uint256 n = leaves.length / 2;
        if (leaves.length % 2 != 0 || path.length % 2 != 0 || n == 0 || n & (n - 1) != 0 || firstChunk % n != 0
            || path.length / 2 > MAX_PATH) revert MalformedEvidence();
        wellFormed = true;
        uint256[] memory h = new uint256[](n);
        uint256[] memory w = new uint256[](n);
        for (uint256 i = 0; i < n; ++i) {
            (h[i], w[i]) = (leaves[2 * i], leaves[2 * i + 1]);
            if (h[i] >= FIELD || w[i] >= NORM_LIMIT) wellFormed = false;
        }
        unchecked { // norms are below 2**128 when well-formed; a wrapped sum only makes a malformed part mismatch
            for (; n > 1; n /= 2) {
                for (uint256 i = 0; i < n / 2; ++i) {
                    (h[i], w[i]) = (Poseidon.hash4(h[2 * i], w[2 * i], h[2 * i + 1], w[2 * i + 1]), w[2 * i] + w[2 * i + 1]);
                }
            }
            uint256 index = firstChunk / (leaves.length / 2);
            (uint256 top, uint256 norm) = (h[0], w[0]);
            for (uint256 k = 0; k < path.length; k += 2) {
                (uint256 sh, uint256 sn) = (path[k], path[k + 1]);
                if (sh >= FIELD || sn >= NORM_LIMIT) wellFormed = false;
                top = index & 1 == 1 ? Poseidon.hash4(sh, sn, top, norm) : Poseidon.hash4(top, norm, sh, sn);
                norm += sn;
                index >>= 1;
            }
            if (index != 0) wellFormed = false;
            return (Poseidon.hash2(top, norm), norm, wellFormed);
        }
    }

    /// @notice Poseidon of 2 field elements (for tests: equal to zk.poseidon.poseidon).
    function poseidon2(uint256 a, uint256 b) external pure returns (uint256) {
        return Poseidon.hash2(a, b);
    }

    /// @notice Poseidon of 4 field elements (for tests: equal to zk.poseidon.poseidon).
    function poseidon4(uint256 a, uint256 b, uint256 c, uint256 d) external pure returns (uint256) {
        return Poseidon.hash4(a, b, c, d);
    }
}
