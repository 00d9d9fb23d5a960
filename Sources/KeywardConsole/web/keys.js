/**
 * The key-admin role's views: master keys and their life cycle (rotate, disable, enable,
 * schedule and cancel deletion, each confirmed in a dialog that says what it does to every tenant
 * on the key), re-keying a tenant, and the re-key jobs with their live progress.
 */
import {get, post, seg} from './api.js';
import {busy, describe, dialog, errorLine, field, h, pill, replace, select, short, table, viewHeader, when} from './dom.js';

/** What an action does to one tenant on the key; `days` for a scheduled deletion. */
const EFFECT = {
  rotate: () => 'new data keys use a new version; nothing is re-encrypted',
  disable: () => 'every request and read will fail',
  enable: () => 'requests and reads work again',
  'schedule-deletion': (days) => `every request and read will fail; after ${days} days the key and all data under it are gone for ever`,
  'cancel-deletion': () => 'the deletion is called off; the key stays disabled until it is enabled',
};

const ACTIONS = {
  enabled: [['rotate', 'Rotate…'], ['disable', 'Disable…'], ['schedule-deletion', 'Schedule deletion…']],
  disabled: [['enable', 'Enable…'], ['schedule-deletion', 'Schedule deletion…']],
  pending_deletion: [['cancel-deletion', 'Cancel deletion…']],
};

const CONFIRM = {rotate: 'Rotate key', disable: 'Disable key', enable: 'Enable key', 'cancel-deletion': 'Cancel deletion'};

const TITLE = {
  rotate: 'Rotate', disable: 'Disable', enable: 'Enable',
  'schedule-deletion': 'Schedule the deletion of', 'cancel-deletion': 'Cancel the deletion of',
};

function effects(key, action, days) {
  const lines = key.tenants && key.tenants.length
    ? key.tenants.map((tenant) => h('li', {}, h('strong', {}, `${tenant}: `), EFFECT[action](days)))
    : [h('li', {}, `no tenant is on this key; ${EFFECT[action](days)}`)];
  return h('ul', {class: 'effects'}, lines);
}

/** Asks for confirmation in a dialog naming the effect per tenant; null when cancelled. */
function confirmAction(key, action) {
  const danger = action === 'disable' || action === 'schedule-deletion';
  if (action !== 'schedule-deletion') {
    return dialog({title: `${TITLE[action]} ${key.key}?`, body: effects(key, action), danger, confirm: CONFIRM[action]})
      .then((yes) => (yes ? {} : null));
  }
  const days = h('input', {type: 'number', min: 7, max: 30, value: 30, required: true});
  const list = h('div', {}, effects(key, action, 30));
  days.addEventListener('input', () => replace(list, effects(key, action, days.value || '…')));
  return dialog({
    title: `${TITLE[action]} ${key.key}?`, danger, confirm: 'Schedule deletion',
    body: [field('Days before deletion (7 to 30)', days), list],
    collect: () => {
      const n = Number(days.value);
      if (!Number.isInteger(n) || n < 7 || n > 30) throw new Error('the waiting period is 7 to 30 days');
      return {days: n};
    },
  });
}

/** The key's state as the console names it: "pending-deletion" (the key stores' spelling) is pending_deletion. */
const stateOf = (key) => String(key.state || '').replace(/-/g, '_');

export async function keys(section, {navigate}) {
  const status = h('div', {class: 'status', 'aria-live': 'polite'});
  const list = h('div', {});
  const tenant = select([], {id: 'rekey-tenant'});
  const target = h('input', {id: 'rekey-key', list: 'rekey-keys', autocomplete: 'off', required: true});
  const known = h('datalist', {id: 'rekey-keys'});
  const start = h('button', {type: 'submit', class: 'primary'}, 'Start re-key…');
  let current = [];

  const rekey = h('form', {class: 'card form-grid'},
    h('h2', {}, 'Re-key a tenant'),
    h('p', {class: 'muted wide'}, 'Re-wraps every record\'s data key under the target key (headers only; bodies are not re-encrypted). '
      + 'After a rotation, re-key a tenant to its own key to move old records to the new version.'),
    field('Tenant', tenant), field('Target key', target), known, h('div', {class: 'actions'}, start));
  tenant.addEventListener('change', () => {
    const on = current.find((k) => (k.tenants || []).includes(tenant.value));
    if (on) target.value = on.key;
  });
  rekey.addEventListener('submit', (event) => {
    event.preventDefault();
    replace(status);
    busy(start, async () => {
      const from = current.find((k) => (k.tenants || []).includes(tenant.value));
      const yes = await dialog({
        title: `Re-key ${tenant.value}?`, confirm: 'Start re-key',
        body: h('ul', {class: 'effects'}, h('li', {}, h('strong', {}, `${tenant.value}: `),
          `new records use ${target.value} at once; existing records are re-wrapped from ${from ? from.key : 'its key'} `
          + 'in the background, and stay readable meanwhile')),
      });
      if (!yes) return;
      const job = await post(`/admin/v1/tenants/${seg(tenant.value)}/rekey`, {key: target.value.trim()});
      navigate(`#/jobs/${encodeURIComponent(job.job)}`);
    }).catch((e) => replace(status, errorLine(e)));
  });

  async function run(key, action, button) {
    replace(status);
    try {
      await busy(button, async () => {
        const body = await confirmAction(key, action);
        if (!body) return;
        const after = await post(`/admin/v1/keys/${seg(key.key)}/${action}`, action === 'schedule-deletion' ? body : undefined);
        replace(status, h('p', {class: 'ok'}, `${key.key}: ${stateOf(after).replace(/_/g, ' ')}`,
          after.versions ? `, ${after.versions} version(s)` : '', '.'));
        await load();
      });
    } catch (e) {
      replace(status, errorLine(e));
    }
  }

  async function load() {
    ({data: current} = await get('/admin/v1/keys'));
    const chosen = tenant.value;
    const tenants = [...new Set(current.flatMap((k) => k.tenants || []))].sort();
    replace(tenant, tenants.map((t) => h('option', {value: t}, t)));
    if (chosen && tenants.includes(chosen)) tenant.value = chosen;
    replace(known, current.map((k) => h('option', {value: k.key})));
    if (!target.value) tenant.dispatchEvent(new Event('change'));
    replace(list, table([
      ['Key', (k) => [h('span', {class: 'mono'}, k.key), h('small', {class: 'muted block'}, `${k.store} store`)]],
      ['State', (k) => [pill(stateOf(k)), k.store_state && k.store_state !== k.state ? h('small', {class: 'muted'}, ` store says ${k.store_state}`) : null,
        k.error ? h('small', {class: 'key-error'}, describe(k.error)) : null]],
      ['Versions', (k) => (k.versions ?? '—')],
      ['Tenants', (k) => ((k.tenants || []).join(', ') || '—')],
      ['Created', (k) => when(k.created_at), 'nowrap'],
      ['Deletion', (k) => (k.deletion_date ? when(k.deletion_date) : '—'), 'nowrap'],
      ['', (k) => h('div', {class: 'row-actions'}, (ACTIONS[stateOf(k)] || []).map(([action, label]) =>
        h('button', {type: 'button', class: action === 'disable' || action === 'schedule-deletion' ? 'danger' : null,
          'data-action': action, 'aria-label': `${label.replace('…', '')} ${k.key}`, onclick: (ev) => run(k, action, ev.currentTarget)}, label)))],
    ], current, {empty: 'No key yet: keys appear once a tenant uses them.', rowAttrs: (k) => ({'data-key': k.key})}));
  }

  section.append(viewHeader('Keys'), status, list, rekey);
  await load();
}

// MARK: jobs

function progress(job) {
  const total = Math.max(job.records_total || 0, 0);
  const done = job.status === 'done';
  return h('progress', {max: total || 1, value: total ? job.records_processed : done ? 1 : 0,
    'aria-label': `${job.id} progress`});
}

function rate(job) {
  if (job.status !== 'running' || !job.rate_per_second) return job.rate_per_second ? `${Math.round(job.rate_per_second)} records/s` : '—';
  const left = (job.records_total - job.records_processed) / job.rate_per_second;
  return `${Math.round(job.rate_per_second)} records/s, about ${Math.max(1, Math.round(left))} s left`;
}

/** The focused job, large: what the key admin watches after starting a re-key. */
function jobCard(job) {
  return h('div', {class: 'card job', 'data-job': job.id, 'data-status': job.status},
    h('h2', {}, `Re-key of ${job.tenant} `, pill(job.status)),
    h('p', {class: 'mono'}, `${job.from_key} → ${job.to_key}`),
    progress(job),
    h('dl', {class: 'facts'},
      h('dt', {}, 'Records'), h('dd', {class: 'job-records'}, `${job.records_processed} / ${job.records_total}`),
      h('dt', {}, 'Re-wrapped'), h('dd', {}, String(job.records_rewrapped)),
      h('dt', {}, 'Data keys unwrapped'), h('dd', {}, String(job.data_keys_unwrapped)),
      h('dt', {}, 'Rate'), h('dd', {}, rate(job)),
      h('dt', {}, 'Started'), h('dd', {}, when(job.created_at)),
      h('dt', {}, 'Updated'), h('dd', {}, when(job.updated_at))),
    job.error ? errorLine(typeof job.error === 'string' ? {message: job.error} : job.error) : null);
}

export async function jobs(section, {params, every, signal}) {
  const focus = params[0];
  const card = h('div', {});
  const list = h('div', {});
  section.append(viewHeader('Re-key jobs'), card, h('h2', {}, 'All jobs, newest first'), list);
  await every(1000, async () => {
    let all;
    let one;
    try {
      [all, one] = await Promise.all([
        get('/admin/v1/jobs', {signal}),
        focus ? get(`/admin/v1/jobs/${seg(focus)}`, {signal}) : null,
      ]);
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      replace(card, errorLine(e));
      return 5000;
    }
    if (one) replace(card, jobCard(one));
    replace(list, table([
      ['Job', (j) => h('a', {href: `#/jobs/${encodeURIComponent(j.id)}`, class: 'mono'}, j.id)],
      ['Tenant', (j) => j.tenant],
      ['From → to', (j) => h('span', {class: 'mono'}, `${j.from_key} → ${j.to_key}`)],
      ['Status', (j) => pill(j.status)],
      ['Progress', (j) => [progress(j), ` ${j.records_processed} / ${j.records_total}`]],
      ['Rate', rate],
      ['Updated', (j) => when(j.updated_at), 'nowrap'],
      ['Error', (j) => (j.error ? short(String(j.error.message || j.error), 40) : '—')],
    ], all.data, {empty: 'No re-key job yet: start one from the Keys view.',
      rowAttrs: (j) => ({'data-job-row': j.id, class: j.id === focus ? 'current' : null})}));
    const running = all.data.some((j) => j.status === 'running') || (one && one.status === 'running');
    return running ? 1000 : 10_000;  // fast while something moves
  });
}
