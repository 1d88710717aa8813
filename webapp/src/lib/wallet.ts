// The wallet side: any EIP-1193 provider (window.ethereum, as MetaMask and every browser
// wallet inject it), through viem. Every transaction is simulated first, so a refusal reads
// as the contract's own error before the wallet is even asked; rejected requests and wrong
// networks become WalletErrors with a message a person can act on.

import {
  BaseError,
  ContractFunctionRevertedError,
  createPublicClient,
  createWalletClient,
  custom,
  getAddress,
  http,
  type Abi,
  type Address,
  type Chain,
  type EIP1193Provider,
  type Hash,
  type PublicClient,
  type TransactionReceipt,
  type TypedDataDefinition,
  type WalletClient,
} from "viem";

export type WalletErrorKind = "no-wallet" | "rejected" | "wrong-chain" | "reverted" | "failed";

export class WalletError extends Error {
  constructor(
    readonly kind: WalletErrorKind,
    message: string,
  ) {
    super(message);
  }
}

export interface ChainConfig {
  chainId: number;
  rpcUrl: string | null; // a JSON-RPC URL for reads (and to add the chain to a wallet)
  contracts: Record<string, Address>;
}

interface RpcError {
  code?: number;
  message?: string;
  cause?: unknown;
}

/** The EIP-1193 code of `error` or of any error it wraps (viem wraps the provider's). */
function rpcCode(error: unknown): number | undefined {
  for (let e = error as RpcError | undefined, depth = 0; e && depth < 8; depth++) {
    if (typeof e.code === "number") return e.code;
    e = e.cause as RpcError | undefined;
  }
  return undefined;
}

/** A WalletError that says what happened, from anything viem or the wallet threw. */
export function explain(error: unknown, what: string): WalletError {
  if (error instanceof WalletError) return error;
  const code = rpcCode(error);
  if (code === 4001) {
    return new WalletError("rejected", `You rejected the request in your wallet (${what}): nothing was signed or sent.`);
  }
  if (code === 4100) {
    return new WalletError("rejected", `The wallet has not authorised this site (${what}): connect it first.`);
  }
  if (error instanceof BaseError) {
    const reverted = error.walk((e) => e instanceof ContractFunctionRevertedError);
    if (reverted instanceof ContractFunctionRevertedError) {
      const name = reverted.data?.errorName;
      const args = reverted.data?.args?.map((a) => String(a)).join(", ") ?? "";
      const reason = name ? `${name}(${args})` : (reverted.reason ?? reverted.shortMessage);
      return new WalletError("reverted", `The contract refuses ${what}: ${reason}`);
    }
    return new WalletError("failed", `${what} failed: ${error.shortMessage}`);
  }
  const message = (error as RpcError)?.message ?? String(error);
  return new WalletError("failed", `${what} failed: ${message}`);
}

function chainOf(config: ChainConfig): Chain {
  const rpc = config.rpcUrl ? [config.rpcUrl] : [];
  return {
    id: config.chainId,
    name: config.chainId === 31337 ? "OpenLedger local (anvil)" : `OpenLedger chain ${config.chainId}`,
    nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
    rpcUrls: { default: { http: rpc } },
  };
}

declare global {
  interface Window {
    ethereum?: EIP1193Provider;
  }
}

export function injectedProvider(): EIP1193Provider | null {
  return typeof window !== "undefined" && window.ethereum ? window.ethereum : null;
}

/** A connected wallet: one account, on the protocol's chain (checked before every request). */
export class Wallet {
  readonly chain: Chain;
  readonly client: WalletClient;
  readonly reader: PublicClient;

  private constructor(
    readonly provider: EIP1193Provider,
    readonly account: Address,
    readonly config: ChainConfig,
  ) {
    this.chain = chainOf(config);
    this.client = createWalletClient({ account, chain: this.chain, transport: custom(provider) });
    // Reads go to the public RPC when the API offers one (the wallet's own node otherwise).
    const transport = config.rpcUrl ? http(config.rpcUrl) : custom(provider);
    this.reader = createPublicClient({ chain: this.chain, transport }) as PublicClient;
  }

  /** Asks the wallet for an account (`eth_requestAccounts`) and for the protocol's chain. */
  static async connect(provider: EIP1193Provider | null, config: ChainConfig): Promise<Wallet> {
    if (!provider) {
      throw new WalletError(
        "no-wallet",
        "No wallet found: install a browser wallet (MetaMask or any EIP-1193 wallet), or use a local test account on a local chain.",
      );
    }
    let accounts: readonly string[];
    try {
      accounts = (await provider.request({ method: "eth_requestAccounts" })) as string[];
    } catch (error) {
      throw explain(error, "connecting the wallet");
    }
    if (!accounts.length) throw new WalletError("rejected", "The wallet gave no account.");
    const wallet = new Wallet(provider, getAddress(accounts[0]), config);
    await wallet.ensureChain();
    return wallet;
  }

  async walletChainId(): Promise<number> {
    const hex = (await this.provider.request({ method: "eth_chainId" })) as string;
    return Number.parseInt(hex, 16);
  }

  /** Switches the wallet to the protocol's chain (adding it when the wallet does not know it);
   * a WalletError naming both chains when it stays elsewhere. */
  async ensureChain(): Promise<void> {
    const want = this.config.chainId;
    let have = await this.walletChainId();
    if (have === want) return;
    const chainIdHex = `0x${want.toString(16)}`;
    try {
      await this.provider.request({ method: "wallet_switchEthereumChain", params: [{ chainId: chainIdHex }] });
    } catch (error) {
      if (rpcCode(error) === 4902 && this.config.rpcUrl) {
        try {
          await this.provider.request({
            method: "wallet_addEthereumChain",
            params: [{ chainId: chainIdHex, chainName: this.chain.name, nativeCurrency: this.chain.nativeCurrency, rpcUrls: [this.config.rpcUrl] }],
          });
        } catch {
          /* reported below as a wrong network */
        }
      }
    }
    have = await this.walletChainId();
    if (have !== want) {
      throw new WalletError(
        "wrong-chain",
        `Wrong network: your wallet is on chain ${have}, but this OpenLedger deployment is on chain ${want}. Switch your wallet to chain ${want} and try again.`,
      );
    }
  }

  address(name: string): Address {
    const address = this.config.contracts[name];
    if (!address) throw new WalletError("failed", `The API names no ${name} contract.`);
    return address;
  }

  /** Simulates `functionName` from this account, then has the wallet send it and waits for
   * it to be mined; `what` names the action in messages. */
  async send(
    what: string,
    call: { contract: string; abi: Abi; functionName: string; args: readonly unknown[] },
  ): Promise<TransactionReceipt> {
    await this.ensureChain();
    const address = this.address(call.contract);
    let hash: Hash;
    try {
      const { request } = await this.reader.simulateContract({
        account: this.account,
        address,
        abi: call.abi,
        functionName: call.functionName,
        args: call.args,
      } as never);
      hash = await this.client.writeContract({ ...(request as object), account: this.account, chain: this.chain } as never);
    } catch (error) {
      throw explain(error, what);
    }
    const receipt = await this.reader.waitForTransactionReceipt({ hash });
    if (receipt.status !== "success") {
      throw new WalletError("reverted", `${what} was mined but reverted (transaction ${hash}).`);
    }
    return receipt;
  }

  /** `eth_signTypedData_v4` by this account. */
  async signTypedData(what: string, typed: TypedDataDefinition): Promise<`0x${string}`> {
    await this.ensureChain();
    try {
      return await this.client.signTypedData({ ...typed, account: this.account } as never);
    } catch (error) {
      throw explain(error, what);
    }
  }

  async read<T>(call: { contract: string; abi: Abi; functionName: string; args?: readonly unknown[] }): Promise<T> {
    return (await this.reader.readContract({
      address: this.address(call.contract),
      abi: call.abi,
      functionName: call.functionName,
      args: call.args ?? [],
    } as never)) as T;
  }
}

let rpcId = 0;

/** One JSON-RPC call to `rpcUrl`; the node's error as an Error carrying its code. */
async function jsonRpc(rpcUrl: string, method: string, params: unknown): Promise<unknown> {
  const response = await fetch(rpcUrl, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ jsonrpc: "2.0", id: ++rpcId, method, params: params ?? [] }),
  });
  const body = await response.json();
  if (body.error) throw Object.assign(new Error(body.error.message), { code: body.error.code });
  return body.result;
}

/** An EIP-1193 provider over a local chain's JSON-RPC whose node holds the keys (anvil's
 * unlocked test accounts): "use a local test account" on a local chain, no extension needed. */
export function localTestProvider(rpcUrl: string, account: Address): EIP1193Provider {
  const provider = {
    request: async ({ method, params }: { method: string; params?: unknown }) => {
      if (method === "eth_requestAccounts" || method === "eth_accounts") return [account];
      if (method === "wallet_switchEthereumChain" || method === "wallet_addEthereumChain") return null;
      return jsonRpc(rpcUrl, method, params);
    },
    on: () => provider,
    removeListener: () => provider,
  };
  return provider as unknown as EIP1193Provider;
}

/** The accounts a local chain's node unlocks (empty on a real network). */
export async function localAccounts(rpcUrl: string): Promise<Address[]> {
  const accounts = await jsonRpc(rpcUrl, "eth_accounts", []);
  return Array.isArray(accounts) ? accounts.map((a: string) => getAddress(a)) : [];
}
