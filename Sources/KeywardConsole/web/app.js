/**
 * The console's entry: sign-in, the session's role, the sidebar and the hash router.
 * A role sees only its own views: the others are neither in the navigation nor ever rendered
 * (the gateway refuses their calls anyway; the console just does not offer them).
 */
import {ApiError, get, session} from './api.js';
import {errorLine, field, h, pill, replace} from './dom.js';
import {dashboard} from './dashboard.js';
import {policies, tenants, tokens, upstreams} from './admin.js';
import {jobs, keys} from './keys.js';
import {alerts, auditLog} from './audit.js';
import {chat, completions, responses} from './chat.js';

const EVERYONE = ['admin', 'key-admin', 'auditor', 'app'];

const VIEWS = [
  {id: 'dashboard', label: 'Dashboard', roles: EVERYONE, render: dashboard},
  {id: 'tenants', label: 'Tenants', roles: ['admin'], render: tenants},
  {id: 'tokens', label: 'Tokens', roles: ['admin'], render: tokens},
  {id: 'policies', label: 'Policies', roles: ['admin'], render: policies},
  {id: 'upstreams', label: 'Upstreams', roles: ['admin'], render: upstreams},
  {id: 'keys', label: 'Keys', roles: ['key-admin'], render: keys},
  {id: 'jobs', label: 'Jobs', roles: ['key-admin'], render: jobs},
  {id: 'audit', label: 'Audit log', roles: ['auditor'], render: auditLog},
  {id: 'alerts', label: 'Alerts', roles: ['auditor'], render: alerts},
  {id: 'chat', label: 'Chat', roles: ['app'], render: chat},
  {id: 'completions', label: 'Stored completions', roles: ['app'], render: completions},
  {id: 'responses', label: 'Responses', roles: ['app'], render: responses},
];

const root = document.getElementById('root');
let leave = () => {};  // stops the shown view's timers and requests

/** The sign-in form; `problem` is why the last session ended, if it did not end by choice. */
function showSignIn(problem) {
  leave();
  const input = h('input', {type: 'password', id: 'token', name: 'token', autocomplete: 'off',
    spellcheck: 'false', required: true});
  const status = h('div', {class: 'status'}, problem ? errorLine(problem) : null);
  const button = h('button', {type: 'submit', class: 'primary'}, 'Sign in');
  const form = h('form', {class: 'signin', 'aria-labelledby': 'signin-title'},
    h('h1', {id: 'signin-title'}, 'Keyward console'),
    h('p', {}, 'Sign in with an API token. It is kept in this tab only and forgotten when the tab closes.'),
    field('API token', input), button, status);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    button.disabled = true;
    session.token = input.value.trim();
    try {
      await start();
    } catch (e) {
      session.clear();
      replace(status, errorLine(e));
      button.disabled = false;
      input.select();
    }
  });
  replace(root, h('main', {class: 'signin-page'}, form));
  input.focus();
}

function signOut(problem) {
  session.clear();
  window.onhashchange = null;
  history.replaceState(null, '', location.pathname);  // no view of the last user in the history
  showSignIn(problem);
}

/** A segment of the hash route; a malformed escape is kept as written rather than breaking the router. */
function decodeSegment(segment) {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

/** Asks the gateway who the token is, then builds the shell for that role. */
async function start() {
  const who = await get('/admin/v1/session');
  const allowed = VIEWS.filter((view) => view.roles.includes(who.role));
  const nav = h('nav', {class: 'sidebar', 'aria-label': 'Views'},
    h('ul', {}, allowed.map((view) =>
      h('li', {}, h('a', {href: `#/${view.id}`, 'data-view': view.id}, view.label)))));
  const main = h('main', {id: 'main'});
  const bar = h('header', {class: 'topbar'},
    h('span', {class: 'brand'}, 'Keyward'),
    h('span', {class: 'who'},
      pill(who.role), who.tenant ? h('span', {class: 'tenant'}, `tenant ${who.tenant}`) : null,
      h('span', {class: 'mono muted'}, who.token_id)),
    h('button', {type: 'button', id: 'sign-out', onclick: () => signOut()}, 'Sign out'));
  replace(root, h('div', {class: 'shell'}, bar, nav, main));

  const route = () => {
    const [id, ...params] = location.hash.replace(/^#\/?/, '').split('/').map(decodeSegment);
    const view = allowed.find((v) => v.id === id) || allowed[0];
    if (view.id !== id) history.replaceState(null, '', `#/${view.id}`);
    for (const link of nav.querySelectorAll('a')) {
      if (link.dataset.view === view.id) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    show(main, view, {session: who, params});
  };
  window.onhashchange = route;
  route();
}

/** Renders a view in a section of its own; its timers and fetches end when it is left. */
function show(main, view, context) {
  leave();
  const controller = new AbortController();
  const timers = new Set();
  leave = () => {
    controller.abort();
    for (const t of timers) clearTimeout(t);
    timers.clear();
  };
  // aria-busy until the view has its data: screen readers wait, and so can tests.
  const section = h('section', {id: `view-${view.id}`, class: 'view', 'aria-busy': 'true'});
  replace(main, section);
  context.signal = controller.signal;
  context.navigate = (hash) => { location.hash = hash; };
  // Runs fn now and again `ms` after each run ends (a slow answer never piles requests up); fn
  // may return false to stop, or a number of ms for the next wait. Nothing runs once the view is
  // left. Resolves when the first run is over.
  context.every = (ms, fn) => {
    const tick = async () => {
      if (controller.signal.aborted) return;
      let next = ms;
      try {
        const answer = await fn();
        next = answer === false ? null : typeof answer === 'number' ? answer : ms;
      } catch (e) {
        if (e.name === 'AbortError') return;
        console.warn('refresh failed', e);
      }
      if (next !== null && !controller.signal.aborted) timers.add(setTimeout(tick, next));
    };
    return tick();
  };
  Promise.resolve(view.render(section, context)).finally(() => section.removeAttribute('aria-busy')).then(() => {
    const heading = section.querySelector('h1');
    // Move focus for keyboard and screen-reader users, unless the view focused a control itself.
    if (heading && (document.activeElement === document.body || !document.activeElement)) heading.focus();
  }).catch((e) => {
    if (e.name !== 'AbortError') section.append(errorLine(e));
  });
}

window.addEventListener('keyward:unauthorized', (event) => {
  if (root.querySelector('.shell')) signOut(event.detail);
});

if (session.token) {
  start().catch((e) => (e instanceof ApiError && e.status === 401 ? signOut(e) : showSignIn(e)));
} else {
  showSignIn();
}
