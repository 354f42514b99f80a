// Thin client for the chatrelay HTTP API. Every failure becomes an ApiError
// so the page has one shape to show, whatever went wrong.

import { readSSE } from './sse.js';

export const UNREACHABLE = 'Cannot reach the chatrelay server — is it running?';

export class ApiError extends Error {
  constructor(message, { status = 0, type = '', code = '', param = '', retryAfter = null,
    network = false, midStream = false, resetsAt = null, messageId = null,
    conversationId = null } = {}) {
    super(message);
    this.name = 'ApiError';
    Object.assign(this, {
      status, type, code, param, retryAfter, network, midStream, resetsAt, messageId,
      conversationId,
    });
  }

  /** Build from the `{"error": {...}}` object the server sends. */
  static fromBody(error, extra = {}) {
    const e = error && typeof error === 'object' ? error : {};
    const message = typeof e.message === 'string' && e.message ? e.message : 'Unknown error.';
    return new ApiError(message, {
      type: e.type ?? '', code: e.code ?? '', param: e.param ?? '', ...extra,
      resetsAt: e.resets_at ?? null, // budget_exceeded: when the budget starts again
    });
  }
}

/** Seconds to wait, from a Retry-After header (delta-seconds or an HTTP date). */
function parseRetryAfter(value) {
  if (!value) return null;
  const secs = Number(value);
  if (Number.isFinite(secs)) return Math.max(0, Math.ceil(secs));
  const when = Date.parse(value);
  return Number.isNaN(when) ? null : Math.max(0, Math.ceil((when - Date.now()) / 1000));
}

async function errorFromResponse(res) {
  const extra = {
    status: res.status,
    retryAfter: parseRetryAfter(res.headers.get('Retry-After')),
    // A refusal after the question was stored names it: Retry then regenerates that answer.
    messageId: res.headers.get('X-Message-Id'),
    conversationId: res.headers.get('X-Conversation-Id'),
  };
  let body = null;
  try { body = await res.json(); } catch { /* not JSON: fall back to the status line */ }
  if (body?.error) return ApiError.fromBody(body.error, extra);
  // FastAPI's own validation errors look like {"detail": [...]}; be lenient.
  const detail = Array.isArray(body?.detail) ? body.detail[0]?.msg : body?.detail;
  const text = typeof detail === 'string' ? detail : `${res.status} ${res.statusText}`.trim();
  return new ApiError(text, extra);
}

async function request(url, init) {
  let res;
  try {
    res = await fetch(url, init);
  } catch (err) {
    if (err?.name === 'AbortError') throw err; // the user stopped: not an error
    throw new ApiError(UNREACHABLE, { network: true });
  }
  if (!res.ok) throw await errorFromResponse(res);
  return res;
}

/** GET /api/models → { default, data: [{id, owned_by}] } */
export async function listModels() {
  const res = await request('/api/models', { headers: { Accept: 'application/json' } });
  const body = await res.json();
  return { default: body.default ?? '', data: Array.isArray(body.data) ? body.data : [] };
}

/**
 * POST /api/chat. Resolves once the stream has started, with the message id
 * (needed to stop or resume it), the conversation id and an async iterator over
 * the SSE events ({data, id}). With `conversationId` the server keeps the
 * history, so only the new message is sent; without it the server starts a new
 * conversation. `action`: 'regenerate' (a new answer to the last question, no
 * text) or 'edit' (`text` replaces the last question, then a new answer).
 */
export async function startChat({ text, model, conversationId, action }, signal) {
  const payload = {};
  if (action) payload.action = action;
  if (action !== 'regenerate') payload.messages = [{ role: 'user', content: text }];
  if (model) payload.model = model; // empty: let the server use its default
  if (conversationId) payload.conversation_id = conversationId;
  const res = await request('/api/chat', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'text/event-stream' },
    body: JSON.stringify(payload),
    signal,
  });
  return {
    id: res.headers.get('X-Message-Id'),
    conversationId: res.headers.get('X-Conversation-Id'),
    events: readSSE(res.body),
  };
}

/**
 * GET /api/messages/{id}/stream: the events of answer `id` after event `after`
 * (null or 0: from its start), then live until it ends.
 */
export async function resumeStream(id, after, signal) {
  const headers = { Accept: 'text/event-stream' };
  if (after) headers['Last-Event-ID'] = String(after);
  const res = await request(`/api/messages/${encodeURIComponent(id)}/stream`, {
    headers, signal, cache: 'no-store',
  });
  return { id, events: readSSE(res.body) };
}

/**
 * Ask the server to stop generating. A 404 only means it had already finished.
 * Resolves true when the server took the request.
 */
export async function stopMessage(id) {
  try {
    const res = await fetch(`/api/messages/${encodeURIComponent(id)}/stop`, { method: 'POST' });
    return res.ok || res.status === 404;
  } catch {
    return false; // unreachable: the caller stops reading anyway
  }
}

// ---- JSON endpoints -----------------------------------------------------------

async function json(url, { method = 'GET', body, signal } = {}) {
  const init = { method, headers: { Accept: 'application/json' }, signal };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await request(url, init);
  if (res.status === 204) return null;
  try {
    return await res.json();
  } catch {
    throw new ApiError('The server sent an answer that is not JSON.', { status: res.status });
  }
}

const conv = (id) => `/api/conversations/${encodeURIComponent(id)}`;

/** GET /api/usage → {used, reserved, limit, remaining, period, resets_at}; limit null: none. */
export const getUsage = () => json('/api/usage');

/** GET /api/me → {id, username, is_guest, is_admin}; a visitor without a session is a guest not yet stored (id null). */
export const getMe = () => json('/api/me');
export const register = (username, password) =>
  json('/api/auth/register', { method: 'POST', body: { username, password } });
export const login = (username, password) =>
  json('/api/auth/login', { method: 'POST', body: { username, password } });
export const logout = () => json('/api/auth/logout', { method: 'POST' });
/** Every session of the account ends, this browser's too. */
export const logoutEverywhere = () => json('/api/auth/logout-all', { method: 'POST' });
/** Other sessions end; this browser stays signed in (with a new cookie). → the account. */
export const changePassword = (currentPassword, newPassword) =>
  json('/api/auth/password', {
    method: 'POST', body: { current_password: currentPassword, new_password: newPassword },
  });

/** GET /api/conversations → {data: [{id, title, created_at, updated_at}], has_more} */
export async function listConversations({ limit, offset = 0, q = '' } = {}, signal) {
  const params = new URLSearchParams();
  if (limit) params.set('limit', String(limit));
  if (offset) params.set('offset', String(offset));
  if (q) params.set('q', q);
  const query = params.toString();
  const body = await json(`/api/conversations${query ? `?${query}` : ''}`, { signal });
  return { data: Array.isArray(body?.data) ? body.data : [], hasMore: Boolean(body?.has_more) };
}

/** GET /api/conversations/{id} → {id, title, ..., messages: [...]} */
export const getConversation = (id, signal) => json(conv(id), { signal });
export const renameConversation = (id, title) =>
  json(conv(id), { method: 'PATCH', body: { title } });
export const deleteConversation = (id) => json(conv(id), { method: 'DELETE' });
/** Where the browser downloads a conversation: format 'json' or 'markdown'. */
export const exportUrl = (id, format) => `${conv(id)}/export?format=${format}`;
