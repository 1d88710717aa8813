// Paying a node per answer in the browser: x402 v2 with OpenLedger's `openledger-voucher`
// scheme (docs/payment-protocol.md). The page's session key signs each quoted voucher; the
// first payment also carries the wallet's signed SessionKeyAuthorization, which the node
// submits on-chain itself (so the wallet signs once, and sends no transaction for it).

import { getAddress, recoverTypedDataAddress, type Address, type Hex } from "viem";
import type { PrivateKeyAccount } from "viem/accounts";

export interface SignedAuthorization {
  authorization: {
    payer: Address;
    node: Address;
    signer: Address;
    expiry: string;
    allowance: string;
    nonce: string;
    deadline: string;
  };
  signature: Hex;
}

interface VoucherMessage {
  payer: string;
  node: string;
  modelId: string;
  cumulativeAmount: string;
  deadline: string;
}

interface TypedField {
  name: string;
  type: string;
}

export interface Requirement {
  scheme: string;
  network: string;
  asset: string;
  amount: string; // OPEN wei: the request's price, quoted up front
  payTo: string;
  maxTimeoutSeconds: number;
  extra: {
    channel: { payer: string; node: string; modelId: string } | null;
    cumulativeAmount: string;
    lastAccepted: string;
    credit: string;
    latestVoucher: { voucher: VoucherMessage; signature: Hex } | null;
    typedData: {
      types: Record<string, TypedField[]>;
      primaryType: "Voucher";
      domain: { name: string; version: string; chainId: number; verifyingContract: string };
      message: VoucherMessage;
    };
    voucherTypes: Record<string, TypedField[]>;
  };
}

export interface PaidAnswer {
  text: string;
  price: bigint; // OPEN wei the receipt records
  quoted: bigint; // OPEN wei quoted up front (unused part stays as credit)
  cumulative: bigint; // the voucher's cumulative amount
  receipt: Record<string, unknown>; // PAYMENT-RESPONSE, decoded
  requestHash: Hex | null;
  usage: { prompt_tokens: number; completion_tokens: number } | null;
}

export class PaymentError extends Error {}

const fromBase64 = (text: string): unknown => JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(text), (c) => c.charCodeAt(0))));
const toBase64 = (value: unknown): string => {
  const bytes = new TextEncoder().encode(JSON.stringify(value));
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
};

/** The node's OpenAI-shaped error text of a refused request. */
async function refusal(response: Response): Promise<string> {
  try {
    const body = await response.json();
    return body?.error?.message ?? body?.detail ?? JSON.stringify(body);
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

export interface ChatRequest {
  nodeUrl: string;
  modelId: number;
  payer: Address;
  node: Address;
  chainId: number;
  payments: Address; // the InferencePayments contract vouchers must name
  sessionKey: PrivateKeyAccount;
  authorization: SignedAuthorization | null; // attached until the key is live on-chain
  maxPrice: bigint; // refuse a quote above this (OPEN wei)
  messages: { role: string; content: string }[];
  maxTokens: number;
  promised: bigint; // the largest cumulative amount this browser signed on (payer, node, model)
  onSigned: (cumulative: bigint) => void; // records a signed cumulative amount before it is sent
}

/** What is already promised on the pair: this browser's record, or more when the node holds a
 * later voucher that this payer's wallet or this session key really signed (another browser,
 * cleared storage): only a signature of ours can raise it. */
async function resumeFrom(req: ChatRequest, requirement: Requirement): Promise<bigint> {
  const latest = requirement.extra.latestVoucher;
  if (!latest) return req.promised;
  const { domain } = requirement.extra.typedData;
  const signer = await recoverTypedDataAddress({
    domain: { ...domain, verifyingContract: getAddress(domain.verifyingContract) },
    types: requirement.extra.voucherTypes,
    primaryType: "Voucher",
    message: latest.voucher,
    signature: latest.signature,
  } as never);
  const ours = signer === req.payer || signer === req.sessionKey.address;
  const samePair =
    getAddress(latest.voucher.payer) === req.payer && getAddress(latest.voucher.node) === req.node && BigInt(latest.voucher.modelId) === BigInt(req.modelId);
  const cumulative = BigInt(latest.voucher.cumulativeAmount);
  return ours && samePair && cumulative > req.promised ? cumulative : req.promised;
}

/** Checks a quote is one this page may sign: our chain, our contract, this payer, node and
 * model; a price within the person's limit; and a cumulative amount that promises at most
 * that limit more than this browser already promised on the pair (`promised`, never below
 * what the chain redeemed): a voucher is cumulative, so a node quoting a small price with a
 * large cumulative amount would otherwise be handed the whole allowance in one signature. */
export function checkQuote(req: Pick<ChatRequest, "chainId" | "payments" | "payer" | "node" | "modelId" | "maxPrice">, requirement: Requirement, promised: bigint): void {
  const { domain, message } = requirement.extra.typedData;
  const problems: string[] = [];
  if (domain.chainId !== req.chainId) problems.push(`chain ${domain.chainId}, not ${req.chainId}`);
  if (getAddress(domain.verifyingContract) !== req.payments) problems.push(`contract ${domain.verifyingContract}`);
  if (getAddress(message.payer) !== req.payer) problems.push(`payer ${message.payer}`);
  if (getAddress(message.node) !== req.node) problems.push(`node ${message.node}`);
  if (BigInt(message.modelId) !== BigInt(req.modelId)) problems.push(`model ${message.modelId}`);
  if (problems.length) throw new PaymentError(`The node asked to sign a voucher for another ${problems.join(", ")}: refused.`);
  const price = BigInt(requirement.amount);
  if (price > req.maxPrice) {
    throw new PaymentError(`The node quotes ${price} wei for this request, above your limit of ${req.maxPrice} wei: refused.`);
  }
  const cumulative = BigInt(message.cumulativeAmount);
  if (cumulative > promised + req.maxPrice) {
    throw new PaymentError(
      `The node asks for a voucher of ${cumulative} wei in total, more than the ${promised} wei already promised plus your limit of ${req.maxPrice} wei: refused, nothing signed.`,
    );
  }
}

/** One paid chat completion: ask, sign the quoted voucher with the session key, pay. */
export async function paidChat(req: ChatRequest): Promise<PaidAnswer> {
  const endpoint = `${req.nodeUrl.replace(/\/$/, "")}/v1/chat/completions`;
  const body = JSON.stringify({ model: String(req.modelId), messages: req.messages, max_tokens: req.maxTokens });
  const headers = { "content-type": "application/json", "X-OpenLedger-Payer": req.payer };
  let ask: Response;
  try {
    ask = await fetch(endpoint, { method: "POST", headers, body });
  } catch (error) {
    throw new PaymentError(`The node at ${req.nodeUrl} does not answer (${String(error)}).`);
  }
  if (ask.status !== 402) throw new PaymentError(`The node did not quote a price (${ask.status}): ${await refusal(ask)}`);
  const header = ask.headers.get("PAYMENT-REQUIRED");
  if (!header) throw new PaymentError("The node's 402 has no PAYMENT-REQUIRED header (is the node allowing this page's origin?).");
  const required = fromBase64(header) as { x402Version: number; accepts: Requirement[] };
  const requirement = required.accepts.find((r) => r.scheme === "openledger-voucher");
  if (required.x402Version !== 2 || !requirement || !requirement.extra.channel) {
    throw new PaymentError("The node offers no openledger-voucher payment for this payer.");
  }
  const { typedData, voucherTypes } = requirement.extra;
  const promised = await resumeFrom(req, requirement);
  checkQuote(req, requirement, promised);
  const signature = await req.sessionKey.signTypedData({
    domain: { ...typedData.domain, verifyingContract: getAddress(typedData.domain.verifyingContract) },
    types: voucherTypes,
    primaryType: "Voucher",
    message: typedData.message,
  } as never);
  req.onSigned(BigInt(typedData.message.cumulativeAmount)); // promised from now on, paid or not
  const payload: Record<string, unknown> = { voucher: typedData.message, signature };
  if (req.authorization) payload.sessionKeyAuthorization = req.authorization;
  const payment = { x402Version: 2, accepted: requirement, payload };
  const paid = await fetch(endpoint, { method: "POST", headers: { ...headers, "PAYMENT-SIGNATURE": toBase64(payment) }, body });
  if (paid.status !== 200) throw new PaymentError(`The node refused the payment (${paid.status}): ${await refusal(paid)}`);
  const answer = await paid.json();
  const responseHeader = paid.headers.get("PAYMENT-RESPONSE");
  const receipt = responseHeader ? (fromBase64(responseHeader) as Record<string, unknown>) : {};
  const extension = (answer.openledger ?? {}) as Record<string, unknown>;
  return {
    text: answer.choices?.[0]?.message?.content ?? "",
    price: BigInt(String(extension.price ?? requirement.amount)),
    quoted: BigInt(requirement.amount),
    cumulative: BigInt(typedData.message.cumulativeAmount),
    receipt: { ...receipt, ...extension },
    requestHash: (extension.request_hash as Hex | undefined) ?? null,
    usage: answer.usage ?? null,
  };
}
