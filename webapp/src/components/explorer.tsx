// Pieces the explorer's pages share: headline numbers, verdict badges, verified content
// previews (bytes fetched by CID and the CID recomputed here), and small sums over wei.

import type { ComponentChildren } from "preact";
import { APIError, getContent } from "../lib/api";
import { useAsync } from "../lib/async";
import { computeCid } from "../lib/cid";
import { bytes as formatBytes } from "../lib/format";
import { ErrorBox } from "./ui";

/** One headline number; `testid` lets the browser tests compare it with the API. */
export function Stat({ label, value, testid, sub }: { label: string; value: ComponentChildren; testid?: string; sub?: ComponentChildren }) {
  return (
    <div class="stat">
      <span class="stat-label">{label}</span>
      <b data-testid={testid}>{value}</b>
      {sub && <span class="stat-sub">{sub}</span>}
    </div>
  );
}

export function PageHead({ kicker, title, children }: { kicker: string; title: ComponentChildren; children?: ComponentChildren }) {
  return (
    <div class="page-head">
      <span class="kicker">{kicker}</span>
      <h1>{title}</h1>
      {children && <div class="page-sub">{children}</div>}
    </div>
  );
}

/** A verified / mismatch badge (classes badge-verified and badge-mismatch). */
export function Verdict({ ok, testid, yes = "verified", no = "mismatch", title }: { ok: boolean; testid?: string; yes?: string; no?: string; title?: string }) {
  return (
    <span class={`badge ${ok ? "badge-verified" : "badge-mismatch"}`} data-testid={testid} title={title}>
      {ok ? `✓ ${yes}` : `✗ ${no}`}
    </span>
  );
}

export const isNotFound = (error: unknown): boolean => error instanceof APIError && error.status === 404;

/** Text of `data` when it decodes as UTF-8 (at most `max` bytes of it), else null. */
export function textOf(data: Uint8Array, max: number): string | null {
  const head = data.subarray(0, max);
  try {
    // A cut in the middle of a multi-byte character is not a reason to call it binary.
    const text = new TextDecoder("utf-8", { fatal: true }).decode(head, { stream: data.length > max });
    return /[\u0000-\u0008\u000e-\u001f]/.test(text) ? null : text;
  } catch {
    return null;
  }
}

export interface Checked {
  data: Uint8Array;
  computed: string;
  ok: boolean;
}

/** The bytes the API serves for `cid` and the CID recomputed from them in this page. */
export async function fetchChecked(cid: string): Promise<Checked> {
  const data = await getContent(cid);
  const computed = computeCid(data);
  return { data, computed, ok: computed === cid };
}

/** JSON of verified bytes; an error that names the CID when they are not JSON. */
export function jsonOf<T>(checked: Checked, cid: string): T {
  try {
    return JSON.parse(new TextDecoder().decode(checked.data)) as T;
  } catch {
    throw new Error(`the content ${cid} is not JSON`);
  }
}

/** The first `max` bytes of `cid` as text with its verdict, for previews of contributions. */
export function ContentPreview({ cid, max = 4096, onChecked }: { cid: string; max?: number; onChecked?: (c: Checked) => void }) {
  const state = useAsync(async () => {
    const checked = await fetchChecked(cid);
    onChecked?.(checked);
    return checked;
  }, [cid]);
  if (state.error) return <ErrorBox error={state.error} />;
  if (!state.data) return <p class="loading">Fetching {cid}…</p>;
  const { data, computed, ok } = state.data;
  const text = textOf(data, max);
  return (
    <div class="preview-box">
      <div class="preview-meta">
        <Verdict ok={ok} testid="preview-verdict" title={`recomputed ${computed}`} />
        <span class="muted">
          {formatBytes(data.length)}
          {data.length > max && text !== null ? `, first ${formatBytes(max)} shown` : ""}
        </span>
        <a href={`#/content/${encodeURIComponent(cid)}`}>open content page</a>
      </div>
      {text === null ? <p class="muted">binary, {data.length} bytes</p> : <pre class="preview">{text}</pre>}
    </div>
  );
}

export function sumWei(values: (string | bigint)[]): bigint {
  return values.reduce<bigint>((n, v) => n + BigInt(v), 0n);
}

/** Rows sorted newest first by a block number. */
export function newestFirst<T extends { block_number: number }>(rows: T[]): T[] {
  return [...rows].sort((a, b) => b.block_number - a.block_number);
}

const metadataCache = new Map<string, Promise<Record<string, unknown> | null>>();

/** The JSON a metadata CID names (cached for the page's life); null when it cannot be read,
 * so a missing file never breaks a list, and the page that needs it shows the error itself. */
export function metadataOf(cid: string): Promise<Record<string, unknown> | null> {
  let found = metadataCache.get(cid);
  if (!found) {
    found = fetchChecked(cid).then(
      (checked) => (checked.ok ? (jsonOf<Record<string, unknown>>(checked, cid) ?? null) : null),
      () => null,
    ).catch(() => null);
    metadataCache.set(cid, found);
  }
  return found;
}

export const str = (value: unknown): string | undefined => (typeof value === "string" && value ? value : undefined);
