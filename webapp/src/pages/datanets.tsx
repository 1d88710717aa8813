// Datanets: the list, and one Datanet with its metadata, versions, contributions (with a
// verified preview of the selected one) and the audit of every version's manifest against the
// contributions the chain recorded and the Merkle root it committed to.

import { useState } from "preact/hooks";
import { ContentPreview, PageHead, Stat, Verdict, fetchChecked, jsonOf, metadataOf, str, type Checked } from "../components/explorer";
import { VERSION_TYPES, merkleRoot } from "../components/merkle";
import { Address, Amount, Badge, Cid, Fields, Hash, Link, Loaded, Section, Table, Time } from "../components/ui";
import { getAll, getJSON, type Contribution, type Datanet, type DatanetVersion } from "../lib/api";
import { useAsync } from "../lib/async";
import { bytes } from "../lib/format";
import { href } from "../lib/router";

export function DatanetList(_props: { params: string[] }) {
  const state = useAsync(async () => {
    const datanets = await getAll<Datanet>("/datanets");
    const names = await Promise.all(datanets.map((d) => metadataOf(d.metadata_cid)));
    return datanets.map((d, i) => ({ ...d, meta: names[i] }));
  }, []);
  return (
    <>
      <PageHead kicker="Datanets" title="Datanets">
        Community datasets: contributors add files by CID with a bond, curators approve or reject them, and each published version
        commits to its approved contributions with a Merkle root. Models train on a version, never on a moving set.
      </PageHead>
      <Loaded state={state}>
        {(rows) => (
          <>
            <div class="stats">
              <Stat label="Datanets" value={rows.length} testid="datanet-count" />
              <Stat label="Contributions" value={rows.reduce((n, d) => n + d.contribution_count, 0)} testid="contribution-count" />
              <Stat label="Approved" value={rows.reduce((n, d) => n + d.approved_count, 0)} />
              <Stat label="Published versions" value={rows.reduce((n, d) => n + d.version_count, 0)} />
            </div>
            <Section title="All Datanets">
              <Table
                label="datanets"
                rows={rows}
                empty="No Datanet was created yet."
                columns={[
                  { title: "ID", cell: (d) => <Link to={["datanets", d.id]}>#{d.id}</Link> },
                  { title: "Name", cell: (d) => <a href={href("datanets", d.id)}>{str(d.meta?.name) ?? <span class="muted">unnamed</span>}</a> },
                  { title: "Format", cell: (d) => (str(d.meta?.format) ? <Badge status={String(d.meta?.format)} /> : "—") },
                  { title: "Owner", cell: (d) => <Address value={d.owner} /> },
                  { title: "Contributions", numeric: true, cell: (d) => d.contribution_count },
                  { title: "Approved / rejected / pending", numeric: true, cell: (d) => `${d.approved_count} / ${d.rejected_count} / ${d.pending_count}` },
                  { title: "Versions", numeric: true, cell: (d) => d.version_count },
                  { title: "Bond", numeric: true, cell: (d) => <Amount wei={d.contribution_bond} /> },
                  { title: "Created", cell: (d) => <Time unix={d.created_at} /> },
                ]}
              />
            </Section>
          </>
        )}
      </Loaded>
    </>
  );
}

interface ManifestEntry {
  id: number;
  contributor: string;
  cid: string;
  size?: number;
}

interface Audit {
  version: DatanetVersion;
  manifestOk: boolean;
  rootOk: boolean | null;
  /** Differences between the manifest's contributions and the chain's records. */
  records: string[];
  differences: string[];
}

/** Checks one version: its manifest's bytes against its CID, every listed contribution against
 * what the API reports (id, contributor, CID, size, approved), the count, and the Merkle root
 * recomputed from the manifest against the one published on-chain. */
async function auditVersion(version: DatanetVersion, contributions: Contribution[]): Promise<Audit> {
  const differences: string[] = [];
  const records: string[] = [];
  const checked = await fetchChecked(version.manifest_cid);
  if (!checked.ok) differences.push(`manifest bytes hash to ${checked.computed}, not ${version.manifest_cid}`);
  const manifest = jsonOf<{ contributions?: ManifestEntry[]; leaf_types?: string[] }>(checked, version.manifest_cid);
  const listed = Array.isArray(manifest.contributions) ? manifest.contributions : [];
  if (!Array.isArray(manifest.contributions)) differences.push("the manifest lists no contributions");
  const byId = new Map(contributions.map((c) => [c.id, c]));
  const inVersion = await getAll<Contribution>(`/datanets/${version.datanet_id}/versions/${version.version}/contributions`);
  const versionIds = new Set(inVersion.map((c) => c.id));
  for (const entry of listed) {
    const known = byId.get(entry.id);
    if (!known) {
      records.push(`contribution #${entry.id} (${entry.cid}) is in the manifest but not among the Datanet's contributions`);
      continue;
    }
    if (known.cid !== entry.cid) records.push(`contribution #${entry.id}: manifest CID ${entry.cid}, chain ${known.cid}`);
    if (known.contributor.toLowerCase() !== entry.contributor.toLowerCase())
      records.push(`contribution #${entry.id}: manifest contributor ${entry.contributor}, chain ${known.contributor}`);
    if (entry.size !== undefined && known.size !== entry.size) records.push(`contribution #${entry.id}: manifest size ${entry.size}, chain ${known.size}`);
    if (known.status !== "approved" && known.status !== "withdrawn") records.push(`contribution #${entry.id} is ${known.status}, not approved`);
    if (!versionIds.has(entry.id)) records.push(`contribution #${entry.id} is in the manifest but the API does not list it in version ${version.version}`);
  }
  const listedIds = new Set(listed.map((e) => e.id));
  for (const c of inVersion) if (!listedIds.has(c.id)) records.push(`the API lists contribution #${c.id} in version ${version.version} but the manifest does not`);
  if (listed.length !== version.contribution_count)
    records.push(`the manifest lists ${listed.length} contributions, the chain counts ${version.contribution_count}`);
  let rootOk: boolean | null = null;
  if (listed.length) {
    const types = manifest.leaf_types ?? [...VERSION_TYPES];
    const root = merkleRoot(types, listed.map((e) => [BigInt(e.id), e.contributor, e.cid]));
    rootOk = root.toLowerCase() === version.merkle_root.toLowerCase();
    if (!rootOk) differences.push(`the manifest's Merkle root is ${root}, the chain's ${version.merkle_root}`);
  }
  return { version, manifestOk: checked.ok, rootOk, records, differences: [...differences, ...records] };
}

function AuditResult({ audit, previews }: { audit: Audit; previews: Map<string, Checked> }) {
  const { version } = audit;
  const previewDiffs = [...previews.entries()].filter(([, c]) => !c.ok).map(([cid, c]) => `preview of ${cid} hashes to ${c.computed}`);
  const differences = [...audit.differences, ...previewDiffs];
  const ok = differences.length === 0;
  return (
    <div class="audit">
      <h3>
        Version {version.version} <Verdict ok={ok} testid={`audit-verdict-${version.version}`} yes="verified" no="differences" />
      </h3>
      <ul class="checks">
        <li>
          <Verdict ok={audit.manifestOk} /> manifest <Cid value={version.manifest_cid} /> matches its CID
        </li>
        <li>
          <Verdict ok={audit.records.length === 0} /> {version.contribution_count}{" "}
          contributions match the chain's records
        </li>
        {audit.rootOk !== null && (
          <li>
            <Verdict ok={audit.rootOk} /> Merkle root recomputed from the manifest equals <Hash value={version.merkle_root} />
          </li>
        )}
        {previews.size > 0 && (
          <li>
            <Verdict ok={previewDiffs.length === 0} /> {previews.size === 1 ? "the previewed contribution matches its CID" : `${previews.size} previewed contributions match their CIDs`}
          </li>
        )}
      </ul>
      {differences.length > 0 && (
        <ul class="diffs" data-testid={`audit-differences-${version.version}`}>
          {differences.map((d) => (
            <li key={d}>{d}</li>
          ))}
        </ul>
      )}
    </div>
  );
}

function Audits({ versions, contributions, previews }: { versions: DatanetVersion[]; contributions: Contribution[]; previews: Map<string, Checked> }) {
  const state = useAsync(() => Promise.all(versions.map((v) => auditVersion(v, contributions))), [versions, contributions]);
  return (
    <Section title="Audit">
      <p class="muted small">
        Each version's manifest is fetched by its CID and checked here: its bytes against the CID, every contribution it lists
        against the chain's records, and the Merkle root recomputed from it against the root published on-chain.
      </p>
      {versions.length === 0 ? (
        <p class="muted">No version published yet: nothing to audit.</p>
      ) : (
        <Loaded state={state}>{(audits) => audits.map((a) => <AuditResult key={a.version.version} audit={a} previews={previews} />)}</Loaded>
      )}
    </Section>
  );
}

export function DatanetPage({ params }: { params: string[] }) {
  const id = params[0];
  const state = useAsync(async () => {
    const [datanet, versions, contributions] = await Promise.all([
      getJSON<Datanet>(`/datanets/${encodeURIComponent(id)}`),
      getAll<DatanetVersion>(`/datanets/${encodeURIComponent(id)}/versions`),
      getAll<Contribution>(`/datanets/${encodeURIComponent(id)}/contributions`),
    ]);
    return { datanet, versions, contributions };
  }, [id]);
  return <Loaded state={state}>{(data) => <DatanetView {...data} />}</Loaded>;
}

function DatanetView({ datanet, versions, contributions }: { datanet: Datanet; versions: DatanetVersion[]; contributions: Contribution[] }) {
  const meta = useAsync(async () => {
    const checked = await fetchChecked(datanet.metadata_cid);
    return { checked, json: jsonOf<Record<string, unknown>>(checked, datanet.metadata_cid) };
  }, [datanet.metadata_cid]);
  const [selected, setSelected] = useState<number | null>(contributions[0]?.id ?? null);
  const [previews, setPreviews] = useState<Map<string, Checked>>(new Map());
  const chosen = contributions.find((c) => c.id === selected);
  const name = str(meta.data?.json.name);
  return (
    <>
      <PageHead kicker={`Datanet #${datanet.id}`} title={<span data-testid="datanet-name">{name ?? `Datanet #${datanet.id}`}</span>}>
        {str(meta.data?.json.description)}
      </PageHead>
      <div class="stats">
        <Stat label="Contributions" value={datanet.contribution_count} testid="datanet-contribution-count" />
        <Stat label="Approved" value={datanet.approved_count} testid="datanet-approved-count" sub={`${datanet.min_approved} needed to publish`} />
        <Stat label="Rejected / pending" value={`${datanet.rejected_count} / ${datanet.pending_count}`} />
        <Stat label="Versions" value={datanet.version_count} testid="datanet-version-count" />
      </div>
      <Section title="Metadata">
        {meta.error && <p class="error">The metadata {datanet.metadata_cid} cannot be read: {meta.error.message}</p>}
        <Fields
          rows={[
            ["Name", name ?? "—"],
            ["Format", str(meta.data?.json.format) ? <Badge status={String(meta.data?.json.format)} /> : "—"],
            ["License", str(meta.data?.json.license) ?? "—"],
            ["Max file size", typeof meta.data?.json.max_file_bytes === "number" ? bytes(meta.data.json.max_file_bytes) : "—"],
            ["Metadata", <>
              <Cid value={datanet.metadata_cid} /> {meta.data && <Verdict ok={meta.data.checked.ok} />}
            </>],
            ["Owner", <Address value={datanet.owner} />],
            ["Treasury", <Address value={datanet.treasury} />],
            ["Contribution bond", <Amount wei={datanet.contribution_bond} />],
            ["Curators", datanet.curators?.length ? <>{datanet.curators.map((c) => <Address key={c} value={c} />).reduce<preact.ComponentChildren[]>((all, a, i) => (i ? [...all, ", ", a] : [a]), [])}</> : <span class="muted">the owner</span>],
            ["Created", <Time unix={datanet.created_at} />],
            ["Transaction", <Hash value={datanet.tx_hash} />],
          ]}
        />
      </Section>
      <Section title="Versions">
        <Table
          label="versions"
          rows={versions}
          empty="No version was published yet."
          columns={[
            { title: "Version", cell: (v) => <b>v{v.version}</b> },
            { title: "Merkle root", cell: (v) => <Hash value={v.merkle_root} /> },
            { title: "Manifest", cell: (v) => <Cid value={v.manifest_cid} /> },
            { title: "Contributions", numeric: true, cell: (v) => <span data-testid={`version-count-${v.version}`}>{v.contribution_count}</span> },
            { title: "Published", cell: (v) => <Time unix={v.published_at} /> },
            { title: "Block", numeric: true, cell: (v) => v.block_number },
          ]}
        />
      </Section>
      <Audits versions={versions} contributions={contributions} previews={previews} />
      <Section title="Contributions">
        <div class="table-wrap">
          {contributions.length === 0 ? (
            <p class="muted">No contribution yet.</p>
          ) : (
            <table aria-label="contributions">
              <thead>
                <tr>
                  <th>ID</th>
                  <th>Contributor</th>
                  <th>CID</th>
                  <th class="num">Size</th>
                  <th>Status</th>
                  <th>Curator</th>
                  <th>Contributed</th>
                  <th />
                </tr>
              </thead>
              <tbody>
                {contributions.map((c) => (
                  <tr key={c.id} class={c.id === selected ? "selected" : undefined} data-testid={`contribution-${c.id}`}>
                    <td>#{c.id}</td>
                    <td>
                      <Address value={c.contributor} />
                    </td>
                    <td>
                      <Cid value={c.cid} />
                    </td>
                    <td class="num">{bytes(c.size)}</td>
                    <td>
                      <Badge status={c.status} />
                    </td>
                    <td>{c.curator ? <Address value={c.curator} /> : <span class="muted">—</span>}</td>
                    <td>
                      <Time unix={c.created_at} />
                    </td>
                    <td>
                      <button class="secondary small-button" disabled={c.id === selected} onClick={() => setSelected(c.id)}>
                        Preview
                      </button>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </div>
        {chosen && (
          <div class="preview-of">
            <h3>
              Contribution #{chosen.id} <span class="muted small mono">{chosen.cid}</span>
            </h3>
            <ContentPreview
              key={chosen.cid}
              cid={chosen.cid}
              onChecked={(c) => setPreviews((m) => (m.get(chosen.cid) === c ? m : new Map(m).set(chosen.cid, c)))}
            />
          </div>
        )}
      </Section>
    </>
  );
}
