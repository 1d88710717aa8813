// The playground's session key: a key the page generates and keeps in this browser's storage,
// scoped by the contract to one channel (payer, node) and capped by an allowance, so it can
// sign every voucher without asking the wallet; the wallet signs once to authorize it.

import type { Address } from "viem";
import { generatePrivateKey, privateKeyToAccount, type PrivateKeyAccount } from "viem/accounts";
import { InferencePaymentsAbi } from "../generated/abis";
import type { Wallet } from "./wallet";
import type { SignedAuthorization } from "./x402";

export interface SessionKeyState {
  validUntil: bigint; // unix seconds (0: never authorized)
  allowance: bigint; // OPEN wei it may draw in total
  spent: bigint; // OPEN wei drawn by its redeemed vouchers
}

interface Stored {
  privateKey: `0x${string}`;
  authorization: SignedAuthorization | null; // signed, not yet seen live on-chain
}

function storageKey(wallet: Wallet, node: Address): string {
  const payments = wallet.address("InferencePayments");
  return `openledger:session:${wallet.config.chainId}:${payments}:${wallet.account}:${node}`.toLowerCase();
}

function load(wallet: Wallet, node: Address): Stored | null {
  const text = localStorage.getItem(storageKey(wallet, node));
  return text ? (JSON.parse(text) as Stored) : null;
}

function save(wallet: Wallet, node: Address, stored: Stored): void {
  localStorage.setItem(storageKey(wallet, node), JSON.stringify(stored));
}

export class SessionKey {
  private constructor(
    readonly account: PrivateKeyAccount,
    private stored: Stored,
    private readonly wallet: Wallet,
    private readonly node: Address,
  ) {}

  /** This channel's key from storage, or a new one (not authorized yet). */
  static forChannel(wallet: Wallet, node: Address): SessionKey {
    const stored = load(wallet, node) ?? { privateKey: generatePrivateKey(), authorization: null };
    save(wallet, node, stored);
    return new SessionKey(privateKeyToAccount(stored.privateKey), stored, wallet, node);
  }

  get address(): Address {
    return this.account.address;
  }

  /** The signed authorization to send with the next voucher, until the key is live. */
  get pendingAuthorization(): SignedAuthorization | null {
    return this.stored.authorization;
  }

  async onChain(): Promise<SessionKeyState> {
    const key = await this.wallet.read<{ validUntil: bigint; allowance: bigint; spent: bigint }>({
      contract: "InferencePayments",
      abi: InferencePaymentsAbi,
      functionName: "sessionKey",
      args: [this.wallet.account, this.node, this.address],
    });
    return { validUntil: BigInt(key.validUntil), allowance: BigInt(key.allowance), spent: BigInt(key.spent) };
  }

  /** Once the chain shows the key live, the authorization has done its work. */
  settle(state: SessionKeyState, now: number): void {
    if (state.validUntil > BigInt(now) && this.stored.authorization) {
      this.stored = { ...this.stored, authorization: null };
      save(this.wallet, this.node, this.stored);
    }
  }

  /** The wallet signs `SessionKeyAuthorization` for this key (one signature, no transaction):
   * the node submits it with the first voucher the key signs. */
  async authorize(allowance: bigint, expiry: number, now: number): Promise<SignedAuthorization> {
    const payments = this.wallet.address("InferencePayments");
    const nonce = await this.wallet.read<bigint>({ contract: "InferencePayments", abi: InferencePaymentsAbi, functionName: "nonces", args: [this.wallet.account] });
    const deadline = BigInt(now + 3600); // the node must submit it within the hour
    const message = { payer: this.wallet.account, node: this.node, signer: this.address, expiry: BigInt(expiry), allowance, nonce, deadline };
    const signature = await this.wallet.signTypedData("authorizing the session key", {
      domain: { name: "OpenLedger InferencePayments", version: "1", chainId: this.wallet.config.chainId, verifyingContract: payments },
      types: {
        SessionKeyAuthorization: [
          { name: "payer", type: "address" },
          { name: "node", type: "address" },
          { name: "signer", type: "address" },
          { name: "expiry", type: "uint256" },
          { name: "allowance", type: "uint256" },
          { name: "nonce", type: "uint256" },
          { name: "deadline", type: "uint256" },
        ],
      },
      primaryType: "SessionKeyAuthorization",
      message,
    });
    const authorization: SignedAuthorization = {
      authorization: {
        payer: this.wallet.account,
        node: this.node,
        signer: this.address,
        expiry: String(expiry),
        allowance: allowance.toString(),
        nonce: nonce.toString(),
        deadline: deadline.toString(),
      },
      signature,
    };
    this.stored = { ...this.stored, authorization };
    save(this.wallet, this.node, this.stored);
    return authorization;
  }

  /** A fresh key (the old one is forgotten here; revoke it on-chain to end its power). */
  static replace(wallet: Wallet, node: Address): SessionKey {
    localStorage.removeItem(storageKey(wallet, node));
    return SessionKey.forChannel(wallet, node);
  }
}
