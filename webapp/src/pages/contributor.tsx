// The contributor's page: my contributions and their status, my rewards per model and epoch,
// a Claim button per claimable reward (the wallet sends the claim with the proof the API
// serves), and contributing a file (upload to the store through the API, then the wallet sends
// `contribute` with the Datanet's bond).

import type { Address } from "viem";
import { useState } from "preact/hooks";
import { RequireWallet } from "../components/requirewallet";
import { Amount, Badge, Cid, ErrorBox, Link, Notice, Section, Table, Time } from "../components/ui";
import { AttributionRewardsAbi, DatanetRegistryAbi } from "../generated/abis";
import { useAction } from "../lib/action";
import { getAll, getJSON, postForm, type ClaimablePage, type ClaimEntry, type Contribution, type Datanet, type Earnings, type UploadResult } from "../lib/api";
import { useAsync } from "../lib/async";
import { bytes, open } from "../lib/format";
import { balanceOf, ensureAllowance } from "../lib/token";
import type { Wallet } from "../lib/wallet";

export function ContributorPage(_props: { params: string[] }) {
  return (
    <>
      <h1>Contributor</h1>
      <RequireWallet title="Connect your wallet" why="Your contributions, what your data earned and your claims are read for the connected account; claiming and contributing are sent by it.">
        {(w) => <Contributor key={w.account} wallet={w} />}
      </RequireWallet>
    </>
  );
}

/** Waits until the index has seen `block` (the API serves what it indexed). */
async function indexed(block: bigint): Promise<void> {
  for (let i = 0; i < 40; i++) {
    const status = await getJSON<{ block: number | null }>("/status");
    if (status.block !== null && BigInt(status.block) >= block) return;
    await new Promise((r) => setTimeout(r, 250));
  }
}

function Contributor({ wallet }: { wallet: Wallet }) {
  const [tick, setTick] = useState(0);
  const account = wallet.account.toLowerCase();
  const data = useAsync(async () => {
    const [contributions, earnings, claimable, balance] = await Promise.all([
      getAll<Contribution>(`/contributions?contributor=${account}`),
      getJSON<Earnings>(`/attribution/accounts/${account}/earnings`),
      getJSON<ClaimablePage>(`/attribution/accounts/${account}/claimable?limit=200`),
      balanceOf(wallet),
    ]);
    return { contributions, earnings, claimable, balance };
  }, [account, tick]);
  const reload = () => setTick((t) => t + 1);
  const [claimed, setClaimed] = useState<string | null>(null);
  if (data.error) return <ErrorBox error={data.error} />;
  if (!data.data) return <p class="loading">Loading your contributions and rewards…</p>;
  const { contributions, earnings, claimable, balance } = data.data;
  const open_claims = claimable.items.filter((c) => c.claimable);
  return (
    <>
      <div class="stats">
        <div class="stat">
          earned <b data-testid="total-earned">{open(earnings.total_earned)}</b>
        </div>
        <div class="stat">
          claimed <b data-testid="total-claimed">{open(earnings.total_claimed)}</b>
        </div>
        <div class="stat">
          to claim <b data-testid="to-claim">{open(open_claims.reduce((n, c) => n + BigInt(c.amount), 0n))}</b>
        </div>
        <div class="stat">
          in your wallet <b data-testid="wallet-balance">{open(balance)}</b>
        </div>
      </div>
      <Section title="Rewards to claim">
        {claimed && <Notice>{claimed}</Notice>}
        {claimable.unavailable_epochs.length > 0 && <ErrorBox error={`Epochs ${claimable.unavailable_epochs.join(", ")} cannot be checked: their report is missing from the store or does not match its root.`} />}
        <Table
          label="claimable rewards"
          rows={claimable.items}
          empty="Nothing to claim: rewards appear here once an epoch that pays you is past its challenge window."
          columns={[
            { title: "epoch", cell: (c) => <Link to={["epochs", c.epoch_id]}>epoch {c.epoch_id}</Link> },
            { title: "model", cell: (c) => <Link to={["models", c.model_id]}>model {c.model_id}</Link> },
            { title: "amount", cell: (c) => <Amount wei={c.amount} />, numeric: true },
            { title: "", cell: (c) => <ClaimButton wallet={wallet} entry={c} onClaimed={(message) => { setClaimed(message); reload(); }} /> },
          ]}
        />
      </Section>
      <Section title="Earnings per epoch">
        <Table
          label="earnings"
          rows={earnings.items}
          empty="No epoch has paid this account yet."
          columns={[
            { title: "epoch", cell: (e) => <Link to={["epochs", e.epoch_id]}>epoch {e.epoch_id}</Link> },
            { title: "model", cell: (e) => <Link to={["models", e.model_id]}>model {e.model_id}</Link> },
            { title: "status", cell: (e) => <Badge status={e.status} /> },
            { title: "amount", cell: (e) => <Amount wei={e.amount} />, numeric: true },
            { title: "claimed", cell: (e) => (e.claimed ? <Badge status="claimed" /> : <span class="muted">not yet</span>) },
            { title: "from contributions", cell: (e) => e.contributions.map((c) => `#${c.contribution_id}`).join(", ") || "—" },
          ]}
        />
      </Section>
      <Section title="My contributions">
        <Table
          label="my contributions"
          rows={contributions}
          empty="You have not contributed to a Datanet yet."
          columns={[
            { title: "id", cell: (c) => `#${c.id}` },
            { title: "Datanet", cell: (c) => <Link to={["datanets", c.datanet_id]}>Datanet {c.datanet_id}</Link> },
            { title: "file", cell: (c) => <Cid value={c.cid} /> },
            { title: "size", cell: (c) => bytes(c.size), numeric: true },
            { title: "status", cell: (c) => <Badge status={c.status} /> },
            { title: "bond", cell: (c) => <Amount wei={c.bond} />, numeric: true },
            { title: "registered", cell: (c) => <Time unix={c.created_at} /> },
          ]}
        />
      </Section>
      <Contribute wallet={wallet} onDone={reload} />
    </>
  );
}

/** Claims one leaf; the outcome is reported to the page (the leaf leaves the list). */
function ClaimButton({ wallet, entry, onClaimed }: { wallet: Wallet; entry: ClaimEntry; onClaimed: (message: string) => void }) {
  const action = useAction();
  if (entry.claimed) return <Badge status="claimed" />;
  if (!entry.claimable) return <span class="muted">in its challenge window</span>;
  const claim = () =>
    action.run(async () => {
      const receipt = await wallet.send(`claiming epoch ${entry.epoch_id}`, {
        contract: "AttributionRewards",
        abi: AttributionRewardsAbi,
        functionName: "claim",
        args: [BigInt(entry.epoch_id), BigInt(entry.index), entry.account as Address, BigInt(entry.amount), entry.proof],
      });
      await indexed(receipt.blockNumber);
      onClaimed(`Claimed ${open(entry.amount)} from epoch ${entry.epoch_id} (transaction ${receipt.transactionHash}).`);
      return null;
    });
  return (
    <span>
      <button disabled={action.busy} onClick={claim} data-testid={`claim-${entry.epoch_id}`}>
        {action.busy ? "Waiting for the wallet…" : "Claim"}
      </button>
      {action.error && <ErrorBox error={action.error} />}
      {action.done && <Notice>{action.done}</Notice>}
    </span>
  );
}

function Contribute({ wallet, onDone }: { wallet: Wallet; onDone: () => void }) {
  const datanets = useAsync(() => getAll<Datanet>("/datanets"), []);
  const [datanetId, setDatanetId] = useState<number | null>(null);
  const [file, setFile] = useState<File | null>(null);
  const [upload, setUpload] = useState<UploadResult | null>(null);
  const action = useAction();
  const chosen = datanets.data?.find((d) => d.id === (datanetId ?? datanets.data?.[0]?.id));
  const submit = () =>
    action.run(async () => {
      if (!chosen) throw new Error("Choose a Datanet.");
      if (!file) throw new Error("Choose a file to contribute.");
      const form = new FormData();
      form.append("file", file, file.name);
      const stored = await postForm<UploadResult>(`/datanets/${chosen.id}/uploads`, form);
      setUpload(stored);
      if (stored.contribution_id !== null) {
        throw new Error(`This file (${stored.cid}) is already contribution #${stored.contribution_id} of Datanet ${chosen.id}.`);
      }
      const bond = BigInt(chosen.contribution_bond);
      await ensureAllowance(wallet, "DatanetRegistry", bond);
      const receipt = await wallet.send("the contribution", {
        contract: "DatanetRegistry",
        abi: DatanetRegistryAbi,
        functionName: "contribute",
        args: [BigInt(chosen.id), stored.cid, BigInt(stored.size)],
      });
      await indexed(receipt.blockNumber);
      onDone();
      return `Contributed ${stored.cid} (${stored.records} records) to Datanet ${chosen.id} with a bond of ${open(bond)}; curators review it next (transaction ${receipt.transactionHash}).`;
    });
  return (
    <Section title="Contribute a file">
      {datanets.error && <ErrorBox error={datanets.error} />}
      <p class="muted">The file is checked against the Datanet's format and stored by its CID; then your wallet registers it on-chain with the Datanet's bond (returned when a curator approves it).</p>
      <div class="form-row">
        <label>
          Datanet
          <select aria-label="Datanet" value={chosen?.id} onChange={(e) => setDatanetId(Number((e.target as HTMLSelectElement).value))}>
            {(datanets.data ?? []).map((d) => (
              <option key={d.id} value={d.id}>
                Datanet {d.id} (bond {open(d.contribution_bond)})
              </option>
            ))}
          </select>
        </label>
        <label>
          File
          <input type="file" aria-label="File" onChange={(e) => setFile((e.target as HTMLInputElement).files?.[0] ?? null)} />
        </label>
        <button disabled={action.busy || !file} onClick={submit} data-testid="contribute">
          {action.busy ? "Working…" : "Upload and contribute"}
        </button>
      </div>
      {upload && (
        <p class="muted">
          Stored as <Cid value={upload.cid} /> ({bytes(upload.size)}, {upload.records} records).
        </p>
      )}
      {action.error && <ErrorBox error={action.error} />}
      {action.done && <Notice>{action.done}</Notice>}
    </Section>
  );
}
