"""Generate a Groth16 (bn128) verifier that also checks a batch of proofs of one key together.

The contract is zk/fast_verifier.py's (same `verifyTx`, same constants) plus `verifyBatch(uint256[] batch)`: n
proofs checked with one (n + 3)-pair pairing instead of n 4-pair ones, by a random linear combination whose
coefficients are derived from the whole batch (Fiat-Shamir), so whoever submits it cannot choose them.

    python -m zk.batch_verifier KEY --out FILE --contract NAME
"""

from __future__ import annotations

import sys
from pathlib import Path
from string import Template

from zk.fast_verifier import (
    PROJECT_ROOT,
    FastVerifierError,
    VerificationKey,
    _display,
    generator_cli,
    load_verification_key,
    render_fast_verifier,
)

BATCH_VERIFIER_PATH = PROJECT_ROOT / "contracts" / "batch" / "BatchChunkVerifier.sol"
BATCH_VERIFIER_NAME = "BatchChunkVerifier"
PROOF_WORDS = 8  # A.x, A.y, B.x.c0, B.x.c1, B.y.c0, B.y.c1, C.x, C.y: ZoKrates' Proof struct, flattened

BATCH_FUNCTION = Template("""
    /// @notice Whether every proof of `batch` proves its statement: $stride words per proof, its 8 proof words
    /// in ZoKrates' Proof layout (A.x, A.y, B.x[c0, c1], B.y[c0, c1], C.x, C.y) then its $n public inputs.
    /// @dev Random linear combination: prod_i e(r_i A_i, B_i) * e(sum r_i alpha, -beta) * e(sum r_i vk_x_i,
    /// -gamma) * e(sum r_i C_i, -delta) == 1, one pairing call of n + 3 pairs. r_0 = 1 and, for i > 0,
    /// r_i = 1 + keccak256(h, i) mod (R - 1), h the keccak chain over every word of the batch (Fiat-Shamir): the
    /// coefficients depend on every proof and input, so a batch with a wrong proof passes only with probability
    /// about 1/R whoever builds it. sum r_i vk_x_i = (sum r_i) IC0 + sum_j (sum_i r_i x_ij) IC_j: one ecMul per
    /// input for the whole batch. Same answers as verifyTx for a batch of one; an empty batch, a length that is
    /// not a multiple of $stride or an input >= R returns false; a point the precompiles reject reverts.
    /// @param batch The proofs and their public inputs, concatenated.
    /// @return r True if every proof verifies.
    function verifyBatch(uint256[] calldata batch) external view returns (bool r) {
        assembly ("memory-safe") {
            let n := div(batch.length, $stride)
            let s := mload(0x40) // scratch: 0x00 hash / ecMul input, 0x100 sum r_i C_i and ecAdd input, 0x180 scalars
            let p := add(s, $scratch) // the pairing input: n + 3 pairs of 0xc0 bytes
            let valid := and(gt(n, 0), iszero(mod(batch.length, $stride)))
            // Fiat-Shamir: h = keccak(h, words of proof i) for each proof in order; every input checked < R
            let h := 0
            for { let i := 0 } and(valid, lt(i, n)) { i := add(i, 1) } {
                let base := add(batch.offset, mul(i, $stride_bytes))
$input_checks
                mstore(s, h)
                calldatacopy(add(s, 0x20), base, $stride_bytes)
                h := keccak256(s, $hash_bytes)
            }
            if valid {
                // the hash chain used the scalars' words: clear them (memory past the free pointer is not zeroed)
$scalar_zeros
                for { let i := 0 } lt(i, n) { i := add(i, 1) } {
                    let base := add(batch.offset, mul(i, $stride_bytes))
                    let q := add(p, mul(i, 0xc0))
                    let rho := 1
                    if i {
                        mstore(s, h)
                        mstore(add(s, 0x20), i)
                        rho := add(mod(keccak256(s, 0x40), sub(R, 1)), 1)
                    }
                    // scalars: 0x180 sum r_i, 0x1a0.. sum r_i x_ij
                    mstore(add(s, 0x180), addmod(mload(add(s, 0x180)), rho, R))
$scalar_updates
                    // pair i: (r_i A_i, B_i); B's Fp2 words go [c1, c0], the batch holds [c0, c1]
                    switch i
                    case 0 {
                        mstore(q, calldataload(base))
                        mstore(add(q, 0x20), calldataload(add(base, 0x20)))
                        mstore(add(s, 0x100), calldataload(add(base, 0xc0)))
                        mstore(add(s, 0x120), calldataload(add(base, 0xe0)))
                    }
                    default {
                        mstore(s, calldataload(base))
                        mstore(add(s, 0x20), calldataload(add(base, 0x20)))
                        mstore(add(s, 0x40), rho)
                        if iszero(staticcall(gas(), 0x07, s, 0x60, q, 0x40)) { revert(0, 0) }
                        // sum r_i C_i accumulates at 0x100
                        mstore(s, calldataload(add(base, 0xc0)))
                        mstore(add(s, 0x20), calldataload(add(base, 0xe0)))
                        mstore(add(s, 0x40), rho)
                        if iszero(staticcall(gas(), 0x07, s, 0x60, add(s, 0x140), 0x40)) { revert(0, 0) }
                        if iszero(staticcall(gas(), 0x06, add(s, 0x100), 0x80, add(s, 0x100), 0x40)) { revert(0, 0) }
                    }
                    mstore(add(q, 0x40), calldataload(add(base, 0x60)))
                    mstore(add(q, 0x60), calldataload(add(base, 0x40)))
                    mstore(add(q, 0x80), calldataload(add(base, 0xa0)))
                    mstore(add(q, 0xa0), calldataload(add(base, 0x80)))
                }
                let q := add(p, mul(n, 0xc0))
                // pair n: (sum r_i vk_x_i, -gamma), accumulated at s
                mstore(add(s, 0x40), IC0_X)
                mstore(add(s, 0x60), IC0_Y)
                mstore(add(s, 0x80), mload(add(s, 0x180)))
                if iszero(staticcall(gas(), 0x07, add(s, 0x40), 0x60, s, 0x40)) { revert(0, 0) }
$vk_x
                mstore(q, mload(s))
                mstore(add(q, 0x20), mload(add(s, 0x20)))
                mstore(add(q, 0x40), NEG_GAMMA_X1)
                mstore(add(q, 0x60), NEG_GAMMA_X0)
                mstore(add(q, 0x80), NEG_GAMMA_Y1)
                mstore(add(q, 0xa0), NEG_GAMMA_Y0)
                // pair n + 1: (sum r_i C_i, -delta)
                mstore(add(q, 0xc0), mload(add(s, 0x100)))
                mstore(add(q, 0xe0), mload(add(s, 0x120)))
                mstore(add(q, 0x100), NEG_DELTA_X1)
                mstore(add(q, 0x120), NEG_DELTA_X0)
                mstore(add(q, 0x140), NEG_DELTA_Y1)
                mstore(add(q, 0x160), NEG_DELTA_Y0)
                // pair n + 2: ((sum r_i) alpha, -beta)
                mstore(s, ALPHA_X)
                mstore(add(s, 0x20), ALPHA_Y)
                mstore(add(s, 0x40), mload(add(s, 0x180)))
                if iszero(staticcall(gas(), 0x07, s, 0x60, add(q, 0x180), 0x40)) { revert(0, 0) }
                mstore(add(q, 0x1c0), NEG_BETA_X1)
                mstore(add(q, 0x1e0), NEG_BETA_X0)
                mstore(add(q, 0x200), NEG_BETA_Y1)
                mstore(add(q, 0x220), NEG_BETA_Y0)
                if iszero(staticcall(gas(), 0x08, p, mul(add(n, 3), 0xc0), s, 0x20)) { revert(0, 0) }
                r := eq(mload(s), 1)
            }
        }
    }
}
""")
VK_X_STEP = Template("""\
                mstore(add(s, 0x40), IC${j}_X)
                mstore(add(s, 0x60), IC${j}_Y)
                mstore(add(s, 0x80), mload(add(s, $scalar)))
                if iszero(staticcall(gas(), 0x07, add(s, 0x40), 0x60, add(s, 0x40), 0x40)) { revert(0, 0) }
                if iszero(staticcall(gas(), 0x06, s, 0x80, s, 0x40)) { revert(0, 0) }""")


def render_batch_verifier(vk: VerificationKey, contract: str = BATCH_VERIFIER_NAME, origin: str = "") -> str:
    """Solidity source of `contract`: the fast verifier for `vk` (verifyTx) plus verifyBatch."""
    n = vk.num_inputs
    stride = PROOF_WORDS + n
    single = render_fast_verifier(vk, contract, origin).rstrip()
    if not single.endswith("}"):
        raise FastVerifierError("unexpected fast verifier source: it does not end with the contract's brace")
    single = single[:-1].rstrip() + "\n"
    single = single.replace("// Generated by zk/fast_verifier.py", "// Generated by zk/batch_verifier.py", 1)
    single = single.replace("`python -m zk setup` (or zk.fast_verifier) rewrites it.",
                            "`python -m zk.batch_verifier KEY --out FILE --contract NAME` rewrites it.", 1)
    single = single.replace(
        "single 4-pair call to the pairing precompile. Its ABI is the ZoKrates-exported verifier's.",
        "single 4-pair call to the pairing precompile. Its ABI is the ZoKrates-exported verifier's, plus\n"
        "/// verifyBatch: n proofs of this key in one (n + 3)-pair pairing call.", 1)
    word = lambda k: "base" if k == 0 else f"add(base, {32 * k:#x})"
    scalar = lambda j: f"{0x1a0 + 32 * j:#x}"
    return single + BATCH_FUNCTION.substitute(
        n=n, stride=stride, stride_bytes=f"{32 * stride:#x}", hash_bytes=f"{32 * (stride + 1):#x}",
        scratch=f"{0x1a0 + 32 * n:#x}",
        input_checks="\n".join(f"                valid := and(valid, lt(calldataload({word(PROOF_WORDS + j)}), R))"
                               for j in range(n)),
        scalar_updates="\n".join(
            f"                    mstore(add(s, {scalar(j)}), addmod(mload(add(s, {scalar(j)})), "
            f"mulmod(rho, calldataload({word(PROOF_WORDS + j)}), R), R))" for j in range(n)),
        scalar_zeros="\n".join(f"                mstore(add(s, {0x180 + 32 * j:#x}), 0)" for j in range(n + 1)),
        vk_x="\n".join(VK_X_STEP.substitute(j=j + 1, scalar=scalar(j)) for j in range(n)),
    )


def write_batch_verifier(key_path: Path, out: Path = BATCH_VERIFIER_PATH, contract: str = BATCH_VERIFIER_NAME,
                         origin: str | None = None) -> Path:
    """Read `key_path` (a verification.key.json) and write the batch verifier's Solidity source to `out`."""
    vk = load_verification_key(key_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_batch_verifier(vk, contract, origin if origin is not None else _display(key_path)))
    return out


def main(argv: list[str] | None = None) -> int:
    return generator_cli(argv, "python -m zk.batch_verifier", __doc__, write_batch_verifier, BATCH_VERIFIER_PATH,
                         BATCH_VERIFIER_NAME)


if __name__ == "__main__":
    sys.exit(main())
