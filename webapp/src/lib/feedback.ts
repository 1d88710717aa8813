// Ratings of paid answers, signed (EIP-712 `Rating`) by the wallet that paid, for the model's
// next DPO round. The API accepts a rating once the node published the answer's receipt (at
// its next redemption), so a rating signed before waits in this browser and is sent again.

import { keccak256, toBytes, zeroHash, type Hex } from "viem";
import { APIError, postJSON } from "./api";
import type { Wallet } from "./wallet";

export interface RatingBody {
  requestHash: Hex;
  score: number;
  commentHash: Hex;
  signature: Hex;
  prompt: string;
  answer: string;
  comment?: string;
}

const QUEUE = "openledger:ratings:pending";

export async function signRating(wallet: Wallet, requestHash: Hex, score: number, prompt: string, answer: string, comment = ""): Promise<RatingBody> {
  const commentHash = comment ? keccak256(toBytes(comment)) : zeroHash;
  const signature = await wallet.signTypedData("signing your rating", {
    domain: { name: "OpenLedger Feedback", version: "1", chainId: wallet.config.chainId, verifyingContract: wallet.address("ModelRegistry") },
    types: { Rating: [{ name: "requestHash", type: "bytes32" }, { name: "score", type: "uint8" }, { name: "commentHash", type: "bytes32" }] },
    primaryType: "Rating",
    message: { requestHash, score, commentHash },
  });
  return { requestHash, score, commentHash, signature, prompt, answer, ...(comment ? { comment } : {}) };
}

function pending(): RatingBody[] {
  return JSON.parse(localStorage.getItem(QUEUE) ?? "[]") as RatingBody[];
}

/** "sent" once the API stored it; "waiting" while its receipt is not published yet. */
export async function submitRating(body: RatingBody): Promise<"sent" | "waiting"> {
  try {
    await postJSON("/feedback/ratings", body);
    localStorage.setItem(QUEUE, JSON.stringify(pending().filter((r) => r.requestHash !== body.requestHash)));
    return "sent";
  } catch (error) {
    if (error instanceof APIError && error.status === 404) {
      const rest = pending().filter((r) => r.requestHash !== body.requestHash);
      localStorage.setItem(QUEUE, JSON.stringify([...rest, body]));
      return "waiting";
    }
    throw error;
  }
}

/** Sends the ratings still waiting; how many are left. */
export async function flushRatings(): Promise<number> {
  for (const body of pending()) {
    try {
      await submitRating(body);
    } catch {
      // refused for good (a signature or text the API rejects): retrying cannot help
      localStorage.setItem(QUEUE, JSON.stringify(pending().filter((r) => r.requestHash !== body.requestHash)));
    }
  }
  return pending().length;
}

export function waitingRatings(): number {
  return pending().length;
}
