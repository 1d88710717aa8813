// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Burnable} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Burnable.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";

/// @title OpenToken (OPEN)
/// @notice The protocol's token: a fixed supply of 1,000,000,000 OPEN (18 decimals) minted once,
/// at deployment, to the treasury. No mint function exists afterwards; holders may burn.
/// EIP-2612 permits let wallets deposit for inference without a separate approve transaction.
contract OpenToken is ERC20, ERC20Permit, ERC20Burnable {
    /// @notice The whole supply, in OPEN wei.
    uint256 public constant TOTAL_SUPPLY = 1_000_000_000 ether;

    /// @notice Thrown when the treasury given to the constructor is the zero address.
    error OpenTokenZeroTreasury();

    /// @param treasury Receives the whole supply.
    constructor(address treasury) ERC20("OpenLedger", "OPEN") ERC20Permit("OpenLedger") {
        if (treasury == address(0)) revert OpenTokenZeroTreasury();
        _mint(treasury, TOTAL_SUPPLY);
    }
}
