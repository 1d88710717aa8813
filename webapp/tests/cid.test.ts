// The page's CIDs equal the backend's (backend/storage/unixfs.py, kubo's --raw-leaves layout):
// CID_FIXTURE names a JSON file of {size, seed, cid} written by tests/webapp/test_units.py
// from the Python implementation; the bytes are the same deterministic pattern on both sides.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { computeCid } from "../src/lib/cid";

const fixture = process.env.CID_FIXTURE;

function pattern(size: number, seed: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[i] = (i * 31 + seed) & 0xff;
  return out;
}

test("the CIDs of one-block and multi-chunk files equal the backend's", { skip: !fixture && "no CID_FIXTURE" }, () => {
  const cases = JSON.parse(readFileSync(fixture as string, "utf8")) as { size: number; seed: number; cid: string }[];
  assert.ok(cases.length > 0);
  for (const c of cases) assert.equal(computeCid(pattern(c.size, c.seed)), c.cid, `size ${c.size}`);
});
