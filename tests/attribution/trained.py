"""What the attribution tests share: an adapter trained by ModelFactory's SFT on examples, and
the index the job would build for it, written to a folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from backend.attribution.build import MemberExamples, build_index
from backend.attribution.index import AttributionIndex, LineageMember
from backend.attribution.settings import AttributionSettings
from backend.modelfactory.dataset import Example
from backend.modelfactory.sft import train_sft
from backend.modelfactory.spec import LoraSettings, TrainSettings

# the index names its adapter by CID; these tests never fetch it by that CID
ADAPTER_CID = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"


@dataclass(frozen=True)
class Trained:
    base: Path
    adapter: Path
    index_folder: Path
    index_cid: str
    members: list[MemberExamples]

    def read_index(self) -> AttributionIndex:
        index, cid = AttributionIndex.read_folder(self.index_folder)
        assert cid == self.index_cid
        return index


def train_and_index(
    base: Path, examples: list[Example], lora: LoraSettings, train: TrainSettings, root: Path
) -> Trained:
    train_sft(base, examples, lora, train, root / "adapter", progress=False)
    members = [MemberExamples(LineageMember(None, 1, 1, "sft"), list(enumerate(examples)))]
    index, stats = build_index(
        base,
        root / "adapter",
        members,
        AttributionSettings(),
        train.max_length,
        ADAPTER_CID,
        None,
        progress=False,
    )
    assert stats.documents == len(examples) and index.sketches.shape == (len(examples), index.dims)
    cid = index.write(root / "index")
    return Trained(base, root / "adapter", root / "index", cid, members)
