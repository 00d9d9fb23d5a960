/**
 * The dashboard every role sees: the gateway's last hour, minute by minute, drawn as small SVG
 * charts by the console itself (no chart library: the CSP allows only the console's own files),
 * and the refusals of the hour by error code. Refreshed every 10 s while it is shown.
 */
import {get} from './api.js';
import {errorLine, h, replace, svg, table, viewHeader} from './dom.js';

const W = 480;
const H = 150;
const PAD = {left: 40, right: 8, top: 10, bottom: 22};

/** The smallest "round" number (1, 2 or 5 times a power of ten) at or above `n`. */
function niceMax(n) {
  if (!(n > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(n));
  return [1, 2, 5, 10].map((m) => m * power).find((m) => m >= n);
}

function clock(unixSeconds) {
  return new Date(unixSeconds * 1000).toLocaleTimeString(undefined, {hour: '2-digit', minute: '2-digit'});
}

function label(value, unit) {
  const rounded = value >= 10 || Number.isInteger(value) ? Math.round(value) : value.toFixed(1);
  return `${rounded}${unit}`;
}

/**
 * One chart. series: [{name, values (null = no data that minute), cls}]. `bars` draws columns
 * (counts of rare events read better so), otherwise lines broken where there is no data.
 */
function chart({title, series, start, unit = '', max, bars = false, summary}) {
  const count = Math.max(...series.map((s) => s.values.length), 1);
  const top = max ?? niceMax(Math.max(0, ...series.flatMap((s) => s.values.filter((v) => v !== null)).map(Number)));
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const x = (i) => PAD.left + (count === 1 ? plotW / 2 : (i * plotW) / (count - 1));
  const y = (v) => PAD.top + plotH - (Math.min(v, top) / top) * plotH;

  const grid = [0, top / 2, top].map((v) => [
    svg('line', {x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: 'grid'}),
    svg('text', {x: PAD.left - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'axis'}, label(v, unit)),
  ]);
  const ticks = [0, Math.floor((count - 1) / 2), count - 1].map((i, n) =>
    svg('text', {x: x(i), y: H - 6, 'text-anchor': ['start', 'middle', 'end'][n], class: 'axis'}, clock(start + i * 60)));

  const marks = series.map((s, index) => {
    if (bars) {
      const slot = plotW / count;
      const width = Math.max(1, slot - 1) / series.length;
      return s.values.map((v, i) => (v ? svg('rect', {
        x: PAD.left + i * slot + index * width, y: y(v), width, height: PAD.top + plotH - y(v), class: s.cls,
      }) : null));
    }
    // Runs of minutes with data; a lone minute is a dot so that it stays visible.
    const runs = [];
    let run = [];
    s.values.forEach((v, i) => {
      if (v === null || v === undefined) {
        if (run.length) runs.push(run);
        run = [];
      } else run.push([x(i), y(Number(v))]);
    });
    if (run.length) runs.push(run);
    return runs.map((points) => (points.length === 1
      ? svg('circle', {cx: points[0][0], cy: points[0][1], r: 2.5, class: s.cls})
      : svg('polyline', {points: points.map((p) => p.join(',')).join(' '), class: ['line', s.cls]})));
  });

  return h('figure', {class: 'chart'},
    h('figcaption', {}, h('strong', {}, title), h('span', {class: 'muted'}, summary)),
    svg('svg', {viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `${title}: ${summary}`}, grid, ticks, marks),
    series.length > 1 ? h('ul', {class: 'legend'}, series.map((s) => h('li', {class: s.cls}, s.name))) : null);
}

const total = (values) => (values || []).reduce((sum, v) => sum + (v || 0), 0);

function charts(d) {
  const hits = d.cache_hits || [];
  const misses = d.cache_misses || [];
  const ratio = hits.map((hit, i) => {
    const lookups = (hit || 0) + (misses[i] || 0);
    return lookups ? (100 * (hit || 0)) / lookups : null;  // no lookup that minute: no point
  });
  const hourHits = total(hits);
  const hourLookups = hourHits + total(misses);
  const latency = (d.keystore_ms || []).filter((v) => v !== null);
  const worst = latency.length ? Math.max(...latency) : null;
  const start = d.start;
  return [
    chart({title: 'Requests and refusals', start, summary: `${total(d.requests)} requests, ${total(d.refusals)} refused`,
      series: [{name: 'requests', values: d.requests || [], cls: 's-requests'},
        {name: 'refusals', values: d.refusals || [], cls: 's-refusals'}]}),
    chart({title: 'Data-key unwraps', start, summary: `${total(d.unwraps)} in the hour`,
      series: [{name: 'unwraps', values: d.unwraps || [], cls: 's-unwraps'}]}),
    chart({title: 'Data-key cache hit ratio', start, unit: '%', max: 100,
      summary: hourLookups ? `${Math.round((100 * hourHits) / hourLookups)} % of ${hourLookups} lookups` : 'no lookups',
      series: [{name: 'hit ratio', values: ratio, cls: 's-cache'}]}),
    chart({title: 'Key-store latency', start, unit: ' ms',
      summary: worst === null ? 'no calls' : `${total(d.keystore_calls)} calls, worst minute ${label(worst, ' ms')} mean`,
      series: [{name: 'mean latency', values: d.keystore_ms || [], cls: 's-latency'}]}),
    chart({title: 'Alerts', start, bars: true, summary: `${total(d.alerts)} in the hour`,
      series: [{name: 'alerts', values: d.alerts || [], cls: 's-alerts'}]}),
  ];
}

export async function dashboard(section, {every, signal}) {
  const updated = h('span', {class: 'muted'});
  const body = h('div', {});
  section.append(viewHeader('Dashboard', updated), body);
  await every(10_000, async () => {
    if (document.hidden) return true;  // nobody is looking: ask again later
    let d;
    try {
      d = await get('/admin/v1/dashboard', {signal});
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      replace(body, errorLine(e));
      return true;
    }
    const refusals = Object.entries(d.refusals_by_code || {}).sort((a, b) => b[1] - a[1]);
    replace(body,
      h('div', {class: 'charts'}, charts(d)),
      h('h2', {}, 'Refusals by code, last hour'),
      table([['Code', ([code]) => h('code', {}, code)], ['Refusals', ([, n]) => String(n)]], refusals,
        {empty: 'No request was refused in the last hour.'}));
    replace(updated, `Last hour, per minute · updated ${new Date().toLocaleTimeString()}`);
    return true;
  });
}
