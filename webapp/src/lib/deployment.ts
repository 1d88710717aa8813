// The deployment the API indexes (chain id, contract addresses, a public RPC), loaded once,
// and the connected wallet, shared by every page.

import { getAddress, type Address } from "viem";
import { getJSON, type Status } from "./api";
import { Store } from "./store";
import type { ChainConfig, Wallet, WalletError } from "./wallet";

export const status = new Store<Status | null>(null);
export const wallet = new Store<Wallet | null>(null);
export const walletError = new Store<WalletError | null>(null);
/** Seconds to add to the browser's clock for the chain's (a local chain may run ahead). */
export const chainClockOffset = new Store<number>(0);

export async function loadStatus(): Promise<Status> {
  const loaded = await getJSON<Status>("/status");
  status.set(loaded);
  if (loaded.block_timestamp) chainClockOffset.set(loaded.block_timestamp - Math.floor(Date.now() / 1000));
  return loaded;
}

/** What the wallet needs, once the API knows the deployment. */
export function chainConfig(loaded: Status): ChainConfig {
  if (loaded.chain_id === null) {
    throw new Error("The API has not indexed a deployment yet: start the indexer, then reload.");
  }
  const contracts: Record<string, Address> = {};
  for (const [name, address] of Object.entries(loaded.contracts)) contracts[name] = getAddress(address);
  return { chainId: loaded.chain_id, rpcUrl: loaded.rpc_url, contracts };
}

/** Chain time now (unix seconds), by the offset the last status gave. */
export function chainNow(): number {
  return Math.floor(Date.now() / 1000) + chainClockOffset.value;
}
