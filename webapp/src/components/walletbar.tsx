// The header's wallet: connect a browser wallet (or, on a local chain, one of its test
// accounts), the connected account and network, and what went wrong.

import type { Address } from "viem";
import { useState } from "preact/hooks";
import { connectInjected, connectLocal, disconnect } from "../lib/connect";
import { status, wallet, walletError } from "../lib/deployment";
import { useAsync } from "../lib/async";
import { shortHex } from "../lib/format";
import { href } from "../lib/router";
import { useStore } from "../lib/store";
import { injectedProvider, localAccounts } from "../lib/wallet";

export function WalletBar() {
  const connected = useStore(wallet);
  const error = useStore(walletError);
  const loaded = useStore(status);
  const [busy, setBusy] = useState(false);
  const local = useAsync(async () => (loaded?.rpc_url && loaded.chain_id === 31337 ? localAccounts(loaded.rpc_url) : []), [loaded?.rpc_url]);
  const run = (action: () => Promise<unknown>) => {
    setBusy(true);
    action().finally(() => setBusy(false));
  };
  return (
    <div class="walletbar">
      {connected ? (
        <>
          <span class="chain" title="the network the wallet is on">
            chain {connected.config.chainId}
          </span>
          <a class="mono account" href={href("accounts", connected.account.toLowerCase())} data-testid="account">
            {shortHex(connected.account)}
          </a>
          <button class="link" onClick={disconnect}>
            Disconnect
          </button>
        </>
      ) : (
        <>
          <button
            disabled={busy}
            onClick={() => run(connectInjected)}
            data-testid="connect"
            title={injectedProvider() ? "Connect your browser wallet" : "No browser wallet found in this browser"}
          >
            Connect wallet
          </button>
          {local.data && local.data.length > 0 && (
            <select
              aria-label="Use a local test account"
              disabled={busy}
              onChange={(e) => {
                const value = (e.target as HTMLSelectElement).value;
                if (value) run(() => connectLocal(value as Address));
              }}
            >
              <option value="">Local test account…</option>
              {local.data.map((a, i) => (
                <option key={a} value={a}>
                  #{i} {shortHex(a)}
                </option>
              ))}
            </select>
          )}
        </>
      )}
      {error && (
        <p class="error wallet-error" role="alert" data-testid="wallet-error">
          {error.message}
        </p>
      )}
    </div>
  );
}
