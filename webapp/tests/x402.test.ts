// What the page signs for a node: checkQuote refuses every quote it must not sign.
import assert from "node:assert/strict";
import { test } from "node:test";
import { getAddress } from "viem";
import { checkQuote, PaymentError, type Requirement } from "../src/lib/x402";

const payer = getAddress("0x976ea74026e726554db657fa54763abd0c3a0aa9");
const node = getAddress("0x90f79bf6eb2c4f870365e785982e1f101e93b906");
const payments = getAddress("0x0165878a594ca255338adfa4d48449f69242eb8f");
const OPEN = 10n ** 18n;
const request = { chainId: 31337, payments, payer, node, modelId: 1, maxPrice: OPEN / 10n };

function quote(change: { price?: bigint; cumulative?: bigint; chainId?: number; contract?: string; payer?: string; node?: string; modelId?: string } = {}): Requirement {
  const price = change.price ?? OPEN / 100n;
  return {
    scheme: "openledger-voucher",
    network: "eip155:31337",
    asset: "0x5FbDB2315678afecb367f032d93F642f64180aa3",
    amount: price.toString(),
    payTo: node,
    maxTimeoutSeconds: 300,
    extra: {
      channel: { payer, node, modelId: "1" },
      cumulativeAmount: (change.cumulative ?? price).toString(),
      lastAccepted: "0",
      credit: "0",
      latestVoucher: null,
      typedData: {
        types: {},
        primaryType: "Voucher",
        domain: { name: "OpenLedger InferencePayments", version: "1", chainId: change.chainId ?? 31337, verifyingContract: change.contract ?? payments },
        message: {
          payer: change.payer ?? payer,
          node: change.node ?? node,
          modelId: change.modelId ?? "1",
          cumulativeAmount: (change.cumulative ?? price).toString(),
          deadline: "1796670647",
        },
      },
      voucherTypes: {},
    },
  };
}

test("a fair quote is accepted, first and after earlier vouchers", () => {
  checkQuote(request, quote(), 0n);
  checkQuote(request, quote({ cumulative: 5n * OPEN + OPEN / 100n }), 5n * OPEN);
  checkQuote(request, quote({ cumulative: OPEN }), OPEN); // the credit covers it: nothing new
});

for (const [what, change, words] of [
  ["another chain", { chainId: 1 }, /another chain 1, not 31337/],
  ["another contract", { contract: "0x000000000000000000000000000000000000dEaD" }, /another contract/],
  ["another payer", { payer: node }, /another payer/],
  ["another node", { node: payer }, /another node/],
  ["another model", { modelId: "2" }, /another model 2/],
  ["a price above the limit", { price: OPEN }, /above your limit/],
  ["a small price with a cumulative amount far above what was promised", { cumulative: 4n * OPEN }, /more than the 0 wei already promised/],
] as const) {
  test(`a quote for ${what} is refused`, () => {
    assert.throws(() => checkQuote(request, quote(change), 0n), (e: unknown) => e instanceof PaymentError && words.test(e.message));
  });
}

test("a node cannot raise the promise past one price above the last signed voucher", () => {
  const promised = 3n * OPEN;
  assert.throws(() => checkQuote(request, quote({ cumulative: promised + OPEN / 10n + 1n }), promised), PaymentError);
  checkQuote(request, quote({ cumulative: promised + OPEN / 10n }), promised);
});
