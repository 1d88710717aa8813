// Inference nodes: stake, endpoint and state; for one node, the models it served (from its
// redemptions), its usage proofs and what it earned (the node shares of its proofs' splits).

import { PageHead, Stat, newestFirst, sumWei } from "../components/explorer";
import { Amount, Badge, Countdown, Fields, Link, Loaded, Section, Table, Time } from "../components/ui";
import { getAll, getJSON, type NodeInfo, type Redemption, type UsageProof, type UsageProofDetail } from "../lib/api";
import { useAsync } from "../lib/async";
import { chainNow } from "../lib/deployment";
import { open } from "../lib/format";
import { href } from "../lib/router";

/** How many usage proofs' details (with their splits) a node page reads for its earnings. */
const MAX_PROOF_DETAILS = 100;

export function NodeList(_props: { params: string[] }) {
  const state = useAsync(() => getAll<NodeInfo>("/nodes"), []);
  return (
    <>
      <PageHead kicker="Nodes" title="Inference nodes">
        Operators stake OPEN, declare an endpoint and serve many LoRA adapters on one base model; they redeem payers' vouchers and
        record usage proofs of the receipts they served.
      </PageHead>
      <Loaded state={state}>
        {(nodes) => (
          <>
            <div class="stats">
              <Stat label="Registered nodes" value={nodes.length} testid="node-count" />
              <Stat label="Active" value={nodes.filter((n) => n.active).length} testid="active-node-count" />
              <Stat label="Bonded" value={open(sumWei(nodes.map((n) => n.bonded)), 2)} testid="bonded-total" />
              <Stat label="Slashed" value={open(sumWei(nodes.map((n) => n.slashed)), 2)} />
            </div>
            <Section title="All nodes">
              <Table
                label="nodes"
                rows={nodes}
                empty="No node is registered."
                columns={[
                  { title: "Node", cell: (n) => <a class="mono" href={href("nodes", n.address.toLowerCase())}>{n.address}</a> },
                  { title: "State", cell: (n) => <Badge status={n.active ? "active" : "inactive"} /> },
                  { title: "Bonded", numeric: true, cell: (n) => <Amount wei={n.bonded} /> },
                  { title: "Unbonding", numeric: true, cell: (n) => <Amount wei={n.unbonding} /> },
                  { title: "Slashed", numeric: true, cell: (n) => <Amount wei={n.slashed} /> },
                  { title: "Endpoint", cell: (n) => (n.endpoint ? <span class="mono">{n.endpoint}</span> : <span class="muted">none declared</span>) },
                  { title: "Disputes", numeric: true, cell: (n) => n.open_disputes },
                ]}
              />
            </Section>
          </>
        )}
      </Loaded>
    </>
  );
}

async function loadNode(address: string) {
  const a = encodeURIComponent(address);
  const [node, redemptions, proofs] = await Promise.all([
    getJSON<NodeInfo>(`/nodes/${a}`),
    getAll<Redemption>(`/payments/redemptions?node=${a}`),
    getAll<UsageProof>(`/usage-proofs?node=${a}`),
  ]);
  const details = await Promise.all(newestFirst(proofs).slice(0, MAX_PROOF_DETAILS).map((p) => getJSON<UsageProofDetail>(`/usage-proofs/${p.id}`)));
  return { node, redemptions, proofs, details };
}

export function NodePage({ params }: { params: string[] }) {
  const state = useAsync(() => loadNode(params[0]), [params[0]]);
  return (
    <Loaded state={state}>
      {({ node, redemptions, proofs, details }) => {
        const mine = (s: { node: string }) => s.node.toLowerCase() === node.address.toLowerCase();
        const earned = sumWei(details.flatMap((d) => d.splits.filter(mine).map((s) => s.node_share)));
        const models = new Map<number, { count: number; paid: bigint }>();
        for (const r of redemptions) {
          const m = models.get(r.model_id) ?? { count: 0, paid: 0n };
          models.set(r.model_id, { count: m.count + 1, paid: m.paid + BigInt(r.paid) });
        }
        return (
          <>
            <PageHead
              kicker="Inference node"
              title={
                <>
                  <span class="mono break">{node.address}</span>
                  <span data-testid="node-active">
                    <Badge status={node.active ? "active" : "inactive"} />
                  </span>
                </>
              }
            >
              <Link to={["accounts", node.address.toLowerCase()]}>everything about this address →</Link>
            </PageHead>
            <div class="stats">
              <Stat label="Bonded" value={open(node.bonded, 2)} testid="node-bonded" />
              <Stat label="Unbonding" value={open(node.unbonding, 2)} testid="node-unbonding" sub={node.unbonding !== "0" && node.unbonding_unlock_at ? <Countdown until={node.unbonding_unlock_at} done="unlocked" /> : undefined} />
              <Stat label="Slashed" value={open(node.slashed, 2)} testid="node-slashed" />
              <Stat label="Paid by payers" value={open(sumWei(redemptions.map((r) => r.paid)), 4)} testid="node-paid" sub={`${redemptions.length} redemptions`} />
              <Stat label="Node share earned" value={open(earned, 4)} testid="node-earned" sub={`from ${details.length} usage proofs' splits`} />
            </div>
            <Section title="Registration">
              <Fields
                rows={[
                  ["Endpoint", node.endpoint ? <span class="mono" data-testid="node-endpoint">{node.endpoint}</span> : <span class="muted" data-testid="node-endpoint">none declared</span>],
                  ["Open disputes", node.open_disputes],
                  ["Stake held until", node.held_until > chainNow() ? <><Time unix={node.held_until} /> (<Countdown until={node.held_until} />)</> : <span class="muted">not held</span>],
                ]}
              />
            </Section>
            <div class="grid2">
              <Section title="Models served">
                <Table
                  label="models served"
                  rows={[...models.entries()]}
                  empty="No redemption yet."
                  columns={[
                    { title: "Model", cell: ([id]) => <Link to={["models", id]}>model #{id}</Link> },
                    { title: "Redemptions", numeric: true, cell: ([, m]) => m.count },
                    { title: "Paid", numeric: true, cell: ([, m]) => <Amount wei={m.paid} /> },
                  ]}
                />
              </Section>
              <Section title="Earnings by usage proof">
                <Table
                  label="node earnings"
                  rows={details}
                  empty="No usage proof yet."
                  columns={[
                    { title: "Proof", cell: (d) => <Link to={["usage-proofs", d.id]}>#{d.id}</Link> },
                    { title: "Amount", numeric: true, cell: (d) => <Amount wei={d.amount} /> },
                    { title: "Node share", numeric: true, cell: (d) => <Amount wei={sumWei(d.splits.filter(mine).map((s) => s.node_share))} /> },
                  ]}
                />
              </Section>
            </div>
            <Section title="Usage proofs">
              <Table
                label="usage proofs"
                rows={newestFirst(proofs)}
                empty="This node recorded no usage proof."
                columns={[
                  { title: "Proof", cell: (p) => <Link to={["usage-proofs", p.id]}>#{p.id}</Link> },
                  { title: "Receipts", numeric: true, cell: (p) => p.receipt_count },
                  { title: "Amount", numeric: true, cell: (p) => <Amount wei={p.amount} /> },
                  { title: "Recorded", cell: (p) => <Time unix={p.recorded_at} /> },
                ]}
              />
            </Section>
          </>
        );
      }}
    </Loaded>
  );
}
