// OpenZeppelin StandardMerkleTree roots in the browser, the same tree as
// backend/protocol/merkle.py: leaves keccak256(keccak256(abi.encode(row))), sorted by hash,
// laid out at the end of a flat array tree[2n-1]; inner nodes hash their children in sorted
// order; the root is tree[0]. The explorer recomputes on-chain roots (Datanet versions, usage
// proofs, attribution epochs) from the public files their CIDs name.

import { concat, encodeAbiParameters, keccak256, parseAbiParameters, type Hex } from "viem";

/** A Datanet version's leaves: (contribution id, contributor, CID). */
export const VERSION_TYPES = ["uint256", "address", "string"] as const;
/** An attribution epoch's leaves: (index, account, amount in OPEN wei). */
export const CLAIM_TYPES = ["uint256", "address", "uint256"] as const;
/** A usage proof's leaves: one receipt (backend/protocol/receipts.py RECEIPT_TYPES). */
export const RECEIPT_TYPES = [
  "bytes32", "address", "address", "uint256", "uint256", "uint256", "uint256", "uint256",
  "bytes32", "bytes32", "uint256", "uint256",
] as const;

export function leafHash(types: readonly string[], row: readonly unknown[]): Hex {
  const encoded = encodeAbiParameters(parseAbiParameters(types.join(",")), row as unknown[]);
  return keccak256(keccak256(encoded));
}

function hashPair(a: Hex, b: Hex): Hex {
  return BigInt(a) < BigInt(b) ? keccak256(concat([a, b])) : keccak256(concat([b, a]));
}

/** The root of the tree of `rows` ABI-encoded as `types`; an error for no rows. */
export function merkleRoot(types: readonly string[], rows: readonly (readonly unknown[])[]): Hex {
  if (!rows.length) throw new Error("a Merkle tree needs at least one leaf");
  const leaves = rows.map((row) => leafHash(types, row)).sort((a, b) => (BigInt(a) < BigInt(b) ? -1 : BigInt(a) > BigInt(b) ? 1 : 0));
  const n = leaves.length;
  const tree: Hex[] = new Array(2 * n - 1);
  leaves.forEach((leaf, k) => (tree[tree.length - 1 - k] = leaf));
  for (let i = tree.length - 1 - n; i >= 0; i--) tree[i] = hashPair(tree[2 * i + 1], tree[2 * i + 2]);
  return tree[0];
}
