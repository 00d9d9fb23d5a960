/**
 * The admin role's views: tenants (and their settings and provider keys), tokens (issued, shown
 * once, suspended, deleted), key policies (edited as JSON, checked here before they are sent)
 * and the configured upstreams (read only).
 */
import {api, get, post, seg} from './api.js';
import {busy, dialog, errorLine, field, h, pill, replace, select, table, viewHeader, when} from './dom.js';

const TENANT_NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;
const STORE = [['always', 'always'], ['on-request', 'on request'], ['never', 'never']];
const ENCRYPTED = [['allowed', 'allowed'], ['required', 'required']];
const ROLES = [['app', 'app (one tenant)'], ['admin', 'admin'], ['key-admin', 'key-admin'], ['auditor', 'auditor']];

/** A status line that shows either a done message or an error. */
function statusLine() {
  const el = h('div', {class: 'status', 'aria-live': 'polite'});
  return {
    el,
    ok: (text) => replace(el, h('p', {class: 'ok'}, text)),
    fail: (e) => replace(el, errorLine(e)),
    clear: () => replace(el),
  };
}

/** Runs an action from a button: busy meanwhile, its error on the status line. */
async function act(button, status, work) {
  status.clear();
  try {
    await busy(button, work);
  } catch (e) {
    status.fail(e);
  }
}

function limits(rateLimits) {
  const parts = Object.entries(rateLimits || {}).map(([name, n]) => `${name.replace(/_/g, ' ')}: ${n}`);
  return parts.length ? parts.join(', ') : 'defaults';
}

// MARK: tenants

export async function tenants(section) {
  const status = statusLine();
  const list = h('div', {});
  const upstreamNames = get('/admin/v1/upstreams').then((u) => u.data.map((x) => x.name), () => []);

  const name = h('input', {id: 'tenant-name', required: true, pattern: TENANT_NAME.source, maxlength: 63, autocomplete: 'off'});
  const key = h('input', {id: 'tenant-key', placeholder: 'a new local key', autocomplete: 'off'});
  const store = select(STORE, {id: 'tenant-store', value: 'always'});
  const retention = h('input', {id: 'tenant-retention', type: 'number', min: 0, placeholder: '30'});
  const encrypted = select(ENCRYPTED, {id: 'tenant-encrypted'});
  const create = h('button', {type: 'submit', class: 'primary'}, 'Create tenant');
  const form = h('form', {class: 'card form-grid'},
    h('h2', {}, 'New tenant'),
    field('Name', name, 'lower-case letters, digits, - and _'),
    field('Master key', key, 'e.g. aws-kms:arn:…; empty: Keyward makes local:NAME'),
    field('Store exchanges', store), field('Retention (days)', retention), field('Encrypted requests', encrypted),
    h('div', {class: 'actions'}, create));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    act(create, status, async () => {
      const body = {name: name.value.trim(), store: store.value, encrypted_requests: encrypted.value};
      if (!TENANT_NAME.test(body.name)) throw new Error('a tenant name is 1 to 63 of a-z, 0-9, - and _, starting with a letter or digit');
      if (key.value.trim()) body.key = key.value.trim();
      if (retention.value !== '') body.retention_days = Number(retention.value);
      const tenant = await api('POST', '/admin/v1/tenants', body);
      form.reset();
      status.ok(`Tenant ${tenant.name} created on key ${tenant.key}.`);
      await load();
    });
  });

  async function settings(tenant) {
    const s = select(STORE, {value: tenant.store});
    const r = h('input', {type: 'number', min: 0, max: 36500, required: true, value: tenant.retention_days});
    const e = select(ENCRYPTED, {value: tenant.encrypted_requests});
    const change = await dialog({
      title: `Settings of ${tenant.name}`, confirm: 'Save',
      body: [field('Store exchanges', s), field('Retention (days)', r, '0 keeps records for ever'), field('Encrypted requests', e)],
      collect: () => {
        // An empty field is not 0: 0 means "keep for ever", the opposite of what clearing it suggests.
        const days = r.value.trim() === '' ? NaN : Number(r.value);
        if (!Number.isInteger(days) || days < 0 || days > 36500) throw new Error('retention is a whole number of days from 0 (keep for ever) to 36500');
        return {store: s.value, retention_days: days, encrypted_requests: e.value};
      },
    });
    if (!change) return;
    await api('PATCH', `/admin/v1/tenants/${seg(tenant.name)}`, change);
    status.ok(`Settings of ${tenant.name} saved.`);
    await load();
  }

  async function providerKey(tenant) {
    const upstream = select(await upstreamNames);
    const secret = h('input', {type: 'password', autocomplete: 'off'});
    const answer = await dialog({
      title: `Provider key of ${tenant.name}`, confirm: 'Store key',
      body: [h('p', {}, 'Stored encrypted under the tenant\'s key and never shown back; requests of this tenant to the upstream use it.'),
        field('Upstream', upstream), field('API key', secret)],
      collect: () => {
        if (!secret.value) throw new Error('enter the API key');
        return {upstream: upstream.value, api_key: secret.value};
      },
    });
    secret.value = '';  // the dialog is gone; do not keep the secret in a detached input either
    if (!answer) return;
    await api('PUT', `/admin/v1/tenants/${seg(tenant.name)}/provider-keys/${seg(answer.upstream)}`, {api_key: answer.api_key});
    status.ok(`Provider key of ${tenant.name} for ${answer.upstream} stored.`);
  }

  async function load() {
    const {data} = await get('/admin/v1/tenants');
    replace(list, table([
      ['Name', (t) => h('strong', {}, t.name)],
      ['Master key', (t) => h('a', {href: `#/policies/${encodeURIComponent(t.key)}`, title: 'Edit the key\'s policy', class: 'mono'}, t.key)],
      ['Store', (t) => t.store],
      ['Retention', (t) => (t.retention_days === 0 ? 'kept for ever' : `${t.retention_days} days`)],
      ['Encrypted requests', (t) => t.encrypted_requests],
      ['Rate limits', (t) => limits(t.rate_limits)],
      ['Created', (t) => when(t.created_at), 'nowrap'],
      ['', (t) => h('div', {class: 'row-actions'},
        h('button', {type: 'button', 'aria-label': `Settings of ${t.name}`, onclick: (ev) => act(ev.currentTarget, status, () => settings(t))}, 'Settings…'),
        h('button', {type: 'button', 'aria-label': `Provider key of ${t.name}`, onclick: (ev) => act(ev.currentTarget, status, () => providerKey(t))}, 'Provider key…'))],
    ], data, {empty: 'No tenant yet: create the first one above.', rowAttrs: (t) => ({'data-tenant': t.name})}));
  }

  section.append(viewHeader('Tenants'), form, status.el, h('h2', {}, 'All tenants'), list);
  await load();
}

// MARK: tokens

export async function tokens(section, {session}) {
  const status = statusLine();
  const once = h('div', {});
  const list = h('div', {});
  const role = select(ROLES, {id: 'token-role'});
  const tenant = select([], {id: 'token-tenant'});
  const issue = h('button', {type: 'submit', class: 'primary'}, 'Issue token');
  const syncTenant = () => { tenant.disabled = role.value !== 'app'; };
  role.addEventListener('change', syncTenant);
  const form = h('form', {class: 'card form-grid'},
    h('h2', {}, 'Issue a token'), field('Role', role), field('Tenant', tenant, 'app tokens only'),
    h('div', {class: 'actions'}, issue));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    act(issue, status, async () => {
      const body = {role: role.value};
      if (role.value === 'app') {
        if (!tenant.value) throw new Error('an app token needs a tenant: create one first');
        body.tenant = tenant.value;
      }
      showOnce(await post('/admin/v1/tokens', body));
      await load();
    });
  });

  // The token's value exists only in this answer: shown once, with a copy button, until dismissed.
  function showOnce(created) {
    const value = h('code', {id: 'new-token', class: 'secret'}, created.token);
    const copied = h('span', {class: 'muted', 'aria-live': 'polite'});
    const copy = h('button', {type: 'button', class: 'primary'}, 'Copy');
    copy.addEventListener('click', async () => {
      try {
        await navigator.clipboard.writeText(created.token);
        replace(copied, 'Copied.');
      } catch {
        getSelection().selectAllChildren(value);  // no clipboard access: select it for the keyboard
        replace(copied, 'Selected: copy it with your keyboard.');
      }
    });
    const done = h('button', {type: 'button', onclick: () => replace(once)}, 'Done');
    replace(once, h('div', {class: 'card once'},
      h('h2', {}, `New ${created.role} token ${created.id}${created.tenant ? ` for ${created.tenant}` : ''}`),
      h('p', {}, value),
      h('p', {class: 'warning'}, 'Copy it now: it will not be shown again. Keyward keeps only its hash.'),
      h('div', {class: 'actions'}, copy, done, copied)));
    copy.focus();
  }

  async function change(t, action) {
    if (action === 'delete') {
      const yes = await dialog({title: `Delete token ${t.id}?`, confirm: 'Delete token', danger: true,
        body: h('p', {}, `${t.id} (${t.role}${t.tenant ? `, ${t.tenant}` : ''}): every request with it is refused from now on. This cannot be undone.`)});
      if (!yes) return;
      await api('DELETE', `/admin/v1/tokens/${seg(t.id)}`);
    } else {
      await post(`/admin/v1/tokens/${seg(t.id)}/${action}`);
    }
    status.ok(`Token ${t.id} ${action === 'delete' ? 'deleted' : action === 'suspend' ? 'suspended' : 'resumed'}.`);
    await load();
  }

  async function load() {
    const [{data}, tenantList] = await Promise.all([get('/admin/v1/tokens'), get('/admin/v1/tenants')]);
    const chosen = tenant.value;
    replace(tenant, tenantList.data.map((t) => h('option', {value: t.name}, t.name)));
    if (chosen) tenant.value = chosen;
    syncTenant();
    replace(list, table([
      ['Id', (t) => h('span', {class: 'mono'}, t.id, t.id === session.token_id ? ' (this session)' : '')],
      ['Role', (t) => t.role],
      ['Tenant', (t) => t.tenant || '—'],
      ['State', (t) => pill(t.suspended ? 'suspended' : 'active')],
      ['Rate limits', (t) => (t.role === 'app' ? limits(t.rate_limits) : '—')],
      ['Created', (t) => when(t.created_at), 'nowrap'],
      ['', (t) => (t.id === session.token_id ? h('span', {class: 'muted'}, 'signed in with it') : h('div', {class: 'row-actions'},
        h('button', {type: 'button', 'aria-label': `${t.suspended ? 'Resume' : 'Suspend'} ${t.id}`,
          onclick: (ev) => act(ev.currentTarget, status, () => change(t, t.suspended ? 'resume' : 'suspend'))}, t.suspended ? 'Resume' : 'Suspend'),
        h('button', {type: 'button', class: 'danger', 'aria-label': `Delete ${t.id}`,
          onclick: (ev) => act(ev.currentTarget, status, () => change(t, 'delete'))}, 'Delete…')))],
    ], data, {rowAttrs: (t) => ({'data-token': t.id})}));
  }

  section.append(viewHeader('Tokens'), form, once, status.el, h('h2', {}, 'All tokens'), list);
  await load();
}

// MARK: policies

const PURPOSES = ['inference', 'retrieval', 'export'];
const PRINCIPAL = /^(token:tok_[A-Za-z0-9_-]+|tenant:[a-z0-9][a-z0-9_-]{0,62})$/;

/** The policy in `text`, checked as the server will; throws {code, message} on the first fault. */
export function validatePolicy(text) {
  const fail = (message) => { throw {code: 'invalid_policy', message}; };
  let policy;
  try {
    policy = JSON.parse(text);
  } catch (e) {
    fail(`not JSON: ${e.message}`);
  }
  if (!policy || typeof policy !== 'object' || Array.isArray(policy) || !Array.isArray(policy.grants)) {
    fail('a policy is an object with a "grants" array');
  }
  const extra = Object.keys(policy).filter((k) => k !== 'grants');
  if (extra.length) fail(`unknown field ${JSON.stringify(extra[0])} (only "grants")`);
  policy.grants.forEach((grant, i) => {
    const where = `grant ${i + 1}`;
    if (!grant || typeof grant !== 'object' || Array.isArray(grant)) fail(`${where} is not an object`);
    const unknown = Object.keys(grant).filter((k) => !['principals', 'purposes', 'models'].includes(k));
    if (unknown.length) fail(`${where}: unknown field ${JSON.stringify(unknown[0])}`);
    if (!Array.isArray(grant.principals) || !grant.principals.length) fail(`${where}: "principals" must list at least one`);
    for (const p of grant.principals) {
      if (typeof p !== 'string' || !PRINCIPAL.test(p)) fail(`${where}: principal ${JSON.stringify(p)} is neither token:tok_… nor tenant:NAME`);
    }
    if (!Array.isArray(grant.purposes) || !grant.purposes.length) fail(`${where}: "purposes" must list at least one`);
    for (const p of grant.purposes) {
      if (!PURPOSES.includes(p)) fail(`${where}: purpose ${JSON.stringify(p)} is not one of ${PURPOSES.join(', ')}`);
    }
    if ('models' in grant && (!Array.isArray(grant.models) || !grant.models.length
        || grant.models.some((m) => typeof m !== 'string' || !m))) {
      fail(`${where}: "models", when given, is a list of model names (a trailing * matches a prefix)`);
    }
  });
  return policy;
}

export async function policies(section, {params}) {
  const status = statusLine();
  const {data: tenantList} = await get('/admin/v1/tenants');
  const keysSeen = [...new Set(tenantList.map((t) => t.key))].sort();
  const ref = h('input', {id: 'policy-key', list: 'policy-keys', autocomplete: 'off', required: true,
    value: params[0] || keysSeen[0] || ''});
  const load = h('button', {type: 'submit'}, 'Load');
  const text = h('textarea', {id: 'policy-text', rows: 14, spellcheck: 'false', class: 'mono', disabled: true});
  const save = h('button', {type: 'button', class: 'primary', disabled: true}, 'Save policy');
  let loaded = null;  // the key whose policy is in the editor

  const picker = h('form', {class: 'inline'},
    field('Key', ref, 'a key reference, e.g. local:acme'),
    h('datalist', {id: 'policy-keys'}, keysSeen.map((k) => h('option', {value: k}))), load);
  picker.addEventListener('submit', (event) => {
    event.preventDefault();
    act(load, status, async () => {
      const key = ref.value.trim();
      const policy = await get(`/admin/v1/keys/${seg(key)}/policy`);
      loaded = key;
      text.value = JSON.stringify(policy, null, 2);
      text.disabled = false;
      save.disabled = false;
      history.replaceState(null, '', `#/policies/${encodeURIComponent(key)}`);
      status.ok(`Policy of ${key}: ${policy.grants.length} grant(s). Deny by default: what no grant names is refused.`);
    });
  });
  save.addEventListener('click', () => act(save, status, async () => {
    const policy = validatePolicy(text.value);  // a faulty policy is not sent
    const saved = await api('PUT', `/admin/v1/keys/${seg(loaded)}/policy`, policy);
    if (saved && saved.grants) text.value = JSON.stringify(saved, null, 2);
    status.ok(`Policy of ${loaded} saved.`);
  }));

  section.append(viewHeader('Key policies'),
    h('p', {class: 'muted'}, 'Each grant names principals (token:tok_… or tenant:NAME), purposes (inference, retrieval, export) and optionally models.'),
    picker, field('Policy (JSON)', text), h('div', {class: 'actions'}, save), status.el);
  if (ref.value) picker.requestSubmit();
}

// MARK: upstreams

export async function upstreams(section) {
  const {data} = await get('/admin/v1/upstreams');
  section.append(viewHeader('Upstreams'),
    h('p', {class: 'muted'}, 'The model providers of the configuration file (read only). API keys are never shown.'),
    table([
      ['Name', (u) => h('strong', {}, u.name)],
      ['Kind', (u) => u.kind],
      ['API', (u) => u.api],
      ['URL', (u) => h('span', {class: 'mono'}, u.url)],
      ['Models', (u) => u.models.join(', ')],
      ['API key', (u) => pill(u.has_api_key ? 'configured' : 'none')],
    ], data, {empty: 'No upstream is configured: only the keyward/echo model answers.'}));
}
