// Thin client for the chatrelay HTTP API. Every failure becomes an ApiError
// so the page has one shape to show, whatever went wrong.

import { readSSE } from './sse.js';

export const UNREACHABLE = 'Cannot reach the chatrelay server — is it running?';

export class ApiError extends Error {
  constructor(message, { status = 0, type = '', code = '', retryAfter = null,
    network = false, midStream = false } = {}) {
    super(message);
    this.name = 'ApiError';
    Object.assign(this, { status, type, code, retryAfter, network, midStream });
  }

  /** Build from the `{"error": {...}}` object the server sends. */
  static fromBody(error, extra = {}) {
    const e = error && typeof error === 'object' ? error : {};
    const message = typeof e.message === 'string' && e.message ? e.message : 'Unknown error.';
    return new ApiError(message, { type: e.type ?? '', code: e.code ?? '', ...extra });
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
  const extra = { status: res.status, retryAfter: parseRetryAfter(res.headers.get('Retry-After')) };
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
 * (needed to stop it) and an async iterator over the SSE data strings.
 */
export async function startChat({ messages, model }, signal) {
  const payload = { messages };
  if (model) payload.model = model; // empty: let the server use its default
  const res = await request('/api/chat', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'text/event-stream' },
    body: JSON.stringify(payload),
    signal,
  });
  return { id: res.headers.get('X-Message-Id'), events: readSSE(res.body) };
}

/** Ask the server to stop generating. A 404 only means it had already finished. */
export async function stopMessage(id) {
  try {
    await fetch(`/api/messages/${encodeURIComponent(id)}/stop`, { method: 'POST' });
  } catch { /* nothing useful to do: the reader is cancelled anyway */ }
}
