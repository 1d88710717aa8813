// Charts as plain SVG (no library, nothing fetched): lines over time or steps, and bars.

export interface Series {
  name: string;
  points: { x: number; y: number }[];
}

const COLORS = ["#2563eb", "#d97706", "#059669", "#dc2626", "#7c3aed", "#0891b2"];
const W = 640;
const H = 220;
const PAD = { left: 56, right: 44, top: 12, bottom: 28 };

function ticks(min: number, max: number, count = 4): number[] {
  if (max === min) return [min];
  const step = (max - min) / count;
  return Array.from({ length: count + 1 }, (_, i) => min + i * step);
}

function label(value: number): string {
  if (Math.abs(value) >= 1000) return value.toFixed(0);
  if (Math.abs(value) >= 10) return value.toFixed(1);
  return value.toPrecision(3);
}

/** Lines of `series`; `time` labels the x axis as dates (x in unix seconds). */
export function LineChart({ series, title, time = false, yUnit = "" }: { series: Series[]; title: string; time?: boolean; yUnit?: string }) {
  const all = series.flatMap((s) => s.points);
  if (!all.length) return <p class="muted">No data for “{title}” yet.</p>;
  const xs = all.map((p) => p.x);
  const ys = all.map((p) => p.y);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = [Math.min(0, ...ys), Math.max(...ys) || 1];
  const sx = (x: number) => PAD.left + (x1 === x0 ? 0.5 : (x - x0) / (x1 - x0)) * (W - PAD.left - PAD.right);
  const sy = (y: number) => H - PAD.bottom - ((y - y0) / (y1 - y0 || 1)) * (H - PAD.top - PAD.bottom);
  const xLabel = (x: number) => (time ? new Date(x * 1000).toISOString().slice(5, 16).replace("T", " ") : label(x));
  return (
    <figure class="chart">
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={title}>
        {ticks(y0, y1).map((t) => (
          <g key={`y${t}`}>
            <line x1={PAD.left} x2={W - PAD.right} y1={sy(t)} y2={sy(t)} class="grid" />
            <text x={PAD.left - 6} y={sy(t) + 4} class="tick" text-anchor="end">
              {label(t)}
            </text>
          </g>
        ))}
        {ticks(x0, x1, 3).map((t) => (
          <text key={`x${t}`} x={sx(t)} y={H - 8} class="tick" text-anchor="middle">
            {xLabel(t)}
          </text>
        ))}
        {series.map((s, i) => {
          const pts = [...s.points].sort((a, b) => a.x - b.x);
          const color = COLORS[i % COLORS.length];
          return (
            <g key={s.name}>
              <polyline fill="none" stroke={color} stroke-width="2" points={pts.map((p) => `${sx(p.x)},${sy(p.y)}`).join(" ")} />
              {pts.length <= 40 && pts.map((p) => <circle key={p.x} cx={sx(p.x)} cy={sy(p.y)} r="3" fill={color} />)}
            </g>
          );
        })}
      </svg>
      <figcaption>
        <strong>{title}</strong>
        {yUnit && <span class="muted"> ({yUnit})</span>}
        {series.length > 1 &&
          series.map((s, i) => (
            <span key={s.name} class="legend">
              <i style={{ background: COLORS[i % COLORS.length] }} /> {s.name}
            </span>
          ))}
      </figcaption>
    </figure>
  );
}

/** Horizontal bars, largest first. */
export function BarChart({ bars, title, unit = "" }: { bars: { label: string; value: number; href?: string }[]; title: string; unit?: string }) {
  if (!bars.length) return <p class="muted">No data for “{title}” yet.</p>;
  const max = Math.max(...bars.map((b) => b.value)) || 1;
  const sorted = [...bars].sort((a, b) => b.value - a.value);
  return (
    <figure class="chart bars" aria-label={title}>
      {sorted.map((b, i) => (
        <div class="bar-row" key={b.label}>
          <span class="bar-label mono">{b.href ? <a href={b.href}>{b.label}</a> : b.label}</span>
          <span class="bar" style={{ width: `${(b.value / max) * 100}%`, background: COLORS[i % COLORS.length] }} />
          <span class="bar-value">
            {label(b.value)} {unit}
          </span>
        </div>
      ))}
      <figcaption>
        <strong>{title}</strong>
      </figcaption>
    </figure>
  );
}
