// Payments: redemptions of vouchers, skipped vouchers, usage proofs and payer accounts; one
// usage proof with its redemptions, splits and a check of its receipts log done in the page.

import { useState } from "preact/hooks";
import { LineChart } from "../components/chart";
import { PageHead, Stat, Verdict, fetchChecked, newestFirst, sumWei } from "../components/explorer";
import { RECEIPT_TYPES, merkleRoot } from "../components/merkle";
import { Address, Amount, Badge, Cid, ErrorBox, Fields, Hash, Link, Loaded, Section, Table, Time } from "../components/ui";
import { getAll, getJSON, type PayerAccount, type Redemption, type SkippedVoucher, type UsageProof, type UsageProofDetail } from "../lib/api";
import { useAsync } from "../lib/async";
import { open } from "../lib/format";
import { RevenueChart, cumulativePaid } from "./overview";

const redemptionColumns = [
  { title: "Payer", cell: (r: Redemption) => <Address value={r.payer} /> },
  { title: "Node", cell: (r: Redemption) => <Address value={r.node} /> },
  { title: "Model", cell: (r: Redemption) => <Link to={["models", r.model_id]}>#{r.model_id}</Link> },
  { title: "Voucher total", numeric: true, cell: (r: Redemption) => <Amount wei={r.cumulative_amount} /> },
  { title: "Paid", numeric: true, cell: (r: Redemption) => <Amount wei={r.paid} /> },
  { title: "Shortfall", numeric: true, cell: (r: Redemption) => (r.shortfall === "0" ? <span class="muted">—</span> : <Amount wei={r.shortfall} />) },
  { title: "Usage proof", cell: (r: Redemption) => (r.usage_proof_id !== null ? <Link to={["usage-proofs", r.usage_proof_id]}>#{r.usage_proof_id}</Link> : "—") },
  { title: "Time", cell: (r: Redemption) => <Time unix={r.redeemed_at} /> },
];

const skippedColumns = [
  { title: "Payer", cell: (s: SkippedVoucher) => <Address value={s.payer} /> },
  { title: "Node", cell: (s: SkippedVoucher) => <Address value={s.node} /> },
  { title: "Model", cell: (s: SkippedVoucher) => <Link to={["models", s.model_id]}>#{s.model_id}</Link> },
  { title: "Batch index", numeric: true, cell: (s: SkippedVoucher) => s.index },
  { title: "Reason", cell: (s: SkippedVoucher) => <Badge status={s.reason} /> },
  { title: "Usage proof", cell: (s: SkippedVoucher) => (s.usage_proof_id !== null ? <Link to={["usage-proofs", s.usage_proof_id]}>#{s.usage_proof_id}</Link> : "—") },
  { title: "Time", cell: (s: SkippedVoucher) => <Time unix={s.skipped_at} /> },
];

export function PaymentsPage(_props: { params: string[] }) {
  const state = useAsync(async () => {
    const [redemptions, skipped, proofs, accounts] = await Promise.all([
      getAll<Redemption>("/payments/redemptions"),
      getAll<SkippedVoucher>("/payments/skipped-vouchers"),
      getAll<UsageProof>("/usage-proofs"),
      getAll<PayerAccount>("/payments/accounts"),
    ]);
    return { redemptions, skipped, proofs, accounts };
  }, []);
  return (
    <>
      <PageHead kicker="Payments" title="Inference payments">
        Payers deposit OPEN into channels with nodes and sign a voucher per answer; nodes redeem the latest vouchers in batches, each
        redemption split by the model's split and recorded with a usage proof of the receipts it pays for.
      </PageHead>
      <Loaded state={state}>
        {({ redemptions, skipped, proofs, accounts }) => (
          <>
            <div class="stats">
              <Stat label="Paid to nodes" value={open(sumWei(redemptions.map((r) => r.paid)), 4)} testid="payments-paid-total" />
              <Stat label="Redemptions" value={redemptions.length} testid="redemption-count" />
              <Stat label="Usage proofs" value={proofs.length} testid="usage-proof-count" sub={`${proofs.reduce((n, p) => n + p.receipt_count, 0)} receipts`} />
              <Stat label="Skipped vouchers" value={skipped.length} testid="skipped-count" />
              <Stat label="Deposited by payers" value={open(sumWei(accounts.map((a) => a.deposited)), 2)} sub={`${accounts.length} payers`} />
            </div>
            <div class="grid2">
              <Section title="Paid OPEN over time">
                <LineChart series={cumulativePaid(redemptions)} title="OPEN paid to nodes, cumulative" time yUnit="OPEN" />
              </Section>
              <RevenueChart />
            </div>
            <Section title="Redemptions">
              <Table label="redemptions" rows={newestFirst(redemptions)} columns={redemptionColumns} empty="No voucher was redeemed yet." />
            </Section>
            <Section title="Skipped vouchers">
              <p class="muted small">Vouchers a node's batch could not redeem (the rest of the batch still paid).</p>
              <Table label="skipped vouchers" rows={newestFirst(skipped)} columns={skippedColumns} empty="No voucher was skipped." />
            </Section>
            <div class="grid2">
              <Section title="Usage proofs">
                <Table
                  label="usage proofs"
                  rows={newestFirst(proofs)}
                  empty="No usage proof yet."
                  columns={[
                    { title: "Proof", cell: (p) => <Link to={["usage-proofs", p.id]}>#{p.id}</Link> },
                    { title: "Node", cell: (p) => <Address value={p.node} /> },
                    { title: "Receipts", numeric: true, cell: (p) => p.receipt_count },
                    { title: "Amount", numeric: true, cell: (p) => <Amount wei={p.amount} /> },
                    { title: "Receipts log", cell: (p) => <Cid value={p.receipts_cid} /> },
                  ]}
                />
              </Section>
              <Section title="Payer accounts">
                <Table
                  label="payer accounts"
                  rows={accounts}
                  empty="No payer deposited yet."
                  columns={[
                    { title: "Payer", cell: (a) => <Address value={a.payer} /> },
                    { title: "Channels", numeric: true, cell: (a) => a.channel_count },
                    { title: "Balance", numeric: true, cell: (a) => <Amount wei={a.balance} /> },
                    { title: "Spent", numeric: true, cell: (a) => <Amount wei={a.spent} /> },
                  ]}
                />
              </Section>
            </div>
          </>
        )}
      </Loaded>
    </>
  );
}

interface ReceiptJSON {
  requestHash: string;
  payer: string;
  node: string;
  modelId: number | string;
  adapterVersion: number | string;
  tokensIn: number | string;
  tokensOut: number | string;
  price: string;
  outputHash: string;
  attributionDigest: string;
  voucherCumulative: string;
  createdAt: number | string;
}

interface ReceiptCheck {
  bundle: { cid: string; ok: boolean; computed: string } | null;
  log: { cid: string; ok: boolean; computed: string; bytes: number };
  count: number;
  countOk: boolean;
  root: string;
  rootOk: boolean;
  priced: bigint;
  models: Set<string>;
}

/** Reads what the proof's receipts CID names (a usage bundle or a plain receipts log) and
 * checks it here: the bytes against each CID, the receipt count, and the Merkle root. */
async function checkReceipts(proof: UsageProofDetail): Promise<ReceiptCheck> {
  const first = await fetchChecked(proof.receipts_cid);
  let bundle: ReceiptCheck["bundle"] = null;
  let log = first;
  let logCid = proof.receipts_cid;
  const text = new TextDecoder().decode(first.data);
  try {
    const value = JSON.parse(text) as Record<string, unknown>;
    if (value && typeof value.receipts === "string" && typeof value.attributionRecords === "string") {
      bundle = { cid: proof.receipts_cid, ok: first.ok, computed: first.computed };
      logCid = value.receipts;
      log = await fetchChecked(logCid);
    }
  } catch {
    /* several JSON lines: the receipts log itself */
  }
  const lines = new TextDecoder().decode(log.data).split("\n").filter((l) => l.trim());
  const receipts = lines.map((line, i) => {
    try {
      return JSON.parse(line) as ReceiptJSON;
    } catch {
      throw new Error(`receipts log ${logCid} line ${i + 1} is not JSON`);
    }
  });
  const rows = receipts.map((r) => [
    r.requestHash, r.payer, r.node, BigInt(r.modelId), BigInt(r.adapterVersion), BigInt(r.tokensIn), BigInt(r.tokensOut),
    BigInt(r.price), r.outputHash, r.attributionDigest, BigInt(r.voucherCumulative), BigInt(r.createdAt),
  ]); // prettier-ignore
  const root = rows.length ? merkleRoot(RECEIPT_TYPES, rows) : "(no receipts)";
  return {
    bundle,
    log: { cid: logCid, ok: log.ok, computed: log.computed, bytes: log.data.length },
    count: receipts.length,
    countOk: receipts.length === proof.receipt_count,
    root,
    rootOk: root.toLowerCase() === proof.receipts_root.toLowerCase(),
    priced: sumWei(receipts.map((r) => r.price)),
    models: new Set(receipts.map((r) => `model #${r.modelId} v${r.adapterVersion}`)),
  };
}

function VerifyReceipts({ proof }: { proof: UsageProofDetail }) {
  const [run, setRun] = useState(0);
  const state = useAsync(() => (run ? checkReceipts(proof) : Promise.resolve(null)), [run, proof.id]);
  const result = state.data;
  const ok = result ? (result.bundle?.ok ?? true) && result.log.ok && result.countOk && result.rootOk : false;
  return (
    <Section
      title="Verify receipts"
      actions={
        <button onClick={() => setRun((n) => n + 1)} disabled={state.loading && run > 0} data-testid="verify-receipts">
          {run ? "Verify again" : "Verify receipts"}
        </button>
      }
    >
      <p class="muted small">
        Fetches the receipts log by its CID, recomputes the CID in this browser, counts the receipts and rebuilds their Merkle tree to
        compare with the root recorded on-chain.
      </p>
      {state.error && <ErrorBox error={state.error} />}
      {run > 0 && state.loading && <p class="loading">Fetching and hashing…</p>}
      {result && !state.loading && (
        <>
          <div class="verdict-big">
            <Verdict ok={ok} testid="receipts-verdict" yes="match" no="mismatch" />
            <span>{ok ? "The receipts match the usage proof recorded on-chain." : "The receipts do NOT match the usage proof."}</span>
          </div>
          <ul class="checks">
            {result.bundle && (
              <li>
                <Verdict ok={result.bundle.ok} yes="match" /> usage bundle <Cid value={result.bundle.cid} /> recomputes to{" "}
                <span class="mono small">{result.bundle.computed}</span>
              </li>
            )}
            <li>
              <Verdict ok={result.log.ok} yes="match" /> receipts log <Cid value={result.log.cid} /> ({result.log.bytes} bytes) recomputes to{" "}
              <span class="mono small" data-testid="receipts-computed-cid">{result.log.computed}</span>
            </li>
            <li>
              <Verdict ok={result.countOk} yes="match" /> {result.count} receipts in the log, {proof.receipt_count} recorded
            </li>
            <li>
              <Verdict ok={result.rootOk} yes="match" /> Merkle root <Hash value={result.root} /> vs on-chain <Hash value={proof.receipts_root} />
            </li>
            <li>
              <span class="badge">info</span> receipts price {open(result.priced)} in all for {[...result.models].join(", ")}; the proof
              records {open(proof.amount)} redeemed
            </li>
          </ul>
        </>
      )}
    </Section>
  );
}

export function UsageProofPage({ params }: { params: string[] }) {
  const state = useAsync(() => getJSON<UsageProofDetail>(`/usage-proofs/${encodeURIComponent(params[0])}`), [params[0]]);
  return (
    <Loaded state={state}>
      {(proof) => (
        <>
          <PageHead kicker="Usage proof" title={`Usage proof #${proof.id}`}>
            What node <Address value={proof.node} /> served for the amount it redeemed: one receipt per paid inference, committed by a
            Merkle root.
          </PageHead>
          <div class="stats">
            <Stat label="Amount" value={open(proof.amount, 6)} testid="proof-amount" />
            <Stat label="Receipts" value={proof.receipt_count} testid="proof-receipt-count" />
            <Stat label="Redemptions" value={proof.redemptions.length} />
            <Stat label="Skipped vouchers" value={proof.skipped.length} />
          </div>
          <Section title="Proof">
            <Fields
              rows={[
                ["Node", <Address value={proof.node} />],
                ["Receipts root", <span class="mono break" data-testid="proof-root">{proof.receipts_root}</span>],
                ["Receipts CID", <Cid value={proof.receipts_cid} />],
                ["Recorded", <Time unix={proof.recorded_at} />],
                ["Block", proof.block_number],
                ["Transaction", <Hash value={proof.tx_hash} />],
              ]}
            />
          </Section>
          <VerifyReceipts proof={proof} />
          <Section title="Redemptions">
            <Table label="proof redemptions" rows={proof.redemptions} columns={redemptionColumns} empty="No redemption in this proof." />
          </Section>
          <Section title="Splits">
            <Table
              label="splits"
              rows={proof.splits}
              empty="No split recorded."
              columns={[
                { title: "Model", cell: (s) => <Link to={["models", s.model_id]}>#{s.model_id}</Link> },
                { title: "Amount", numeric: true, cell: (s) => <Amount wei={s.amount} /> },
                { title: "Node", numeric: true, cell: (s) => <Amount wei={s.node_share} /> },
                { title: "Developer", numeric: true, cell: (s) => <Amount wei={s.developer_share} /> },
                { title: "Contributors (pool)", numeric: true, cell: (s) => <Amount wei={s.contributors_share} /> },
                { title: "Protocol", numeric: true, cell: (s) => <Amount wei={s.protocol_share} /> },
              ]}
            />
          </Section>
          {proof.skipped.length > 0 && (
            <Section title="Skipped vouchers">
              <Table label="proof skipped vouchers" rows={proof.skipped} columns={skippedColumns} />
            </Section>
          )}
        </>
      )}
    </Loaded>
  );
}
