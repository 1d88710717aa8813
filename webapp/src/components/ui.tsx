// The small pieces every page is made of: links by id, address and CID, amounts, times,
// tables, loading and error states.

import type { ComponentChildren } from "preact";
import { useEffect, useState } from "preact/hooks";
import type { Async } from "../lib/async";
import { chainNow } from "../lib/deployment";
import { dateTime, duration, open, shortCid, shortHex } from "../lib/format";
import { href } from "../lib/router";

export function Address({ value, label }: { value: string; label?: string }) {
  return (
    <a class="mono" href={href("accounts", value.toLowerCase())} title={value}>
      {label ?? shortHex(value)}
    </a>
  );
}

/** A CID: links to its page, where the bytes are fetched and the CID recomputed. */
export function Cid({ value }: { value: string }) {
  if (!value) return <span class="muted">—</span>;
  return (
    <a class="mono cid" href={href("content", value)} title={`${value}: open to verify`}>
      {shortCid(value)}
    </a>
  );
}

export function Hash({ value }: { value: string }) {
  return (
    <span class="mono" title={value}>
      {shortHex(value, 8)}
    </span>
  );
}

export function Amount({ wei }: { wei: string | bigint }) {
  return <span class="amount">{open(wei)}</span>;
}

export function Time({ unix }: { unix: number | null | undefined }) {
  return <span class="time">{dateTime(unix)}</span>;
}

/** Time left until `unix` on the chain's clock, ticking every second. */
export function Countdown({ until, done = "over" }: { until: number; done?: string }) {
  const [now, setNow] = useState(chainNow());
  useEffect(() => {
    const timer = setInterval(() => setNow(chainNow()), 1000);
    return () => clearInterval(timer);
  }, []);
  const left = until - now;
  return <span class={left > 0 ? "countdown" : "countdown over"}>{left > 0 ? `${duration(left)} left` : done}</span>;
}

export function Badge({ status }: { status: string }) {
  return <span class={`badge badge-${status.toLowerCase()}`}>{status}</span>;
}

export function Section({ title, children, actions }: { title: string; children: ComponentChildren; actions?: ComponentChildren }) {
  return (
    <section class="card">
      <header class="card-head">
        <h2>{title}</h2>
        {actions}
      </header>
      {children}
    </section>
  );
}

export function Fields({ rows }: { rows: [string, ComponentChildren][] }) {
  return (
    <dl class="fields">
      {rows.map(([name, value]) => (
        <div key={name}>
          <dt>{name}</dt>
          <dd>{value}</dd>
        </div>
      ))}
    </dl>
  );
}

export interface Column<T> {
  title: string;
  cell: (row: T) => ComponentChildren;
  numeric?: boolean;
}

export function Table<T>({ rows, columns, empty = "Nothing yet.", label }: { rows: T[]; columns: Column<T>[]; empty?: string; label?: string }) {
  if (!rows.length) return <p class="muted">{empty}</p>;
  return (
    <div class="table-wrap">
      <table aria-label={label}>
        <thead>
          <tr>
            {columns.map((c) => (
              <th key={c.title} class={c.numeric ? "num" : undefined}>
                {c.title}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.map((row, i) => (
            <tr key={i}>
              {columns.map((c) => (
                <td key={c.title} class={c.numeric ? "num" : undefined}>
                  {c.cell(row)}
                </td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

export function ErrorBox({ error }: { error: Error | string }) {
  return (
    <p class="error" role="alert">
      {typeof error === "string" ? error : error.message}
    </p>
  );
}

export function Notice({ children }: { children: ComponentChildren }) {
  return (
    <p class="notice" role="status">
      {children}
    </p>
  );
}

/** Renders `data` once loaded; a loading line and the error otherwise. */
export function Loaded<T>({ state, children }: { state: Async<T>; children: (data: T) => ComponentChildren }) {
  if (state.error) return <ErrorBox error={state.error} />;
  if (state.data === undefined) return <p class="loading">Loading…</p>;
  return <>{children(state.data)}</>;
}

export function Link({ to, children }: { to: (string | number)[]; children: ComponentChildren }) {
  return <a href={href(...to)}>{children}</a>;
}
