// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @notice Receives a callback on every token transfer to it (like ERC-777's tokensReceived hook).
interface ITransferHook {
    /// @notice Called by HookedToken after `amount` tokens moved from `from` to the receiver.
    function onTokenTransfer(address from, uint256 amount) external;
}

/// @title HookedToken
/// @notice Test-only ERC-20 that calls a registered receiver back on every transfer to it, so a malicious
/// receiver can try to re-enter the escrow while it pays out (the reentrancy tests' token).
contract HookedToken is ERC20 {
    /// @notice Receivers that get the callback.
    mapping(address => bool) public hooked;

    constructor() ERC20("Hooked Test Token", "HOOK") {}

    /// @notice Turn the callback on or off for `receiver` (anyone: test token).
    function setHook(address receiver, bool on) external {
        hooked[receiver] = on;
    }

    /// @notice Mint `amount` tokens to `to` (anyone: test token).
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        if (from != address(0) && hooked[to]) ITransferHook(to).onTokenTransfer(from, value);
    }
}
