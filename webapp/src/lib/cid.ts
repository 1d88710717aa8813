// The CID of a file as `ipfs add --cid-version=1 --raw-leaves` computes it (kubo's defaults),
// so the page can check any bytes the API serves against the CID the chain holds.
// The same algorithm as backend/storage/unixfs.py: 262,144-byte chunks as raw blocks, a
// balanced DAG of dag-pb nodes with at most 174 links, each a UnixFS File node; a file of at
// most one chunk is a single raw block. CIDv1, sha2-256, base32 ("b" + lowercase, no padding).

import { sha256 } from "viem";

export const CHUNK_SIZE = 262_144;
export const MAX_LINKS = 174;
const RAW = 0x55;
const DAG_PB = 0x70;
const SHA2_256 = 0x12;

function varint(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const byte = n % 128;
    n = Math.floor(n / 128);
    if (n) out.push(byte | 0x80);
    else {
      out.push(byte);
      return out;
    }
  }
}

function concat(parts: (Uint8Array | number[])[]): Uint8Array {
  const size = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const fieldBytes = (num: number, payload: Uint8Array): Uint8Array =>
  concat([varint((num << 3) | 2), varint(payload.length), payload]);
const fieldVarint = (num: number, value: number): Uint8Array =>
  concat([varint(num << 3), varint(value)]);

interface Link {
  cid: Uint8Array; // binary CID
  tsize: number; // bytes of the serialized subtree
  filesize: number; // bytes of file content below it
}

function cidBytes(codec: number, block: Uint8Array): Uint8Array {
  return concat([varint(1), varint(codec), [SHA2_256, 32], sha256(block, "bytes")]);
}

function leaf(chunk: Uint8Array): Link {
  return { cid: cidBytes(RAW, chunk), tsize: chunk.length, filesize: chunk.length };
}

function innerNode(children: Link[]): Link {
  const filesize = children.reduce((n, c) => n + c.filesize, 0);
  const unixfs = concat([
    fieldVarint(1, 2), // Type: File
    fieldVarint(3, filesize),
    ...children.map((c) => fieldVarint(4, c.filesize)),
  ]);
  // dag-pb canonical order: Links (field 2) first, then Data (field 1).
  const links = children.map((c) =>
    fieldBytes(2, concat([fieldBytes(1, c.cid), fieldBytes(2, new Uint8Array()), fieldVarint(3, c.tsize)])),
  );
  const block = concat([...links, fieldBytes(1, unixfs)]);
  const tsize = block.length + children.reduce((n, c) => n + c.tsize, 0);
  return { cid: cidBytes(DAG_PB, block), tsize, filesize };
}

const BASE32 = "abcdefghijklmnopqrstuvwxyz234567";

function base32(data: Uint8Array): string {
  let bits = 0;
  let value = 0;
  let out = "";
  for (const byte of data) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31];
  return out;
}

/** The CID string of `data`. */
export function computeCid(data: Uint8Array): string {
  const levels: Link[][] = [[]];
  const push = (level: number, link: Link): void => {
    if (level === levels.length) levels.push([]);
    const pending = levels[level];
    pending.push(link);
    if (pending.length === MAX_LINKS + 1) {
      // A full node of MAX_LINKS is certain only once a further link arrives.
      const parent = innerNode(pending.slice(0, MAX_LINKS));
      levels[level] = pending.slice(MAX_LINKS);
      push(level + 1, parent);
    }
  };
  let at = 0;
  while (data.length - at > CHUNK_SIZE) {
    push(0, leaf(data.subarray(at, at + CHUNK_SIZE)));
    at += CHUNK_SIZE;
  }
  push(0, leaf(data.subarray(at)));
  for (let level = 0; ; level++) {
    const pending = levels[level];
    if (level === levels.length - 1 && pending.length === 1) return "b" + base32(pending[0].cid);
    if (pending.length) {
      const parent = innerNode(pending);
      levels[level] = [];
      push(level + 1, parent);
    }
  }
}
