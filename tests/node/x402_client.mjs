// A client that speaks only x402 v2 and signs with ethers, written from docs/payment-protocol.md
// alone: no OpenLedger code. It asks a node for a completion, signs the quoted voucher and
// pays. Usage:
//   node x402_client.mjs <node url> <payer private key> <model id> <prompt> [rpc url]
// With an RPC url whose node holds the payer's key unlocked (anvil), it also signs the quote's
// typed data as-is with eth_signTypedData_v4 and checks both signatures are the same.
// Prints one JSON line: the answer, the receipt and the signed voucher.
import { Wallet, JsonRpcProvider } from "ethers";

const [url, key, model, prompt, rpc] = process.argv.slice(2);
const wallet = new Wallet(key);
const body = JSON.stringify({ model: String(model), prompt, max_tokens: 8 });
const endpoint = `${url}/v1/completions`;
const headers = { "content-type": "application/json", "X-OpenLedger-Payer": wallet.address };

const fromBase64 = (text) => JSON.parse(Buffer.from(text, "base64").toString("utf8"));
const toBase64 = (value) => Buffer.from(JSON.stringify(value), "utf8").toString("base64");

// 1. Ask: the node answers 402 with PAYMENT-REQUIRED.
const ask = await fetch(endpoint, { method: "POST", headers, body });
if (ask.status !== 402) throw new Error(`expected 402, got ${ask.status}: ${await ask.text()}`);
const required = fromBase64(ask.headers.get("PAYMENT-REQUIRED"));
if (required.x402Version !== 2) throw new Error(`x402 version ${required.x402Version}`);
const requirement = required.accepts.find((r) => r.scheme === "openledger-voucher");
if (!requirement) throw new Error("no openledger-voucher requirement");
const { typedData, voucherTypes } = requirement.extra;

// 2. Sign the quoted voucher as given: ethers takes the types without EIP712Domain.
const signature = await wallet.signTypedData(typedData.domain, voucherTypes, typedData.message);
let v4 = null;
if (rpc) {
  const provider = new JsonRpcProvider(rpc);
  v4 = await provider.send("eth_signTypedData_v4", [wallet.address, JSON.stringify(typedData)]);
  if (v4.toLowerCase() !== signature.toLowerCase()) {
    throw new Error(`eth_signTypedData_v4 signed ${v4}, ethers ${signature}`);
  }
}

// 3. Pay: PAYMENT-SIGNATURE carries the PaymentPayload with the requirement it accepts.
const payment = {
  x402Version: 2,
  accepted: requirement,
  payload: { voucher: typedData.message, signature },
};
const paid = await fetch(endpoint, {
  method: "POST",
  headers: { ...headers, "PAYMENT-SIGNATURE": toBase64(payment) },
  body,
});
const answer = await paid.json();
if (paid.status !== 200) throw new Error(`paid request got ${paid.status}: ${JSON.stringify(answer)}`);
const receipt = fromBase64(paid.headers.get("PAYMENT-RESPONSE"));
console.log(
  JSON.stringify({
    text: answer.choices[0].text,
    receipt,
    voucher: typedData.message,
    signature,
    signedWithV4: v4 !== null,
    price: requirement.amount,
  }),
);
