// chatrelay chat page: wires the composer, the model list, the message list,
// the sidebar of stored conversations and the account area to the API.
// The server keeps each conversation: a new chat sends its first message alone,
// a continued one sends its id and only the new message.

import {
  ApiError, getConversation, getUsage, listModels, startChat, stopMessage,
} from './api.js';
import { AssistantMessage, Announcer, addUserMessage } from './messages.js';
import { Sidebar } from './sidebar.js';
import { Account } from './account.js';

const $ = (id) => document.getElementById(id);
const form = $('composer');
const prompt = $('prompt');
const sendBtn = $('send');
const modelSelect = $('model');
const modelHint = $('model-hint');
const list = $('messages');
const scroller = $('scroller');
const empty = $('empty');
const loading = $('loading');
const jump = $('jump');
const notice = $('notice');
const budget = $('budget');
const toggle = $('sidebar-toggle');
const backdrop = $('sidebar-backdrop');
const announcer = new Announcer($('live'));
const narrow = window.matchMedia('(max-width: 760px)');

/** The conversation shown (its id), or null for a new, not yet stored chat. */
let activeId = null;
/** The exchange in flight, or null. */
let current = null;
/** Bumped whenever the page shows another conversation, so late work cannot write into it. */
let epoch = 0;
/** The assistant message whose Retry button is still valid. */
let lastFailed = null;
/** True while a stored conversation is being fetched: sending waits for it. */
let opening = false;
/** Known models by id, for labels of stored answers: id → owned_by. */
const upstreamOf = new Map();
/** The models of the last listing by id: {id, owned_by, status, first_token_latency}. */
const modelInfo = new Map();

// ---- models -----------------------------------------------------------------

/** How ready a model is, as the option says it. */
const STATUS_TEXT = {
  warm: 'warm', warming: 'warming up', cold: 'cold', unavailable: 'unavailable',
};
const WARMING_HINT = 'Warming up: the first answer may take a minute.';
const MODEL_HINTS = {
  cold: WARMING_HINT,
  warming: WARMING_HINT,
  unavailable: 'No upstream can serve this model right now; try again shortly or pick another model.',
};
const MODELS_REFRESH_MS = 15_000;

/** Bumped by every listing, so a late answer cannot overwrite a newer one. */
let modelsSeq = 0;
/** True once a listing arrived: a failed refresh then keeps what is shown. */
let modelsLoaded = false;

function modelLabel(m) {
  return m.owned_by ? `${m.id} (${m.owned_by})` : m.id;
}

/** The model's status if the server sent one this page knows, else ''. */
function statusOf(m) {
  return m && Object.hasOwn(STATUS_TEXT, m.status) ? m.status : '';
}

function fillOption(option, m) {
  const status = statusOf(m);
  option.textContent = status ? `${modelLabel(m)} · ${STATUS_TEXT[status]}` : modelLabel(m);
  const secs = m.first_token_latency == null ? NaN : Number(m.first_token_latency);
  option.title = Number.isFinite(secs) && secs >= 0
    ? `last first token in ${secs < 10 ? secs.toFixed(1) : Math.round(secs)} s`
    : '';
  option.dataset.status = status;
}

/** The label of answers from the selected model (without its status). */
function selectedModelLabel() {
  const m = modelInfo.get(modelSelect.value);
  return m ? modelLabel(m) : 'assistant';
}

function selectedStatus() {
  return statusOf(modelInfo.get(modelSelect.value));
}

/** Show how ready the selected model is: the select's data-status and the hint line. */
function showModelStatus() {
  const status = selectedStatus();
  if (status) modelSelect.dataset.status = status;
  else delete modelSelect.dataset.status;
  const hint = MODEL_HINTS[status] ?? '';
  if (modelHint.textContent !== hint) modelHint.textContent = hint; // no repeated announcements
  modelHint.dataset.status = status;
  modelHint.hidden = !hint;
  const selected = modelSelect.selectedOptions[0];
  modelSelect.title = selected && selected.value ? selected.textContent : '';
}

/**
 * Load the model list and how ready each model is. A refresh updates the options
 * in place, so the selection (and an open drop-down) stays as it is.
 */
async function loadModels() {
  const seq = ++modelsSeq;
  if (!modelsLoaded) modelSelect.disabled = true;
  try {
    const { default: def, data } = await listModels();
    if (seq !== modelsSeq) return;
    modelInfo.clear();
    for (const m of data) {
      modelInfo.set(m.id, m);
      upstreamOf.set(m.id, m.owned_by ?? '');
    }
    const options = [...modelSelect.options];
    const same = options.length === data.length && data.every((m, i) => options[i].value === m.id);
    if (same) {
      data.forEach((m, i) => fillOption(options[i], m));
    } else {
      const previous = modelSelect.value;
      modelSelect.replaceChildren(...data.map((m) => {
        const option = new Option('', m.id);
        fillOption(option, m);
        return option;
      }));
      if (!data.length) modelSelect.append(new Option('No models configured', ''));
      const keep = data.some((m) => m.id === previous) ? previous : def;
      if (keep) modelSelect.value = keep;
    }
    modelsLoaded = true;
    if (notice.dataset.source === 'models') hideNotice();
  } catch (err) {
    if (seq !== modelsSeq || modelsLoaded) return; // a refresh: the last statuses stay
    modelInfo.clear();
    modelSelect.replaceChildren(new Option('Models unavailable', ''));
    showNotice(`Cannot load the model list: ${err.message}`, loadModels, 'models');
  } finally {
    if (seq === modelsSeq) {
      modelSelect.disabled = false;
      showModelStatus();
    }
  }
}

// Statuses change on the server (a model warms up, an upstream fails): look again
// now and then while the page is seen, and as soon as it is seen again.
setInterval(() => {
  if (document.visibilityState === 'visible') loadModels();
}, MODELS_REFRESH_MS);
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible') loadModels();
});

/** A message above the chat; `source` lets its sender clear only its own. */
function showNotice(text, onRetry, source = 'page') {
  notice.dataset.source = source;
  const msg = document.createElement('span');
  msg.textContent = text;
  notice.replaceChildren(msg);
  if (onRetry) {
    const retry = document.createElement('button');
    retry.type = 'button';
    retry.className = 'notice-retry';
    retry.textContent = 'Retry';
    retry.addEventListener('click', () => { hideNotice(); onRetry(); });
    notice.append(retry);
  }
  notice.hidden = false;
}

function hideNotice() { notice.hidden = true; notice.replaceChildren(); }

// ---- scrolling ----------------------------------------------------------------

// Follow the stream only while the reader is at the bottom; scrolling up opts out.
let stick = true;
const atBottom = () => scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 32;

function follow(force = false) {
  if (force) stick = true;
  if (stick) scroller.scrollTop = scroller.scrollHeight;
  jump.hidden = stick;
}

scroller.addEventListener('scroll', () => {
  stick = atBottom();
  jump.hidden = stick;
});
jump.addEventListener('click', () => { follow(true); prompt.focus(); });
// Keep the bottom in view when the viewport changes (e.g. a phone keyboard opens).
new ResizeObserver(() => follow()).observe(scroller);

// ---- composer ---------------------------------------------------------------

function autosize() {
  prompt.style.height = 'auto';
  const border = prompt.offsetHeight - prompt.clientHeight;
  prompt.style.height = `${prompt.scrollHeight + border}px`; // CSS max-height caps it
}

function setBusy(busy) {
  form.dataset.busy = busy ? 'true' : 'false';
  sendBtn.textContent = busy ? 'Stop' : 'Send';
}

prompt.addEventListener('input', autosize);
prompt.addEventListener('keydown', (e) => {
  // isComposing: Enter that confirms an IME candidate must not send.
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    if (!current) send();
  }
});
form.addEventListener('submit', (e) => {
  e.preventDefault();
  if (current) stop();
  else send();
});
document.addEventListener('keydown', (e) => {
  // Esc inside a form of its own (rename, confirm, the sign-in dialog) belongs to that form.
  if (e.key !== 'Escape' || e.defaultPrevented || account.isOpen) return;
  if (current) { e.preventDefault(); stop(); return; }
  if (narrow.matches && document.body.dataset.sidebar === 'open') setSidebar(false);
});
$('new-chat').addEventListener('click', () => {
  // A history entry of its own: Back returns to the conversation that was shown.
  if (hashId()) history.pushState(null, '', `${location.pathname}${location.search}`);
  newChat();
  if (narrow.matches) setSidebar(false);
  prompt.focus();
});
modelSelect.addEventListener('change', () => {
  showModelStatus();
  loadModels();
});

// ---- conversation -----------------------------------------------------------

function send() {
  const text = prompt.value.trim();
  if (!text || current || opening) return;
  lastFailed?.dropRetry();
  lastFailed = null;
  addUserMessage(list, text);
  empty.hidden = true;
  prompt.value = '';
  autosize();
  const answer = new AssistantMessage(list, selectedModelLabel());
  run(answer, { text, conversationId: activeId });
}

function stop() {
  const turn = current;
  if (!turn || turn.stopRequested) return;
  turn.stopRequested = true;
  // The stop call is what makes the upstream stop generating; aborting the
  // fetch stops our reading. Without an id yet (no response headers), the
  // abort alone closes the connection, which the server also sees.
  if (turn.messageId) stopMessage(turn.messageId);
  turn.controller.abort();
}

/**
 * Stop reading the answer in flight without stopping it: the server finishes
 * and stores it, and it is there when its conversation is opened again.
 */
function detach() {
  const turn = current;
  if (!turn) return;
  turn.detached = true;
  turn.controller.abort();
  current = null;
  setBusy(false);
}

/** Empty the message list and forget the shown conversation (a new, unsaved chat). */
function resetView() {
  detach();
  epoch += 1;
  if (notice.dataset.source !== 'models') hideNotice(); // it was about what was shown
  opening = false;
  lastFailed = null;
  list.replaceChildren();
  announcer.reset();
  loading.hidden = true;
  empty.hidden = false;
  follow(true);
}

function newChat() {
  resetView();
  setActive(null);
}

/** Make `id` the shown conversation: highlighted, in the address (#c=...) and the title. */
function setActive(id) {
  activeId = id;
  sidebar.setActive(id);
  if (hashId() !== id) {
    // Replace, not push: links in the list make the history entries (Back works).
    const hash = id ? `#c=${encodeURIComponent(id)}` : '';
    history.replaceState(null, '', `${location.pathname}${location.search}${hash}`);
  }
  const title = id ? sidebar.titleOf(id) : null;
  document.title = title ? `${title} · chatrelay` : 'chatrelay';
}

/** The conversation id in the address, or null. */
function hashId() {
  const params = new URLSearchParams(location.hash.replace(/^#/, ''));
  return params.get('c') || null;
}

/** Show stored conversation `id` with its messages and their states. */
async function openConversation(id) {
  resetView();
  setActive(id);
  const mine = epoch;
  opening = true;
  empty.hidden = true;
  loading.hidden = false;
  let conversation;
  try {
    conversation = await getConversation(id);
  } catch (err) {
    if (mine !== epoch) return;
    opening = false;
    loading.hidden = true;
    if (err instanceof ApiError && err.status === 404) {
      newChat();
      showNotice('That conversation does not exist any more (or belongs to someone else).');
      sidebar.reload();
    } else {
      empty.hidden = false;
      showNotice(`Cannot load this conversation: ${err.message}`, () => openConversation(id));
    }
    return;
  }
  if (mine !== epoch) return;
  opening = false;
  loading.hidden = true;
  if (typeof conversation?.title === 'string') {
    document.title = `${conversation.title} · chatrelay`;
  }
  const messages = Array.isArray(conversation?.messages) ? conversation.messages : [];
  for (const m of messages) {
    if (m.role === 'assistant') {
      const answer = new AssistantMessage(list, storedModelLabel(m));
      answer.restore(m, () => { if (activeId === id) openConversation(id); });
    } else if (m.role === 'user') {
      addUserMessage(list, typeof m.content === 'string' ? m.content : '');
    }
  }
  empty.hidden = messages.length > 0;
  follow(true);
  if (!narrow.matches) prompt.focus();
}

function storedModelLabel(m) {
  if (!m.model) return 'assistant';
  const upstream = m.upstream || upstreamOf.get(m.model);
  return upstream ? `${m.model} (${upstream})` : m.model;
}

/** Run one request for `answer`; resolves when it is finished, stopped or failed. */
async function run(answer, req) {
  const turn = {
    controller: new AbortController(), messageId: null, stopRequested: false,
    detached: false, epoch,
  };
  current = turn;
  setBusy(true);
  announcer.reset();
  const status = selectedStatus();
  answer.wait({ cold: status === 'cold' || status === 'warming' });
  follow(true);

  let outcome;
  try {
    const stream = await startChat(
      { text: req.text, model: modelSelect.value, conversationId: req.conversationId },
      turn.controller.signal,
    );
    turn.messageId = stream.id;
    if (stream.id) answer.item.dataset.id = stream.id;
    if (!req.conversationId && stream.conversationId) {
      // A new chat was just stored: from now on it is continued by its id (Retry too).
      req.conversationId = stream.conversationId;
      if (turn.epoch === epoch && !turn.detached) {
        setActive(stream.conversationId);
        sidebar.reload();
      }
    }
    outcome = await consume(stream.events, answer);
  } catch (err) {
    if (turn.detached) return; // another conversation is shown; the answer goes on
    if (turn.stopRequested) outcome = { kind: 'stopped' };
    else if (err instanceof ApiError) outcome = { kind: 'error', error: err };
    else outcome = { kind: 'error', error: new ApiError(lostMessage(err), { network: true, midStream: true }) };
  }
  // The list shows the conversation (new or just moved to the top) with its title.
  sidebar.reload();
  refreshBudget();
  loadModels(); // a first token makes the model warm; a failure may make it unavailable
  if (turn.detached || turn.epoch !== epoch) return; // another conversation is shown
  if (current === turn) current = null;
  setBusy(false);
  settle(answer, outcome, req);
  follow();
}

function lostMessage(err) {
  return err instanceof TypeError
    ? 'The connection to the chatrelay server was lost.'
    : `Unexpected error: ${err?.message ?? err}`;
}

/** Read the chunks into the answer; returns the outcome. */
async function consume(events, answer) {
  let finish = null;
  let status = null;
  let sawDone = false;
  for await (const data of events) {
    if (data === '[DONE]') { sawDone = true; break; }
    let chunk;
    try { chunk = JSON.parse(data); } catch { continue; } // not ours: skip it
    if (chunk?.error) {
      return { kind: 'error', error: ApiError.fromBody(chunk.error, { midStream: true }) };
    }
    const choice = chunk?.choices?.[0];
    if (!choice) continue;
    const token = choice.delta?.content;
    if (typeof token === 'string' && token) {
      answer.append(token);
      announcer.push(token);
      follow();
    }
    if (choice.finish_reason) {
      finish = choice.finish_reason;
      status = chunk.x_chatrelay?.status ?? status;
    }
  }
  if (status === 'stopped') return { kind: 'stopped' };
  if (finish || sawDone) return { kind: 'done', finish };
  return {
    kind: 'error',
    error: new ApiError('The stream ended before the answer was complete.', { midStream: true }),
  };
}

function settle(answer, outcome, req) {
  if (outcome.kind === 'error') {
    const { error } = outcome;
    // A 404 model_not_found means a stale list: the refresh after each answer renews it.
    announcer.flush(`Error: ${error.message}`);
    answer.fail(error.message, hintFor(error), () => retry(answer, req));
    lastFailed = answer;
    return;
  }
  if (outcome.kind === 'stopped') {
    answer.finish('stopped', 'stopped');
    announcer.flush('Stopped.');
  } else if (outcome.finish === 'length') {
    answer.finish('done', '(cut at the token limit)');
    announcer.flush('Cut at the token limit.');
  } else {
    const odd = outcome.finish && outcome.finish !== 'stop';
    answer.finish('done', odd ? `(finished: ${outcome.finish})` : '');
    announcer.flush();
  }
}

function retry(answer, req) {
  if (current || opening || answer !== lastFailed) return;
  lastFailed = null;
  // The same message; the currently selected model, so "pick another model" fixes a 404.
  run(answer, req);
}

/** What the reader can do about an error. */
function hintFor(err) {
  if (err.network && !err.midStream) return 'Start it (or check the address), then press Retry.';
  if (err.midStream) return 'The answer was interrupted. Press Retry to ask again.';
  switch (err.status) {
    case 400:
    case 422:
      return 'The server rejected the request. Start a new chat or rephrase, then try again.';
    case 404:
      return err.code === 'conversation_not_found'
        ? 'This conversation was deleted. Start a new chat.'
        : 'Choose a model from the list at the top, then press Retry.';
    case 429:
      if (err.code === 'budget_exceeded' && err.resetsAt) {
        return `Your token budget starts again ${when(err.resetsAt)}. Until then, only a shorter answer may fit.`;
      }
      return err.retryAfter != null
        ? `Wait ${err.retryAfter} s, then press Retry.`
        : 'Wait a moment, then press Retry.';
    case 502:
      return 'The model server behind chatrelay is unreachable or failing. Start it, or point chatrelay at it with the setting named above, then press Retry.';
    case 503:
      return 'chatrelay is busy or still starting. Wait a moment, then press Retry.';
    default:
      return 'Press Retry to try again.';
  }
}

// ---- token budget -------------------------------------------------------------

function when(iso) {
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return 'later';
  const sameDay = at.toDateString() === new Date().toDateString();
  const time = at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  return sameDay ? `at ${time}` : `on ${at.toLocaleDateString()} at ${time}`;
}

/** Show what is left of the user's budget in the header (hidden when it is unlimited). */
async function refreshBudget() {
  let usage;
  try {
    usage = await getUsage();
  } catch {
    return; // only a hint: the last figure stays
  }
  if (usage?.limit == null) {
    budget.hidden = true;
    return;
  }
  const left = Math.max(0, Number(usage.remaining) || 0);
  budget.textContent = `${left.toLocaleString()} tokens left`;
  budget.title = `${Number(usage.used).toLocaleString()} of ${Number(usage.limit).toLocaleString()}`
    + ` tokens used this ${usage.period}; starts again ${when(usage.resets_at)}`;
  budget.dataset.low = left < usage.limit / 10 ? 'true' : 'false';
  budget.hidden = false;
}

// ---- sidebar and account ------------------------------------------------------

/** Open or close the sidebar (an overlay at phone width, a column otherwise). */
function setSidebar(open) {
  document.body.dataset.sidebar = open ? 'open' : 'closed';
  const label = open ? 'Hide chats' : 'Show chats';
  toggle.setAttribute('aria-expanded', open ? 'true' : 'false');
  toggle.setAttribute('aria-label', label);
  toggle.title = label;
  backdrop.hidden = !(open && narrow.matches);
}

toggle.addEventListener('click', () => setSidebar(document.body.dataset.sidebar !== 'open'));
backdrop.addEventListener('click', () => setSidebar(false));
narrow.addEventListener('change', () => setSidebar(!narrow.matches));

const sidebar = new Sidebar(
  {
    list: $('conversations'),
    search: $('search'),
    loadMore: $('load-more'),
    status: $('conversations-status'),
  },
  {
    onNavigate: () => { if (narrow.matches) setSidebar(false); },
    onRenamed: (id, title) => { if (id === activeId) document.title = `${title} · chatrelay`; },
    onListed: () => {
      const title = activeId ? sidebar.titleOf(activeId) : null;
      if (title) document.title = `${title} · chatrelay`;
    },
    onDeleted: (id) => {
      if (id === activeId) newChat();
    },
  },
);

// Links in the list (and Back/Forward) change the hash; the hash says what is shown.
window.addEventListener('hashchange', onAddressChange);
window.addEventListener('popstate', onAddressChange);

function onAddressChange() {
  const id = hashId();
  if (id === activeId) return;
  if (id) openConversation(id);
  else newChat();
}

const account = new Account({
  onChange(kind) {
    if (kind === 'signed-out') {
      // A fresh guest: nothing of the previous user stays on the page.
      newChat();
      sidebar.clear();
      hideNotice();
    }
    // Registering keeps the same conversations; signing in brings the guest's along.
    sidebar.reload({ fresh: kind === 'signed-out' });
    refreshBudget();
    prompt.focus();
  },
  onError(err) {
    showNotice(`Cannot sign out: ${err.message}`);
  },
});

// ---- start ------------------------------------------------------------------

async function start() {
  try {
    // First: a browser without a session becomes a guest here, once, before
    // anything else asks (parallel first requests would each make a guest).
    await account.load();
  } catch (err) {
    showNotice(`Cannot reach your account: ${err.message}`, () => start());
    return;
  }
  sidebar.reload();
  refreshBudget();
  const id = hashId();
  if (id) openConversation(id);
}

setSidebar(!narrow.matches);
setBusy(false);
autosize();
loadModels();
prompt.focus();
start();
