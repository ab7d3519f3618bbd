// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title TestToken
/// @notice The demo and test ERC-20 of stakes and rewards; its deployer mints. Not for real value.
contract TestToken is ERC20, Ownable {
    constructor() ERC20("Swarm Test Token", "SWT") Ownable(msg.sender) {}

    /// @notice Mint `amount` tokens to `to` (owner only).
    /// @param to The receiver.
    /// @param amount Tokens to mint.
    function mint(address to, uint256 amount) external onlyOwner {
        _mint(to, amount);
    }
}
