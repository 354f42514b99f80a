// Bar charts for the admin page, drawn as inline SVG with DOM calls: no library, nothing
// inline for the CSP to refuse (colours come from admin.css through class names).

const SVG = 'http://www.w3.org/2000/svg';
const WIDTH = 720;
const HEIGHT = 200;
const PAD = { left: 72, right: 8, top: 10, bottom: 24 };

function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text != null) node.textContent = text;
  return node;
}

/** The smallest 1, 2 or 5 × 10^n at or above `value`: round numbers on the axis. */
function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) {
    if (step * power >= value) return step * power;
  }
  return 10 * power;
}

/**
 * Two or more series of bars per day. `days`: ['2026-03-01', ...] in order; each series
 * {name, className, values} with a value (or null: unknown, no bar) per day. `format`
 * writes a value for the axis and the tooltips; `label` is what a screen reader hears.
 */
export function barChart({ days, series, format, label }) {
  const plotWidth = WIDTH - PAD.left - PAD.right;
  const plotHeight = HEIGHT - PAD.top - PAD.bottom;
  const known = series.flatMap((s) => s.values.filter((v) => v != null));
  const max = niceMax(Math.max(0, ...known));
  const root = svg('svg', {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: 'img', 'aria-label': label, class: 'chart-svg',
  });
  const y = (value) => PAD.top + plotHeight - (value / max) * plotHeight;

  for (const share of [0, 0.5, 1]) {
    const at = y(max * share);
    root.append(svg('line', {
      x1: PAD.left, x2: WIDTH - PAD.right, y1: at, y2: at, class: 'grid',
    }));
    root.append(svg('text', {
      x: PAD.left - 6, y: at + 4, 'text-anchor': 'end', class: 'axis',
    }, format(max * share)));
  }

  const slot = plotWidth / Math.max(days.length, 1);
  const barWidth = Math.max(1, (slot * 0.8) / series.length);
  days.forEach((day, i) => {
    series.forEach((s, j) => {
      const value = s.values[i];
      if (value == null || value <= 0) return;
      const top = y(value);
      const bar = svg('rect', {
        x: PAD.left + i * slot + slot * 0.1 + j * barWidth,
        y: top,
        width: barWidth,
        height: Math.max(PAD.top + plotHeight - top, 0.5),
        class: `bar ${s.className}`,
        'data-day': day,
        'data-series': s.className,
      });
      bar.append(svg('title', {}, `${day} · ${s.name}: ${format(value)}`));
      root.append(bar);
    });
  });

  // The first, middle and last days under the axis: enough to read the range by.
  const labelled = new Set([0, Math.floor((days.length - 1) / 2), days.length - 1]);
  for (const i of labelled) {
    if (i < 0 || i >= days.length) continue;
    const anchor = i === 0 ? 'start' : i === days.length - 1 ? 'end' : 'middle';
    const x = i === 0 ? PAD.left : i === days.length - 1 ? WIDTH - PAD.right
      : PAD.left + (i + 0.5) * slot;
    root.append(svg('text', {
      x, y: HEIGHT - 6, 'text-anchor': anchor, class: 'axis',
    }, days[i]));
  }
  return root;
}
