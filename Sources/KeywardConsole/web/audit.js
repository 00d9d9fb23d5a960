/**
 * The auditor's views: the audit log in chain order (filtered, paged, verified by the server,
 * exported as JSON lines) and the alerts with the events that led to each. Every detail in
 * these events may hold what a client sent, so all of it is shown as text.
 */
import {get, post, withQuery} from './api.js';
import {busy, errorLine, field, h, pill, replace, select, short, table, viewHeader, when} from './dom.js';

const PAGE = 200;
const EXPORT_PAGE = 1000;
const ALERT_LOOKBACK_S = 300;  // "its events": those of the alert's key in the five minutes before it

function eventColumns(broken) {
  return [
    ['Position', (e) => h('span', {class: 'mono'}, `#${e.seq}`, e.seq === broken ? h('strong', {class: 'broken-mark'}, ' ✗ broken') : null), 'nowrap'],
    ['Time', (e) => when(e.time), 'nowrap'],
    ['Actor', (e) => short(e.actor, 14)],
    ['Operation', (e) => [e.operation, e.purpose ? h('small', {class: 'muted'}, ` for ${e.purpose}`) : null]],
    ['Tenant', (e) => e.tenant || '—'],
    ['Key', (e) => (e.key ? h('span', {class: 'mono'}, e.key) : '—')],
    ['Record', (e) => short(e.record, 14)],
    ['Result', (e) => pill(e.result)],
    ['Detail', (e) => (e.detail ? h('span', {class: 'detail'}, e.detail) : '—'), 'wide'],
    ['Hash', (e) => short(e.hash, 8)],
  ];
}

/** Every event of a query, page after page (for export and alerts; the table pages by hand). */
async function everyEvent(query, signal) {
  const events = [];
  let after = query.after || 0;
  for (;;) {
    const page = await get(withQuery('/admin/v1/audit', {...query, after, limit: EXPORT_PAGE}), {signal});
    events.push(...page.data);
    if (page.data.length < EXPORT_PAGE) return events;
    after = page.last_seq;
  }
}

export async function auditLog(section, {signal}) {
  const inputs = {
    tenant: h('input', {id: 'audit-tenant', autocomplete: 'off'}),
    key: h('input', {id: 'audit-key', autocomplete: 'off'}),
    operation: h('input', {id: 'audit-operation', autocomplete: 'off', list: 'audit-operations'}),
    since: h('input', {id: 'audit-since', type: 'datetime-local', step: 1}),
  };
  const result = select([['', 'any'], 'ok', 'denied', ['error', 'error (any code)'], 'rate_limited', 'token_suspended'], {id: 'audit-result'});
  const operations = h('datalist', {id: 'audit-operations'});
  const apply = h('button', {type: 'submit', class: 'primary'}, 'Apply');
  const verify = h('button', {type: 'button', id: 'verify'}, 'Verify chain');
  const exportButton = h('button', {type: 'button'}, 'Export JSON lines');
  const latest = h('button', {type: 'button'}, 'Jump to the latest');
  const more = h('button', {type: 'button', hidden: true}, 'Load more');
  const verdict = h('div', {id: 'verify-result', 'aria-live': 'polite'});
  const notice = h('div', {class: 'status', 'aria-live': 'polite'});  // export and errors: the verdict stays
  const summary = h('p', {class: 'muted'});
  const rows = h('div', {});
  let events = [];
  let broken = null;  // the first position verification rejected
  let next = 0;  // the position to page on from

  const query = () => ({
    tenant: inputs.tenant.value.trim(), key: inputs.key.value.trim(), operation: inputs.operation.value.trim(),
    since: inputs.since.value ? Math.floor(new Date(inputs.since.value).getTime() / 1000) : '',
  });
  // The result filter is the console's own: the API filters by tenant, key, operation and time.
  const matches = (e) => !result.value || e.result === result.value || (result.value === 'error' && e.result.startsWith('error:'));
  const shown = () => events.filter(matches);

  function render(page) {
    const visible = shown();
    replace(operations, [...new Set(events.map((e) => e.operation))].sort().map((op) => h('option', {value: op})));
    replace(summary, `${visible.length} event(s) shown${result.value ? ` with result ${result.value}` : ''}`
      + (page ? `; the chain's head is at position ${page.head_seq}.` : '.'));
    replace(rows, table(eventColumns(broken), visible, {empty: 'No event matches.', dense: true,
      rowAttrs: (e) => ({'data-seq': e.seq, class: e.seq === broken ? 'broken' : null})}));
  }

  async function load(after, append = false) {
    const page = await get(withQuery('/admin/v1/audit', {...query(), after, limit: PAGE}), {signal});
    events = append ? events.concat(page.data) : page.data;
    next = page.last_seq;
    more.hidden = page.data.length < PAGE;
    render(page);
    return page;
  }

  const form = h('form', {class: 'card filters'},
    field('Tenant', inputs.tenant), field('Key', inputs.key), field('Operation', inputs.operation), operations,
    field('Result', result), field('Since', inputs.since), h('div', {class: 'actions'}, apply));
  const guard = (button, work) => { replace(notice); return busy(button, work).catch((e) => replace(notice, errorLine(e))); };
  form.addEventListener('submit', (event) => { event.preventDefault(); guard(apply, () => load(0)); });
  result.addEventListener('change', () => render());
  more.addEventListener('click', () => guard(more, () => load(next, true)));
  latest.addEventListener('click', () => guard(latest, async () => {
    const probe = await get(withQuery('/admin/v1/audit', {limit: 1}), {signal});
    await load(Math.max(0, probe.head_seq - PAGE));
  }));

  verify.addEventListener('click', () => guard(verify, async () => {
    replace(verdict, h('p', {class: 'muted'}, 'Verifying the whole chain…'));
    const answer = await post('/admin/v1/audit/verify');
    if (answer.intact) {
      broken = null;
      // Events past the last signed checkpoint are chained but not yet signed: cutting them off the
      // end would not be detected until the next checkpoint, so the verdict says where that is.
      const unsigned = answer.events - answer.signed_through;
      replace(verdict, h('p', {class: 'ok verdict'}, `Intact: ${answer.events} events, each linked to the one before; `
        + (answer.signed_through > 0 ? `signed through position ${answer.signed_through}` : 'no signed checkpoint yet')
        + (unsigned > 0 ? `; the last ${unsigned} not yet covered by a signed checkpoint.` : '.')));
      render();
      return;
    }
    broken = answer.position;
    const show = h('button', {type: 'button'}, `Show position ${broken}`);
    show.addEventListener('click', () => guard(show, async () => {
      for (const input of Object.values(inputs)) input.value = '';
      result.value = '';
      await load(Math.max(0, broken - 5));
      const row = rows.querySelector(`tr[data-seq="${broken}"]`);
      if (row) row.scrollIntoView({block: 'center'});
    }));
    replace(verdict, h('div', {class: 'error verdict', role: 'alert'},
      h('p', {}, h('strong', {}, `Broken at position ${broken}`), `: ${answer.reason}`),
      h('p', {}, 'Events from this position on cannot be trusted: the log was altered outside Keyward.'), show));
    render();
  }));

  exportButton.addEventListener('click', () => guard(exportButton, async () => {
    const all = (await everyEvent(query(), signal)).filter(matches);
    const blob = new Blob(all.map((e) => `${JSON.stringify(e)}\n`), {type: 'application/jsonl'});
    const url = URL.createObjectURL(blob);  // a blob: URL, not data:, so a large export is not copied into a string
    const link = h('a', {href: url, download: `keyward-audit-${new Date().toISOString().replace(/[:.]/g, '-')}.jsonl`, hidden: true});
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
    replace(notice, h('p', {class: 'ok'}, `Exported ${all.length} event(s).`));
  }));

  section.append(viewHeader('Audit log', h('div', {class: 'header-actions'}, verify, exportButton, latest)),
    h('p', {class: 'muted'}, 'Every event is chained to the one before by its hash; reading the log is logged too.'),
    verdict, notice, form, summary, rows, h('div', {class: 'actions'}, more));
  await load(0);
}

// MARK: alerts

export async function alerts(section, {signal}) {
  const list = h('div', {});
  section.append(viewHeader('Alerts'),
    h('p', {class: 'muted'}, 'Raised by unusual unwrap activity; each names its principal and key. "Its events" are the key\'s events in the five minutes before.'),
    list);
  const found = (await everyEvent({operation: 'alert'}, signal)).reverse();
  if (!found.length) {
    replace(list, h('p', {class: 'empty'}, 'No alert in the audit log.'));
    return;
  }
  replace(list, found.map((alert) => {
    const events = h('div', {});
    const toggle = h('button', {type: 'button', 'aria-expanded': 'false'}, 'Show its events');
    toggle.addEventListener('click', () => busy(toggle, async () => {
      if (toggle.getAttribute('aria-expanded') === 'true') {
        replace(events);
        toggle.setAttribute('aria-expanded', 'false');
        replace(toggle, 'Show its events');
        return;
      }
      const since = Math.floor(alert.time) - ALERT_LOOKBACK_S;
      const before = (await everyEvent(alert.key ? {key: alert.key, since} : {since}, signal))
        .filter((e) => e.seq < alert.seq && (alert.key || e.actor === alert.actor)).slice(-100);
      replace(events, table(eventColumns(null), before, {empty: 'No event of this key in the five minutes before.', dense: true,
        caption: `${before.length} event(s) before the alert`}));
      toggle.setAttribute('aria-expanded', 'true');
      replace(toggle, 'Hide its events');
    }).catch((e) => replace(events, errorLine(e))));
    return h('article', {class: 'card alert', 'data-seq': alert.seq},
      h('h2', {}, `Alert at position ${alert.seq} `, pill(alert.result)),
      h('dl', {class: 'facts'},
        h('dt', {}, 'Time'), h('dd', {}, when(alert.time)),
        h('dt', {}, 'Principal'), h('dd', {class: 'mono'}, alert.actor),
        h('dt', {}, 'Tenant'), h('dd', {}, alert.tenant || '—'),
        h('dt', {}, 'Key'), h('dd', {class: 'mono'}, alert.key || '—'),
        h('dt', {}, 'Detail'), h('dd', {class: 'detail'}, alert.detail || '—')),
      toggle, events);
  }));
}
