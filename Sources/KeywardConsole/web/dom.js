/**
 * DOM helpers of the console: every element is built here with createElement and filled with
 * textContent, never parsed from a string, so whatever a prompt, an audit detail or an error
 * message holds is shown as the characters it is (and the page obeys its CSP: no inline style,
 * no markup from data). Also the shared widgets: tables, state pills, error lines, dialogs.
 */

const SVG_NS = 'http://www.w3.org/2000/svg';

/** Appends children: strings and numbers become text nodes; null, undefined and false are skipped. */
function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function setAttributes(el, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'style') throw new Error('inline style is refused by the CSP: use a class');
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else if (name === 'class') {
      el.setAttribute('class', Array.isArray(value) ? value.filter(Boolean).join(' ') : value);
    } else if (name === 'value' && 'value' in el) {
      el.value = value;  // the property: the attribute is only the initial value
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
  return el;
}

/** h('button', {class: 'primary', onclick}, 'Save') — an HTML element. */
export function h(tag, attrs, ...children) {
  return append(setAttributes(document.createElement(tag), attrs), children);
}

/** The same for SVG (presentation attributes such as x, fill or points are allowed by the CSP). */
export function svg(tag, attrs, ...children) {
  return append(setAttributes(document.createElementNS(SVG_NS, tag), attrs), children);
}

/** Replaces an element's content. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

let nextId = 0;
/** A unique id, for <label for> on controls built at run time. */
export function uid(prefix = 'f') {
  nextId += 1;
  return `${prefix}-${nextId}`;
}

/** A label and its control, tied by for/id (the control gets an id if it has none). */
export function field(label, control, hint) {
  if (!control.id) control.id = uid();
  return h('div', {class: 'field'},
    h('label', {for: control.id}, label), control,
    hint ? h('small', {class: 'hint'}, hint) : null);
}

/** A <select> of options given as strings or [value, label] pairs. */
export function select(options, attrs = {}) {
  const el = h('select', {...attrs, value: undefined});
  for (const option of options) {
    const [value, label] = Array.isArray(option) ? option : [option, option];
    el.append(h('option', {value}, label));
  }
  if (attrs.value !== undefined) el.value = attrs.value;
  return el;
}

/**
 * A table: columns are [label, row => cell content, class?] (the class on the column's cells:
 * `nowrap`, `wide`). `empty` is said when there are no rows. `rowAttrs(row)` may give the <tr>
 * attributes (a data-* key for tests and links); each cell names its column in data-col.
 */
const slug = (text) => text.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');

export function table(columns, rows, {empty = 'Nothing yet.', rowAttrs, caption, dense = false} = {}) {
  if (!rows.length) return h('p', {class: 'empty'}, empty);
  return h('div', {class: 'table-wrap'},
    h('table', {class: dense ? 'dense' : null},
      caption ? h('caption', {}, caption) : null,
      h('thead', {}, h('tr', {}, columns.map(([label, , cls]) => h('th', {scope: 'col', class: cls}, label)))),
      h('tbody', {}, rows.map((row) =>
        h('tr', rowAttrs ? rowAttrs(row) : {}, columns.map(([label, cell, cls]) =>
          h('td', {class: cls, 'data-col': slug(label) || 'actions'}, cell(row))))))));
}

/** A coloured pill for a key, token, job or audit state. */
export function pill(state) {
  // "error:key_revoked" is coloured as an error and read as written.
  const kind = String(state).split(':')[0].replace(/[^a-z0-9_-]/gi, '');
  return h('span', {class: ['pill', `pill-${kind}`]}, String(state).replace(/_/g, ' '));
}

/** An error in the API's shape, shown as "code: message". */
export function errorLine(error) {
  return h('p', {class: 'error', role: 'alert'}, describe(error));
}

export function describe(error) {
  if (error && error.code) return `${error.code}: ${error.message}`;
  return error && error.message ? error.message : String(error);
}

/** Unix seconds, or ms since 1970 (the API uses both), as local "YYYY-MM-DD HH:MM:SS". */
export function when(t) {
  if (t === null || t === undefined || t === '') return '—';
  const d = new Date(t < 1e11 ? t * 1000 : t);  // seconds until the year 5138
  const two = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

/** A long id or hash cut for a table, whole in the tooltip and to a copy. */
export function short(text, keep = 12) {
  if (!text) return '—';
  return text.length <= keep + 1 ? text : h('span', {title: text, class: 'mono'}, `${text.slice(0, keep)}…`);
}

/**
 * A modal <dialog>: `body` is its content (nodes), `confirm` the label of the action button.
 * Resolves with what `collect()` returns (true by default) on confirmation, or null when it is
 * cancelled (the Cancel button, Escape, or a click outside). The action button is not the
 * default focus, so a stray Enter cannot confirm a destructive action.
 */
export function dialog({title, body, confirm = 'Confirm', danger = false, collect = () => true}) {
  return new Promise((resolve) => {
    const titleId = uid('dialog-title');
    const problem = h('div', {class: 'dialog-error'});
    const form = h('form', {method: 'dialog'},
      h('h2', {id: titleId}, title),
      h('div', {class: 'dialog-body'}, body),
      problem,
      h('div', {class: 'actions'},
        h('button', {type: 'button', class: 'cancel', autofocus: true, onclick: () => el.close()}, 'Cancel'),
        h('button', {type: 'submit', class: danger ? 'danger' : 'primary'}, confirm)));
    const el = h('dialog', {'aria-labelledby': titleId}, form);
    let result = null;
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      try {
        result = collect();
      } catch (e) {
        replace(problem, errorLine(e));
        return;
      }
      el.close();
    });
    el.addEventListener('click', (event) => { if (event.target === el) el.close(); });
    el.addEventListener('close', () => { el.remove(); resolve(result); });
    document.body.append(el);
    el.showModal();
  });
}

/** A busy guard for a button: disabled while `work` runs, so an action is not sent twice. */
export async function busy(button, work) {
  button.disabled = true;
  try {
    return await work();
  } finally {
    button.disabled = false;
  }
}

/** The heading every view starts with; focused after navigation so screen readers announce it. */
export function viewHeader(title, ...extra) {
  return h('header', {class: 'view-header'}, h('h1', {tabindex: '-1'}, title), extra);
}
