// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

import {IChunkVerifier} from "../IChunkVerifier.sol";
import {SwarmEscrow} from "../SwarmEscrow.sol";
import {ITransferHook} from "./HookedToken.sol";

/// @title ReentrantPeer
/// @notice Test-only malicious peer: when the escrow pays it, it re-enters claim or withdraw and records
/// whether the nested call got through.
contract ReentrantPeer is ITransferHook {
    enum Attack {
        None,
        Claim,
        Withdraw
    }

    SwarmEscrow public immutable escrow;
    Attack public attack;
    uint256 public experimentId;
    uint256 public round;
    uint256 public stage;
    uint256 public reentryAttempts;
    uint256 public reentrySuccesses;
    bytes public lastRevert;

    constructor(SwarmEscrow escrow_) {
        escrow = escrow_;
    }

    /// @notice Choose what to re-enter on the next payment.
    function setAttack(Attack attack_, uint256 experimentId_, uint256 round_, uint256 stage_) external {
        (attack, experimentId, round, stage) = (attack_, experimentId_, round_, stage_);
    }

    /// @notice Approve the escrow and stake `amount` of the contract's tokens.
    function stake(uint128 amount) external {
        escrow.token().approve(address(escrow), amount);
        escrow.stake(amount);
    }

    /// @notice Contribute as this contract (the proof must be bound to this contract's address).
    function contribute(
        uint256 experimentId_,
        uint256 round_,
        uint256 stage_,
        uint256 root,
        uint256 normSq,
        IChunkVerifier.Proof calldata proof
    ) external {
        escrow.contribute(experimentId_, round_, stage_, root, normSq, proof);
    }

    function claim(uint256 experimentId_, uint256 round_, uint256 stage_) external {
        escrow.claim(experimentId_, round_, stage_);
    }

    function requestUnbond(uint128 amount) external {
        escrow.requestUnbond(amount);
    }

    function withdraw() external {
        escrow.withdraw();
    }

    /// @inheritdoc ITransferHook
    function onTokenTransfer(address, uint256) external override {
        if (msg.sender != address(escrow.token()) || attack == Attack.None) return;
        Attack current = attack;
        attack = Attack.None; // one nested attempt per payment
        reentryAttempts += 1;
        if (current == Attack.Claim) {
            try escrow.claim(experimentId, round, stage) {
                reentrySuccesses += 1;
            } catch (bytes memory reason) {
                lastRevert = reason;
            }
        } else {
            try escrow.withdraw() {
                reentrySuccesses += 1;
            } catch (bytes memory reason) {
                lastRevert = reason;
            }
        }
    }

    /// @notice This contract's token balance.
    function balance() external view returns (uint256) {
        return IERC20(address(escrow.token())).balanceOf(address(this));
    }
}
