// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";

/// @title Governed
/// @notice One governance address (two-step transferable) that sets parameters and can pause.
/// Pausing stops the money-in paths of the inheriting contract (those marked `whenNotPaused`);
/// withdrawals and claims of what is already owed are never paused.
abstract contract Governed is Ownable2Step, Pausable {
    /// @notice Renouncing ownership is disabled: governance duties (resolving challenges) must
    /// always have an owner.
    error RenounceDisabled();

    constructor(address governance) Ownable(governance) {}

    /// @notice Stops the money-in paths. Emits a {Paused} event.
    function pause() external onlyOwner {
        _pause();
    }

    /// @notice Restarts the money-in paths. Emits an {Unpaused} event.
    function unpause() external onlyOwner {
        _unpause();
    }

    /// @notice Always reverts: an ownerless contract could never resolve a challenged epoch or
    /// change a parameter again. Hand the role over with {transferOwnership} (to a timelock or
    /// a multisig) instead.
    function renounceOwnership() public override onlyOwner {
        revert RenounceDisabled();
    }
}
