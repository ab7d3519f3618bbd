// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {IBatchChunkVerifier} from "./IBatchChunkVerifier.sol";
import {IChunkVerifier} from "./IChunkVerifier.sol";
import {ISwarmEscrow} from "./ISwarmEscrow.sol";
import {PartFraudChecker} from "./fraud/PartFraudChecker.sol";
import {SwarmCertifier} from "./SwarmCertifier.sol";

/// @title SwarmEscrow
/// @notice Holds peers' stakes and researchers' reward pools (one ERC-20), verifies each round's contribution
/// proofs on-chain with a pinned verifier, locks `minStake` of collateral per contribution until its liability
/// ends, shares a finalized round's reward equally among its valid contributions (pulled by claim), and slashes
/// the collateral of a contribution whose audit went unanswered (the opener is paid, the rest is burned).
/// Rules: contracts/README.md; protocol: docs/protocol.md.
contract SwarmEscrow is ISwarmEscrow, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice Denominator of basis-point fractions.
    uint256 public constant BPS = 10_000;
    /// @notice The most sampled audits per contribution: bits 0..7 of the 16-bit audit bitmaps.
    uint256 public constant MAX_AUDITS = 8;
    /// @notice Targeted audits (a named chunk) use audit indices TARGETED_BASE..15.
    uint256 public constant TARGETED_BASE = 8;
    uint256 private constant AUDIT_SLOTS = 16;
    /// @notice Seconds added to every minimum window for getting a transaction included (a few L2 blocks).
    uint256 public constant INCLUSION_MARGIN = 10;
    /// @notice Where the non-reporter part of a slash goes: nobody holds this address's key.
    address public constant BURN_ADDRESS = 0x000000000000000000000000000000000000dEaD;
    /// @notice The BN254 scalar field: every public input of the circuit lies below it.
    uint256 public constant FIELD = 21888242871839275222246405745257275088548364400416034343698204186575808495617;
    uint256 private constant ROUND_SHIFT = 40;
    uint256 private constant STAGE_SHIFT = 24;
    uint256 private constant PEER_SHIFT = 88;
    /// @notice ContributionSkipped reasons: the peer already has a record for (round, stage) ...
    uint8 public constant SKIP_DUPLICATE = 1;
    /// @notice ... or its free stake does not cover minStake of collateral.
    uint8 public constant SKIP_COLLATERAL = 2;
    /// @notice ... or its record slot still holds an open record of round - RECORD_RING (claim or slash it first).
    uint8 public constant SKIP_SLOT_BUSY = 3;
    /// @notice ... or the peer has not allowed batches into this experiment (allowBatches).
    uint8 public constant SKIP_NOT_ALLOWED = 4;
    uint256 private constant BATCH_WORDS = 12; // per proof in verifyBatch's input: 8 proof words, 4 public inputs
    /// @notice A peer's records of (experiment, stage) live in RECORD_RING slots, round r in slot r % RECORD_RING:
    /// a contribution RECORD_RING rounds after a closed (claimed or slashed) one rewrites a used slot (2,900 gas
    /// instead of 20,000 for a new one). Experiments must let a record close CLAIM_ROUNDS rounds before its slot
    /// comes round again.
    uint256 public constant RECORD_RING = 64;
    /// @notice The fewest rounds a peer has to claim a record before the ring needs its slot again.
    uint256 public constant CLAIM_ROUNDS = 8;

    /// @notice An experiment's configuration as `getExperiment` returns it (storage packs it as ExperimentData).
    struct Experiment {
        address funder;
        uint64 start;
        uint32 roundDuration;
        address verifier;
        uint32 submitWindow;
        uint32 auditWindow;
        uint8 auditsPerPeer;
        uint16 numStages;
        uint128 rewardPerRound;
        uint128 pool;
        uint128 normBound;
        uint48 numRounds;
        uint8 minNormLog2;
        uint32 pendingRounds;
        bool requireCertificate;
    }

    /// @dev Storage layout of an experiment: `contribute` reads only the first two slots. A nonzero verifier
    /// (it must have code) marks an existing experiment.
    struct ExperimentData {
        // slot 0
        address verifier;
        uint64 start;
        uint32 roundDuration;
        // slot 1
        uint128 normBound;
        uint48 numRounds;
        uint32 submitWindow;
        uint16 numStages;
        uint8 auditsPerPeer;
        uint8 minNormLog2;
        bool requireCertificate; // only certified records are paid (certify)
        // slot 2
        address funder;
        uint32 auditWindow;
        uint32 pendingRounds; // rounds with contributions that are not finalized yet
        // slot 3
        uint128 rewardPerRound;
        uint128 pool;
    }

    struct Round {
        bytes32 accumulator;
        uint32 contributions;
        uint32 unanswered; // records with an open audit not (yet) answered: they get no share
        bool finalized;
        uint128 share;
        bool certRequired; // copied from the experiment at finalize: claim pays only certified records
    }

    /// @dev One slot per contribution: a 160-bit hash of (root, normSq), its round (the slot is reused RECORD_RING
    /// rounds later once the record is closed), status flags and audit bitmaps.
    struct Record {
        uint160 commitment;
        uint40 round;
        bool claimed;
        bool slashed;
        uint16 auditsOpened;
        uint16 auditsAnswered;
        bool certified; // its (round, stage) group certified that its verified parts were averaged (certify)
    }

    /// @dev Per (experiment, round, stage) of a requireCertificate experiment: records counted, certificate done.
    struct StageRound {
        uint32 contributors;
        bool certified;
    }



    /// @dev `locked` is the part of `active` that backs contributions still liable (minStake each).
    struct StakeInfo {
        uint96 active;
        uint96 locked;
        uint64 batchExperiment; // the experiment others may submit this peer's contributions to; 0: none
        uint128 unbonding;
        uint64 unbondingReadyAt;
    }

    /// @dev A round's audit seed: keccak256(accumulator, blockhash(armedBlock)), stored by its first use.
    struct SeedInfo {
        uint64 armedBlock;
        bytes32 seed;
    }

    /// @dev What contributeBatch carries from entry to entry (in memory: too many values for the stack).
    struct BatchContext {
        uint256 experimentId;
        uint256 round;
        address verifier;
        uint256 normBound;
        uint256 numStages;
        uint256 minNormSq;
        bool batch; // the verifier has verifyBatch: proofs are gathered and checked once at the end
        bool cert; // requireCertificate: each (round, stage) counts its records
        bytes32 accumulator;
        uint256 included;
        uint256 others; // included entries of peers other than the submitter: each earns batchFee
    }

    struct Audit {
        address opener;
        uint32 chunk; // targeted audits only
        bool settled; // bond paid out (answered) or returned (slashed)
    }

    /// @notice The token of stakes, pools and rewards.
    IERC20 public immutable token;
    /// @notice Collateral each contribution locks (and the least a peer may stake).
    uint128 public immutable minStake;
    /// @notice Tokens an audit's opener deposits: paid to the accused when answered, returned on a slash.
    uint128 public immutable auditBond;
    /// @notice Delay between an unbonding request and the withdrawal.
    uint32 public immutable unbondingDelay;
    /// @notice Time after a round's audit window during which only the funder may finalize an under-funded
    /// round (to top the pool up first) and the pool cannot be reclaimed.
    uint32 public immutable slashGrace;
    /// @notice Fraction of a slashed collateral paid to the audit's opener, in basis points; the rest is burned.
    uint16 public immutable reporterBps;
    /// @notice Tokens paid from an experiment's pool to whoever submits a batch (contributeBatch), per included
    /// contribution of another peer: it pays the submitter's gas (0: no fee).
    uint128 public immutable batchFee;
    /// @notice Checks certificates' signatures and marks them here (markCertified); created with the escrow.
    SwarmCertifier public immutable certifier;
    /// @notice The contract that checks a wallet-signed part of a verified round against the signer's contributed
    /// root with Poseidon, and calls slashMismatch when it does not match (made by the constructor).
    address public immutable fraudChecker;
    /// @notice Tokens burned by slashes so far (sent to BURN_ADDRESS).
    uint256 public burned;

    /// @notice The next experiment id (ids start at 1).
    uint256 public nextExperimentId = 1;
    mapping(uint256 experimentId => ExperimentData) private _experiments;
    mapping(uint256 experimentId => mapping(uint256 stage => uint32)) private _numChunks;
    mapping(uint256 experimentId => mapping(uint256 round => Round)) private _rounds;
    mapping(uint256 experimentId => mapping(uint256 ringSlot => mapping(uint256 stage => mapping(address => Record))))
        private _records;
    /// @notice Stake of each peer: active (of which `locked` backs open contributions), unbonding, and when the
    /// unbonding can be withdrawn.
    mapping(address peer => StakeInfo) public stakes;
    /// @notice The verifiers this escrow accepts, by runtime code hash (fixed in the constructor).
    mapping(bytes32 codeHash => VerifierShape) public verifierShapes;
    mapping(bytes32 auditKey => Audit) private _audits;
    mapping(uint256 experimentId => mapping(uint256 round => SeedInfo)) private _seeds;
    mapping(uint256 experimentId => mapping(uint256 round => mapping(uint256 stage => StageRound))) private _groups;

    /// @param token_ The ERC-20 of stakes and rewards.
    /// @param minStake_ Collateral locked per contribution (> 0).
    /// @param unbondingDelay_ Seconds between requestUnbond and withdraw.
    /// @param slashGrace_ Seconds (> 0) after a round's audit window in which only the funder may finalize an
    /// under-funded round.
    /// @param reporterBps_ Opener's part of a slashed collateral in basis points (< BPS, so self-reporting loses).
    /// @param auditBond_ Tokens an audit's opener deposits (> 0).
    /// @param batchFee_ Tokens a batch's submitter gets from the pool per included contribution of another peer.
    /// @param shapes The verifiers experiments may use, pinned by code hash, with their circuit's shape.
    constructor(
        IERC20 token_,
        uint128 minStake_,
        uint32 unbondingDelay_,
        uint32 slashGrace_,
        uint16 reporterBps_,
        uint128 auditBond_,
        uint128 batchFee_,
        VerifierShape[] memory shapes
    ) {
        if (address(token_).code.length == 0) revert InvalidExperiment("token");
        if (minStake_ == 0 || minStake_ > type(uint96).max) revert InvalidExperiment("minStake");
        if (reporterBps_ >= BPS) revert InvalidExperiment("reporterBps");
        if (slashGrace_ == 0) revert InvalidExperiment("slashGrace");
        if (auditBond_ == 0) revert InvalidExperiment("auditBond");
        token = token_;
        minStake = minStake_;
        unbondingDelay = unbondingDelay_;
        slashGrace = slashGrace_;
        reporterBps = reporterBps_;
        auditBond = auditBond_;
        batchFee = batchFee_;
        fraudChecker = address(new PartFraudChecker());
        certifier = new SwarmCertifier();
        for (uint256 i = 0; i < shapes.length; ++i) {
            VerifierShape memory v = shapes[i];
            if (v.codeHash == bytes32(0) || v.chunk == 0 || v.depth == 0 || v.depth > 24 || v.proofSeconds == 0) {
                revert InvalidExperiment("verifier shape");
            }
            verifierShapes[v.codeHash] = v;
        }
    }

    // ----------------------------------------------------------------------------------------------- staking

    /// @notice Add `amount` tokens to the caller's active stake (needs an ERC-20 allowance).
    /// @param amount Tokens to stake; the resulting active stake must reach `minStake`.
    function stake(uint128 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        StakeInfo storage s = stakes[msg.sender];
        uint256 active = uint256(s.active) + amount;
        if (active < minStake) revert BelowMinStake(active, minStake);
        if (active > type(uint96).max) revert InsufficientStake(type(uint96).max, active);
        s.active = uint96(active);
        emit Staked(msg.sender, amount, active);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Move `amount` of the caller's unlocked active stake to unbonding (locked collateral cannot leave).
    /// @dev A new request restarts the delay for the whole unbonding amount.
    /// @param amount Tokens to unbond.
    function requestUnbond(uint128 amount) external {
        if (amount == 0) revert ZeroAmount();
        StakeInfo storage s = stakes[msg.sender];
        uint256 free = s.active - s.locked;
        if (amount > free) revert InsufficientStake(free, amount);
        s.active -= uint96(amount);
        s.unbonding += amount;
        uint64 readyAt = uint64(block.timestamp) + unbondingDelay;
        s.unbondingReadyAt = readyAt;
        emit UnbondingRequested(msg.sender, amount, s.unbonding, readyAt);
    }

    /// @notice Let anyone submit the caller's contributions to experiment `experimentId` in batches
    /// (contributeBatch); 0 allows none. Without it a batch entry for the caller is skipped, so a proof the caller
    /// gossiped cannot be replayed into another experiment (or escrow, or chain) on its behalf. One experiment at
    /// a time: it lives in the stake slot every contribution reads anyway.
    /// @param experimentId The experiment (0: none).
    function allowBatches(uint256 experimentId) external {
        if (experimentId != 0) _experiment(experimentId);
        if (experimentId > type(uint64).max) revert UnknownExperiment(experimentId);
        stakes[msg.sender].batchExperiment = uint64(experimentId);
        emit BatchesAllowed(msg.sender, experimentId);
    }

    /// @notice Withdraw the caller's whole unbonding stake once its delay has passed.
    function withdraw() external nonReentrant {
        StakeInfo storage s = stakes[msg.sender];
        uint256 amount = s.unbonding;
        if (amount == 0) revert NothingUnbonding();
        if (block.timestamp < s.unbondingReadyAt) revert UnbondingNotReady(s.unbondingReadyAt, block.timestamp);
        s.unbonding = 0;
        emit Withdrawn(msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    // ------------------------------------------------------------------------------------------- experiments

    /// @notice Create an experiment; the caller becomes its funder (the one who may reclaim the pool's rest).
    /// @param p The experiment's declaration (see ISwarmEscrow.ExperimentParams).
    /// @return experimentId The new experiment's id.
    function createExperiment(ExperimentParams calldata p) external returns (uint256 experimentId) {
        _checkParams(p);
        experimentId = nextExperimentId++;
        _experiments[experimentId] = ExperimentData({
            verifier: p.verifier,
            start: p.start,
            roundDuration: p.roundDuration,
            normBound: uint128(p.normBound),
            numRounds: p.numRounds,
            submitWindow: p.submitWindow,
            numStages: uint16(p.stageParams.length),
            auditsPerPeer: p.auditsPerPeer,
            minNormLog2: p.minNormLog2,
            requireCertificate: p.requireCertificate,
            funder: msg.sender,
            auditWindow: p.auditWindow,
            pendingRounds: 0,
            rewardPerRound: p.rewardPerRound,
            pool: 0
        });
        for (uint256 i = 0; i < p.stageParams.length; ++i) {
            _numChunks[experimentId][i] = uint32((uint256(p.stageParams[i]) + p.chunkSize - 1) / p.chunkSize);
        }
        emit ExperimentCreated(experimentId, msg.sender, p.verifier, p.stageParams.length);
    }

    /// @notice Add `amount` tokens to an experiment's reward pool (anyone may fund; needs an allowance).
    /// @param experimentId The experiment.
    /// @param amount Tokens to add.
    function fund(uint256 experimentId, uint128 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        ExperimentData storage e = _experiment(experimentId);
        e.pool += amount;
        emit Funded(experimentId, msg.sender, amount, e.pool);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice The funder takes back what is left of the pool once the last round's audit window and the
    /// grace are over and every round that had contributions is finalized (anyone may finalize them).
    /// @param experimentId The experiment.
    function reclaimPool(uint256 experimentId) external nonReentrant {
        ExperimentData storage e = _experiment(experimentId);
        if (msg.sender != e.funder) revert NotFunder(msg.sender, e.funder);
        uint256 reclaimableAt = _auditEnd(e, e.numRounds - 1) + slashGrace;
        if (block.timestamp < reclaimableAt) revert ReclaimTooEarly(reclaimableAt);
        if (e.pendingRounds != 0) revert RoundsNotFinalized(e.pendingRounds);
        uint256 amount = e.pool;
        if (amount == 0) revert ZeroAmount();
        e.pool = 0;
        emit PoolReclaimed(experimentId, msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    // ---------------------------------------------------------------------------------------------- rounds

    /// @notice Record the caller's contribution for (round, stage), proven by a Groth16 proof of chunk
    /// c0 = keccak256(abi.encode(root, msg.sender)) % numChunks(stage), bound to msg.sender through `context`.
    /// Locks `minStake` of the caller's active stake until the record is claimed or slashed.
    /// @param experimentId The experiment.
    /// @param round The round the update belongs to.
    /// @param stage The pipeline stage.
    /// @param root The Poseidon commitment to the quantized update.
    /// @param normSq The update's fixed-point squared norm (the root commits to it).
    /// @param proof The chunk circuit's proof for public inputs [context, root, normSq, normBound].
    function contribute(
        uint256 experimentId,
        uint256 round,
        uint256 stage,
        uint256 root,
        uint256 normSq,
        IChunkVerifier.Proof calldata proof
    ) external {
        (address verifier, uint256 normBound) = _checkSubmission(experimentId, round, stage, normSq);
        _lockCollateral();
        if (root >= FIELD) revert NotInField(root);
        Record storage rec = _records[experimentId][round % RECORD_RING][stage][msg.sender];
        uint8 busy = _slotState(rec, round);
        if (busy == SKIP_DUPLICATE) revert AlreadyContributed(experimentId, round, stage, msg.sender);
        if (busy == SKIP_SLOT_BUSY) revert RecordSlotBusy(rec.round);

        uint256 chunk = uint256(keccak256(abi.encode(root, msg.sender))) % _numChunks[experimentId][stage];
        _verify(verifier, normBound, proof, msg.sender, round, stage, chunk, root, normSq);

        _writeRecord(rec, round, root, normSq);
        if (_experiments[experimentId].requireCertificate) _groups[experimentId][round][stage].contributors += 1;
        Round storage r = _rounds[experimentId][round];
        r.accumulator = keccak256(abi.encode(r.accumulator, msg.sender, stage, root));
        if (r.contributions == 0) _experiments[experimentId].pendingRounds += 1;
        r.contributions += 1;
        emit Contributed(experimentId, round, stage, msg.sender, root, normSq, chunk);
    }

    /// @notice Record a batch of contributions of one round, each for the peer it names (anyone may submit
    /// other peers' contributions; the records, the collateral and the rewards are the named peers'). Each entry
    /// is what `contribute` takes from that peer: its proof of c0 = keccak256(abi.encode(root, peer)) %
    /// numChunks(stage) binds the peer through `context`, so a changed peer makes the batch fail. An entry whose
    /// peer already has a record for (round, stage) or lacks free stake for the collateral is skipped
    /// (ContributionSkipped; neither recorded nor checked nor paid); anything the submitter can check beforehand
    /// (stage, norm bounds, root in the field, and every proof of the included entries) reverts the whole batch.
    /// With a batch verifier the proofs are checked together (IBatchChunkVerifier.verifyBatch), else one by one.
    /// The submitter gets batchFee per included entry of another peer from the pool (at most the pool).
    /// @param experimentId The experiment.
    /// @param round The round of every entry.
    /// @param entries The contributions.
    /// @return included How many entries were recorded.
    function contributeBatch(uint256 experimentId, uint256 round, BatchEntry[] calldata entries)
        external
        nonReentrant
        returns (uint256 included)
    {
        if (entries.length == 0) revert EmptyBatch();
        BatchContext memory ctx = _batchContext(experimentId, round);
        uint256[] memory words = new uint256[](ctx.batch ? entries.length * BATCH_WORDS : 0);
        for (uint256 i = 0; i < entries.length; ++i) {
            _batchEntry(ctx, entries[i], words);
        }
        included = ctx.included;
        if (ctx.batch && included > 0) {
            uint256 used = included * BATCH_WORDS;
            assembly ("memory-safe") {
                mstore(words, used) // only the included entries' words
            }
            if (!IBatchChunkVerifier(ctx.verifier).verifyBatch(words)) revert InvalidProof();
        }
        uint256 fee;
        if (included > 0) {
            Round storage r = _rounds[experimentId][round];
            r.accumulator = ctx.accumulator;
            ExperimentData storage e = _experiments[experimentId];
            if (r.contributions == 0) e.pendingRounds += 1;
            r.contributions += uint32(included);
            fee = batchFee * ctx.others;
            if (fee > e.pool) fee = e.pool;
            if (fee > 0) e.pool -= uint128(fee);
        }
        emit BatchContributed(experimentId, round, msg.sender, included, entries.length - included, fee);
        if (fee > 0) token.safeTransfer(msg.sender, fee);
    }

    /// @notice Fix a round's per-contribution share once its audit window is over (O(1)). Anyone may call it
    /// when the pool covers rewardPerRound; otherwise only the funder until slashGrace after the window (so a
    /// griefer cannot fix the share before the funder tops up). share = min(rewardPerRound, pool) / valid,
    /// valid = contributions without an unanswered audit; rounded down, the dust stays in the pool.
    /// @param experimentId The experiment.
    /// @param round The round.
    function finalize(uint256 experimentId, uint256 round) external {
        ExperimentData storage e = _experiment(experimentId);
        if (round >= e.numRounds) revert RoundOutOfRange(round, e.numRounds);
        uint256 finalizableAt = _auditEnd(e, round);
        if (msg.sender != e.funder && e.pool < e.rewardPerRound) finalizableAt += slashGrace;
        if (block.timestamp < finalizableAt) revert NotFinalizable(round, finalizableAt);
        Round storage r = _rounds[experimentId][round];
        if (r.finalized) revert AlreadyFinalized(round);
        r.finalized = true;
        r.certRequired = e.requireCertificate;
        if (r.contributions > 0) e.pendingRounds -= 1;
        uint256 valid = r.contributions - r.unanswered;
        uint256 share;
        if (valid > 0) {
            uint256 budget = e.rewardPerRound < e.pool ? e.rewardPerRound : e.pool;
            share = budget / valid;
            r.share = uint128(share);
            e.pool -= uint128(share * valid);
        }
        emit RoundFinalized(experimentId, round, valid, share, share * valid);
    }

    /// @notice Pull the caller's share of a finalized round for one stage.
    /// @param experimentId The experiment.
    /// @param round The round.
    /// @param stage The stage the caller contributed to.
    function claim(uint256 experimentId, uint256 round, uint256 stage) external nonReentrant {
        uint256 amount = _claim(experimentId, round, stage);
        stakes[msg.sender].locked -= uint96(minStake);
        if (amount > 0) token.safeTransfer(msg.sender, amount);
    }

    /// @notice Pull several (round, stage) shares of one experiment in one transfer.
    /// @param experimentId The experiment.
    /// @param rounds_ The rounds.
    /// @param stages The stages, one per round.
    function claimMany(uint256 experimentId, uint256[] calldata rounds_, uint256[] calldata stages)
        external
        nonReentrant
    {
        if (rounds_.length != stages.length) revert LengthMismatch();
        uint256 total;
        for (uint256 i = 0; i < rounds_.length; ++i) {
            total += _claim(experimentId, rounds_[i], stages[i]);
        }
        stakes[msg.sender].locked -= uint96(minStake * rounds_.length);
        if (total > 0) token.safeTransfer(msg.sender, total);
    }

    /// @notice Mark which records of a (round, stage) its group certified (requireCertificate experiments). Only
    /// the certifier calls it, after checking that more than 2/3 of `contributors` signed (SwarmCertifier.certify);
    /// here: `contributors` must be as many as the records of (round, stage) and each recorded (the certifier
    /// checked they strictly increase, so they are exactly those records); once per (round, stage), once its
    /// submission window is over (the records are final then). A record claimed before it was certified got 0.
    /// @param experimentId The experiment.
    /// @param round The round.
    /// @param stage The stage.
    /// @param contributors The (round, stage)'s recorded peers, increasing.
    /// @param included Bitmap over `contributors` of those whose verified parts were averaged.
    function markCertified(
        uint256 experimentId,
        uint256 round,
        uint256 stage,
        address[] calldata contributors,
        uint256 included
    ) external {
        if (msg.sender != address(certifier)) revert BadSigner(msg.sender);
        ExperimentData storage e = _experiment(experimentId);
        uint256 opensAt = _submissionEnd(e, round);
        if (block.timestamp < opensAt) revert NotInCertifyWindow(opensAt);
        StageRound storage g = _groups[experimentId][round][stage];
        uint256 n = contributors.length;
        if (g.certified) revert AlreadyCertified(round, stage);
        if (n != g.contributors) revert NotTheContributors(n, g.contributors);
        g.certified = true;
        for (uint256 i = 0; i < n; ++i) {
            Record storage rec = _existingRecord(experimentId, round, stage, contributors[i]);
            if (included >> i & 1 == 1) rec.certified = true;
        }
        emit Certified(experimentId, round, stage, n, included);
    }

    // ---------------------------------------------------------------------------------------------- audits

    /// @notice Arm round `round`'s audit seed once its submissions are closed (anyone may; `openAudit` needs it):
    /// the seed is keccak256(abi.encode(accumulator, blockhash(this block))), readable from the next block on.
    /// Nobody who submitted can know that block's hash when it submitted, and whoever arms cannot know it when it
    /// sends this transaction. If nobody uses the seed within 256 blocks (the EVM forgets older block hashes),
    /// anyone may arm it again.
    /// @param experimentId The experiment.
    /// @param round The round.
    function armSeed(uint256 experimentId, uint256 round) external {
        uint256 opensAt = _submissionEnd(_experiment(experimentId), round);
        if (block.timestamp < opensAt) revert NotInAuditOpening(block.timestamp, opensAt, 0);
        SeedInfo storage s = _seeds[experimentId][round];
        if (s.seed != 0) revert SeedAlreadyFixed(round);
        if (s.armedBlock != 0 && block.number - s.armedBlock <= 256) revert SeedAlreadyFixed(round);
        s.armedBlock = uint64(block.number);
        emit SeedArmed(experimentId, round, block.number);
    }

    /// @notice Open sampled audit `j` of `peer`'s contribution: the peer must answer with a proof of chunk c_j
    /// before the audit window ends. Sampled audits open during the first half of the audit window (the seed is
    /// fixed then). The caller deposits `auditBond` (an ERC-20 allowance): it goes to the accused if the audit is
    /// answered, and back to the caller, with the reporter's part of the collateral, if the peer is slashed.
    /// @param experimentId The experiment.
    /// @param round The round.
    /// @param stage The stage.
    /// @param peer The audited peer.
    /// @param j The audit index, below auditsPerPeer.
    function openAudit(uint256 experimentId, uint256 round, uint256 stage, address peer, uint256 j)
        external
        nonReentrant
    {
        ExperimentData storage e = _experiment(experimentId);
        if (j >= e.auditsPerPeer) revert AuditIndexOutOfRange(j, e.auditsPerPeer);
        uint256 opensAt = _submissionEnd(e, round);
        uint256 closesAt = opensAt + e.auditWindow / 2;
        if (block.timestamp < opensAt || block.timestamp >= closesAt) {
            revert NotInAuditOpening(block.timestamp, opensAt, closesAt);
        }
        _storeSeed(experimentId, round);
        uint256 chunk = auditChunk(experimentId, round, stage, peer, j);
        _openAudit(experimentId, round, stage, peer, j, chunk);
    }

    /// @notice Open a targeted audit of chunk `chunk` of `peer`'s contribution (e.g. a receiver's evidence that
    /// the data sent for that chunk does not match the root). Possible from the contribution until the end of
    /// the first half of the audit window; at most 16 - TARGETED_BASE per contribution. Same bond and payout
    /// rules as openAudit; the accused answers with a proof of that chunk.
    /// @param experimentId The experiment.
    /// @param round The round.
    /// @param stage The stage.
    /// @param peer The audited peer.
    /// @param chunk The chunk to prove, below numChunks(stage).
    /// @return j The audit index used (TARGETED_BASE .. 15).
    function openTargetedAudit(uint256 experimentId, uint256 round, uint256 stage, address peer, uint256 chunk)
        external
        nonReentrant
        returns (uint256 j)
    {
        ExperimentData storage e = _experiment(experimentId);
        uint256 n = _stageChunks(experimentId, e, stage);
        if (chunk >= n) revert ChunkOutOfRange(chunk, n);
        uint256 closesAt = _submissionEnd(e, round) + e.auditWindow / 2;
        if (block.timestamp >= closesAt) revert NotInAuditOpening(block.timestamp, 0, closesAt);
        uint16 opened = _existingRecord(experimentId, round, stage, peer).auditsOpened;
        for (j = TARGETED_BASE; j < AUDIT_SLOTS; ++j) {
            if (opened & uint16(1 << j) == 0) break;
        }
        if (j == AUDIT_SLOTS) revert NoTargetedAuditSlot();
        _openAudit(experimentId, round, stage, peer, j, chunk);
    }

    /// @notice Answer the caller's open audit `j` with a proof of its chunk under the committed root; the
    /// opener's bond is paid to the caller.
    /// @param experimentId The experiment.
    /// @param round The round.
    /// @param stage The stage.
    /// @param j The audit index.
    /// @param root The root given in `contribute`.
    /// @param normSq The squared norm given in `contribute`.
    /// @param proof The chunk circuit's proof for the audited chunk.
    function answerAudit(
        uint256 experimentId,
        uint256 round,
        uint256 stage,
        uint256 j,
        uint256 root,
        uint256 normSq,
        IChunkVerifier.Proof calldata proof
    ) external nonReentrant {
        ExperimentData storage e = _experiment(experimentId);
        {
            uint256 closesAt = _auditEnd(e, round);
            if (block.timestamp >= closesAt) revert NotInAuditWindow(block.timestamp, 0, closesAt);
        }
        Record storage rec = _existingRecord(experimentId, round, stage, msg.sender);
        if (rec.slashed) revert AlreadySlashed(round, stage, msg.sender);
        if (j >= AUDIT_SLOTS) revert AuditIndexOutOfRange(j, AUDIT_SLOTS);
        uint16 bit = uint16(1 << j);
        if (rec.auditsOpened & bit == 0) revert AuditNotOpen(j);
        if (rec.auditsAnswered & bit != 0) revert AuditAlreadyAnswered(j);
        if (rec.commitment != _commitment(root, normSq)) revert InvalidProof();
        Audit storage audit = _audits[_auditKey(experimentId, round, stage, msg.sender, j)];
        uint256 chunk = j >= TARGETED_BASE ? audit.chunk : auditChunk(experimentId, round, stage, msg.sender, j);
        _verify(e.verifier, e.normBound, proof, msg.sender, round, stage, chunk, root, normSq);
        rec.auditsAnswered |= bit;
        if (rec.auditsOpened & ~rec.auditsAnswered == 0) _rounds[experimentId][round].unanswered -= 1;
        audit.settled = true;
        emit AuditAnswered(experimentId, round, stage, msg.sender, j);
        token.safeTransfer(msg.sender, auditBond);
    }

    /// @notice Slash the collateral of `peer`'s contribution for audit `j` left unanswered when the audit window
    /// closed (anyone may call). The contribution's locked `minStake` is taken: reporterBps of it and the bond
    /// go to the audit's opener (not to the caller), the rest is burned (sent to BURN_ADDRESS), so no pool and no
    /// funder can receive it. The record gets no share. One slash per contribution.
    /// @param experimentId The experiment.
    /// @param round The round.
    /// @param stage The stage.
    /// @param peer The peer to slash.
    /// @param j The unanswered audit.
    function slash(uint256 experimentId, uint256 round, uint256 stage, address peer, uint256 j) external nonReentrant {
        ExperimentData storage e = _experiment(experimentId);
        uint256 closesAt = _auditEnd(e, round);
        if (block.timestamp < closesAt) revert AuditWindowNotOver(closesAt);
        Record storage rec = _existingRecord(experimentId, round, stage, peer);
        if (rec.slashed) revert AlreadySlashed(round, stage, peer);
        if (j >= AUDIT_SLOTS) revert AuditIndexOutOfRange(j, AUDIT_SLOTS);
        uint16 bit = uint16(1 << j);
        if (rec.auditsOpened & bit == 0) revert AuditNotOpen(j);
        if (rec.auditsAnswered & bit != 0) revert AuditAlreadyAnswered(j);

        _takeCollateral(experimentId, round, stage, peer, j, address(0));
    }

    /// @notice Slash `peer`'s contribution at once: called only by `fraudChecker`, after it checked a part of the
    /// round's verified all-reduce whose leaves and path `peer`'s wallet signed for this escrow, experiment, round
    /// and stage, and found that they do not hash to (root, normSq) (PartFraudChecker.slashMismatch, which anyone
    /// calls with the signed part). `reporter` (its caller) gets reporterBps, the rest is burned, open audits'
    /// bonds go back. One slash per record; not after the record is claimed.
    /// @param experimentId The experiment.
    /// @param round The round.
    /// @param stage The stage.
    /// @param peer The peer whose wallet signed the part.
    /// @param root The root the peer contributed.
    /// @param normSq The squared norm the peer contributed.
    /// @param reporter Who sent the evidence.
    function slashMismatch(
        uint256 experimentId,
        uint256 round,
        uint256 stage,
        address peer,
        uint256 root,
        uint256 normSq,
        address reporter
    ) external nonReentrant {
        if (msg.sender != fraudChecker) revert NotFraudChecker();
        Record storage rec = _existingRecord(experimentId, round, stage, peer);
        if (rec.slashed || rec.claimed) revert AlreadySlashed(round, stage, peer);
        if (rec.commitment != _commitment(root, normSq)) revert InvalidProof();
        Round storage r = _rounds[experimentId][round];
        // not finalized: the record leaves the round's valid ones (counted once: it has no open audit left then)
        if (!r.finalized && rec.auditsOpened & ~rec.auditsAnswered == 0) r.unanswered += 1;
        _takeCollateral(experimentId, round, stage, peer, AUDIT_SLOTS, reporter);
    }

    // ----------------------------------------------------------------------------------------------- views

    /// @notice The round whose training window contains `timestamp` (0 before the start).
    function roundAt(uint256 experimentId, uint256 timestamp) external view returns (uint256) {
        ExperimentData storage e = _experiment(experimentId);
        return timestamp < e.start ? 0 : (timestamp - e.start) / e.roundDuration;
    }

    /// @notice End of a round's submission window (exclusive); its audit window starts there.
    function submissionEnd(uint256 experimentId, uint256 round) external view returns (uint256) {
        return _submissionEnd(_experiment(experimentId), round);
    }

    /// @notice End of a round's audit window (exclusive); finalize and slash are possible from then on.
    function auditEnd(uint256 experimentId, uint256 round) external view returns (uint256) {
        return _auditEnd(_experiment(experimentId), round);
    }

    /// @notice The experiment's stored configuration.
    function getExperiment(uint256 experimentId) external view returns (Experiment memory) {
        ExperimentData storage e = _experiment(experimentId);
        return Experiment({
            funder: e.funder,
            start: e.start,
            roundDuration: e.roundDuration,
            verifier: e.verifier,
            submitWindow: e.submitWindow,
            auditWindow: e.auditWindow,
            auditsPerPeer: e.auditsPerPeer,
            numStages: e.numStages,
            rewardPerRound: e.rewardPerRound,
            pool: e.pool,
            normBound: e.normBound,
            numRounds: e.numRounds,
            minNormLog2: e.minNormLog2,
            pendingRounds: e.pendingRounds,
            requireCertificate: e.requireCertificate
        });
    }

    /// @notice Number of chunks of a stage.
    function numChunks(uint256 experimentId, uint256 stage) external view returns (uint256) {
        return _stageChunks(experimentId, _experiment(experimentId), stage);
    }

    /// @notice Who opened audit `j` of a contribution, its chunk (targeted audits) and whether its bond is settled.
    function getAudit(uint256 experimentId, uint256 round, uint256 stage, address peer, uint256 j)
        external
        view
        returns (Audit memory)
    {
        return _audits[_auditKey(experimentId, round, stage, peer, j)];
    }

    /// @notice A round's state: accumulator, contribution count, records with an unanswered audit, finalized,
    /// share.
    function getRound(uint256 experimentId, uint256 round) external view returns (Round memory) {
        return _rounds[experimentId][round];
    }

    /// @notice A contribution's record (commitment 0 means none, or that its ring slot was reused: RECORD_RING).
    function getRecord(uint256 experimentId, uint256 round, uint256 stage, address peer)
        external
        view
        returns (Record memory rec)
    {
        Record storage stored = _records[experimentId][round % RECORD_RING][stage][peer];
        if (stored.round == round) rec = stored; // else the slot holds another round's record (or none)
    }

    /// @notice The round's audit seed keccak256(abi.encode(accumulator, blockhash(armedBlock))); reverts
    /// SeedNotReady(armedBlock) until it is armed (armSeed) and its block is past (armedBlock 0: not armed).
    function roundSeed(uint256 experimentId, uint256 round) public view returns (bytes32) {
        SeedInfo storage s = _seeds[experimentId][round];
        bytes32 seed = s.seed;
        if (seed != 0) return seed;
        uint256 armed = s.armedBlock;
        if (armed == 0 || block.number <= armed || block.number - armed > 256) revert SeedNotReady(armed);
        return keccak256(abi.encode(_rounds[experimentId][round].accumulator, blockhash(armed)));
    }

    /// @dev Keeps the seed once it is first used, so it outlives the 256 blocks of blockhash.
    function _storeSeed(uint256 experimentId, uint256 round) internal {
        SeedInfo storage s = _seeds[experimentId][round];
        if (s.seed == 0) s.seed = roundSeed(experimentId, round);
    }

    /// @notice Audited chunk c_j = keccak256(abi.encode(seed, peer, stage, j)) % numChunks(stage).
    function auditChunk(uint256 experimentId, uint256 round, uint256 stage, address peer, uint256 j)
        public
        view
        returns (uint256)
    {
        uint256 n = _stageChunks(experimentId, _experiment(experimentId), stage);
        return uint256(keccak256(abi.encode(roundSeed(experimentId, round), peer, stage, j))) % n;
    }

    /// @notice The circuit's context input: peer << 88 | round << 40 | stage << 24 | chunk.
    function contextOf(address peer, uint256 round, uint256 stage, uint256 chunk) public pure returns (uint256) {
        return (uint256(uint160(peer)) << PEER_SHIFT) | (round << ROUND_SHIFT) | (stage << STAGE_SHIFT) | chunk;
    }

    // -------------------------------------------------------------------------------------------- internal

    function _claim(uint256 experimentId, uint256 round, uint256 stage) internal returns (uint256 amount) {
        Round storage r = _rounds[experimentId][round];
        if (!r.finalized) revert NotFinalized(round);
        amount = r.share;
        Record storage rec = _records[experimentId][round % RECORD_RING][stage][msg.sender];
        // all fields read before the first branch: one SLOAD of the record's slot
        uint256 commitment = rec.round == round ? rec.commitment : 0;
        bool claimed = rec.claimed;
        bool slashed = rec.slashed;
        uint16 unanswered = rec.auditsOpened & ~rec.auditsAnswered;
        if (commitment == 0) revert NoContribution(experimentId, round, stage, msg.sender);
        if (claimed) revert AlreadyClaimed(round, stage, msg.sender);
        if (slashed) revert PeerSlashed(round, stage, msg.sender);
        if (unanswered != 0) revert UnansweredAudit(round, stage, msg.sender);
        rec.claimed = true;
        if (r.certRequired && !rec.certified) {
            _experiments[experimentId].pool += uint128(amount); // not certified: its share goes back to the pool
            amount = 0;
        }
        emit Claimed(experimentId, round, stage, msg.sender, amount);
    }

    /// @dev Takes the record's collateral: reporterBps to the reporter (audit j's opener; j = AUDIT_SLOTS:
    /// `reporter`), the rest burned; open audits' bonds go back.
    function _takeCollateral(uint256 experimentId, uint256 round, uint256 stage, address peer, uint256 j, address reporter)
        internal
    {
        if (j < AUDIT_SLOTS) reporter = _audits[_auditKey(experimentId, round, stage, peer, j)].opener;
        Record storage rec = _records[experimentId][round % RECORD_RING][stage][peer];
        rec.slashed = true;
        uint16 unanswered = rec.auditsOpened & ~rec.auditsAnswered;
        StakeInfo storage s = stakes[peer];
        s.active -= uint96(minStake);
        s.locked -= uint96(minStake);
        uint256 reward = (uint256(minStake) * reporterBps) / BPS;
        burned += minStake - reward;
        emit Slashed(experimentId, round, stage, peer, minStake, reporter, reward);
        _returnBonds(experimentId, round, stage, peer, unanswered);
        if (reward > 0) token.safeTransfer(reporter, reward);
        token.safeTransfer(BURN_ADDRESS, minStake - reward);
    }

    /// @dev Marks audit `j` open, counts the record as unanswered in its round, keeps the opener, takes the bond.
    function _openAudit(uint256 experimentId, uint256 round, uint256 stage, address peer, uint256 j, uint256 chunk)
        internal
    {
        Record storage rec = _existingRecord(experimentId, round, stage, peer);
        if (rec.slashed) revert AlreadySlashed(round, stage, peer);
        uint16 bit = uint16(1 << j);
        if (rec.auditsOpened & bit != 0) revert AuditAlreadyOpen(j);
        if (rec.auditsOpened & ~rec.auditsAnswered == 0) _rounds[experimentId][round].unanswered += 1;
        rec.auditsOpened |= bit;
        _audits[_auditKey(experimentId, round, stage, peer, j)] =
            Audit({opener: msg.sender, chunk: uint32(chunk), settled: false});
        emit AuditOpened(experimentId, round, stage, peer, j, chunk, msg.sender);
        token.safeTransferFrom(msg.sender, address(this), auditBond);
    }

    /// @dev Every unanswered audit of a slashed record is over: each bond goes back to its opener.
    function _returnBonds(uint256 experimentId, uint256 round, uint256 stage, address peer, uint16 unanswered)
        internal
    {
        for (uint256 i = 0; i < AUDIT_SLOTS; ++i) {
            if (unanswered & uint16(1 << i) == 0) continue;
            Audit storage audit = _audits[_auditKey(experimentId, round, stage, peer, i)];
            audit.settled = true;
            token.safeTransfer(audit.opener, auditBond);
        }
    }

    function _auditKey(uint256 experimentId, uint256 round, uint256 stage, address peer, uint256 j)
        internal
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(experimentId, round, stage, peer, j));
    }

    /// @dev Locks minStake of the caller's active stake for one contribution (one read, one write of its slot).
    function _lockCollateral() internal {
        StakeInfo storage s = stakes[msg.sender];
        uint256 active = s.active;
        uint256 locked = s.locked;
        if (active < locked + minStake) revert CollateralUnavailable(active - locked, minStake);
        s.locked = uint96(locked + minStake);
    }

    /// @dev contributeBatch's checks of the experiment and round (as contribute's), once per batch.
    function _batchContext(uint256 experimentId, uint256 round) internal view returns (BatchContext memory ctx) {
        ExperimentData storage e = _experiments[experimentId];
        ctx.experimentId = experimentId;
        ctx.round = round;
        ctx.verifier = e.verifier;
        ctx.normBound = e.normBound;
        ctx.numStages = e.numStages;
        ctx.minNormSq = uint256(1) << e.minNormLog2;
        ctx.cert = e.requireCertificate;
        if (ctx.verifier == address(0)) revert UnknownExperiment(experimentId);
        uint256 numRounds = e.numRounds;
        if (round >= numRounds) revert RoundOutOfRange(round, numRounds);
        uint256 opensAt = uint256(e.start) + round * e.roundDuration;
        if (block.timestamp < opensAt) revert RoundNotOpen(round, opensAt);
        uint256 closedAt = opensAt + e.roundDuration + e.submitWindow;
        if (block.timestamp >= closedAt) revert SubmissionClosed(round, closedAt);
        ctx.batch = verifierShapes[ctx.verifier.codehash].batch;
        ctx.accumulator = _rounds[experimentId][round].accumulator;
    }

    /// @dev One entry of contributeBatch: checked, skipped or recorded (collateral locked, record written,
    /// accumulator advanced); its proof is checked now (no batch verifier) or its words appended to `words`.
    function _batchEntry(BatchContext memory ctx, BatchEntry calldata x, uint256[] memory words) internal {
        _checkEntry(ctx, x);
        address peer = x.peer;
        uint256 stage = x.stage;
        Record storage rec = _records[ctx.experimentId][ctx.round % RECORD_RING][stage][peer];
        uint8 skip = _slotState(rec, ctx.round);
        if (skip == 0) skip = _tryLockCollateral(peer, ctx.experimentId);
        if (skip != 0) {
            emit ContributionSkipped(ctx.experimentId, ctx.round, stage, peer, skip);
            return;
        }
        uint256 chunk = uint256(keccak256(abi.encode(x.root, peer))) % _numChunks[ctx.experimentId][stage];
        if (ctx.batch) {
            _appendBatchWords(words, ctx.included * BATCH_WORDS, x, contextOf(peer, ctx.round, stage, chunk),
                              ctx.normBound);
        } else {
            _verify(ctx.verifier, ctx.normBound, x.proof, peer, ctx.round, stage, chunk, x.root, x.normSq);
        }
        _writeRecord(rec, ctx.round, x.root, x.normSq);
        if (ctx.cert) _groups[ctx.experimentId][ctx.round][stage].contributors += 1;
        ctx.accumulator = keccak256(abi.encode(ctx.accumulator, peer, stage, x.root));
        ctx.included += 1;
        if (peer != msg.sender) ctx.others += 1;
        emit Contributed(ctx.experimentId, ctx.round, stage, peer, x.root, x.normSq, chunk);
    }

    /// @dev What the submitter can check about an entry before sending: a failure reverts the whole batch.
    function _checkEntry(BatchContext memory ctx, BatchEntry calldata x) internal pure {
        uint256 normSq = x.normSq;
        if (x.stage >= ctx.numStages) revert UnknownStage(x.stage, ctx.numStages);
        if (normSq > ctx.normBound) revert NormAboveBound(normSq, ctx.normBound);
        if (normSq < ctx.minNormSq) revert NormBelowMinimum(normSq, ctx.minNormSq);
        if (x.root >= FIELD) revert NotInField(x.root);
    }

    /// @dev For a batch entry: 0 after locking minStake of `peer`'s active stake, or why not (the peer allows no
    /// batches into this experiment, or its free stake is short). One read, one write of its stake slot.
    function _tryLockCollateral(address peer, uint256 experimentId) internal returns (uint8) {
        StakeInfo storage s = stakes[peer];
        uint256 locked = s.locked;
        if (s.batchExperiment != experimentId) return SKIP_NOT_ALLOWED;
        if (s.active < locked + minStake) return SKIP_COLLATERAL;
        s.locked = uint96(locked + minStake);
        return 0;
    }

    /// @dev verifyBatch's 12 words of entry `x` at word `offset` of `words`: its proof, then its public inputs.
    function _appendBatchWords(
        uint256[] memory words,
        uint256 offset,
        BatchEntry calldata x,
        uint256 context,
        uint256 normBound
    ) internal pure {
        assembly ("memory-safe") {
            let dst := add(add(words, 0x20), mul(offset, 0x20))
            calldatacopy(dst, add(x, 0x80), 0x100) // the proof's 8 words, ZoKrates' struct layout
            mstore(add(dst, 0x100), context)
            calldatacopy(add(dst, 0x120), add(x, 0x40), 0x40) // root, normSq
            mstore(add(dst, 0x160), normBound)
        }
    }

    function _verify(
        address verifier,
        uint256 normBound,
        IChunkVerifier.Proof calldata proof,
        address peer,
        uint256 round,
        uint256 stage,
        uint256 chunk,
        uint256 root,
        uint256 normSq
    ) internal view {
        uint256[4] memory input = [contextOf(peer, round, stage, chunk), root, normSq, normBound];
        if (!IChunkVerifier(verifier).verifyTx(proof, input)) revert InvalidProof();
    }

    /// @dev contribute's checks in their order (experiment, stage, round range, round open, submission open),
    /// reading the experiment's first two slots once each; returns what the proof check needs.
    function _checkSubmission(uint256 experimentId, uint256 round, uint256 stage, uint256 normSq)
        internal
        view
        returns (address verifier, uint256 normBound)
    {
        ExperimentData storage e = _experiments[experimentId];
        verifier = e.verifier;
        uint256 start = e.start;
        uint256 duration = e.roundDuration;
        normBound = e.normBound;
        uint256 numRounds = e.numRounds;
        uint256 submitWindow = e.submitWindow;
        uint256 numStages = e.numStages;
        if (verifier == address(0)) revert UnknownExperiment(experimentId);
        if (stage >= numStages) revert UnknownStage(stage, numStages);
        if (round >= numRounds) revert RoundOutOfRange(round, numRounds);
        uint256 opensAt = start + round * duration;
        if (block.timestamp < opensAt) revert RoundNotOpen(round, opensAt);
        uint256 closedAt = opensAt + duration + submitWindow;
        if (block.timestamp >= closedAt) revert SubmissionClosed(round, closedAt);
        if (normSq > normBound) revert NormAboveBound(normSq, normBound);
        uint256 minNormSq = uint256(1) << e.minNormLog2;
        if (normSq < minNormSq) revert NormBelowMinimum(normSq, minNormSq);
    }

    /// @dev The protocol's floor for every experiment: a pinned verifier whose circuit fits the stages, and
    /// windows an honest slow peer can meet (a proof of c0 in the submission window; all k audit proofs, one
    /// after another on one core, in the half of the audit window left after the last audit may open).
    function _checkParams(ExperimentParams calldata p) internal view {
        VerifierShape storage v = verifierShapes[p.verifier.codehash];
        if (v.chunk == 0) revert InvalidExperiment("verifier not allowed");
        if (p.chunkSize != v.chunk) revert InvalidExperiment("chunkSize is not the verifier's CHUNK");
        uint256 proofSeconds = v.proofSeconds;
        if (p.roundDuration == 0) revert InvalidExperiment("roundDuration");
        if (p.auditsPerPeer == 0 || p.auditsPerPeer > MAX_AUDITS) revert InvalidExperiment("auditsPerPeer");
        if (p.submitWindow < INCLUSION_MARGIN + proofSeconds) revert InvalidExperiment("submitWindow too short");
        if (p.auditWindow - p.auditWindow / 2 < INCLUSION_MARGIN + p.auditsPerPeer * proofSeconds) {
            revert InvalidExperiment("auditWindow too short");
        }
        if (p.numRounds == 0 || p.numRounds > 1 << 40) revert InvalidExperiment("numRounds");
        if (uint256(p.submitWindow) + p.auditWindow > (RECORD_RING - CLAIM_ROUNDS) * p.roundDuration) {
            revert InvalidExperiment("windows longer than RECORD_RING - CLAIM_ROUNDS rounds");
        }
        if (p.normBound > type(uint128).max) revert InvalidExperiment("normBound");
        if (p.minNormLog2 >= 128 || (uint256(1) << p.minNormLog2) > p.normBound) revert InvalidExperiment("minNormLog2");
        if (p.stageParams.length == 0 || p.stageParams.length > type(uint16).max) revert InvalidExperiment("stages");
        uint256 maxChunks = uint256(1) << v.depth;
        for (uint256 i = 0; i < p.stageParams.length; ++i) {
            uint256 chunks = (uint256(p.stageParams[i]) + p.chunkSize - 1) / p.chunkSize;
            if (chunks == 0 || chunks > maxChunks) revert InvalidExperiment("stageParams: more chunks than 2**DEPTH");
        }
    }

    function _experiment(uint256 experimentId) internal view returns (ExperimentData storage e) {
        e = _experiments[experimentId];
        if (e.verifier == address(0)) revert UnknownExperiment(experimentId);
    }

    function _stageChunks(uint256 experimentId, ExperimentData storage e, uint256 stage) internal view returns (uint256) {
        if (stage >= e.numStages) revert UnknownStage(stage, e.numStages);
        return _numChunks[experimentId][stage];
    }

    function _existingRecord(uint256 experimentId, uint256 round, uint256 stage, address peer)
        internal
        view
        returns (Record storage rec)
    {
        rec = _records[experimentId][round % RECORD_RING][stage][peer];
        if (rec.commitment == 0 || rec.round != round) revert NoContribution(experimentId, round, stage, peer);
    }

    function _submissionEnd(ExperimentData storage e, uint256 round) internal view returns (uint256) {
        return uint256(e.start) + (round + 1) * e.roundDuration + e.submitWindow;
    }

    function _auditEnd(ExperimentData storage e, uint256 round) internal view returns (uint256) {
        return _submissionEnd(e, round) + e.auditWindow;
    }

    function _commitment(uint256 root, uint256 normSq) internal pure returns (uint160) {
        uint160 c = uint160(uint256(keccak256(abi.encode(root, normSq))));
        return c == 0 ? 1 : c; // 0 marks "no record"
    }

    /// @dev 0: the ring slot is free for `round` (never used, or its record of an earlier round is closed);
    /// SKIP_DUPLICATE: it holds `round`'s record; SKIP_SLOT_BUSY: an open record of an earlier round.
    function _slotState(Record storage rec, uint256 round) internal view returns (uint8) {
        if (rec.commitment == 0) return 0;
        if (rec.round == round) return SKIP_DUPLICATE;
        return rec.claimed || rec.slashed ? 0 : SKIP_SLOT_BUSY;
    }

    /// @dev A new record in one SSTORE (every field of the slot, so a reused slot forgets its old round).
    function _writeRecord(Record storage rec, uint256 round, uint256 root, uint256 normSq) internal {
        uint256 word = uint256(_commitment(root, normSq)) | (round << 160); // flags and bitmaps 0
        assembly ("memory-safe") {
            sstore(rec.slot, word)
        }
    }
}
