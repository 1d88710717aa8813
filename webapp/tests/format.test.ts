// Amounts as a person types and reads them.
import assert from "node:assert/strict";
import { test } from "node:test";
import { duration, open, parseOpen } from "../src/lib/format";

test("OPEN amounts read with grouping and at most the asked decimals, truncated", () => {
  assert.equal(open(1234n * 10n ** 18n + 5n * 10n ** 17n), "1,234.5 OPEN");
  assert.equal(open("38853794722400000"), "0.0388 OPEN");
  assert.equal(open(0n), "0 OPEN");
  assert.equal(open(1n, 18), "0.000000000000000001 OPEN");
});

test("typed amounts parse exactly, and anything else is refused by name", () => {
  assert.equal(parseOpen(" 12.5 "), 12_500_000_000_000_000_000n);
  assert.equal(parseOpen("0.000000000000000001"), 1n);
  for (const bad of ["", "-1", "1e3", "1.2.3", "0.0000000000000000001", "ten"]) {
    assert.throws(() => parseOpen(bad), new RegExp(`"${bad.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}" is not an amount of OPEN`));
  }
});

test("countdowns read in the two largest units", () => {
  assert.equal(duration(90061), "1 d 1 h");
  assert.equal(duration(59), "59 s");
  assert.equal(duration(-5), "0 s");
});
