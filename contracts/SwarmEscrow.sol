// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {IChunkVerifier} from "./IChunkVerifier.sol";
import {ISwarmEscrow} from "./ISwarmEscrow.sol";

/// @title SwarmEscrow
/// @notice Holds peers' stakes and researchers' reward pools (one ERC-20), verifies each round's contribution
/// proofs on-chain, shares a finalized round's reward equally among its valid contributions (pulled by claim),
/// and slashes a peer whose audit went unanswered. Rules: contracts/README.md; protocol: docs/protocol.md.
contract SwarmEscrow is ISwarmEscrow, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice Denominator of basis-point fractions.
    uint256 public constant BPS = 10_000;
    /// @notice The most audited chunks per contribution (the audit bitmaps are 16 bits).
    uint256 public constant MAX_AUDITS = 16;
    /// @notice The BN254 scalar field: every public input of the circuit lies below it.
    uint256 public constant FIELD = 21888242871839275222246405745257275088548364400416034343698204186575808495617;
    uint256 private constant ROUND_SHIFT = 40;
    uint256 private constant STAGE_SHIFT = 24;
    uint256 private constant PEER_SHIFT = 88;
    uint256 private constant MAX_CHUNKS = 1 << 24;

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
        // slot 2
        address funder;
        uint32 auditWindow;
        // slot 3
        uint128 rewardPerRound;
        uint128 pool;
    }

    struct Round {
        bytes32 accumulator;
        uint32 contributions;
        uint32 slashedBeforeFinalize;
        bool finalized;
        uint128 share;
    }

    /// @dev One slot per contribution: a 192-bit hash of (root, normSq) plus status flags and audit bitmaps.
    struct Record {
        uint192 commitment;
        bool claimed;
        bool slashed;
        uint16 auditsOpened;
        uint16 auditsAnswered;
    }

    struct StakeInfo {
        uint128 active;
        uint128 unbonding;
        uint64 unbondingReadyAt;
    }

    /// @notice The token of stakes, pools and rewards.
    IERC20 public immutable token;
    /// @notice Active stake a peer needs to contribute.
    uint128 public immutable minStake;
    /// @notice Delay between an unbonding request and the withdrawal.
    uint32 public immutable unbondingDelay;
    /// @notice Time after a round's audit window left for slashing; an experiment's round + submission +
    /// audit windows plus this grace must fit in `unbondingDelay`, so a stake cannot leave before its audits.
    uint32 public immutable slashGrace;
    /// @notice Fraction of a slashed stake paid to the reporter, in basis points; the rest goes to the pool.
    uint16 public immutable reporterBps;

    /// @notice The next experiment id (ids start at 1).
    uint256 public nextExperimentId = 1;
    mapping(uint256 experimentId => ExperimentData) private _experiments;
    mapping(uint256 experimentId => mapping(uint256 stage => uint32)) private _numChunks;
    mapping(uint256 experimentId => mapping(uint256 round => Round)) private _rounds;
    mapping(uint256 experimentId => mapping(uint256 round => mapping(uint256 stage => mapping(address => Record))))
        private _records;
    /// @notice Stake of each peer: active, unbonding, and when the unbonding can be withdrawn.
    mapping(address peer => StakeInfo) public stakes;

    /// @param token_ The ERC-20 of stakes and rewards.
    /// @param minStake_ Active stake needed to contribute (> 0).
    /// @param unbondingDelay_ Seconds between requestUnbond and withdraw.
    /// @param slashGrace_ Seconds after a round's audit window left for slashing before stakes may leave.
    /// @param reporterBps_ Reporter's part of a slashed stake in basis points (< BPS, so self-reporting loses).
    constructor(IERC20 token_, uint128 minStake_, uint32 unbondingDelay_, uint32 slashGrace_, uint16 reporterBps_) {
        if (address(token_).code.length == 0) revert InvalidExperiment("token");
        if (minStake_ == 0) revert InvalidExperiment("minStake");
        if (reporterBps_ >= BPS) revert InvalidExperiment("reporterBps");
        token = token_;
        minStake = minStake_;
        unbondingDelay = unbondingDelay_;
        slashGrace = slashGrace_;
        reporterBps = reporterBps_;
    }

    // ----------------------------------------------------------------------------------------------- staking

    /// @notice Add `amount` tokens to the caller's active stake (needs an ERC-20 allowance).
    /// @param amount Tokens to stake; the resulting active stake must reach `minStake`.
    function stake(uint128 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        StakeInfo storage s = stakes[msg.sender];
        uint128 active = s.active + amount;
        if (active < minStake) revert BelowMinStake(active, minStake);
        s.active = active;
        emit Staked(msg.sender, amount, active);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Move `amount` of the caller's active stake to unbonding; it stays slashable until withdrawn.
    /// @dev A new request restarts the delay for the whole unbonding amount.
    /// @param amount Tokens to unbond.
    function requestUnbond(uint128 amount) external {
        if (amount == 0) revert ZeroAmount();
        StakeInfo storage s = stakes[msg.sender];
        if (amount > s.active) revert InsufficientStake(s.active, amount);
        s.active -= amount;
        s.unbonding += amount;
        uint64 readyAt = uint64(block.timestamp) + unbondingDelay;
        s.unbondingReadyAt = readyAt;
        emit UnbondingRequested(msg.sender, amount, s.unbonding, readyAt);
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
            funder: msg.sender,
            auditWindow: p.auditWindow,
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
    /// slashing grace are over (rounds not finalized by then pay nothing).
    /// @param experimentId The experiment.
    function reclaimPool(uint256 experimentId) external nonReentrant {
        ExperimentData storage e = _experiment(experimentId);
        if (msg.sender != e.funder) revert NotFunder(msg.sender, e.funder);
        uint256 reclaimableAt = _auditEnd(e, e.numRounds - 1) + slashGrace;
        if (block.timestamp < reclaimableAt) revert ReclaimTooEarly(reclaimableAt);
        uint256 amount = e.pool;
        if (amount == 0) revert ZeroAmount();
        e.pool = 0;
        emit PoolReclaimed(experimentId, msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    // ---------------------------------------------------------------------------------------------- rounds

    /// @notice Record the caller's contribution for (round, stage), proven by a Groth16 proof of chunk
    /// c0 = keccak256(abi.encode(root, msg.sender)) % numChunks(stage), bound to msg.sender through `context`.
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
        (address verifier, uint256 normBound) = _checkSubmission(experimentId, round, stage);
        uint256 active = stakes[msg.sender].active;
        if (active < minStake) revert BelowMinStake(active, minStake);
        if (normSq > normBound) revert NormAboveBound(normSq, normBound);
        if (root >= FIELD) revert NotInField(root);
        Record storage rec = _records[experimentId][round][stage][msg.sender];
        if (rec.commitment != 0) revert AlreadyContributed(experimentId, round, stage, msg.sender);

        uint256 chunk = uint256(keccak256(abi.encode(root, msg.sender))) % _numChunks[experimentId][stage];
        _verify(verifier, normBound, proof, msg.sender, round, stage, chunk, root, normSq);

        rec.commitment = _commitment(root, normSq);
        Round storage r = _rounds[experimentId][round];
        r.accumulator = keccak256(abi.encode(r.accumulator, msg.sender, stage, root));
        r.contributions += 1;
        emit Contributed(experimentId, round, stage, msg.sender, root, normSq, chunk);
    }

    /// @notice Fix a round's per-contribution share once its audit window is over (anyone may call; O(1)).
    /// share = min(rewardPerRound, pool) / valid contributions, rounded down; the dust stays in the pool.
    /// @param experimentId The experiment.
    /// @param round The round.
    function finalize(uint256 experimentId, uint256 round) external {
        ExperimentData storage e = _experiment(experimentId);
        if (round >= e.numRounds) revert RoundOutOfRange(round, e.numRounds);
        uint256 finalizableAt = _auditEnd(e, round);
        if (block.timestamp < finalizableAt) revert NotFinalizable(round, finalizableAt);
        Round storage r = _rounds[experimentId][round];
        if (r.finalized) revert AlreadyFinalized(round);
        r.finalized = true;
        uint256 valid = r.contributions - r.slashedBeforeFinalize;
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
        if (total > 0) token.safeTransfer(msg.sender, total);
    }

    // ---------------------------------------------------------------------------------------------- audits

    /// @notice Open audit `j` of `peer`'s contribution: the peer must answer with a proof of chunk c_j before
    /// the audit window ends. Audits open during the first half of the audit window (anyone may open).
    /// @param experimentId The experiment.
    /// @param round The round.
    /// @param stage The stage.
    /// @param peer The audited peer.
    /// @param j The audit index, below auditsPerPeer.
    function openAudit(uint256 experimentId, uint256 round, uint256 stage, address peer, uint256 j) external {
        ExperimentData storage e = _experiment(experimentId);
        if (j >= e.auditsPerPeer) revert AuditIndexOutOfRange(j, e.auditsPerPeer);
        uint256 opensAt = _submissionEnd(e, round);
        uint256 closesAt = opensAt + e.auditWindow / 2;
        if (block.timestamp < opensAt || block.timestamp >= closesAt) {
            revert NotInAuditOpening(block.timestamp, opensAt, closesAt);
        }
        Record storage rec = _existingRecord(experimentId, round, stage, peer);
        uint16 bit = uint16(1 << j);
        if (rec.auditsOpened & bit != 0) revert AuditAlreadyOpen(j);
        rec.auditsOpened |= bit;
        _emitAuditOpened(experimentId, round, stage, peer, j);
    }

    /// @notice Answer the caller's open audit `j` with a proof of chunk c_j under the committed root.
    /// @param experimentId The experiment.
    /// @param round The round.
    /// @param stage The stage.
    /// @param j The audit index.
    /// @param root The root given in `contribute`.
    /// @param normSq The squared norm given in `contribute`.
    /// @param proof The chunk circuit's proof for chunk c_j.
    function answerAudit(
        uint256 experimentId,
        uint256 round,
        uint256 stage,
        uint256 j,
        uint256 root,
        uint256 normSq,
        IChunkVerifier.Proof calldata proof
    ) external {
        ExperimentData storage e = _experiment(experimentId);
        {
            uint256 opensAt = _submissionEnd(e, round);
            uint256 closesAt = opensAt + e.auditWindow;
            if (block.timestamp < opensAt || block.timestamp >= closesAt) {
                revert NotInAuditWindow(block.timestamp, opensAt, closesAt);
            }
        }
        Record storage rec = _existingRecord(experimentId, round, stage, msg.sender);
        if (j >= MAX_AUDITS) revert AuditIndexOutOfRange(j, e.auditsPerPeer);
        uint16 bit = uint16(1 << j);
        if (rec.auditsOpened & bit == 0) revert AuditNotOpen(j);
        if (rec.auditsAnswered & bit != 0) revert AuditAlreadyAnswered(j);
        if (rec.commitment != _commitment(root, normSq)) revert InvalidProof();
        uint256 chunk = auditChunk(experimentId, round, stage, msg.sender, j);
        _verify(e.verifier, e.normBound, proof, msg.sender, round, stage, chunk, root, normSq);
        rec.auditsAnswered |= bit;
        emit AuditAnswered(experimentId, round, stage, msg.sender, j);
    }

    /// @notice Slash `peer` for audit `j` left unanswered when the audit window closed. The peer loses its
    /// whole stake (active and unbonding) and this round's share; reporterBps of it go to the caller, the
    /// rest to the experiment's pool. One slash per contribution.
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
        if (j >= MAX_AUDITS) revert AuditIndexOutOfRange(j, e.auditsPerPeer);
        uint16 bit = uint16(1 << j);
        if (rec.auditsOpened & bit == 0) revert AuditNotOpen(j);
        if (rec.auditsAnswered & bit != 0) revert AuditAlreadyAnswered(j);

        rec.slashed = true;
        Round storage r = _rounds[experimentId][round];
        if (!r.finalized) r.slashedBeforeFinalize += 1;
        else if (!rec.claimed) e.pool += r.share; // its share returns to the pool

        StakeInfo storage s = stakes[peer];
        uint256 amount = uint256(s.active) + s.unbonding;
        s.active = 0;
        s.unbonding = 0;
        uint256 reward = (amount * reporterBps) / BPS;
        e.pool += uint128(amount - reward);
        emit Slashed(experimentId, round, stage, peer, amount, msg.sender, reward);
        if (reward > 0) token.safeTransfer(msg.sender, reward);
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
            numRounds: e.numRounds
        });
    }

    /// @notice Number of chunks of a stage.
    function numChunks(uint256 experimentId, uint256 stage) external view returns (uint256) {
        return _stageChunks(experimentId, _experiment(experimentId), stage);
    }

    /// @notice A round's state: accumulator, contribution count, slashes before finalize, finalized, share.
    function getRound(uint256 experimentId, uint256 round) external view returns (Round memory) {
        return _rounds[experimentId][round];
    }

    /// @notice A contribution's record (commitment 0 means none).
    function getRecord(uint256 experimentId, uint256 round, uint256 stage, address peer)
        external
        view
        returns (Record memory)
    {
        return _records[experimentId][round][stage][peer];
    }

    /// @notice The round's audit seed: keccak256(abi.encode(accumulator)); fixed once submissions close.
    function roundSeed(uint256 experimentId, uint256 round) public view returns (bytes32) {
        return keccak256(abi.encode(_rounds[experimentId][round].accumulator));
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
        Record storage rec = _records[experimentId][round][stage][msg.sender];
        // all fields read before the first branch: one SLOAD of the record's slot
        uint256 commitment = rec.commitment;
        bool claimed = rec.claimed;
        bool slashed = rec.slashed;
        uint16 unanswered = rec.auditsOpened & ~rec.auditsAnswered;
        if (commitment == 0) revert NoContribution(experimentId, round, stage, msg.sender);
        if (claimed) revert AlreadyClaimed(round, stage, msg.sender);
        if (slashed) revert PeerSlashed(round, stage, msg.sender);
        if (unanswered != 0) revert UnansweredAudit(round, stage, msg.sender);
        rec.claimed = true;
        emit Claimed(experimentId, round, stage, msg.sender, amount);
    }

    function _emitAuditOpened(uint256 experimentId, uint256 round, uint256 stage, address peer, uint256 j) internal {
        uint256 chunk = auditChunk(experimentId, round, stage, peer, j);
        emit AuditOpened(experimentId, round, stage, peer, j, chunk, msg.sender);
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
    function _checkSubmission(uint256 experimentId, uint256 round, uint256 stage)
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
    }

    function _checkParams(ExperimentParams calldata p) internal view {
        if (p.verifier.code.length == 0) revert InvalidExperiment("verifier");
        if (p.roundDuration == 0) revert InvalidExperiment("roundDuration");
        if (p.auditsPerPeer > MAX_AUDITS) revert InvalidExperiment("auditsPerPeer");
        if (p.auditsPerPeer > 0 && p.auditWindow < 2) revert InvalidExperiment("auditWindow");
        if (p.numRounds == 0) revert InvalidExperiment("numRounds");
        if (p.chunkSize == 0) revert InvalidExperiment("chunkSize");
        if (p.normBound > type(uint128).max) revert InvalidExperiment("normBound");
        uint256 slashable = uint256(p.roundDuration) + p.submitWindow + p.auditWindow + slashGrace;
        if (slashable > unbondingDelay) revert InvalidExperiment("windows longer than unbondingDelay");
        if (p.stageParams.length == 0 || p.stageParams.length > type(uint16).max) revert InvalidExperiment("stages");
        for (uint256 i = 0; i < p.stageParams.length; ++i) {
            uint256 chunks = (uint256(p.stageParams[i]) + p.chunkSize - 1) / p.chunkSize;
            if (chunks == 0 || chunks > MAX_CHUNKS) revert InvalidExperiment("stageParams");
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
        rec = _records[experimentId][round][stage][peer];
        if (rec.commitment == 0) revert NoContribution(experimentId, round, stage, peer);
    }

    function _submissionEnd(ExperimentData storage e, uint256 round) internal view returns (uint256) {
        return uint256(e.start) + (round + 1) * e.roundDuration + e.submitWindow;
    }

    function _auditEnd(ExperimentData storage e, uint256 round) internal view returns (uint256) {
        return _submissionEnd(e, round) + e.auditWindow;
    }

    function _commitment(uint256 root, uint256 normSq) internal pure returns (uint192) {
        uint192 c = uint192(uint256(keccak256(abi.encode(root, normSq))));
        return c == 0 ? 1 : c; // 0 marks "no record"
    }
}
