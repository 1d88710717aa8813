// One address, every role it plays: contributor (contributions, earnings per epoch, claims),
// payer (channels and balances), node (stake), Datanet owner and model developer.

import { PageHead, Stat } from "../components/explorer";
import { Address, Amount, Badge, Cid, Countdown, ErrorBox, Link, Loaded, Section, Table, Time } from "../components/ui";
import { getAll, getJSON, type ChannelRow, type ClaimRow, type Contribution, type Datanet, type Earnings, type ModelRow, type NodeInfo, type PayerAccountDetail } from "../lib/api";
import { useAsync } from "../lib/async";
import { bytes, open } from "../lib/format";
import { href } from "../lib/router";

/** Reads only lists for the roles an address may lack (a 404 would log a console error in
 * the browser), and the payer's detail only once its channels show it is one. */
async function loadAccount(address: string) {
  const a = encodeURIComponent(address);
  const [contributions, earnings, claims, channels, nodes, datanets, models] = await Promise.all([
    getAll<Contribution>(`/contributions?contributor=${a}`),
    getJSON<Earnings>(`/attribution/accounts/${a}/earnings`),
    getAll<ClaimRow>(`/attribution/accounts/${a}/claims`),
    getAll<ChannelRow>(`/payments/channels?payer=${a}`),
    getAll<NodeInfo>("/nodes"),
    getAll<Datanet>(`/datanets?owner=${a}`),
    getAll<ModelRow>(`/models?developer=${a}`),
  ]);
  const payer = channels.length ? await getJSON<PayerAccountDetail>(`/payments/accounts/${a}`) : null;
  const node = nodes.find((n) => n.address.toLowerCase() === address.toLowerCase()) ?? null;
  return { contributions, earnings, claims, payer, node, datanets, models };
}

export function AccountPage({ params }: { params: string[] }) {
  const address = params[0];
  const state = useAsync(() => loadAccount(address), [address]);
  return (
    <>
      <PageHead kicker="Account" title={<span class="mono break" data-testid="account-address">{address}</span>} />
      <Loaded state={state}>
        {({ contributions, earnings, claims, payer, node, datanets, models }) => {
          const roles = [
            contributions.length > 0 && "contributor",
            payer && "payer",
            node && "node operator",
            datanets.length > 0 && "Datanet owner",
            models.length > 0 && "model developer",
          ].filter(Boolean) as string[];
          return (
            <>
              <p class="roles">
                {roles.length ? roles.map((r) => <Badge key={r} status={r} />) : <span class="muted">This address has no activity the API indexes.</span>}
              </p>
              <div class="stats">
                <Stat label="Contributions" value={contributions.length} testid="account-contribution-count" sub={`${contributions.filter((c) => c.status === "approved").length} approved`} />
                <Stat label="Earned (attribution)" value={open(earnings.total_earned, 6)} testid="account-total-earned" />
                <Stat label="Claimed" value={open(earnings.total_claimed, 6)} testid="account-total-claimed" />
                <Stat label="Payer balance" value={payer ? open(payer.balance, 4) : "—"} testid="payer-balance" sub={payer ? `${payer.channel_count} channels` : "not a payer"} />
              </div>
              {earnings.unavailable_epochs.length > 0 && (
                <ErrorBox error={`Earnings of epochs ${earnings.unavailable_epochs.join(", ")} are unavailable (their reports could not be read).`} />
              )}
              {node && (
                <Section title="Inference node" actions={<a href={href("nodes", node.address.toLowerCase())}>node page →</a>}>
                  <Table
                    label="node"
                    rows={[node]}
                    columns={[
                      { title: "State", cell: (n) => <Badge status={n.active ? "active" : "inactive"} /> },
                      { title: "Bonded", numeric: true, cell: (n) => <span data-testid="account-node-bonded"><Amount wei={n.bonded} /></span> },
                      { title: "Unbonding", numeric: true, cell: (n) => <Amount wei={n.unbonding} /> },
                      { title: "Slashed", numeric: true, cell: (n) => <Amount wei={n.slashed} /> },
                      { title: "Endpoint", cell: (n) => n.endpoint || <span class="muted">none declared</span> },
                    ]}
                  />
                </Section>
              )}
              <Section title="Earnings per epoch">
                <Table
                  label="earnings"
                  rows={earnings.items}
                  empty="No attribution earnings."
                  columns={[
                    { title: "Epoch", cell: (e) => <Link to={["epochs", e.epoch_id]}>#{e.epoch_id}</Link> },
                    { title: "Model", cell: (e) => <Link to={["models", e.model_id]}>#{e.model_id}</Link> },
                    { title: "Epoch status", cell: (e) => <Badge status={e.status} /> },
                    { title: "Amount", numeric: true, cell: (e) => <span data-testid={`earning-${e.epoch_id}`}><Amount wei={e.amount} /></span> },
                    { title: "Claimed", cell: (e) => <Badge status={e.claimed ? "claimed" : "unclaimed"} /> },
                    {
                      title: "From contributions",
                      cell: (e) =>
                        e.contributions.map((c) => (
                          <span key={c.contribution_id} class="small">
                            <Link to={["datanets", c.datanet_id]}>#{c.contribution_id}</Link> <Amount wei={c.amount} />{" "}
                          </span>
                        )),
                    },
                  ]}
                />
              </Section>
              <Section title="Claims">
                <Table
                  label="claims"
                  rows={claims}
                  empty="No claim."
                  columns={[
                    { title: "Epoch", cell: (c) => <Link to={["epochs", c.epoch_id]}>#{c.epoch_id}</Link> },
                    { title: "Leaf", numeric: true, cell: (c) => c.index },
                    { title: "Amount", numeric: true, cell: (c) => <Amount wei={c.amount} /> },
                    { title: "Claimed", cell: (c) => <Time unix={c.claimed_at} /> },
                  ]}
                />
              </Section>
              <Section title="Contributions">
                <Table
                  label="account contributions"
                  rows={contributions}
                  empty="No contribution."
                  columns={[
                    { title: "ID", cell: (c) => `#${c.id}` },
                    { title: "Datanet", cell: (c) => <Link to={["datanets", c.datanet_id]}>#{c.datanet_id}</Link> },
                    { title: "CID", cell: (c) => <Cid value={c.cid} /> },
                    { title: "Size", numeric: true, cell: (c) => bytes(c.size) },
                    { title: "Status", cell: (c) => <Badge status={c.status} /> },
                    { title: "Curator", cell: (c) => (c.curator ? <Address value={c.curator} /> : "—") },
                    { title: "Contributed", cell: (c) => <Time unix={c.created_at} /> },
                  ]}
                />
              </Section>
              {payer && (
                <Section title="Channels as payer">
                  <Table
                    label="channels"
                    rows={payer.channels}
                    columns={[
                      { title: "Node", cell: (c) => <Address value={c.node} /> },
                      { title: "Balance", numeric: true, cell: (c) => <span data-testid="channel-balance"><Amount wei={c.balance} /></span> },
                      { title: "Deposited", numeric: true, cell: (c) => <Amount wei={c.deposited} /> },
                      { title: "Spent", numeric: true, cell: (c) => <Amount wei={c.spent} /> },
                      { title: "Withdrawal", cell: (c) => (c.pending_withdrawal === "0" ? <span class="muted">none</span> : <><Amount wei={c.pending_withdrawal} /> <Countdown until={c.withdrawal_unlock_at} done="unlocked" /></>) },
                      { title: "Session keys", cell: (c) => (c.session_keys.length ? `${c.session_keys.filter((k) => k.live).length} live of ${c.session_keys.length}` : <span class="muted">none</span>) },
                      { title: "Opened", cell: (c) => <Time unix={c.opened_at} /> },
                    ]}
                  />
                </Section>
              )}
              {(datanets.length > 0 || models.length > 0) && (
                <div class="grid2">
                  {datanets.length > 0 && (
                    <Section title="Datanets owned">
                      <Table label="datanets owned" rows={datanets} columns={[{ title: "Datanet", cell: (d) => <Link to={["datanets", d.id]}>#{d.id}</Link> }, { title: "Contributions", numeric: true, cell: (d) => d.contribution_count }, { title: "Versions", numeric: true, cell: (d) => d.version_count }]} />
                    </Section>
                  )}
                  {models.length > 0 && (
                    <Section title="Models developed">
                      <Table label="models developed" rows={models} columns={[{ title: "Model", cell: (m) => <Link to={["models", m.id]}>#{m.id}</Link> }, { title: "Status", cell: (m) => <Badge status={m.status} /> }, { title: "Versions", numeric: true, cell: (m) => m.version_count }]} />
                    </Section>
                  )}
                </div>
              )}
            </>
          );
        }}
      </Loaded>
    </>
  );
}
