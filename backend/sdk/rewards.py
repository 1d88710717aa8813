"""Attribution rewards, withdrawals and governance: epochs, challenges, claims; what each
contract owes an account; transfers; accepting ownership."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backend.protocol.amounts import format_open
from backend.sdk.connection import Connection, ProtocolError


@dataclass(frozen=True)
class Withdrawal:
    """One kind of balance a contract holds for an account, and how it is taken out."""

    contract: str  # the Connection property: payments, datanets, rewards, nodes
    function: str
    event: str
    what: str


WITHDRAWALS = {
    "payments-deposit": Withdrawal("payments", "withdraw", "Withdrawn", "the deposit"),
    "earnings": Withdrawal("payments", "withdrawEarnings", "EarningsWithdrawn", "earnings"),
    "datanet": Withdrawal("datanets", "withdraw", "Withdrawn", "from the DatanetRegistry"),
    "rewards": Withdrawal("rewards", "withdraw", "Withdrawn", "from AttributionRewards"),
    "unbonded": Withdrawal("nodes", "withdrawUnbonded", "Unbonded", "unbonded stake"),
}
OWNED = ("DatanetRegistry", "ModelRegistry", "NodeRegistry", "AttributionRewards",
         "InferencePayments")  # fmt: skip


class RewardActions(Connection):
    def post_epoch(self, model_id: int, merkle_root: bytes, total: int, report_cid: str) -> Any:
        receipt = self.send(
            f"posted an epoch for model {model_id}",
            self.rewards.functions.postEpoch(model_id, merkle_root, total, report_cid),
        )
        return self.event(receipt, self.rewards, "EpochPosted")

    def challenge(self, epoch_id: int, reason_cid: str) -> Any:
        """Disputes ``epoch_id``, approving the challenge bond first (``EpochChallenged``)."""
        bond = int(self.rewards.functions.challengeBond().call())
        if bond:
            self.ensure_allowance(self.rewards, bond)
        receipt = self.send(
            f"challenged epoch {epoch_id} with a bond of {format_open(bond)}",
            self.rewards.functions.challenge(epoch_id, reason_cid),
        )
        return self.event(receipt, self.rewards, "EpochChallenged")

    def resolve(self, epoch_id: int, upheld: bool) -> Any:
        receipt = self.send(
            f"{'upheld' if upheld else 'dismissed'} the challenge of epoch {epoch_id}",
            self.rewards.functions.resolveChallenge(epoch_id, upheld),
        )
        return self.event(receipt, self.rewards, "ChallengeResolved")

    def sweep_epoch(self, epoch_id: int) -> Any:
        receipt = self.send(
            f"swept epoch {epoch_id}", self.rewards.functions.sweepExpired(epoch_id)
        )
        return self.event(receipt, self.rewards, "EpochExpired")

    def claim(
        self,
        epoch_id: int,
        index: int,
        account: str,
        amount: int,
        proof: list[bytes],
        model_id: int | None = None,  # named in what is reported, when known
    ) -> Any:
        model = f" (model {model_id})" if model_id is not None else ""
        receipt = self.send(
            f"claimed {format_open(amount)} for {account} from epoch {epoch_id}{model}",
            self.rewards.functions.claim(epoch_id, index, account, amount, proof),
        )
        return self.event(receipt, self.rewards, "Claimed")

    def owed(self, get: Callable[[str], bytes], account: str | None = None) -> list[Any]:
        """Every leaf the open epochs' reports (read through ``get``) pay ``account``."""
        from backend.attribution.claims import owed_to

        return owed_to(self.protocol, get, account or self.address)

    def withdraw(self, which: str, node: str | None = None) -> int:
        """Withdraws balance ``which`` (a :data:`WITHDRAWALS` key); returns the amount."""
        kind = WITHDRAWALS[which]
        contract = getattr(self, kind.contract)
        function = getattr(contract.functions, kind.function)
        if which == "payments-deposit":
            if node is None:
                raise ProtocolError("payments-deposit needs the channel's node")
            call = function(node)
        else:
            call = function()
        receipt = self.send(f"withdrew {kind.what}", call)
        return int(self.event(receipt, contract, kind.event).amount)

    def transfer(self, to: str, amount: int) -> None:
        self.send(f"sent {format_open(amount)} to {to}", self.token.functions.transfer(to, amount))

    def accept_governance(self) -> list[str]:
        """Accepts every contract whose pending owner is the sender; returns their names."""
        pending = [
            name
            for name in OWNED
            if self.protocol[name].functions.pendingOwner().call() == self.address
        ]
        if not pending:
            raise ProtocolError(f"no contract offers its ownership to {self.address}")
        for name in pending:
            self.send(f"accepted {name}", self.protocol[name].functions.acceptOwnership())
        return pending
