// The OpenLedger API (same origin: the API process serves this page), typed by what the page
// reads. Amounts are OPEN wei as decimal strings; times are unix seconds.

export const API = "/api/v1";

export class APIError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** The API's error text (`{"reason": ...}`, `{"detail": ...}` or `{"error": {"message": ...}}`), else the status. */
async function errorOf(response: Response): Promise<APIError> {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    const detail = body?.detail ?? body?.reason ?? body?.error?.message ?? body?.message;
    if (typeof detail === "string") message = detail;
    else if (detail !== undefined) message = JSON.stringify(detail);
  } catch {
    /* not JSON: keep the status line */
  }
  return new APIError(response.status, message);
}

export async function getJSON<T>(path: string, init?: RequestInit): Promise<T> {
  const response = await fetch(API + path, { headers: { accept: "application/json" }, ...init });
  if (!response.ok) throw await errorOf(response);
  return (await response.json()) as T;
}

export async function postJSON<T>(path: string, body: unknown): Promise<T> {
  const response = await fetch(API + path, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw await errorOf(response);
  return (await response.json()) as T;
}

export async function postForm<T>(path: string, form: FormData): Promise<T> {
  const response = await fetch(API + path, { method: "POST", body: form });
  if (!response.ok) throw await errorOf(response);
  return (await response.json()) as T;
}

/** The verified bytes of `cid` from the API's content store. */
export async function getContent(cid: string): Promise<Uint8Array> {
  const response = await fetch(`${API}/content/${encodeURIComponent(cid)}`);
  if (!response.ok) throw await errorOf(response);
  return new Uint8Array(await response.arrayBuffer());
}

/** Every item of a paged list (the API caps a page at `limit`). */
export async function getAll<T>(path: string, limit = 200): Promise<T[]> {
  const items: T[] = [];
  const join = path.includes("?") ? "&" : "?";
  for (let offset = 0; ; offset += limit) {
    const page = await getJSON<Page<T>>(`${path}${join}limit=${limit}&offset=${offset}`);
    items.push(...page.items);
    if (items.length >= page.total || page.items.length === 0) return items;
  }
}

export type Wei = string;

export interface Page<T> {
  items: T[];
  total: number;
  limit: number;
  offset: number;
}

export interface Status {
  chain_id: number | null;
  contracts: Record<string, string>;
  block: number | null;
  block_timestamp: number | null;
  events: number;
  rpc_url: string | null;
}

export interface Datanet {
  id: number;
  owner: string;
  metadata_cid: string;
  contribution_bond: Wei;
  min_approved: number;
  treasury: string;
  contribution_count: number;
  approved_count: number;
  rejected_count: number;
  pending_count: number;
  version_count: number;
  block_number: number;
  created_at: number | null;
  tx_hash: string;
  curators?: string[];
}

export interface Contribution {
  id: number;
  datanet_id: number;
  contributor: string;
  cid: string;
  size: number;
  bond: Wei;
  status: "pending" | "approved" | "rejected" | "withdrawn";
  curator: string | null;
  block_number: number;
  created_at: number | null;
  reviewed_at: number | null;
  withdrawn_at: number | null;
  tx_hash: string;
}

export interface UploadResult {
  datanet_id: number;
  cid: string;
  size: number;
  records: number;
  pinned: boolean;
  contribution_id: number | null;
}

export interface Pricing {
  per_request: Wei;
  per_token: Wei;
}

export interface Split {
  developer: number;
  contributors: number;
  node: number;
  protocol: number;
}

export interface Model {
  id: number;
  developer: string;
  metadata_cid: string;
  base_model_cid: string;
  attributor: string;
  status: string;
  version_count: number;
  pricing: Pricing;
  split: Split;
}

export interface NodeInfo {
  address: string;
  bonded: Wei;
  unbonding: Wei;
  unbonding_unlock_at: number;
  slashed: Wei;
  endpoint: string;
  held_until: number;
  open_disputes: number;
  active: boolean;
}

export interface Channel {
  payer: string;
  node: string;
  balance: Wei;
  deposited: Wei;
  spent: Wei;
  withdrawn: Wei;
  withdraw_delay: number;
  pending_withdrawal: Wei;
  withdrawal_unlock_at: number;
}

export interface Redemption {
  tx_hash: string;
  log_index: number;
  payer: string;
  node: string;
  model_id: number;
  cumulative_amount: Wei;
  paid: Wei;
  shortfall: Wei;
  usage_proof_id: number | null;
  block_number: number;
  redeemed_at: number | null;
}

export interface Epoch {
  id: number;
  model_id: number;
  poster: string;
  merkle_root: string;
  total: Wei;
  claimed: Wei;
  report_cid: string;
  challenge_ends_at: number;
  claim_ends_at: number | null;
  status: string;
  claimable: boolean;
  challenger: string | null;
}

export interface ClaimEntry {
  epoch_id: number;
  model_id: number;
  index: number;
  account: string;
  amount: Wei;
  proof: string[];
  merkle_root: string;
  claimed: boolean;
  claimable: boolean;
}

export interface ClaimablePage extends Page<ClaimEntry> {
  unavailable_epochs: number[];
}

export interface EarningEntry {
  epoch_id: number;
  model_id: number;
  status: string;
  amount: Wei;
  claimed: boolean;
  contributions: { datanet_id: number; contribution_id: number; amount: Wei }[];
}

export interface Earnings {
  account: string;
  items: EarningEntry[];
  total_earned: Wei;
  total_claimed: Wei;
  unavailable_epochs: number[];
}

// Explorer pages (appended): the API's answers they read beyond the types above.

export interface RevenuePoint {
  model_id: number;
  bucket_start: number;
  paid: Wei;
  redemptions: number;
  inferences: number | null;
}

/** An epoch as the explorer lists it (GET /attribution/epochs). */
export interface EpochRow extends Epoch {
  swept: Wei | null;
  block_number: number;
  posted_at: number | null;
  tx_hash: string;
}

export interface ModelRow extends Model {
  scheduled_split: (Split & { effective_at: number }) | null;
  block_number: number;
  created_at: number | null;
  tx_hash: string;
}

export interface DatanetVersion {
  datanet_id: number;
  version: number;
  merkle_root: string;
  contribution_count: number;
  manifest_cid: string;
  block_number: number;
  published_at: number | null;
  tx_hash: string;
}

export interface ModelVersion {
  model_id: number;
  version: number;
  adapter_cid: string;
  training_manifest_cid: string;
  datanet_id: number;
  datanet_version: number;
  block_number: number;
  published_at: number | null;
  tx_hash: string;
}

export interface ModelLineage {
  model: ModelRow;
  version: ModelVersion;
  datanet_version: DatanetVersion | null;
  metadata_cid: string;
  evaluation: { report_cid: string; method: string | null; metrics: Record<string, number> } | null;
  loss_curve: { cid: string | null; points: { step: number; loss: number }[] | null; plot_cid: string | null } | null;
  attribution_index_cid: string | null;
  notes: string[];
}

export interface SkippedVoucher {
  tx_hash: string;
  log_index: number;
  payer: string;
  node: string;
  model_id: number;
  index: number;
  reason: string;
  usage_proof_id: number | null;
  block_number: number;
  skipped_at: number | null;
}

export interface UsageProof {
  id: number;
  node: string;
  receipts_root: string;
  receipt_count: number;
  receipts_cid: string;
  amount: Wei;
  block_number: number;
  recorded_at: number | null;
  tx_hash: string;
}

export interface PaymentSplit {
  model_id: number;
  node: string;
  developer: string;
  amount: Wei;
  node_share: Wei;
  developer_share: Wei;
  contributors_share: Wei;
  protocol_share: Wei;
}

export interface UsageProofDetail extends UsageProof {
  redemptions: Redemption[];
  skipped: SkippedVoucher[];
  splits: PaymentSplit[];
}

export interface ClaimRow {
  epoch_id: number;
  index: number;
  account: string;
  amount: Wei;
  block_number: number;
  claimed_at: number | null;
  tx_hash: string;
}

export interface ContributorTotals {
  account: string;
  allocated: Wei;
  claimed: Wei;
  claimable: Wei;
}

export interface Pool {
  model_id: number;
  funded: Wei;
  unallocated: Wei;
  claimed: Wei;
}

export interface ChannelRow extends Channel {
  withdrawal_lapses_at: number;
  withdrawal_status: string;
  block_number: number;
  opened_at: number | null;
  tx_hash: string;
}

export interface SessionKey {
  payer: string;
  node: string;
  signer: string;
  expiry: number;
  allowance: Wei;
  valid_until: number;
  revoked: boolean;
  revoked_at: number | null;
  live: boolean;
  block_number: number;
  authorized_at: number | null;
}

export interface PayerAccount {
  payer: string;
  channel_count: number;
  balance: Wei;
  deposited: Wei;
  spent: Wei;
  withdrawn: Wei;
  pending_withdrawal: Wei;
}

export interface PayerAccountDetail extends PayerAccount {
  channels: (ChannelRow & { session_keys: SessionKey[] })[];
}
