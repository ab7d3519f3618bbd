// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IChunkVerifier} from "./IChunkVerifier.sol";

/// @title ISwarmEscrow
/// @notice Types, events and custom errors of the swarm escrow (contracts/README.md states its rules).
interface ISwarmEscrow {
    /// @notice What a researcher declares when creating an experiment.
    /// @param verifier The chunk circuit's Groth16 verifier (IChunkVerifier); it fixes CHUNK, DEPTH, SCALE_MAX.
    /// @param start Unix time at which round 0's training window opens.
    /// @param roundDuration Length D of a round's training window, seconds.
    /// @param submitWindow Seconds after a round's training window during which `contribute` is still accepted.
    /// @param auditWindow Seconds after the submission window: audits open in its first half, answers until its end.
    /// @param auditsPerPeer k: sampled audits per contribution, 1 .. MAX_AUDITS.
    /// @param numRounds Rounds the experiment pays for (round numbers 0 .. numRounds-1).
    /// @param chunkSize Values per chunk; must equal the verifier's registered CHUNK. numChunks(stage) =
    /// ceil(params / chunkSize) must be at most 2**DEPTH of the verifier's circuit.
    /// @param rewardPerRound Tokens a finalized round shares among its valid contributions.
    /// @param normBound The public bound on a contribution's fixed-point squared norm (< 2**128).
    /// @param minNormLog2 A contribution's normSq must be at least 2**minNormLog2 (so never 0), at most normBound.
    /// @param stageParams Parameter count of each pipeline stage.
    /// @param requireCertificate Pay only records certified by their (round, stage) group (certify): a peer whose
    /// verified parts were not included in the round's average gets no share (it stays in the pool).
    struct ExperimentParams {
        address verifier;
        uint64 start;
        uint32 roundDuration;
        uint32 submitWindow;
        uint32 auditWindow;
        uint8 auditsPerPeer;
        uint48 numRounds;
        uint32 chunkSize;
        uint128 rewardPerRound;
        uint256 normBound;
        uint8 minNormLog2;
        uint64[] stageParams;
        bool requireCertificate;
    }

    /// @notice A verifier the escrow accepts, pinned by its runtime code hash (fixed at deployment).
    /// @param codeHash EXTCODEHASH of the verifier contract (a verifier without storage: its key is in its code).
    /// @param chunk The circuit's CHUNK (values per chunk).
    /// @param depth The circuit's DEPTH (at most 2**depth chunks per stage).
    /// @param proofSeconds Seconds a slow honest peer needs for one chunk proof (sets the minimum windows).
    /// @param batch Whether the verifier also has IBatchChunkVerifier.verifyBatch (contributeBatch then checks a
    /// batch with one pairing call; otherwise it checks each proof with verifyTx).
    struct VerifierShape {
        bytes32 codeHash;
        uint32 chunk;
        uint8 depth;
        uint32 proofSeconds;
        bool batch;
    }

    /// @notice One contribution in a batch (contributeBatch): what `contribute` takes, plus the peer it is for.
    /// @param peer The contributing peer (its proof's context names it; the record and the reward are its).
    /// @param stage The pipeline stage.
    /// @param root The Poseidon commitment to the quantized update.
    /// @param normSq The update's fixed-point squared norm.
    /// @param proof The proof of chunk c0 = keccak256(abi.encode(root, peer)) % numChunks(stage).
    struct BatchEntry {
        address peer;
        uint256 stage;
        uint256 root;
        uint256 normSq;
        IChunkVerifier.Proof proof;
    }

    event Staked(address indexed peer, uint256 amount, uint256 active);
    event UnbondingRequested(address indexed peer, uint256 amount, uint256 unbonding, uint256 readyAt);
    event Withdrawn(address indexed peer, uint256 amount);
    event ExperimentCreated(uint256 indexed experimentId, address indexed funder, address verifier, uint256 numStages);
    event Funded(uint256 indexed experimentId, address indexed from, uint256 amount, uint256 pool);
    event Contributed(
        uint256 indexed experimentId, uint256 indexed round, uint256 stage, address indexed peer, uint256 root,
        uint256 normSq, uint256 chunk
    );
    event RoundFinalized(
        uint256 indexed experimentId, uint256 indexed round, uint256 contributions, uint256 share, uint256 allocated
    );
    event Claimed(uint256 indexed experimentId, uint256 indexed round, uint256 stage, address indexed peer, uint256 amount);
    event AuditOpened(
        uint256 indexed experimentId, uint256 indexed round, uint256 stage, address indexed peer, uint256 j,
        uint256 chunk, address opener
    );
    event AuditAnswered(uint256 indexed experimentId, uint256 indexed round, uint256 stage, address indexed peer, uint256 j);
    event Slashed(
        uint256 indexed experimentId, uint256 indexed round, uint256 stage, address indexed peer, uint256 amount,
        address reporter, uint256 reporterReward
    );
    /// @notice A batch entry that was not recorded: reason 1 = the peer already has a record for (round, stage),
    /// 2 = its free stake does not cover minStake of collateral, 3 = its record slot (round % RECORD_RING) still
    /// holds an open record of an earlier round, 4 = the peer does not allow batches into this experiment
    /// (allowBatches). It is not paid and its proof is not checked.
    event ContributionSkipped(
        uint256 indexed experimentId, uint256 indexed round, uint256 stage, address indexed peer, uint8 reason
    );
    event BatchesAllowed(address indexed peer, uint256 experimentId);
    event BatchContributed(
        uint256 indexed experimentId, uint256 indexed round, address indexed submitter, uint256 included,
        uint256 skipped, uint256 fee
    );
    event SeedArmed(uint256 indexed experimentId, uint256 indexed round, uint256 blockNumber);
    /// @notice A (round, stage) group's certificate: more than 2/3 of its `contributors` signed that the records
    /// in bitmap `included` (over the contributors in increasing address order) delivered verified parts that
    /// were averaged (only those are paid).
    event Certified(
        uint256 indexed experimentId, uint256 indexed round, uint256 stage, uint256 contributors, uint256 included
    );
    event PoolReclaimed(uint256 indexed experimentId, address indexed funder, uint256 amount);

    error ZeroAmount();
    error BelowMinStake(uint256 active, uint256 minStake);
    error InsufficientStake(uint256 active, uint256 requested);
    error NothingUnbonding();
    error UnbondingNotReady(uint256 readyAt, uint256 nowTime);
    error InvalidExperiment(string field);
    error UnknownExperiment(uint256 experimentId);
    error UnknownStage(uint256 stage, uint256 numStages);
    error RoundOutOfRange(uint256 round, uint256 numRounds);
    error RoundNotOpen(uint256 round, uint256 opensAt);
    error SubmissionClosed(uint256 round, uint256 closedAt);
    error NormAboveBound(uint256 normSq, uint256 normBound);
    error NotInField(uint256 value);
    error AlreadyContributed(uint256 experimentId, uint256 round, uint256 stage, address peer);
    error InvalidProof();
    error NotFinalizable(uint256 round, uint256 finalizableAt);
    error AlreadyFinalized(uint256 round);
    error NotFinalized(uint256 round);
    error NoContribution(uint256 experimentId, uint256 round, uint256 stage, address peer);
    error AlreadyClaimed(uint256 round, uint256 stage, address peer);
    error PeerSlashed(uint256 round, uint256 stage, address peer);
    error UnansweredAudit(uint256 round, uint256 stage, address peer);
    error AuditIndexOutOfRange(uint256 j, uint256 auditsPerPeer);
    error NotInAuditOpening(uint256 nowTime, uint256 opensAt, uint256 closesAt);
    error NotInAuditWindow(uint256 nowTime, uint256 opensAt, uint256 closesAt);
    error AuditAlreadyOpen(uint256 j);
    error AuditNotOpen(uint256 j);
    error AuditAlreadyAnswered(uint256 j);
    error AuditWindowNotOver(uint256 closesAt);
    error AlreadySlashed(uint256 round, uint256 stage, address peer);
    error NotFunder(address caller, address funder);
    error ReclaimTooEarly(uint256 reclaimableAt);
    error LengthMismatch();
    error NormBelowMinimum(uint256 normSq, uint256 minNormSq);
    error CollateralUnavailable(uint256 free, uint256 needed);
    error RoundsNotFinalized(uint256 pending);
    error NoTargetedAuditSlot();
    error ChunkOutOfRange(uint256 chunk, uint256 numChunks);
    error SeedNotReady(uint256 armedBlock);
    error SeedAlreadyFixed(uint256 round);
    error EmptyBatch();
    error RecordSlotBusy(uint256 openRound);
    /// @notice slashMismatch is called by another than the escrow's fraudChecker.
    error NotFraudChecker();
    error NotInCertifyWindow(uint256 opensAt);
    error AlreadyCertified(uint256 round, uint256 stage);
    error NotTheContributors(uint256 listed, uint256 recorded);
    error BadSigner(address signer);
    error TooFewSigners(uint256 signers, uint256 contributors);
}
