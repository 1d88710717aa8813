"""StandardMerkleTree: OpenZeppelin-compatible leaves, layout, proofs and roots."""

from __future__ import annotations

from random import Random

from eth_abi import encode
from eth_utils import keccak, to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.protocol.merkle import StandardMerkleTree, hash_pair, leaf_hash, process_proof

CLAIM_TYPES = ["uint256", "address", "uint256"]  # (index, account, amount): AttributionRewards
Row = tuple[int, str, int]
ZERO = "0x" + "00" * 20

addresses = st.binary(min_size=20, max_size=20).map(to_checksum_address)
amounts = st.integers(min_value=0, max_value=2**256 - 1)


@st.composite
def claim_rows(draw: st.DrawFn, min_size: int = 1, max_size: int = 24) -> list[Row]:
    """Distinct (index, account, amount) rows, numbered 0..n-1 as an attribution epoch is."""
    accounts = draw(st.lists(addresses, min_size=min_size, max_size=max_size))
    values = draw(st.lists(amounts, min_size=len(accounts), max_size=len(accounts)))
    return [
        (i, account, amount)
        for i, (account, amount) in enumerate(zip(accounts, values, strict=True))
    ]


def _by_hand(row: Row) -> bytes:
    """A claim leaf written out: keccak256(keccak256(abi.encode(index, account, amount)))."""
    return keccak(keccak(encode(CLAIM_TYPES, list(row))))


@settings(max_examples=60, deadline=None)
@given(claim_rows())
def test_proof_of_every_row_verifies(rows: list[Row]) -> None:
    tree = StandardMerkleTree.of(rows, CLAIM_TYPES)
    for i, row in enumerate(rows):
        proof = tree.proof(i)
        assert tree.verify(i, proof)
        assert tree.leaf(i) == _by_hand(row)
        assert process_proof(_by_hand(row), proof) == tree.root


@settings(max_examples=60, deadline=None)
@given(claim_rows(), st.data())
def test_proof_of_a_changed_row_does_not_verify(rows: list[Row], data: st.DataObject) -> None:
    tree = StandardMerkleTree.of(rows, CLAIM_TYPES)
    i = data.draw(st.integers(min_value=0, max_value=len(rows) - 1))
    index, account, amount = rows[i]
    changed = data.draw(
        st.sampled_from(
            [
                (index, account, (amount + 1) % 2**256),
                (index + 1, account, amount),
                (index, to_checksum_address(b"\x01" * 20 if account == ZERO else ZERO), amount),
            ]
        )
    )
    assert process_proof(leaf_hash(CLAIM_TYPES, changed), tree.proof(i)) != tree.root


@settings(max_examples=60, deadline=None)
@given(claim_rows(min_size=2), st.randoms(use_true_random=False))
def test_root_does_not_depend_on_row_order(rows: list[Row], rnd: Random) -> None:
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    tree = StandardMerkleTree.of(rows, CLAIM_TYPES)
    other = StandardMerkleTree.of(shuffled, CLAIM_TYPES)
    assert other.root == tree.root
    for i, row in enumerate(shuffled):
        assert tree.verify(rows.index(row), other.proof(i))


@settings(max_examples=30, deadline=None)
@given(claim_rows(min_size=1, max_size=1))
def test_single_leaf_tree_root_is_the_leaf_with_an_empty_proof(rows: list[Row]) -> None:
    tree = StandardMerkleTree.of(rows, CLAIM_TYPES)
    assert tree.root == _by_hand(rows[0])
    assert tree.proof(0) == []
    assert tree.verify(0, [])


def test_hash_pair_sorts_its_children() -> None:
    a, b = keccak(b"a"), keccak(b"b")
    low, high = sorted((a, b))
    assert hash_pair(a, b) == hash_pair(b, a) == keccak(low + high)


def test_three_leaf_tree_matches_hand_computation() -> None:
    rows = [
        (0, "0x1111111111111111111111111111111111111111", 5 * 10**18),
        (1, "0x2222222222222222222222222222222222222222", 25 * 10**17),
        (2, "0x3333333333333333333333333333333333333333", 1),
    ]
    tree = StandardMerkleTree.of(rows, CLAIM_TYPES)

    # OpenZeppelin's layout: leaves sorted ascending at tree[4], tree[3], tree[2]; tree[1] hashes
    # the two smallest; the root hashes tree[1] with the largest leaf. Pairs hash sorted.
    leaves = [_by_hand(row) for row in rows]
    a, b, c = sorted(leaves)
    node = keccak(a + b)  # a < b
    root = keccak(node + c) if node < c else keccak(c + node)

    assert tree.root == root
    assert tree.tree == (root, node, c, b, a)
    proofs = {a: [b, c], b: [a, c], c: [node]}
    for i, leaf in enumerate(leaves):
        assert tree.leaf(i) == leaf
        assert tree.proof(i) == proofs[leaf]


def test_openzeppelin_readme_vector() -> None:
    """The example of @openzeppelin/merkle-tree's README, with the root and proof it prints."""
    rows = [
        ("0x1111111111111111111111111111111111111111", 5_000_000_000_000_000_000),
        ("0x2222222222222222222222222222222222222222", 2_500_000_000_000_000_000),
    ]
    tree = StandardMerkleTree.of(rows, ["address", "uint256"])
    assert tree.root.hex() == "d4dee0beab2d53f2cc83e567171bd2820e49898130a22622b10ead383e90bd77"
    assert tree.leaf(0).hex() == "eb02c421cfa48976e66dfb29120745909ea3a0f843456c263cf8f1253483e283"
    assert [p.hex() for p in tree.proof(0)] == [
        "b92c48e9d7abe27fd8dfd6b5dfdbfb1c9a463f80c712b66f3a5180a090cccafc"
    ]
