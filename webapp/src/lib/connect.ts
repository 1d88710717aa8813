// Connecting and disconnecting the page's wallet (shared by the header and the pages).

import type { Address, EIP1193Provider } from "viem";
import { chainConfig, status, wallet, walletError } from "./deployment";
import { injectedProvider, localTestProvider, Wallet, WalletError } from "./wallet";

let watched: EIP1193Provider | null = null;

/** Follows the wallet's account and network changes: a new account reconnects, a network
 * change is checked again at the next request (and shown at once). */
function watch(provider: EIP1193Provider): void {
  if (watched === provider || typeof provider.on !== "function") return;
  watched = provider;
  provider.on("accountsChanged", (accounts: readonly string[]) => {
    if (!accounts.length) disconnect();
    else if (wallet.value) void connectWith(provider);
  });
  provider.on("chainChanged", () => {
    const current = wallet.value;
    if (!current) return;
    current.ensureChain().then(
      () => walletError.set(null),
      (error: unknown) => walletError.set(error as WalletError),
    );
  });
}

async function connectWith(provider: EIP1193Provider | null): Promise<Wallet | null> {
  const loaded = status.value;
  if (!loaded) return null;
  try {
    const connected = await Wallet.connect(provider, chainConfig(loaded));
    wallet.set(connected);
    walletError.set(null);
    if (provider) watch(provider);
    return connected;
  } catch (error) {
    walletError.set(error instanceof WalletError ? error : new WalletError("failed", String(error)));
    return null;
  }
}

/** The browser's wallet (window.ethereum). */
export function connectInjected(): Promise<Wallet | null> {
  return connectWith(injectedProvider());
}

/** One of a local chain's unlocked test accounts, signing through the chain's node. */
export function connectLocal(account: Address): Promise<Wallet | null> {
  const rpc = status.value?.rpc_url;
  if (!rpc) return Promise.resolve(null);
  return connectWith(localTestProvider(rpc, account));
}

export function disconnect(): void {
  wallet.set(null);
  walletError.set(null);
}
