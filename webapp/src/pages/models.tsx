// Models: the list; one model (status, pricing, split, versions, revenue, epochs); one
// version's lineage from the Datanet version it was trained on to its evaluation.

import { Fragment } from "preact";
import { BarChart, LineChart } from "../components/chart";
import { PageHead, Stat, metadataOf, newestFirst, str, sumWei } from "../components/explorer";
import { Address, Amount, Badge, Cid, Fields, Hash, Link, Loaded, Section, Table, Time } from "../components/ui";
import { API, getAll, getJSON, type ContributorTotals, type EpochRow, type ModelLineage, type ModelRow, type ModelVersion, type Pool, type Redemption, type Split } from "../lib/api";
import { useAsync } from "../lib/async";
import { bps, open, openNumber } from "../lib/format";
import { href } from "../lib/router";
import { RevenueChart, cumulativePaid } from "./overview";

const SPLIT_COLORS: Record<keyof Split, string> = { developer: "#2563eb", contributors: "#059669", node: "#d97706", protocol: "#7c3aed" };

function SplitBar({ split, testid }: { split: Split; testid?: string }) {
  const parts = (Object.keys(SPLIT_COLORS) as (keyof Split)[]).map((k) => [k, split[k]] as const);
  return (
    <div data-testid={testid}>
      <div class="splitbar">
        {parts.map(([k, v]) => (
          <span key={k} style={{ width: `${v / 100}%`, background: SPLIT_COLORS[k] }} title={`${k} ${bps(v)}`} />
        ))}
      </div>
      <div class="legend-row">
        {parts.map(([k, v]) => (
          <span key={k}>
            <i style={{ background: SPLIT_COLORS[k] }} />
            {k} <b data-testid={testid && `${testid}-${k}`}>{v}</b> bps ({bps(v)})
          </span>
        ))}
      </div>
    </div>
  );
}

export function ModelList(_props: { params: string[] }) {
  const state = useAsync(async () => {
    const models = await getAll<ModelRow>("/models");
    const metas = await Promise.all(models.map((m) => metadataOf(m.metadata_cid)));
    return models.map((m, i) => ({ ...m, meta: metas[i] }));
  }, []);
  return (
    <>
      <PageHead kicker="Models" title="Models">
        LoRA adapters trained on Datanet versions, registered with a price per request and per token and a split of every payment
        between the developer, the data contributors, the serving node and the protocol.
      </PageHead>
      <Loaded state={state}>
        {(rows) => (
          <>
            <div class="stats">
              <Stat label="Models" value={rows.length} testid="model-count" />
              <Stat label="Active" value={rows.filter((m) => m.status === "active").length} />
              <Stat label="Versions" value={rows.reduce((n, m) => n + m.version_count, 0)} />
            </div>
            <Section title="All models">
              <Table
                label="models"
                rows={rows}
                empty="No model was registered yet."
                columns={[
                  { title: "ID", cell: (m) => <Link to={["models", m.id]}>#{m.id}</Link> },
                  { title: "Name", cell: (m) => <a href={href("models", m.id)}>{str(m.meta?.name) ?? "unnamed"}</a> },
                  { title: "Status", cell: (m) => <Badge status={m.status} /> },
                  { title: "Developer", cell: (m) => <Address value={m.developer} /> },
                  { title: "Versions", numeric: true, cell: (m) => m.version_count },
                  { title: "Per request", numeric: true, cell: (m) => <Amount wei={m.pricing.per_request} /> },
                  { title: "Per token", numeric: true, cell: (m) => <Amount wei={m.pricing.per_token} /> },
                  { title: "Contributors' share", numeric: true, cell: (m) => bps(m.split.contributors) },
                ]}
              />
            </Section>
          </>
        )}
      </Loaded>
    </>
  );
}

async function loadModel(id: string) {
  const path = `/models/${encodeURIComponent(id)}`;
  const [model, versions, redemptions, epochs, contributors, pool] = await Promise.all([
    getJSON<ModelRow>(path),
    getAll<ModelVersion>(`${path}/versions`),
    getAll<Redemption>(`/payments/redemptions?model_id=${encodeURIComponent(id)}`),
    getAll<EpochRow>(`/attribution/epochs?model_id=${encodeURIComponent(id)}`),
    getAll<ContributorTotals>(`/stats/contributors?model_id=${encodeURIComponent(id)}`),
    getJSON<Pool>(`/attribution/pools/${encodeURIComponent(id)}`).catch(() => null),
  ]);
  return { model, versions, redemptions, epochs, contributors, pool, meta: await metadataOf(model.metadata_cid) };
}

export function ModelPage({ params }: { params: string[] }) {
  const state = useAsync(() => loadModel(params[0]), [params[0]]);
  return (
    <Loaded state={state}>
      {({ model, versions, redemptions, epochs, contributors, pool, meta }) => (
        <>
          <PageHead
            kicker={`Model #${model.id}`}
            title={
              <>
                {str(meta?.name) ?? `Model #${model.id}`}{" "}
                <span data-testid="model-status">
                  <Badge status={model.status} />
                </span>
              </>
            }
          >
            {str(meta?.description)}
          </PageHead>
          <div class="stats">
            <Stat label="Status" value={model.status} />
            <Stat label="Versions" value={model.version_count} testid="model-version-count" />
            <Stat label="Paid for inference" value={open(sumWei(redemptions.map((r) => r.paid)), 4)} testid="model-revenue" sub={`${redemptions.length} redemptions`} />
            <Stat label="Attribution pool funded" value={pool ? open(pool.funded, 4) : "—"} testid="model-pool-funded" sub={pool ? `${open(pool.unallocated, 4)} unallocated` : undefined} />
          </div>
          <div class="grid2">
            <Section title="Pricing and split">
              <Fields
                rows={[
                  ["Per request", <span data-testid="price-per-request"><Amount wei={model.pricing.per_request} /></span>],
                  ["Per token", <span data-testid="price-per-token"><Amount wei={model.pricing.per_token} /></span>],
                ]}
              />
              <SplitBar split={model.split} testid="model-split" />
              {model.scheduled_split && (
                <p class="muted small">
                  Scheduled from <Time unix={model.scheduled_split.effective_at} />: developer {model.scheduled_split.developer}, contributors{" "}
                  {model.scheduled_split.contributors}, node {model.scheduled_split.node}, protocol {model.scheduled_split.protocol} bps.
                </p>
              )}
            </Section>
            <Section title="Registration">
              <Fields
                rows={[
                  ["Developer", <Address value={model.developer} />],
                  ["Attributor", <Address value={model.attributor} />],
                  ["Base model", <Cid value={model.base_model_cid} />],
                  ["Metadata", <Cid value={model.metadata_cid} />],
                  ["Method", str(meta?.method) ?? "—"],
                  ["License", str(meta?.license) ?? "—"],
                  ["Registered", <Time unix={model.created_at} />],
                  ["Transaction", <Hash value={model.tx_hash} />],
                ]}
              />
            </Section>
          </div>
          <Section title="Versions">
            <Table
              label="model versions"
              rows={versions}
              columns={[
                { title: "Version", cell: (v) => <Link to={["models", model.id, "versions", v.version]}>v{v.version} lineage →</Link> },
                { title: "Trained on", cell: (v) => <Link to={["datanets", v.datanet_id]}>Datanet #{v.datanet_id} v{v.datanet_version}</Link> },
                { title: "Training manifest", cell: (v) => <Cid value={v.training_manifest_cid} /> },
                { title: "Adapter", cell: (v) => <Cid value={v.adapter_cid} /> },
                { title: "Published", cell: (v) => <Time unix={v.published_at} /> },
              ]}
            />
          </Section>
          <div class="grid2">
            <RevenueChart modelId={model.id} />
            <Section title="Paid OPEN, cumulative">
              <LineChart series={cumulativePaid(redemptions)} title="OPEN paid for this model" time yUnit="OPEN" />
            </Section>
          </div>
          <div class="grid2">
            <Section title="Contributors' attribution">
              <BarChart
                title="OPEN allocated per contributor"
                unit="OPEN"
                bars={contributors.map((c) => ({ label: `${c.account.slice(0, 8)}…${c.account.slice(-4)}`, value: openNumber(c.allocated), href: href("accounts", c.account.toLowerCase()) }))}
              />
            </Section>
            <Section title="Attribution epochs" actions={<a href={href("epochs")}>all epochs →</a>}>
              <Table
                label="model epochs"
                rows={newestFirst(epochs)}
                empty="No epoch was posted for this model."
                columns={[
                  { title: "Epoch", cell: (e) => <Link to={["epochs", e.id]}>#{e.id}</Link> },
                  { title: "Status", cell: (e) => <Badge status={e.status} /> },
                  { title: "Total", numeric: true, cell: (e) => <Amount wei={e.total} /> },
                  { title: "Claimed", numeric: true, cell: (e) => <Amount wei={e.claimed} /> },
                ]}
              />
            </Section>
          </div>
        </>
      )}
    </Loaded>
  );
}

function Metrics({ metrics }: { metrics: Record<string, number> }) {
  return (
    <div class="metrics" data-testid="eval-metrics">
      {Object.entries(metrics).map(([k, v]) => (
        <div key={k}>
          <span>{k.replace(/_/g, " ")}</span>
          <b>{Number.isInteger(v) ? v : v.toPrecision(4)}</b>
        </div>
      ))}
    </div>
  );
}

export function ModelVersionPage({ params }: { params: string[] }) {
  const [id, version] = params;
  const state = useAsync(async () => {
    const [lineage, redemptions] = await Promise.all([
      getJSON<ModelLineage>(`/models/${encodeURIComponent(id)}/versions/${encodeURIComponent(version)}/lineage`),
      getAll<Redemption>(`/payments/redemptions?model_id=${encodeURIComponent(id)}`),
    ]);
    return { lineage, redemptions, meta: await metadataOf(lineage.model.metadata_cid) };
  }, [id, version]);
  return (
    <Loaded state={state}>
      {({ lineage, redemptions, meta }) => {
        const { model, version: v, datanet_version: dv, evaluation, loss_curve: curve } = lineage;
        const steps = [
          {
            title: "Datanet version",
            body: (
              <>
                <Link to={["datanets", v.datanet_id]}>
                  Datanet #{v.datanet_id} v{v.datanet_version}
                </Link>
                {dv ? (
                  <>
                    <span class="small">
                      root <Hash value={dv.merkle_root} />
                    </span>
                    <span class="small">
                      manifest <Cid value={dv.manifest_cid} />
                    </span>
                    <span class="small muted">{dv.contribution_count} contributions</span>
                  </>
                ) : (
                  <span class="muted small">not indexed</span>
                )}
              </>
            ),
          },
          { title: "Training manifest", body: <Cid value={v.training_manifest_cid} /> },
          { title: "Adapter", body: <><Cid value={v.adapter_cid} /><span class="small muted">published <Time unix={v.published_at} /></span></> },
          {
            title: "Evaluation",
            body: evaluation ? (
              <>
                <Cid value={evaluation.report_cid} />
                <span class="small muted">{evaluation.method ?? "method not stated"}</span>
              </>
            ) : (
              <span class="muted">no report</span>
            ),
          },
        ];
        return (
          <>
            <PageHead
              kicker={`Model #${model.id} · version ${v.version}`}
              title={
                <>
                  {str(meta?.name) ?? `Model #${model.id}`} v{v.version} <Badge status={model.status} />
                </>
              }
            >
              <Link to={["models", model.id]}>← model #{model.id}</Link>
            </PageHead>
            <Section title="Lineage">
              <div class="lineage" data-testid="lineage">
                {steps.map((s, i) => (
                  <Fragment key={s.title}>
                    {i > 0 && <span class="arrow">→</span>}
                    <div class="step">
                      <span class="step-title">{s.title}</span>
                      {s.body}
                    </div>
                  </Fragment>
                ))}
              </div>
              {evaluation && <Metrics metrics={evaluation.metrics} />}
              {lineage.notes.length > 0 && (
                <ul class="notes" data-testid="lineage-notes">
                  {lineage.notes.map((n) => (
                    <li key={n}>{n}</li>
                  ))}
                </ul>
              )}
              <Fields
                rows={[
                  ["Metadata", <Cid value={lineage.metadata_cid} />],
                  ["Attribution index", lineage.attribution_index_cid ? <Cid value={lineage.attribution_index_cid} /> : <span class="muted">—</span>],
                  ["Published in", <Hash value={v.tx_hash} />],
                ]}
              />
            </Section>
            <div class="grid2">
              <Section title="Training loss">
                {curve?.points?.length ? (
                  <>
                    <LineChart series={[{ name: "loss", points: curve.points.map((p) => ({ x: p.step, y: p.loss })) }]} title="loss per step" />
                    {curve.cid && (
                      <p class="small muted">
                        points from <Cid value={curve.cid} />
                      </p>
                    )}
                  </>
                ) : curve?.plot_cid ? (
                  <>
                    <img class="plot" src={`${API}/content/${encodeURIComponent(curve.plot_cid)}`} alt="training loss curve" />
                    <p class="small muted">
                      plot <Cid value={curve.plot_cid} />
                    </p>
                  </>
                ) : (
                  <p class="muted">No loss curve was published for this version.</p>
                )}
              </Section>
              <Section title="Usage of the model">
                <LineChart series={cumulativePaid(redemptions, `model #${model.id}`)} title="OPEN paid for the model, cumulative" time yUnit="OPEN" />
                <p class="small muted">
                  {redemptions.length} redemptions, {open(sumWei(redemptions.map((r) => r.paid)))} in all (redemptions are per model; receipts
                  name the adapter version).
                </p>
              </Section>
            </div>
          </>
        );
      }}
    </Loaded>
  );
}
