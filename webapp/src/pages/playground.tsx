// The playground: pick a model and a node serving it, fund the channel, authorize a session
// key with one wallet signature, then chat; every answer is paid by a voucher the session key
// signs here, with its price and receipt shown, and can be rated (signed by the wallet).

import type { Address, Hex } from "viem";
import { getAddress } from "viem";
import { useEffect, useMemo, useState } from "preact/hooks";
import { RequireWallet } from "../components/requirewallet";
import { Address as AddressLink, ErrorBox, Fields, Notice, Section } from "../components/ui";
import { InferencePaymentsAbi } from "../generated/abis";
import { useAction } from "../lib/action";
import { getAll, type Model, type NodeInfo } from "../lib/api";
import { useAsync } from "../lib/async";
import { chainNow } from "../lib/deployment";
import { flushRatings, signRating, submitRating, waitingRatings } from "../lib/feedback";
import { dateTime, open, parseOpen } from "../lib/format";
import { href } from "../lib/router";
import { SessionKey, type SessionKeyState } from "../lib/sessionkey";
import { balanceOf, ensureAllowance } from "../lib/token";
import type { Wallet } from "../lib/wallet";
import { promisedOn, recordPromised } from "../lib/promised";
import { paidChat, type PaidAnswer } from "../lib/x402";

const SESSION_DAYS = 7;
const MAX_TOKENS = 48;

interface Turn {
  prompt: string;
  answer?: PaidAnswer;
  error?: string;
  rating?: string;
}

export function PlaygroundPage(_props: { params: string[] }) {
  return (
    <>
      <h1>Playground</h1>
      <RequireWallet title="Connect a wallet to chat" why="Answers are paid per request in OPEN from your channel with the node: connect the wallet that pays.">
        {(w) => <Playground wallet={w} />}
      </RequireWallet>
    </>
  );
}

function Playground({ wallet }: { wallet: Wallet }) {
  const catalog = useAsync(async () => {
    const [models, nodes] = await Promise.all([getAll<Model>("/models"), getAll<NodeInfo>("/nodes")]);
    return { models: models.filter((m) => m.status === "active"), nodes: nodes.filter((n) => n.active && n.endpoint) };
  }, []);
  const [modelId, setModelId] = useState<number | null>(null);
  const [nodeAddress, setNodeAddress] = useState<Address | null>(null);
  useEffect(() => {
    if (!catalog.data) return;
    if (modelId === null && catalog.data.models.length) setModelId(catalog.data.models[0].id);
    if (nodeAddress === null && catalog.data.nodes.length) setNodeAddress(getAddress(catalog.data.nodes[0].address));
  }, [catalog.data]);
  if (catalog.error) return <ErrorBox error={catalog.error} />;
  if (!catalog.data) return <p class="loading">Loading models and nodes…</p>;
  const { models, nodes } = catalog.data;
  if (!models.length || !nodes.length) {
    return <ErrorBox error={`Nothing to chat with yet: ${models.length} active models, ${nodes.length} active nodes with an endpoint. Run make demo, then make up.`} />;
  }
  const model = models.find((m) => m.id === modelId) ?? models[0];
  const node = nodes.find((n) => getAddress(n.address) === nodeAddress) ?? nodes[0];
  return (
    <>
      <Section title="1. Model and node">
        <div class="form-row">
          <label>
            Model
            <select aria-label="Model" value={model.id} onChange={(e) => setModelId(Number((e.target as HTMLSelectElement).value))}>
              {models.map((m) => (
                <option key={m.id} value={m.id}>
                  model {m.id} (v{m.version_count})
                </option>
              ))}
            </select>
          </label>
          <label>
            Node
            <select aria-label="Node" value={node.address} onChange={(e) => setNodeAddress(getAddress((e.target as HTMLSelectElement).value))}>
              {nodes.map((n) => (
                <option key={n.address} value={n.address}>
                  {n.endpoint} ({n.address.slice(0, 8)}…)
                </option>
              ))}
            </select>
          </label>
        </div>
        <Fields
          rows={[
            ["price", <>{open(model.pricing.per_request)} per request + {open(model.pricing.per_token, 8)} per token</>],
            ["model", <a href={href("models", model.id)}>model {model.id}</a>],
            ["node", <AddressLink value={node.address} />],
          ]}
        />
        <NodeServes endpoint={node.endpoint} modelId={model.id} />
      </Section>
      <Channel key={`${node.address}:${model.id}`} wallet={wallet} node={getAddress(node.address)} endpoint={node.endpoint} model={model} />
    </>
  );
}

/** Whether the node's OpenAI-compatible endpoint lists the model. */
function NodeServes({ endpoint, modelId }: { endpoint: string; modelId: number }) {
  const served = useAsync(async () => {
    const response = await fetch(`${endpoint.replace(/\/$/, "")}/v1/models`);
    const body = await response.json();
    return (body.data as { id: string }[]).map((m) => m.id);
  }, [endpoint]);
  if (served.error) return <ErrorBox error={`The node at ${endpoint} does not answer from this page: ${served.error.message}`} />;
  if (!served.data) return null;
  return served.data.includes(String(modelId)) ? (
    <p class="muted">The node serves model {modelId}.</p>
  ) : (
    <ErrorBox error={`The node at ${endpoint} does not serve model ${modelId} (it serves ${served.data.join(", ") || "nothing"}).`} />
  );
}

function Channel({ wallet, node, endpoint, model }: { wallet: Wallet; node: Address; endpoint: string; model: Model }) {
  const [tick, setTick] = useState(0);
  const refresh = () => setTick((t) => t + 1);
  const key = useMemo(() => SessionKey.forChannel(wallet, node), [wallet, node]);
  const state = useAsync(async () => {
    const [channel, balance, sessionKey] = await Promise.all([
      wallet.read<{ balance: bigint; withdrawDelay: bigint }>({ contract: "InferencePayments", abi: InferencePaymentsAbi, functionName: "channel", args: [wallet.account, node] }),
      balanceOf(wallet),
      key.onChain(),
    ]);
    key.settle(sessionKey, chainNow());
    return { channel: BigInt(channel.balance), balance, sessionKey };
  }, [wallet, node, key, tick]);
  const deposit = useAction();
  const [amount, setAmount] = useState("10");
  const doDeposit = () =>
    deposit.run(async () => {
      const wei = parseOpen(amount);
      await ensureAllowance(wallet, "InferencePayments", wei);
      const receipt = await wallet.send("the deposit", { contract: "InferencePayments", abi: InferencePaymentsAbi, functionName: "deposit", args: [node, wei] });
      refresh();
      return `Deposited ${open(wei)} into your channel with the node (transaction ${receipt.transactionHash}).`;
    });
  const s = state.data;
  return (
    <>
      <Section title="2. Your channel with the node">
        {state.error && <ErrorBox error={state.error} />}
        {s && (
          <Fields
            rows={[
              ["in the channel", <span data-testid="channel-balance">{open(s.channel)}</span>],
              ["in your wallet", <span data-testid="wallet-balance">{open(s.balance)}</span>],
            ]}
          />
        )}
        <p class="muted">The deposit backs this node only; a withdrawal waits the channel's delay so the node can redeem what it served.</p>
        <div class="form-row">
          <label>
            Deposit (OPEN)
            <input aria-label="Deposit amount" value={amount} onInput={(e) => setAmount((e.target as HTMLInputElement).value)} size={10} />
          </label>
          <button disabled={deposit.busy} onClick={doDeposit} data-testid="deposit">
            {deposit.busy ? "Waiting for the wallet…" : "Deposit"}
          </button>
        </div>
        {deposit.error && <ErrorBox error={deposit.error} />}
        {deposit.done && <Notice>{deposit.done}</Notice>}
      </Section>
      {s && <SessionKeyPanel sessionKey={key} state={s.sessionKey} channel={s.channel} onChange={refresh} />}
      {s && <Chat wallet={wallet} node={node} endpoint={endpoint} model={model} sessionKey={key} onPaid={refresh} />}
    </>
  );
}

function SessionKeyPanel({ sessionKey, state, channel, onChange }: { sessionKey: SessionKey; state: SessionKeyState; channel: bigint; onChange: () => void }) {
  const now = chainNow();
  const live = state.validUntil > BigInt(now);
  const pending = sessionKey.pendingAuthorization;
  const [allowance, setAllowance] = useState("5");
  const action = useAction();
  const authorize = () =>
    action.run(async () => {
      const wei = parseOpen(allowance);
      if (wei > channel) throw new Error(`An allowance of ${open(wei)} is more than the channel holds (${open(channel)}): deposit first, or ask for less.`);
      await sessionKey.authorize(wei, now + SESSION_DAYS * 86400, now);
      onChange();
      return `Signed. The node submits the authorization with your first message; no transaction from your wallet.`;
    });
  return (
    <Section title="3. Session key">
      <Fields
        rows={[
          ["key (this browser)", <span class="mono">{sessionKey.address}</span>],
          [
            "status",
            live ? (
              <span data-testid="session-status">
                live until {dateTime(Number(state.validUntil))}; {open(state.spent)} of {open(state.allowance)} spent
              </span>
            ) : pending ? (
              <span data-testid="session-status">signed for {open(pending.authorization.allowance)}: the node submits it with your first message</span>
            ) : (
              <span data-testid="session-status">not authorized</span>
            ),
          ],
        ]}
      />
      {!live && (
        <div class="form-row">
          <label>
            Allowance (OPEN)
            <input aria-label="Session key allowance" value={allowance} onInput={(e) => setAllowance((e.target as HTMLInputElement).value)} size={8} />
          </label>
          <button disabled={action.busy} onClick={authorize} data-testid="authorize">
            {action.busy ? "Waiting for the wallet…" : pending ? "Sign again" : "Authorize with one signature"}
          </button>
        </div>
      )}
      <p class="muted">
        The key signs a voucher for each message without asking your wallet. It can draw at most its allowance, only from this channel, until it expires ({SESSION_DAYS} days).
      </p>
      {action.error && <ErrorBox error={action.error} />}
      {action.done && <Notice>{action.done}</Notice>}
    </Section>
  );
}

function Chat({ wallet, node, endpoint, model, sessionKey, onPaid }: { wallet: Wallet; node: Address; endpoint: string; model: Model; sessionKey: SessionKey; onPaid: () => void }) {
  const [turns, setTurns] = useState<Turn[]>([]);
  const [draft, setDraft] = useState("");
  const [busy, setBusy] = useState(false);
  const [maxPrice, setMaxPrice] = useState("0.1");
  const [waiting, setWaiting] = useState(waitingRatings());
  useEffect(() => {
    const timer = setInterval(() => void flushRatings().then(setWaiting), 15000);
    void flushRatings().then(setWaiting);
    return () => clearInterval(timer);
  }, []);
  const update = (i: number, change: Partial<Turn>) => setTurns((all) => all.map((t, j) => (j === i ? { ...t, ...change } : t)));
  const send = async () => {
    const prompt = draft.trim();
    if (!prompt || busy) return;
    const index = turns.length;
    setTurns((all) => [...all, { prompt }]);
    setDraft("");
    setBusy(true);
    try {
      const pair = { chainId: wallet.config.chainId, payments: wallet.address("InferencePayments"), payer: wallet.account, node, modelId: model.id };
      const redeemed = await wallet.read<bigint>({ contract: "InferencePayments", abi: InferencePaymentsAbi, functionName: "redeemed", args: [wallet.account, node, BigInt(model.id)] });
      const answer = await paidChat({
        nodeUrl: endpoint,
        modelId: model.id,
        payer: wallet.account,
        node,
        chainId: wallet.config.chainId,
        payments: wallet.address("InferencePayments"),
        sessionKey: sessionKey.account,
        authorization: sessionKey.pendingAuthorization,
        maxPrice: parseOpen(maxPrice),
        messages: [{ role: "user", content: prompt }],
        maxTokens: MAX_TOKENS,
        promised: promisedOn(pair, redeemed),
        onSigned: (cumulative) => recordPromised(pair, cumulative),
      });
      update(index, { answer });
      onPaid();
    } catch (error) {
      update(index, { error: error instanceof Error ? error.message : String(error) });
    } finally {
      setBusy(false);
    }
  };
  const rate = async (i: number, score: number) => {
    const turn = turns[i];
    if (!turn.answer?.requestHash) return;
    try {
      const body = await signRating(wallet, turn.answer.requestHash as Hex, score, turn.prompt, turn.answer.text);
      const outcome = await submitRating(body);
      update(i, { rating: outcome === "sent" ? `Rated ${score}/5: stored for the model's next DPO round.` : `Rated ${score}/5: signed; it is sent once the node publishes this answer's receipt (its next redemption).` });
      setWaiting(waitingRatings());
    } catch (error) {
      update(i, { rating: error instanceof Error ? error.message : String(error) });
    }
  };
  return (
    <Section title="4. Chat">
      <div class="chat" data-testid="chat">
        {turns.map((t, i) => (
          <div key={i}>
            <div class="msg user">{t.prompt}</div>
            {t.answer && (
              <div class="msg assistant" data-testid="answer">
                <div>{t.answer.text}</div>
                <div class="receipt">
                  paid <span data-testid="answer-price">{open(t.answer.price, 6)}</span> (quoted {open(t.answer.quoted, 6)}; voucher at <span data-testid="answer-cumulative" data-wei={String(t.answer.cumulative)}>{open(t.answer.cumulative, 6)}</span> in total) · receipt{" "}
                  <span class="mono">{String(t.answer.receipt.receipt_id ?? "")}</span> · request <span class="mono">{t.answer.requestHash?.slice(0, 12)}…</span>
                  {t.answer.usage && (
                    <>
                      {" "}
                      · {t.answer.usage.prompt_tokens}+{t.answer.usage.completion_tokens} tokens
                    </>
                  )}
                </div>
                <div class="stars" aria-label="Rate this answer">
                  {[1, 2, 3, 4, 5].map((n) => (
                    <button key={n} title={`${n} of 5`} onClick={() => void rate(i, n)} data-testid={`rate-${n}`}>
                      ★
                    </button>
                  ))}
                  {t.rating && <span class="muted"> {t.rating}</span>}
                </div>
              </div>
            )}
            {t.error && <ErrorBox error={t.error} />}
            {!t.answer && !t.error && <p class="loading">The node is answering…</p>}
          </div>
        ))}
      </div>
      <div class="form-row">
        <textarea aria-label="Message" value={draft} placeholder="Ask the model…" onInput={(e) => setDraft((e.target as HTMLTextAreaElement).value)} onKeyDown={(e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); void send(); } }} />
        <label>
          Max price per message (OPEN)
          <input aria-label="Max price per message" value={maxPrice} onInput={(e) => setMaxPrice((e.target as HTMLInputElement).value)} size={8} />
        </label>
        <button disabled={busy || !draft.trim()} onClick={() => void send()} data-testid="send">
          {busy ? "Paying…" : "Send (paid)"}
        </button>
      </div>
      {waiting > 0 && <p class="muted">{waiting} rating(s) wait for their receipts to be published.</p>}
    </Section>
  );
}
