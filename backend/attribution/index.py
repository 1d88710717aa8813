"""The attribution index of one model version: what ModelFactory builds and stores by CID
with the adapter, and what nodes and auditors score against.

Files (each stored under its own CID; ``index.json`` names them all, and the training
manifest names ``index.json``):

- ``tokens.bin``: the lineage's training tokens, big-endian, 2 bytes a token when the
  vocabulary fits (separator: the type's largest value), one document per training example
  (:mod:`.corpus`);
- ``suffixes.bin``: their suffix array, little-endian int32 (int64 past 2^31 tokens);
- ``documents.json``: every document's lineage member, example index, contribution and token
  range, and the contributions (Datanet id, contribution id, contributor);
- ``document_frequency.bin``: little-endian uint32 per vocabulary entry, in how many
  documents it occurs;
- ``sketches.bin``: little-endian int16 [documents, dims], the preconditioned training
  sketches (:mod:`.sketches`), row ``i`` for document ``i``.

``index.json`` also holds the settings, the lineage (the training manifests whose data the
documents come from; ``null`` names the job that built the index, whose training manifest
names the index), the adapter's CID (the sketches are gradients of that adapter), the
tokenizer's hash and the training sketches' scale.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from eth_utils import is_hex_address, to_checksum_address

from backend.attribution.corpus import Contribution, Corpus, CorpusError, Document
from backend.attribution.record import ENGINE
from backend.attribution.settings import AttributionSettings, SettingsError
from backend.attribution.strict_json import exact_object, uint
from backend.attribution.suffix_array import SuffixArray
from backend.protocol.canonical import canonical_json
from backend.storage.unixfs import compute_cid

INDEX_SCHEMA = 1
MANIFEST_FILE = "index.json"
FILES = {
    "tokens": "tokens.bin",
    "suffixes": "suffixes.bin",
    "documents": "documents.json",
    "document_frequency": "document_frequency.bin",
    "sketches": "sketches.bin",
}
MAX_MANIFEST_BYTES = 1 << 20
MAX_DOCUMENTS_JSON_BYTES = 1 << 30
Fetch = Callable[[str, int], bytes]  # (cid, max bytes) -> verified bytes


class AttributionIndexError(ValueError):
    """An attribution index that is malformed or inconsistent; the message says where."""


@dataclass(frozen=True)
class LineageMember:
    """A training job whose examples the index holds."""

    training_manifest: str | None  # CID; None: the job that built this index
    datanet_id: int
    version: int
    method: str  # "sft" or "dpo": how its examples are turned into gradient rows

    def to_json(self) -> dict[str, Any]:
        return {
            "training_manifest": self.training_manifest,
            "datanet_id": self.datanet_id,
            "version": self.version,
            "method": self.method,
        }


@dataclass(frozen=True)
class TokenizerRef:
    vocab_size: int  # token ids are below this
    sha256: str  # of the tokenizer's tokenizer.json: a scorer must tokenize the same way


def tokenizer_sha256(folder: Path) -> str:
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        raise AttributionIndexError(f"{folder} has no tokenizer.json to pin the tokenizer by")
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class AttributionIndex:
    settings: AttributionSettings
    lineage: tuple[LineageMember, ...]
    adapter: str  # CID of the adapter archive the sketches are gradients of
    base_model: str | None  # CID of the base weights
    tokenizer: TokenizerRef
    corpus: Corpus
    suffixes: SuffixArray
    document_frequency: np.ndarray  # [vocab] uint32
    sketches: np.ndarray  # [documents, dims] int16
    sketch_groups: tuple[str, ...]
    group_sizes: tuple[int, ...]
    training_scale_log2: int

    def __post_init__(self) -> None:
        docs = len(self.corpus)
        dims = self.settings.sketches.dims_per_group * len(self.group_sizes)
        if self.sketches.shape != (docs, dims) or self.sketches.dtype != np.int16:
            raise AttributionIndexError(
                f"sketches of shape {self.sketches.shape} ({self.sketches.dtype})"
                f", expected int16 ({docs}, {dims})"
            )
        if self.document_frequency.shape != (self.tokenizer.vocab_size,):
            raise AttributionIndexError("document frequencies do not cover the vocabulary")
        if self.corpus.vocab_size != self.tokenizer.vocab_size:
            raise AttributionIndexError(
                "the corpus and the tokenizer disagree on the vocabulary size"
            )
        if len(self.sketch_groups) != len(self.group_sizes):
            raise AttributionIndexError("sketch groups and their sizes differ in number")
        members = len(self.lineage)
        for i, doc in enumerate(self.corpus.documents):
            if not 0 <= doc.member < members:
                raise AttributionIndexError(f"document {i} names lineage member {doc.member}")

    @property
    def dims(self) -> int:
        return int(self.sketches.shape[1])

    @cached_property
    def owners(self) -> np.ndarray:
        """[documents] the contribution index of every document (built once: every scored
        answer sums by it)."""
        return np.array([d.contribution for d in self.corpus.documents], dtype=np.int64)

    def examples_per_contribution(self) -> list[int]:
        counts = [0] * len(self.corpus.contributions)
        for doc in self.corpus.documents:
            counts[doc.contribution] += 1
        return counts

    # --- files -------------------------------------------------------------------------

    def file_bytes(self) -> dict[str, bytes]:
        big = len(self.corpus.tokens) >= 2**31
        suffixes = self.suffixes.suffixes.astype("<i8" if big else "<i4")
        documents = {
            "contributions": [c.key() for c in self.corpus.contributions],
            "documents": [
                [d.member, d.example, d.contribution, d.start, d.end] for d in self.corpus.documents
            ],
        }
        return {
            "tokens": self.corpus.tokens.tobytes(),
            "suffixes": suffixes.tobytes(),
            "documents": _canonical(documents),
            "document_frequency": self.document_frequency.astype("<u4").tobytes(),
            "sketches": self.sketches.astype("<i2").tobytes(),
        }

    def manifest(self, cids: dict[str, str]) -> dict[str, Any]:
        return {
            "schema": INDEX_SCHEMA,
            "engine": ENGINE,
            "adapter": self.adapter,
            "base_model": self.base_model,
            "tokenizer": {"vocab_size": self.tokenizer.vocab_size, "sha256": self.tokenizer.sha256},
            "lineage": [m.to_json() for m in self.lineage],
            "settings": self.settings.to_json(),
            "corpus": {
                "documents": len(self.corpus),
                "tokens": len(self.corpus.tokens),
                "contributions": len(self.corpus.contributions),
                "token_bytes": self.corpus.dtype.itemsize,
                "suffix_bytes": 8 if len(self.corpus.tokens) >= 2**31 else 4,
            },
            "sketches": {
                "groups": list(self.sketch_groups),
                "group_sizes": list(self.group_sizes),
                "dims": self.dims,
                "training_scale_log2": self.training_scale_log2,
            },
            "files": dict(sorted(cids.items())),
        }

    def write(self, folder: Path) -> str:
        """Writes every file and ``index.json`` into ``folder``; returns ``index.json``'s CID."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        cids = {}
        for name, data in self.file_bytes().items():
            (folder / FILES[name]).write_bytes(data)
            cids[name] = compute_cid(data)
        manifest = _canonical(self.manifest(cids))
        (folder / MANIFEST_FILE).write_bytes(manifest)
        return compute_cid(manifest)

    @classmethod
    def read(cls, fetch: Fetch, cid: str) -> AttributionIndex:
        """Reads the index whose ``index.json`` has CID ``cid``; ``fetch(cid, max_bytes)``
        returns verified bytes (a content store's ``get``)."""
        manifest = parse_manifest(fetch(cid, MAX_MANIFEST_BYTES))
        corpus_info, sketch_info = manifest["corpus"], manifest["sketches"]
        tokens_n, docs_n = corpus_info["tokens"], corpus_info["documents"]
        vocab = manifest["tokenizer"]["vocab_size"]
        sizes = {
            "tokens": tokens_n * corpus_info["token_bytes"],
            "suffixes": tokens_n * corpus_info["suffix_bytes"],
            "documents": MAX_DOCUMENTS_JSON_BYTES,
            "document_frequency": 4 * vocab,
            "sketches": 2 * docs_n * sketch_info["dims"],
        }
        raw = {name: fetch(manifest["files"][name], size) for name, size in sizes.items()}
        for name, size in sizes.items():
            if name != "documents" and len(raw[name]) != size:
                raise AttributionIndexError(
                    f"{FILES[name]} holds {len(raw[name])} bytes, not {size}"
                )
        return cls.from_parts(manifest, raw)

    @classmethod
    def read_folder(cls, folder: Path) -> tuple[AttributionIndex, str]:
        """The index written into ``folder`` by :meth:`write`, and its CID (checked)."""
        folder = Path(folder)
        manifest_bytes = (folder / MANIFEST_FILE).read_bytes()
        manifest = parse_manifest(manifest_bytes)
        by_cid = {cid: FILES[name] for name, cid in manifest["files"].items()}

        def fetch(cid: str, _: int) -> bytes:
            data = (folder / by_cid[cid]).read_bytes() if cid in by_cid else manifest_bytes
            if compute_cid(data) != cid:
                raise AttributionIndexError(f"{folder}: the file for {cid} has other content")
            return data

        cid = compute_cid(manifest_bytes)
        return cls.read(fetch, cid), cid

    @classmethod
    def from_parts(cls, manifest: dict[str, Any], raw: dict[str, bytes]) -> AttributionIndex:
        corpus_info, sketch_info = manifest["corpus"], manifest["sketches"]
        token_type = ">u2" if corpus_info["token_bytes"] == 2 else ">u4"
        tokens = np.frombuffer(raw["tokens"], dtype=token_type)
        suffix_type = "<i4" if corpus_info["suffix_bytes"] == 4 else "<i8"
        suffixes = np.frombuffer(raw["suffixes"], dtype=suffix_type).astype(suffix_type[1:])
        contributions, documents = _parse_documents(raw["documents"])
        vocab = manifest["tokenizer"]["vocab_size"]
        try:
            corpus = Corpus(tokens, documents, contributions, vocab)
        except CorpusError as why:
            raise AttributionIndexError(f"tokens and documents.json disagree: {why}") from None
        if len(corpus) != corpus_info["documents"]:
            raise AttributionIndexError(
                f"documents.json lists {len(corpus)} documents, index.json "
                f"{corpus_info['documents']}"
            )
        dims = sketch_info["dims"]
        sketches = np.frombuffer(raw["sketches"], dtype="<i2").astype(np.int16)
        return cls(
            settings=AttributionSettings.from_json(manifest["settings"]),
            lineage=tuple(LineageMember(**m) for m in manifest["lineage"]),
            adapter=manifest["adapter"],
            base_model=manifest["base_model"],
            tokenizer=TokenizerRef(vocab, manifest["tokenizer"]["sha256"]),
            corpus=corpus,
            suffixes=SuffixArray(corpus.tokens, suffixes),
            document_frequency=np.frombuffer(raw["document_frequency"], "<u4").astype(np.uint32),
            sketches=sketches.reshape(len(corpus), dims),
            sketch_groups=tuple(sketch_info["groups"]),
            group_sizes=tuple(sketch_info["group_sizes"]),
            training_scale_log2=sketch_info["training_scale_log2"],
        )


def _canonical(data: Any) -> bytes:
    return canonical_json(data)


def _uint(value: Any, what: str) -> int:
    return uint(value, what, AttributionIndexError)


def _keys(value: Any, keys: set[str], what: str) -> dict[str, Any]:
    return exact_object(value, keys, what, AttributionIndexError)


def parse_manifest(raw: bytes) -> dict[str, Any]:
    """``index.json``, checked field by field; the error names what is wrong."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as why:
        raise AttributionIndexError(f"index.json is not JSON: {why}") from None
    data = _keys(
        data,
        {
            "schema",
            "engine",
            "adapter",
            "base_model",
            "tokenizer",
            "lineage",
            "settings",
            "corpus",
            "sketches",
            "files",
        },
        "index.json",
    )
    if data["schema"] != INDEX_SCHEMA:
        raise AttributionIndexError(
            f"index.json schema {data['schema']!r}; this code reads {INDEX_SCHEMA}"
        )
    if not isinstance(data["adapter"], str):
        raise AttributionIndexError("adapter must be a CID")
    tokenizer = _keys(data["tokenizer"], {"vocab_size", "sha256"}, "tokenizer")
    if _uint(tokenizer["vocab_size"], "tokenizer.vocab_size") == 0:
        raise AttributionIndexError("tokenizer.vocab_size must be positive")
    lineage = data["lineage"]
    if not isinstance(lineage, list) or not lineage:
        raise AttributionIndexError("lineage must be a non-empty list")
    for i, m in enumerate(lineage):
        m = _keys(m, {"training_manifest", "datanet_id", "version", "method"}, f"lineage[{i}]")
        if m["method"] not in ("sft", "dpo"):
            raise AttributionIndexError(f"lineage[{i}].method must be 'sft' or 'dpo'")
        _uint(m["datanet_id"], f"lineage[{i}].datanet_id")
        _uint(m["version"], f"lineage[{i}].version")
    try:
        AttributionSettings.from_json(data["settings"])
    except (SettingsError, TypeError) as why:
        raise AttributionIndexError(f"settings: {why}") from None
    corpus = _keys(
        data["corpus"],
        {"documents", "tokens", "contributions", "token_bytes", "suffix_bytes"},
        "corpus",
    )
    for key in corpus:
        _uint(corpus[key], f"corpus.{key}")
    if corpus["token_bytes"] not in (2, 4) or corpus["suffix_bytes"] not in (4, 8):
        raise AttributionIndexError("corpus.token_bytes must be 2 or 4, corpus.suffix_bytes 4 or 8")
    sketches = _keys(
        data["sketches"], {"groups", "group_sizes", "dims", "training_scale_log2"}, "sketches"
    )
    if not isinstance(sketches["training_scale_log2"], int):
        raise AttributionIndexError("sketches.training_scale_log2 must be an integer")
    sizes = sketches["group_sizes"]
    if not isinstance(sizes, list) or not all(isinstance(s, int) and s > 0 for s in sizes):
        raise AttributionIndexError("sketches.group_sizes must be positive integers")
    files = _keys(data["files"], set(FILES), "files")
    if not all(isinstance(c, str) for c in files.values()):
        raise AttributionIndexError("files must map names to CIDs")
    return data


def _parse_documents(raw: bytes) -> tuple[list[Contribution], list[Document]]:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as why:
        raise AttributionIndexError(f"documents.json is not JSON: {why}") from None
    data = _keys(data, {"contributions", "documents"}, "documents.json")
    contributions = []
    for i, row in enumerate(data["contributions"]):
        if not (
            isinstance(row, list)
            and len(row) == 3
            and isinstance(row[2], str)
            and is_hex_address(row[2])
        ):
            raise AttributionIndexError(
                f"documents.json contributions[{i}] must be [datanet, id, address]"
            )
        contributions.append(
            Contribution(
                _uint(row[0], "datanet"), _uint(row[1], "contribution"), to_checksum_address(row[2])
            )
        )
    documents = []
    for i, row in enumerate(data["documents"]):
        if not isinstance(row, list) or len(row) != 5:
            raise AttributionIndexError(f"documents.json documents[{i}] must be 5 integers")
        documents.append(Document(*(_uint(v, f"documents[{i}]") for v in row)))
    return contributions, documents
