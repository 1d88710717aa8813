// Attribution epochs: each posts a share of a model's pool to contributors, with a report CID
// and a Merkle root; the epoch page recomputes the root from the report, shows the challenge
// window on the chain's clock, per-contributor totals and which leaves were claimed.

import { BarChart } from "../components/chart";
import { PageHead, Stat, Verdict, fetchChecked, jsonOf, newestFirst } from "../components/explorer";
import { CLAIM_TYPES, merkleRoot } from "../components/merkle";
import { Address, Amount, Badge, Cid, Countdown, ErrorBox, Fields, Hash, Link, Loaded, Section, Table, Time } from "../components/ui";
import { getAll, getJSON, type ClaimRow, type ContributorTotals, type EpochRow } from "../lib/api";
import { useAsync } from "../lib/async";
import { chainNow } from "../lib/deployment";
import { open, openNumber } from "../lib/format";
import { href } from "../lib/router";

export function EpochList(_props: { params: string[] }) {
  const state = useAsync(() => getAll<EpochRow>("/attribution/epochs"), []);
  return (
    <>
      <PageHead kicker="Proof of Attribution" title="Attribution epochs">
        A model's attributor posts an epoch: the OPEN of its pool allocated to contributors by their data's influence on paid answers,
        with the report and a Merkle root. Anyone may challenge during the window; afterwards contributors claim.
      </PageHead>
      <Loaded state={state}>
        {(epochs) => (
          <>
            <div class="stats">
              <Stat label="Epochs" value={epochs.length} testid="epoch-count" />
              <Stat label="Posted" value={epochs.filter((e) => e.status !== "rejected").length} />
              <Stat label="Rejected on challenge" value={epochs.filter((e) => e.status === "rejected").length} />
              <Stat label="Claimed" value={open(epochs.reduce((n, e) => n + BigInt(e.claimed), 0n), 4)} testid="epochs-claimed-total" />
            </div>
            <Section title="All epochs">
              <Table
                label="epochs"
                rows={newestFirst(epochs)}
                empty="No epoch was posted yet."
                columns={[
                  { title: "Epoch", cell: (e) => <Link to={["epochs", e.id]}>#{e.id}</Link> },
                  { title: "Model", cell: (e) => <Link to={["models", e.model_id]}>#{e.model_id}</Link> },
                  { title: "Status", cell: (e) => <Badge status={e.status} /> },
                  { title: "Total", numeric: true, cell: (e) => <Amount wei={e.total} /> },
                  { title: "Claimed", numeric: true, cell: (e) => <Amount wei={e.claimed} /> },
                  { title: "Challenge window", cell: (e) => (e.status === "rejected" ? <span class="muted">—</span> : <Countdown until={e.challenge_ends_at} done="closed" />) },
                  { title: "Report", cell: (e) => <Cid value={e.report_cid} /> },
                  { title: "Posted", cell: (e) => <Time unix={e.posted_at} /> },
                ]}
              />
            </Section>
          </>
        )}
      </Loaded>
    </>
  );
}

interface Report {
  leaves?: [number, string, string][];
  merkle_root?: string;
  total?: string;
  contributors?: { account: string; amount: string; contributions: [number, number, string][] }[];
}

interface Leaf {
  index: number;
  account: string;
  amount: string;
  claim: ClaimRow | undefined;
}

async function loadEpoch(id: string) {
  const epoch = await getJSON<EpochRow>(`/attribution/epochs/${encodeURIComponent(id)}`);
  const [claims, totals, report] = await Promise.all([
    getAll<ClaimRow>(`/attribution/epochs/${encodeURIComponent(id)}/claims`),
    getAll<ContributorTotals>(`/stats/contributors?model_id=${epoch.model_id}`),
    fetchChecked(epoch.report_cid).then(
      (checked) => ({ checked, json: jsonOf<Report>(checked, epoch.report_cid), error: null }),
      (error: Error) => ({ checked: null, json: null, error }),
    ),
  ]);
  return { epoch, claims, totals, report };
}

export function EpochPage({ params }: { params: string[] }) {
  const state = useAsync(() => loadEpoch(params[0]), [params[0]]);
  return (
    <Loaded state={state}>
      {({ epoch, claims, totals, report }) => {
        const byIndex = new Map(claims.map((c) => [c.index, c]));
        const reportLeaves = report.json?.leaves ?? [];
        const leaves: Leaf[] = reportLeaves.length
          ? reportLeaves.map(([index, account, amount]) => ({ index, account, amount, claim: byIndex.get(index) }))
          : claims.map((c) => ({ index: c.index, account: c.account, amount: c.amount, claim: c }));
        let root: string | null = null;
        let rootError: string | null = null;
        try {
          if (reportLeaves.length) root = merkleRoot(CLAIM_TYPES, reportLeaves.map(([i, a, amt]) => [BigInt(i), a, BigInt(amt)]));
        } catch (error) {
          rootError = error instanceof Error ? error.message : String(error);
        }
        const rootOk = root !== null && root.toLowerCase() === epoch.merkle_root.toLowerCase();
        const windowOpen = epoch.challenge_ends_at > chainNow();
        return (
          <>
            <PageHead
              kicker={`Model #${epoch.model_id} · attribution`}
              title={
                <>
                  Epoch #{epoch.id}{" "}
                  <span data-testid="epoch-status">
                    <Badge status={epoch.status} />
                  </span>
                </>
              }
            >
              <Link to={["models", epoch.model_id]}>model #{epoch.model_id}</Link> · posted by <Address value={epoch.poster} /> ·{" "}
              <Time unix={epoch.posted_at} />
            </PageHead>
            <div class="stats">
              <Stat label="Total allocated" value={open(epoch.total, 6)} testid="epoch-total" />
              <Stat label="Claimed" value={open(epoch.claimed, 6)} testid="epoch-claimed" sub={`${claims.length} of ${leaves.length} leaves`} />
              <Stat
                label="Challenge window"
                value={epoch.status === "rejected" ? "rejected" : <Countdown until={epoch.challenge_ends_at} done="closed" />}
                testid="epoch-challenge"
                sub={<>ends <Time unix={epoch.challenge_ends_at} /></>}
              />
              <Stat label="Claim period" value={epoch.claim_ends_at && epoch.status !== "rejected" ? <Countdown until={epoch.claim_ends_at} done="ended" /> : "—"} sub={epoch.claim_ends_at ? <>ends <Time unix={epoch.claim_ends_at} /></> : undefined} />
            </div>
            <Section title="Epoch">
              <Fields
                rows={[
                  ["Status", <Badge status={epoch.status} />],
                  ["Claimable now", epoch.claimable ? "yes" : epoch.status === "rejected" ? "no: rejected on challenge" : windowOpen ? "after the challenge window" : "no"],
                  ["Report", <>
                    <Cid value={epoch.report_cid} /> {report.checked && <Verdict ok={report.checked.ok} testid="report-verdict" />}
                  </>],
                  ["Merkle root", <Hash value={epoch.merkle_root} />],
                  ["Root from report", root ? <><Verdict ok={rootOk} testid="epoch-root-verdict" yes="matches" /> <Hash value={root} /></> : <span class="muted">{rootError ?? "the report lists no leaves"}</span>],
                  ["Challenger", epoch.challenger ? <Address value={epoch.challenger} /> : <span class="muted">none</span>],
                  ["Swept", epoch.swept ? <Amount wei={epoch.swept} /> : <span class="muted">—</span>],
                  ["Transaction", <Hash value={epoch.tx_hash} />],
                ]}
              />
              {report.error && <ErrorBox error={`The report ${epoch.report_cid} cannot be read: ${report.error.message}`} />}
            </Section>
            <div class="grid2">
              <Section title="This epoch's earnings">
                <BarChart
                  title={`OPEN per contributor in epoch #${epoch.id}`}
                  unit="OPEN"
                  bars={leaves.map((l) => ({ label: `${l.account.slice(0, 8)}…${l.account.slice(-4)}`, value: openNumber(l.amount), href: href("accounts", l.account.toLowerCase()) }))}
                />
              </Section>
              <Section title={`Contributors of model #${epoch.model_id}, all epochs`}>
                <Table
                  label="contributor totals"
                  rows={totals}
                  empty="No allocation yet."
                  columns={[
                    { title: "Account", cell: (t) => <Address value={t.account} /> },
                    { title: "Allocated", numeric: true, cell: (t) => <Amount wei={t.allocated} /> },
                    { title: "Claimed", numeric: true, cell: (t) => <Amount wei={t.claimed} /> },
                    { title: "Claimable", numeric: true, cell: (t) => <Amount wei={t.claimable} /> },
                  ]}
                />
              </Section>
            </div>
            <Section title="Leaves">
              <Table
                label="leaves"
                rows={leaves}
                empty="No leaf known for this epoch."
                columns={[
                  { title: "Index", numeric: true, cell: (l) => l.index },
                  { title: "Account", cell: (l) => <Address value={l.account} /> },
                  { title: "Amount", numeric: true, cell: (l) => <Amount wei={l.amount} /> },
                  { title: "Claim", cell: (l) => <span data-testid={`leaf-${l.index}-claimed`}><Badge status={l.claim ? "claimed" : epoch.status === "rejected" ? "rejected" : "unclaimed"} /></span> },
                  { title: "Claimed at", cell: (l) => (l.claim ? <Time unix={l.claim.claimed_at} /> : <span class="muted">—</span>) },
                  { title: "Transaction", cell: (l) => (l.claim ? <Hash value={l.claim.tx_hash} /> : <span class="muted">—</span>) },
                ]}
              />
            </Section>
          </>
        );
      }}
    </Loaded>
  );
}
