// How amounts, addresses and times read on the page.

import { formatUnits, parseUnits } from "viem";

export const OPEN_DECIMALS = 18;

/** `1234.5 OPEN` from wei (decimal string or bigint), at most `digits` decimals. */
export function open(wei: string | bigint, digits = 4): string {
  const text = formatUnits(BigInt(wei), OPEN_DECIMALS);
  const [whole, fraction = ""] = text.split(".");
  const cut = fraction.slice(0, digits).replace(/0+$/, "");
  const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return `${cut ? `${grouped}.${cut}` : grouped} OPEN`;
}

/** OPEN as a number, for charts only (never for money arithmetic). */
export function openNumber(wei: string | bigint): number {
  return Number(formatUnits(BigInt(wei), OPEN_DECIMALS));
}

/** Wei from what a person typed ("12.5"); a clear error for anything else. */
export function parseOpen(text: string): bigint {
  const trimmed = text.trim();
  if (!/^\d+(\.\d{1,18})?$/.test(trimmed)) {
    throw new Error(`"${text}" is not an amount of OPEN (digits, at most 18 decimals)`);
  }
  return parseUnits(trimmed, OPEN_DECIMALS);
}

export function shortHex(hex: string, keep = 6): string {
  return hex.length <= 2 + 2 * keep ? hex : `${hex.slice(0, 2 + keep)}…${hex.slice(-4)}`;
}

export function shortCid(cid: string): string {
  return cid.length <= 20 ? cid : `${cid.slice(0, 10)}…${cid.slice(-6)}`;
}

export function dateTime(unix: number | null | undefined): string {
  if (unix === null || unix === undefined) return "—";
  return new Date(unix * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

/** "2 d 3 h", "5 min 2 s": a duration in seconds for countdowns. */
export function duration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const parts: [number, string][] = [
    [Math.floor(s / 86400), "d"],
    [Math.floor((s % 86400) / 3600), "h"],
    [Math.floor((s % 3600) / 60), "min"],
    [s % 60, "s"],
  ];
  const shown = parts.filter(([n]) => n > 0).slice(0, 2);
  return shown.length ? shown.map(([n, u]) => `${n} ${u}`).join(" ") : "0 s";
}

export function bps(value: number): string {
  return `${(value / 100).toFixed(value % 100 ? 2 : 0)} %`;
}

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}
