"""Datanet and model actions: create, curate, contribute, publish; register models and publish
their versions. Each returns the event that says what the chain recorded."""

from __future__ import annotations

from typing import Any

from backend.sdk.connection import Connection


class DatanetActions(Connection):
    def create_datanet(
        self, metadata_cid: str, bond: int, min_approved: int, treasury: str | None = None
    ) -> Any:
        """A Datanet described by ``metadata_cid``, owned by the sender (``DatanetCreated``)."""
        receipt = self.send(
            "created datanet",
            self.datanets.functions.createDatanet(
                metadata_cid, bond, min_approved, treasury or self.address
            ),
        )
        return self.event(receipt, self.datanets, "DatanetCreated")

    def add_curator(self, datanet_id: int, curator: str) -> None:
        self.send(
            f"added curator {curator} to datanet {datanet_id}",
            self.datanets.functions.addCurator(datanet_id, curator),
        )

    def contribute(self, datanet_id: int, cid: str, size: int) -> Any:
        """Registers ``cid`` (``size`` bytes), approving the Datanet's bond first
        (``Contributed``). A CID a pending or approved contribution holds reverts
        ``DuplicateContribution``; a rejected or withdrawn one is free again."""
        datanet = self.read(f"datanet {datanet_id}", self.datanets.functions.datanet(datanet_id))
        bond = int(datanet.contributionBond)
        if bond:
            self.ensure_allowance(self.datanets, bond)
        receipt = self.send(
            f"contributed {cid} to datanet {datanet_id}",
            self.datanets.functions.contribute(datanet_id, cid, size),
        )
        return self.event(receipt, self.datanets, "Contributed")

    def withdraw_contribution(self, contribution_id: int) -> Any:
        """Takes back a contribution left unreviewed past the timeout
        (``ContributionWithdrawn``: its bond is credited, its CID released)."""
        receipt = self.send(
            f"withdrew contribution {contribution_id}",
            self.datanets.functions.withdrawContribution(contribution_id),
        )
        return self.event(receipt, self.datanets, "ContributionWithdrawn")

    def review(self, datanet_id: int, approve: list[int], reject: list[int]) -> None:
        """Approves (bond refunded) and rejects (bond to the treasury) in one transaction."""
        self.send(
            f"reviewed datanet {datanet_id}: approved {approve or 'none'}, "
            f"rejected {reject or 'none'}",
            self.datanets.functions.review(
                datanet_id, [*approve, *reject], [True] * len(approve) + [False] * len(reject)
            ),
        )

    def publish_version(
        self, datanet_id: int, merkle_root: bytes, manifest_cid: str, contribution_count: int
    ) -> Any:
        """The next version over ``contribution_count`` approved contributions
        (``VersionPublished``); a count that moved since reverts ``ApprovedCountChanged``."""
        receipt = self.send(
            f"published a version of datanet {datanet_id}",
            self.datanets.functions.publishVersion(
                datanet_id, merkle_root, manifest_cid, contribution_count
            ),
        )
        return self.event(receipt, self.datanets, "VersionPublished")

    def register_model(
        self,
        *,
        metadata_cid: str,
        base_model_cid: str,
        adapter_cid: str,
        training_manifest_cid: str,
        datanet_id: int,
        datanet_version: int,
        pricing: tuple[int, int],
        split: tuple[int, int, int, int | None],
        attributor: str | None = None,
    ) -> Any:
        """A model with its first adapter version (``ModelRegistered``). ``split`` is
        (developer, contributors, node, protocol) bps; a None protocol share is governance's."""
        developer, contributors, node, protocol = split
        if protocol is None:
            protocol = int(self.models.functions.protocolBps().call())
        spec = (
            metadata_cid,
            base_model_cid,
            adapter_cid,
            training_manifest_cid,
            datanet_id,
            datanet_version,
            pricing,
            (developer, contributors, node, protocol),
            attributor or self.address,
        )
        receipt = self.send("registered model", self.models.functions.registerModel(spec))
        return self.event(receipt, self.models, "ModelRegistered")

    def publish_model_version(
        self,
        model_id: int,
        adapter_cid: str,
        training_manifest_cid: str,
        datanet_id: int,
        datanet_version: int,
    ) -> Any:
        receipt = self.send(
            f"published a version of model {model_id}",
            self.models.functions.publishVersion(
                model_id, adapter_cid, training_manifest_cid, datanet_id, datanet_version
            ),
        )
        return self.event(receipt, self.models, "ModelVersionPublished")
