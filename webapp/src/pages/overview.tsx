// The front page: what the network holds and has paid, revenue per model over time, the
// latest redemptions, and how to follow one answer's OPEN from payment to claim.

import { useState } from "preact/hooks";
import { LineChart, type Series } from "../components/chart";
import { PageHead, Stat, newestFirst, sumWei } from "../components/explorer";
import { Address, Amount, ErrorBox, Link, Loaded, Section, Table, Time } from "../components/ui";
import { getAll, getJSON, type Datanet, type EpochRow, type Model, type NodeInfo, type Page, type Redemption, type RevenuePoint } from "../lib/api";
import { useAsync } from "../lib/async";
import { open, openNumber } from "../lib/format";
import { href } from "../lib/router";

/** One line per model: OPEN paid in each time bucket. */
export function revenueSeries(points: RevenuePoint[]): Series[] {
  const byModel = new Map<number, Series>();
  for (const p of points) {
    let s = byModel.get(p.model_id);
    if (!s) byModel.set(p.model_id, (s = { name: `model #${p.model_id}`, points: [] }));
    s.points.push({ x: p.bucket_start, y: openNumber(p.paid) });
  }
  return [...byModel.values()];
}

/** Cumulative OPEN paid over time, one point per redemption. */
export function cumulativePaid(redemptions: Redemption[], name = "paid to nodes"): Series[] {
  const sorted = [...redemptions].filter((r) => r.redeemed_at !== null).sort((a, b) => (a.redeemed_at ?? 0) - (b.redeemed_at ?? 0));
  let total = 0n;
  return [{ name, points: sorted.map((r) => ((total += BigInt(r.paid)), { x: r.redeemed_at ?? 0, y: openNumber(total) })) }];
}

export function RevenueChart({ modelId }: { modelId?: number }) {
  const [bucket, setBucket] = useState<"hour" | "day">("hour");
  const query = `/stats/revenue?bucket=${bucket}${modelId !== undefined ? `&model_id=${modelId}` : ""}`;
  const state = useAsync(() => getAll<RevenuePoint>(query), [query]);
  return (
    <Section
      title={modelId !== undefined ? "Revenue over time" : "Revenue per model over time"}
      actions={
        <div class="toggle" role="group" aria-label="time bucket">
          {(["hour", "day"] as const).map((b) => (
            <button key={b} class={b === bucket ? "on" : "secondary"} onClick={() => setBucket(b)}>
              per {b}
            </button>
          ))}
        </div>
      }
    >
      <Loaded state={state}>
        {(points) => (
          <>
            <LineChart series={revenueSeries(points)} title={`OPEN paid per ${bucket}`} time yUnit="OPEN" />
            {points.length > 0 && (
              <p class="muted small">
                {points.reduce((n, p) => n + p.redemptions, 0)} redemptions
                {points.some((p) => p.inferences !== null) && `, ${points.reduce((n, p) => n + (p.inferences ?? 0), 0)} paid inferences`} in{" "}
                {points.length} bucket{points.length === 1 ? "" : "s"}.
              </p>
            )}
          </>
        )}
      </Loaded>
    </Section>
  );
}

interface Totals {
  datanets: number;
  models: Model[];
  nodes: NodeInfo[];
  redemptions: Redemption[];
  epochs: EpochRow[];
}

async function loadTotals(): Promise<Totals> {
  const [datanets, models, nodes, redemptions, epochs] = await Promise.all([
    getJSON<Page<Datanet>>("/datanets?limit=1"),
    getAll<Model>("/models"),
    getAll<NodeInfo>("/nodes"),
    getAll<Redemption>("/payments/redemptions"),
    getAll<EpochRow>("/attribution/epochs"),
  ]);
  return { datanets: datanets.total, models, nodes, redemptions, epochs };
}

function FollowGuide({ totals }: { totals: Totals }) {
  const redemption = newestFirst(totals.redemptions).find((r) => r.usage_proof_id !== null);
  const epoch = redemption && newestFirst(totals.epochs).find((e) => e.model_id === redemption.model_id && e.status !== "rejected");
  return (
    <Section title="Follow one answer's OPEN">
      <ol class="guide">
        <li>
          <b>Payment.</b> A payer signs a voucher per answer; the node redeems the latest voucher of a channel on-chain.{" "}
          <Link to={["payments"]}>Redemptions</Link> list what each node was paid for each model.
        </li>
        <li>
          <b>Usage proof.</b> Each redemption records a usage proof: the Merkle root and CID of the receipts (one per inference) the
          amount pays for. On its page, <i>Verify receipts</i> refetches the log, recomputes its CID and root here.
          {redemption?.usage_proof_id != null && (
            <>
              {" "}
              Example: <Link to={["usage-proofs", redemption.usage_proof_id]}>usage proof #{redemption.usage_proof_id}</Link>.
            </>
          )}
        </li>
        <li>
          <b>Attribution epoch.</b> The contributors' share of every payment funds the model's pool; its attributor posts epochs that
          allocate the pool to contributors by Proof of Attribution, with a report CID and a Merkle root anyone can check and
          challenge. {epoch && <Link to={["epochs", epoch.id]}>Epoch #{epoch.id}</Link>}
        </li>
        <li>
          <b>Claims.</b> After the challenge window each contributor claims their leaf with a Merkle proof; the epoch page shows which
          leaves were claimed, and each account page (click any address) what it earned per epoch.
        </li>
      </ol>
    </Section>
  );
}

export function Overview(_props: { params: string[] }) {
  const state = useAsync(loadTotals, []);
  return (
    <>
      <PageHead kicker="Explorer" title="OpenLedger network">
        Datanets of contributed data, LoRA models trained on them, inference nodes paid per answer in OPEN, and the contributors that
        Proof of Attribution pays. Everything below is read from the chain's events; every CID can be verified in this browser.
      </PageHead>
      {state.error && <ErrorBox error={state.error} />}
      {state.data && <Headline totals={state.data} />}
      {!state.data && !state.error && <p class="loading">Loading…</p>}
      <Loaded state={state}>
        {(totals) => (
          <>
          <div class="grid2">
            <RevenueChart />
            <Section title="Paid OPEN over time">
              <LineChart series={cumulativePaid(totals.redemptions)} title="OPEN paid to nodes, cumulative" time yUnit="OPEN" />
            </Section>
          </div>
          <div class="grid2">
            <Section title="Recent redemptions" actions={<a href={href("payments")}>all payments →</a>}>
              <Table
                label="recent redemptions"
                rows={newestFirst(totals.redemptions).slice(0, 8)}
                empty="No voucher was redeemed yet."
                columns={[
                  { title: "Node", cell: (r) => <Address value={r.node} /> },
                  { title: "Model", cell: (r) => <Link to={["models", r.model_id]}>#{r.model_id}</Link> },
                  { title: "Paid", numeric: true, cell: (r) => <Amount wei={r.paid} /> },
                  { title: "Proof", cell: (r) => (r.usage_proof_id !== null ? <Link to={["usage-proofs", r.usage_proof_id]}>#{r.usage_proof_id}</Link> : "—") },
                  { title: "Time", cell: (r) => <Time unix={r.redeemed_at} /> },
                ]}
              />
            </Section>
            <FollowGuide totals={totals} />
          </div>
          </>
        )}
      </Loaded>
    </>
  );
}

function Headline({ totals }: { totals: Totals }) {
  const paid = sumWei(totals.redemptions.map((r) => r.paid));
  const claimed = sumWei(totals.epochs.map((e) => e.claimed));
  const allocated = sumWei(totals.epochs.filter((e) => e.status !== "rejected").map((e) => e.total));
  const active = totals.nodes.filter((n) => n.active).length;
  return (
    <div class="stats">
      <Stat label="Datanets" value={totals.datanets} testid="datanet-count" sub={<a href={href("datanets")}>browse →</a>} />
      <Stat label="Models" value={totals.models.length} testid="model-count" sub={`${totals.models.filter((m) => m.status === "active").length} active`} />
      <Stat label="Active nodes" value={active} testid="active-node-count" sub={`of ${totals.nodes.length} registered`} />
      <Stat label="OPEN paid to nodes" value={open(paid, 2)} testid="paid-total" sub={`${totals.redemptions.length} redemptions`} />
      <Stat label="Attribution epochs" value={totals.epochs.length} testid="epoch-count" sub={`${open(allocated, 2)} allocated`} />
      <Stat label="Claimed by contributors" value={open(claimed, 2)} testid="claimed-total" />
    </div>
  );
}
