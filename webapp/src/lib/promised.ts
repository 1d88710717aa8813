// The largest cumulative amount this browser has signed per (chain, contract, payer, node,
// model): the ceiling a node's next quote is checked against (see checkQuote in x402.ts).

import type { Address } from "viem";

function key(chainId: number, payments: Address, payer: Address, node: Address, modelId: number): string {
  return `openledger:promised:${chainId}:${payments}:${payer}:${node}:${modelId}`.toLowerCase();
}

export interface Pair {
  chainId: number;
  payments: Address;
  payer: Address;
  node: Address;
  modelId: number;
}

export function promisedOn(pair: Pair, redeemedOnChain: bigint): bigint {
  const stored = BigInt(localStorage.getItem(key(pair.chainId, pair.payments, pair.payer, pair.node, pair.modelId)) ?? "0");
  return stored > redeemedOnChain ? stored : redeemedOnChain;
}

export function recordPromised(pair: Pair, cumulative: bigint): void {
  const k = key(pair.chainId, pair.payments, pair.payer, pair.node, pair.modelId);
  if (cumulative > BigInt(localStorage.getItem(k) ?? "0")) localStorage.setItem(k, cumulative.toString());
}
