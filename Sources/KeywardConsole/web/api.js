/**
 * The console's only way to the gateway: same-origin fetch with the bearer token of the session.
 * The token lives in sessionStorage (gone with the tab, never in localStorage, a URL or a cookie).
 * Errors arrive in OpenAI's shape {"error": {"message", "type", "code"}} and are thrown as ApiError.
 */

const TOKEN_KEY = 'keyward.token';

export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  set token(value) { sessionStorage.setItem(TOKEN_KEY, value); },
  clear() { sessionStorage.removeItem(TOKEN_KEY); },
};

export class ApiError extends Error {
  constructor(status, code, message, type) {
    super(message);
    this.status = status;
    this.code = code;
    this.type = type;
  }
}

/** The error of a non-2xx answer; a body that is not OpenAI's shape still gives a readable one. */
async function failure(response) {
  let error = {};
  try {
    error = (await response.json()).error || {};
  } catch {
    // a proxy's HTML page or an empty body: the status says enough
  }
  const err = new ApiError(response.status, error.code || `http_${response.status}`,
    error.message || response.statusText || 'request failed', error.type);
  if (response.status === 401) {
    // The token is unknown or was deleted: the app signs out and says why.
    window.dispatchEvent(new CustomEvent('keyward:unauthorized', {detail: err}));
  }
  return err;
}

/** A request answered by a Response (for streams); throws ApiError on a non-2xx answer. */
export async function request(method, path, body, {signal, accept = 'application/json'} = {}) {
  const headers = {accept};
  const token = session.token;
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'omit', cache: 'no-store', redirect: 'error',
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network_error', `the gateway could not be reached (${e.message})`);
  }
  if (!response.ok) throw await failure(response);
  return response;
}

/** A JSON request; resolves with the parsed answer (null for an empty one). */
export async function api(method, path, body, options) {
  const response = await request(method, path, body, options);
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

export const get = (path, options) => api('GET', path, undefined, options);
export const post = (path, body) => api('POST', path, body);

/** A path with a query string of the given parameters (empty ones left out). */
export function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') query.set(name, String(value));
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

/** A path segment from a key reference such as "local:acme" or an ARN. */
export const seg = encodeURIComponent;

/**
 * The `data:` payloads of a server-sent-event stream as they arrive, parsed as JSON, until
 * `data: [DONE]`. Events may be split across reads and reads may hold several events.
 */
export async function* sse(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  try {
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, '');
        const data = event.split(/\r?\n/).filter((line) => line.startsWith('data:'))
          .map((line) => line.slice(5).replace(/^ /, '')).join('\n');
        if (!data) continue;
        if (data === '[DONE]') return;
        yield JSON.parse(data);
      }
    }
  } finally {
    // Left early ([DONE], an error or a stop): let go of the connection.
    reader.cancel().catch(() => {});
  }
}
