/**
 * The app role's views: a chat that streams the model's answer as it arrives, and the tenant's
 * stored completions and responses. What a model or a user wrote is only ever put in as text
 * (a prompt holding markup shows the markup). Every read of a stored record is audited.
 */
import {ApiError, api, get, request, seg, sse, withQuery} from './api.js';
import {busy, describe, dialog, errorLine, field, h, pill, replace, short, table, viewHeader, when} from './dom.js';

/** The text of a message's content: a string, or parts of which the text ones are shown. */
function contentText(message) {
  const c = message.content;
  let text = typeof c === 'string' ? c
    : Array.isArray(c) ? c.map((part) => (typeof part.text === 'string' ? part.text : `[${part.type}]`)).join('\n') : '';
  for (const call of message.tool_calls || []) {
    text += `${text ? '\n' : ''}[calls ${call.function?.name}(${call.function?.arguments ?? ''})]`;
  }
  return text;
}

function bubble(role, text) {
  const body = h('div', {class: 'text'}, text);
  const meta = h('div', {class: 'meta'});
  const item = h('li', {class: ['msg', `msg-${role}`]},
    h('span', {class: 'role'}, role === 'user' ? 'You' : role === 'assistant' ? 'Model' : role), body, meta);
  return {item, body, meta};
}

export async function chat(section, {signal}) {
  const model = h('input', {id: 'chat-model', list: 'chat-models', autocomplete: 'off', required: true});
  const models = h('datalist', {id: 'chat-models'});
  const transcript = h('ol', {class: 'transcript', 'aria-label': 'Conversation', 'aria-live': 'polite'});
  const input = h('textarea', {id: 'chat-input', rows: 3, required: true, placeholder: 'Ask something (Enter sends, Shift+Enter for a new line)'});
  const send = h('button', {type: 'submit', class: 'primary'}, 'Send');
  const stop = h('button', {type: 'button', hidden: true}, 'Stop');
  const reset = h('button', {type: 'button'}, 'New conversation');
  let conversation = [];  // the turns that were answered: sent again as the context of the next one
  let inFlight = null;

  const form = h('form', {class: 'compose'},
    field('Message', input), h('div', {class: 'actions'}, send, stop, reset));
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  stop.addEventListener('click', () => inFlight && inFlight.abort());
  reset.addEventListener('click', () => {
    if (inFlight) inFlight.abort();
    conversation = [];  // a new array: a turn still settling belongs to the old conversation
    replace(transcript);
    input.focus();
  });
  signal.addEventListener('abort', () => inFlight && inFlight.abort());

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const text = input.value;
    if (!text.trim() || inFlight) return;
    input.value = '';
    const asked = bubble('user', text);
    const answer = bubble('assistant', '');
    answer.item.dataset.state = 'streaming';
    transcript.append(asked.item, answer.item);
    const turns = conversation;
    turns.push({role: 'user', content: text});
    inFlight = new AbortController();
    send.disabled = true;
    stop.hidden = false;
    let full = '';
    try {
      const response = await request('POST', '/v1/chat/completions', {
        model: model.value.trim(), messages: turns, stream: true, stream_options: {include_usage: true},
      }, {signal: inFlight.signal, accept: 'text/event-stream'});
      let usage = null;
      let id = null;
      for await (const chunk of sse(response)) {
        // An error after the answer began comes as an event of its own.
        if (chunk.error) throw new ApiError(200, chunk.error.code, chunk.error.message, chunk.error.type);
        id = chunk.id || id;
        usage = chunk.usage || usage;
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && typeof delta.content === 'string' && delta.content) {
          full += delta.content;
          answer.body.append(delta.content);  // a text node: markup stays characters
          answer.item.scrollIntoView({block: 'end'});
        }
      }
      turns.push({role: 'assistant', content: full});
      answer.item.dataset.state = 'done';
      replace(answer.meta, [model.value.trim(), id, usage ? `${usage.total_tokens} tokens` : null].filter(Boolean).join(' · '));
    } catch (e) {
      turns.pop();  // the turn got no whole answer: it is not part of the conversation
      if (e.name === 'AbortError') {
        answer.item.dataset.state = 'stopped';
        replace(answer.meta, 'stopped');
        if (full) turns.push({role: 'user', content: text}, {role: 'assistant', content: full});
      } else {
        answer.item.dataset.state = 'error';
        asked.item.classList.add('unanswered');
        answer.body.append(errorLine(e));
      }
    } finally {
      inFlight = null;
      send.disabled = false;
      stop.hidden = true;
      if (section.isConnected) input.focus();
    }
  });

  section.append(viewHeader('Chat', h('div', {class: 'inline'}, field('Model', model), models)),
    h('p', {class: 'muted'}, 'Prompts and answers are stored encrypted under your tenant\'s key (as your tenant\'s settings say).'),
    transcript, form);
  try {
    const {data} = await get('/v1/models', {signal});
    replace(models, data.map((m) => h('option', {value: m.id}, m.owned_by)));
    if (!model.value && data.length) model.value = data[0].id;
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    section.insertBefore(errorLine(e), transcript);
  }
  input.focus();
}

/**
 * A paged list of an app's stored objects (newest first) with a detail panel and deletion.
 * `columns` are the table's; `detail(item)` resolves to the nodes of its panel.
 */
async function storedList(section, {title, path, noun, columns, detail, signal}) {
  const list = h('div', {});
  const panel = h('div', {id: 'record-detail', 'aria-live': 'polite'});
  const more = h('button', {type: 'button', hidden: true}, 'Load more');
  const status = h('div', {class: 'status'});
  let items = [];
  let lastId = null;

  async function open(item, button) {
    replace(status);
    await busy(button, async () => replace(panel, await detail(item))).catch((e) => replace(panel, errorLine(e)));
    panel.scrollIntoView({block: 'nearest'});
  }

  async function remove(item, button) {
    const yes = await dialog({title: `Delete ${item.id}?`, confirm: 'Delete', danger: true,
      body: h('p', {}, `The stored ${noun} and its prompt are deleted for ever.`)});
    if (!yes) return;
    await busy(button, () => api('DELETE', `${path}/${seg(item.id)}`))
      .then(() => { replace(status, h('p', {class: 'ok'}, `${item.id} deleted.`)); return load(); })
      .catch((e) => replace(status, errorLine(e)));
  }

  function render() {
    replace(list, table([...columns,
      ['', (item) => h('div', {class: 'row-actions'},
        h('button', {type: 'button', 'aria-label': `Open ${item.id}`, onclick: (ev) => open(item, ev.currentTarget)}, 'Open'),
        h('button', {type: 'button', class: 'danger', 'aria-label': `Delete ${item.id}`, onclick: (ev) => remove(item, ev.currentTarget)}, 'Delete…'))],
    ], items, {empty: `No stored ${noun} yet.`, rowAttrs: (item) => ({'data-id': item.id})}));
  }

  async function load(after) {
    const page = await get(withQuery(path, {limit: 20, order: 'desc', after}), {signal});
    items = after ? items.concat(page.data) : page.data;
    lastId = page.last_id;
    more.hidden = !page.has_more;
    render();
  }
  more.addEventListener('click', () => busy(more, () => load(lastId)).catch((e) => replace(status, errorLine(e))));

  section.append(viewHeader(title),
    h('p', {class: 'notice'}, `Reading a record is logged in the audit log: listing and opening ${noun}s here decrypts them under your tenant's key, and each read is an audit event.`),
    status, list, h('div', {class: 'actions'}, more), panel);
  await load();
}

function messageList(messages) {
  return h('ol', {class: 'transcript'}, messages.map((m) => bubble(m.role, contentText(m)).item));
}

/** A stored completion's answer message, if it has one. */
const answerOf = (c) => c.choices?.[0]?.message;

export function completions(section, {signal}) {
  return storedList(section, {
    title: 'Stored completions', path: '/v1/chat/completions', noun: 'completion', signal,
    columns: [
      ['Id', (c) => short(c.id, 20)],
      ['Created', (c) => when(c.created), 'nowrap'],
      ['Model', (c) => c.model],
      ['Answer', (c) => h('span', {class: 'answer'}, contentText(answerOf(c) || {}))],
      ['Tokens', (c) => (c.usage ? String(c.usage.total_tokens) : '—')],
    ],
    async detail(c) {
      const {data} = await get(`/v1/chat/completions/${seg(c.id)}/messages?limit=100`, {signal});
      const answer = answerOf(c) || {role: 'assistant', content: ''};
      return h('div', {class: 'card'}, h('h2', {}, `${c.id}`),
        h('p', {class: 'muted'}, `${c.model} · ${when(c.created)}`), messageList([...data, answer]));
    },
  });
}

/** The text a Response object's output holds (its message items' output_text parts). */
function outputText(r) {
  if (typeof r.output_text === 'string') return r.output_text;
  return (r.output || []).flatMap((item) => item.content || [])
    .filter((part) => typeof part.text === 'string').map((part) => part.text).join('');
}

export function responses(section, {signal}) {
  return storedList(section, {
    title: 'Responses', path: '/v1/responses', noun: 'response', signal,
    columns: [
      ['Id', (r) => short(r.id, 20)],
      ['Created', (r) => when(r.created_at), 'nowrap'],
      ['Model', (r) => r.model],
      ['Status', (r) => pill(r.status || 'unknown')],
      ['Output', (r) => h('span', {class: 'answer'}, outputText(r))],
    ],
    async detail(r) {
      const full = await get(`/v1/responses/${seg(r.id)}`, {signal});
      return h('div', {class: 'card'}, h('h2', {}, r.id),
        h('p', {class: 'muted'}, `${full.model} · ${when(full.created_at)}`),
        h('h3', {}, 'Output'), h('p', {class: 'answer'}, outputText(full) || '—'),
        h('details', {}, h('summary', {}, 'The whole object (JSON)'), h('pre', {class: 'mono'}, JSON.stringify(full, null, 2))),
        full.error ? h('p', {class: 'error'}, describe(full.error)) : null);
    },
  });
}
