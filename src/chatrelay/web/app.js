// chatrelay chat page: wires the composer, the model list, the message list,
// the sidebar of stored conversations and the account area to the API.
// The server keeps each conversation: a new chat sends its first message alone,
// a continued one sends its id and only the new message. An answer is generated
// on the server whatever the page does: a reload or a dropped connection
// re-attaches to it (GET /api/messages/{id}/stream with Last-Event-ID).

import {
  ApiError, exportUrl, getConversation, getUsage, listModels, resumeStream, startChat,
  stopMessage,
} from './api.js';
import { storedNote } from './extras.js';
import { AssistantMessage, Announcer, UserMessage, handleCodeCopy } from './messages.js';
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
const exportMenu = $('export');
const connectionBar = $('connection');
const connectionText = $('connection-text');
const reconnectNow = $('reconnect-now');
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

// Follow the stream only while the reader is at the bottom; scrolling up opts out,
// scrolling back to the bottom (or "↓ Latest") opts in again.
let stick = true;
let lastTop = 0;
const atBottom = () => scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 32;

function follow(force = false) {
  if (force) stick = true;
  if (stick) scroller.scrollTop = scroller.scrollHeight;
  lastTop = scroller.scrollTop;
  jump.hidden = stick;
}

scroller.addEventListener('scroll', () => {
  // Text growing below never moves scrollTop: only the reader (or follow) does.
  if (atBottom()) stick = true;
  else if (scroller.scrollTop < lastTop - 2) stick = false;
  lastTop = scroller.scrollTop;
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

/** busy: false | true | 'stopping' */
function setBusy(busy) {
  form.dataset.busy = busy ? 'true' : 'false';
  document.body.dataset.busy = busy ? 'true' : 'false';
  sendBtn.textContent = busy === 'stopping' ? 'Stopping…' : busy ? 'Stop' : 'Send';
  sendBtn.disabled = busy === 'stopping';
  sendBtn.setAttribute('aria-label', busy ? 'Stop the answer (Esc)' : 'Send (Enter)');
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
  // Esc inside a form of its own (rename, confirm, edit, the sign-in dialog) belongs to it.
  if (e.key !== 'Escape' || e.defaultPrevented || account.isOpen) return;
  if (exportMenu.open) { exportMenu.open = false; exportMenu.querySelector('summary').focus(); return; }
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
handleCodeCopy(list);
// The export menu closes when the reader picks a format or clicks elsewhere.
exportMenu.addEventListener('click', (e) => {
  if (e.target instanceof Element && e.target.closest('a')) exportMenu.open = false;
});
document.addEventListener('click', (e) => {
  if (exportMenu.open && !exportMenu.contains(e.target)) exportMenu.open = false;
});

// ---- messages on the page -----------------------------------------------------

function addUser(text) {
  return new UserMessage(list, text, { onEdit: editLast });
}

function addAnswer(label) {
  const answer = new AssistantMessage(list, label, { onRegenerate: regenerate });
  answer.onRender = () => follow();
  return answer;
}

/** The messages of the page, by their list items. */
const views = new WeakMap();
function track(view) { views.set(view.item, view); return view; }
const lastItem = () => list.lastElementChild;

// ---- conversation -----------------------------------------------------------

function send() {
  const text = prompt.value.trim();
  if (!text || current || opening) return;
  forgetFailure();
  track(addUser(text));
  empty.hidden = true;
  prompt.value = '';
  autosize();
  const answer = track(addAnswer(selectedModelLabel()));
  run(answer, { text, conversationId: activeId });
}

function forgetFailure() {
  lastFailed?.dropRetry();
  lastFailed = null;
}

/** Regenerate the last answer: a new one to the same question, in its place. */
function regenerate(answer) {
  if (current || opening || lastItem() !== answer.item) return;
  if (answer === lastFailed && answer.retryRequest) {
    retry(answer);
    return;
  }
  const question = views.get(answer.item.previousElementSibling);
  let req;
  if (answer.item.dataset.id && activeId) {
    req = { action: 'regenerate', conversationId: activeId };
  } else if (question instanceof UserMessage) {
    // Never stored (refused before it was): ask the question again.
    req = { text: question.text, conversationId: activeId };
  } else {
    return;
  }
  forgetFailure();
  answer.setModel(selectedModelLabel());
  run(answer, req);
}

/** Edit the last question in place, then ask it again: the answer after it is replaced. */
function editLast(user) {
  if (current || opening) return;
  const next = user.item.nextElementSibling;
  if (next && next !== lastItem()) return; // only the last question
  user.startEdit((text) => {
    if (current || opening) return;
    const previous = next ? views.get(next) : null;
    const stored = previous instanceof AssistantMessage && previous.item.dataset.id && activeId;
    forgetFailure();
    user.setText(text);
    const answer = previous instanceof AssistantMessage
      ? previous : track(addAnswer(selectedModelLabel()));
    answer.setModel(selectedModelLabel());
    run(answer, stored
      ? { action: 'edit', text, conversationId: activeId }
      : { text, conversationId: activeId });
  });
}

function stop() {
  const turn = current;
  if (!turn || turn.stopRequested) return;
  turn.stopRequested = true;
  setBusy('stopping');
  // The stop call makes the server stop generating (a closed connection never does);
  // the stream then ends with the "stopped" final chunk, so the page shows exactly
  // what was stored. Without an id yet (no response headers), run() sends it as
  // soon as the id comes. If nothing ends the stream soon, stop reading anyway.
  if (turn.messageId && !turn.reconnecting) {
    stopMessage(turn.messageId).then((ok) => { if (!ok) turn.controller.abort(); });
  } else if (turn.reconnecting) {
    stopMessage(turn.messageId); // the server may be back; the page stops waiting for it
    turn.controller.abort();
  }
  turn.stopTimer = setTimeout(() => turn.controller.abort(), STOP_GRACE_MS);
}
const STOP_GRACE_MS = 4000;

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
  connection.clear(turn);
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
  exportMenu.hidden = !id;
  exportMenu.open = false;
  if (id) {
    $('export-json').href = exportUrl(id, 'json');
    $('export-markdown').href = exportUrl(id, 'markdown');
  }
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
  let live = null;
  messages.forEach((m, i) => {
    if (m.role === 'assistant') {
      const answer = track(addAnswer(storedModelLabel(m)));
      if (m.status === 'streaming' && i === messages.length - 1) live = { answer, stored: m };
      else answer.restore(m);
    } else if (m.role === 'user') {
      track(addUser(typeof m.content === 'string' ? m.content : '')).showExtras(m.extra);
    } else {
      // System, developer and tool messages (sent through /v1): one collapsed block each.
      storedNote(list, m);
    }
  });
  empty.hidden = messages.length > 0;
  follow(true);
  if (!narrow.matches) prompt.focus();
  // The last answer is still being generated: follow it from its first event.
  if (live) reattach(live.answer, live.stored, id);
}

function storedModelLabel(m) {
  if (!m.model) return 'assistant';
  const upstream = m.upstream || upstreamOf.get(m.model);
  return upstream ? `${m.model} (${upstream})` : m.model;
}

function newTurn(answer, req) {
  const turn = {
    controller: new AbortController(), messageId: null, lastEventId: null,
    stopRequested: false, detached: false, reconnecting: false, stopTimer: 0, epoch, answer,
    req, spoken: 0,
  };
  current = turn;
  setBusy(true);
  announcer.reset();
  return turn;
}

/** Run one request for `answer`; resolves when it is finished, stopped or failed. */
async function run(answer, req) {
  const turn = newTurn(answer, req);
  // The button that started this (Regenerate, the edit form) goes away while it runs.
  if (list.contains(document.activeElement) || document.activeElement === document.body) {
    prompt.focus();
  }
  answer.clearExtras();
  // A new question has no stored answer until the server names one. Regenerate and edit
  // replace the stored one only once they are under way: until then it is still there.
  if (!req.action) delete answer.item.dataset.id;
  delete answer.item.dataset.stored;
  const status = selectedStatus();
  answer.wait({ cold: status === 'cold' || status === 'warming' });
  follow(true);

  let outcome;
  try {
    const stream = await startChat(
      { ...req, model: modelSelect.value },
      turn.controller.signal,
    );
    known(turn, stream.id, stream.conversationId);
    if (turn.stopRequested && turn.messageId) {
      // Stop was pressed before the answer had an id: stop it now.
      stopMessage(turn.messageId).then((ok) => { if (!ok) turn.controller.abort(); });
    }
    outcome = await pump(turn, stream.events);
  } catch (err) {
    if (err instanceof ApiError) known(turn, err.messageId, err.conversationId);
    outcome = failure(turn, err);
  }
  await end(turn, outcome);
}

/** The server named the answer (and its conversation): remember them. */
function known(turn, messageId, conversationId) {
  if (messageId) {
    turn.messageId = messageId;
    turn.answer.item.dataset.id = messageId;
  }
  const { req } = turn;
  if (!req.conversationId && conversationId) {
    // A new chat was just stored: from now on it is continued by its id (Retry too).
    req.conversationId = conversationId;
    if (turn.epoch === epoch && !turn.detached) {
      setActive(conversationId);
      sidebar.reload();
    }
  }
}

/** Follow an answer the server is still generating (found on opening a conversation). */
async function reattach(answer, stored, conversationId) {
  const turn = newTurn(answer, { conversationId });
  turn.messageId = stored.id;
  answer.item.dataset.id = stored.id;
  // Shown as stored until the replay (from the first event) brings the text again.
  answer.attach(typeof stored.content === 'string' ? stored.content : '', { replay: true });
  turn.spoken = answer.length; // shown (and in the page to read) already
  follow(true);
  let outcome;
  try {
    const stream = await resumeStream(stored.id, 0, turn.controller.signal);
    outcome = await pump(turn, stream.events);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) err.resumed = true; // finished meanwhile
    if (err instanceof ApiError && err.network) {
      try {
        outcome = await pump(turn, null); // unreachable now: keep trying, as after a drop
      } catch (again) {
        outcome = failure(turn, again);
      }
    } else {
      outcome = failure(turn, err);
    }
  }
  await end(turn, outcome);
}

function failure(turn, err) {
  if (err?.name === 'AbortError') return { kind: turn.detached ? 'detached' : 'stopped' };
  if (turn.stopRequested) return { kind: 'stopped' };
  if (err instanceof ApiError) {
    // The answer went away while it could not be followed (e.g. the server restarted).
    if (err.status === 404 && err.resumed) return { kind: 'gone' };
    return { kind: 'error', error: err };
  }
  return { kind: 'error', error: new ApiError(lostMessage(err), { network: true, midStream: true }) };
}

function lostMessage(err) {
  return err instanceof TypeError
    ? 'The connection to the chatrelay server was lost.'
    : `Unexpected error: ${err?.message ?? err}`;
}

// ---- following a stream, and re-attaching when the connection drops ------------

const RECONNECT_FIRST_MS = 1000;
const RECONNECT_MAX_MS = 30_000;

/**
 * Read the answer's events until it ends; when the connection drops (or never
 * was: `events` null), re-attach from the last event seen, with back-off, for as
 * long as it takes. Returns the outcome.
 */
async function pump(turn, events) {
  let delay = RECONNECT_FIRST_MS;
  let stream = events;
  for (;;) {
    if (stream) {
      const seen = turn.lastEventId;
      let outcome;
      try {
        outcome = await consume(stream, turn);
      } catch (err) {
        if (err?.name === 'AbortError' || !(err instanceof TypeError)) throw err;
        outcome = { kind: 'lost' }; // the network read failed mid-answer
      }
      if (outcome.kind !== 'lost' || turn.stopRequested || !turn.messageId) {
        return outcome.kind === 'lost' ? lostOutcome(turn) : outcome;
      }
      if (turn.lastEventId !== seen) delay = RECONNECT_FIRST_MS; // it got further: start over
    }
    stream = await reconnect(turn, stream ? delay : 0);
    delay = Math.min(delay * 2, RECONNECT_MAX_MS);
  }
}

function lostOutcome(turn) {
  if (turn.stopRequested) return { kind: 'stopped' };
  return {
    kind: 'error',
    error: new ApiError('The stream ended before the answer was complete.', { midStream: true }),
  };
}

/** One wait and one attempt to re-attach; resolves with the events, or throws. */
async function reconnect(turn, delay) {
  turn.reconnecting = true;
  turn.answer.setConnection(true);
  try {
    for (;;) {
      await connection.wait(turn, delay);
      try {
        const s = await resumeStream(turn.messageId, turn.lastEventId, turn.controller.signal);
        connection.clear(turn);
        turn.answer.setConnection(false);
        return s.events;
      } catch (err) {
        if (err?.name === 'AbortError') throw err;
        const retryable = err instanceof ApiError && (err.network || err.status >= 500);
        if (!retryable) {
          if (err instanceof ApiError) err.resumed = true;
          throw err;
        }
        delay = Math.min(Math.max(delay * 2, RECONNECT_FIRST_MS), RECONNECT_MAX_MS);
      }
    }
  } finally {
    turn.reconnecting = false;
  }
}

/** Read the chunks into the answer; returns the outcome ('lost': it broke off). */
async function consume(events, turn) {
  const { answer } = turn;
  let finish = null;
  let status = null;
  for await (const { data, id } of events) {
    if (id !== null && id !== undefined && id !== '') turn.lastEventId = id;
    if (data === '[DONE]') {
      return status === 'stopped' ? { kind: 'stopped' } : { kind: 'done', finish, status };
    }
    let chunk;
    try { chunk = JSON.parse(data); } catch { continue; } // not ours: skip it
    if (chunk?.error) {
      return { kind: 'error', error: ApiError.fromBody(chunk.error, { midStream: true }) };
    }
    const choice = chunk?.choices?.[0];
    if (!choice) continue;
    if (choice.delta?.role === 'assistant') {
      // The answer (re)starts here: a replay brings all of its text again. A replay of
      // the stored text carries no ids; resuming after it must start from the start again.
      turn.lastEventId = id || null;
      answer.restart();
    }
    const token = choice.delta?.content;
    if (typeof token === 'string' && token) {
      answer.append(token);
      // Screen readers hear each part once, also when a replay brings it again.
      const fresh = answer.length - turn.spoken;
      if (fresh > 0) {
        announcer.push(token.slice(Math.max(0, token.length - fresh)));
        turn.spoken = answer.length;
      }
    }
    if (choice.finish_reason) {
      finish = choice.finish_reason;
      status = chunk.x_chatrelay?.status ?? status;
    }
  }
  // No [DONE]: a final chunk still says how it ended; without one it broke off.
  if (status === 'stopped') return { kind: 'stopped' };
  if (finish) return { kind: 'done', finish, status };
  return { kind: 'lost' };
}

/** The turn is over: show how it ended (if its conversation is still shown). */
async function end(turn, outcome) {
  clearTimeout(turn.stopTimer);
  connection.clear(turn);
  // The list shows the conversation (new or just moved to the top) with its title.
  sidebar.reload();
  refreshBudget();
  loadModels(); // a first token makes the model warm; a failure may make it unavailable
  if (turn.detached || outcome.kind === 'detached' || turn.epoch !== epoch) return;
  if (current === turn) current = null;
  setBusy(false);
  if (outcome.kind === 'gone') {
    await showStored(turn);
  } else {
    settle(turn, outcome);
  }
  follow();
}

/** The answer can no longer be followed: show it as the server stored it. */
async function showStored(turn) {
  const { answer } = turn;
  let stored = null;
  try {
    const conversation = await getConversation(turn.req.conversationId);
    stored = conversation?.messages?.find((m) => m.id === turn.messageId) ?? null;
  } catch { /* shown as an error below */ }
  if (turn.epoch !== epoch) return;
  answer.clearExtras();
  if (stored && stored.status !== 'streaming') {
    answer.restore(stored);
  } else {
    answer.fail(
      'This answer can no longer be followed.',
      'Open the conversation again in a moment to see how it ended.',
    );
  }
}

function settle(turn, outcome) {
  const { answer } = turn;
  if (outcome.kind === 'error') {
    const { error } = outcome;
    // A 404 model_not_found means a stale list: the refresh after each answer renews it.
    announcer.flush(`Error: ${error.message}`);
    answer.retryRequest = retryRequest(turn);
    answer.fail(error.message, hintFor(error), () => retry(answer), {
      code: error.code || (error.network ? 'unreachable' : ''),
      waitSeconds: error.code === 'rate_limited' ? error.retryAfter ?? 0 : 0,
    });
    lastFailed = answer;
    return;
  }
  if (outcome.kind === 'stopped') {
    answer.finish('stopped', 'stopped');
    announcer.flush('Stopped.');
  } else if (outcome.status === 'interrupted') {
    answer.finish('interrupted', 'interrupted');
    answer.fail(
      'The server stopped before this answer was complete.',
      'Press Regenerate to ask once more.',
    );
    answer.state = 'interrupted';
    announcer.flush('Interrupted.');
  } else if (outcome.status === 'error') {
    answer.fail('The answer failed.', 'Press Regenerate to ask again.');
    announcer.flush('Error.');
  } else if (outcome.finish === 'length') {
    answer.finish('done', '(cut at the token limit)');
    announcer.flush('Cut at the token limit.');
  } else {
    const odd = outcome.finish && outcome.finish !== 'stop';
    answer.finish('done', odd ? `(finished: ${outcome.finish})` : '');
    announcer.flush();
  }
}

/**
 * What Retry sends: once the server has stored the question (it named the answer),
 * a new answer to it (regenerate); else the same request again.
 */
function retryRequest(turn) {
  const { req } = turn;
  if (turn.messageId && req.conversationId) {
    return { action: 'regenerate', conversationId: req.conversationId };
  }
  return { ...req };
}

function retry(answer) {
  if (current || opening || answer !== lastFailed) return;
  lastFailed = null;
  const req = answer.retryRequest;
  answer.retryRequest = null;
  // The currently selected model, so "pick another model" fixes a 404.
  answer.setModel(selectedModelLabel());
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
    case 409:
      return 'An answer is still being generated in this conversation. Wait for it (or stop it), then press Retry.';
    case 429:
      if (err.code === 'budget_exceeded') {
        return err.resetsAt
          ? `Your token budget starts again ${when(err.resetsAt)}. Until then, only a shorter answer may fit.`
          : 'Your token budget is used up for now.';
      }
      return err.retryAfter != null
        ? `You can send again ${clockIn(err.retryAfter)}.`
        : 'Too many requests for now. Wait a moment, then press Retry.';
    case 502:
      return 'The model server behind chatrelay is unreachable or failing. Start it, or point chatrelay at it with the setting named above, then press Retry.';
    case 503:
      return 'chatrelay is busy or still starting. Wait a moment, then press Retry.';
    default:
      return 'Press Retry to try again.';
  }
}

/** "at 14:05:09", the wall-clock time `seconds` from now. */
function clockIn(seconds) {
  const at = new Date(Date.now() + seconds * 1000);
  return `at ${at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' })}`;
}

// ---- connection state ----------------------------------------------------------

/**
 * The bar that says the server cannot be reached while an answer is being
 * re-attached to, counting down to the next attempt; "Reconnect now" (or the
 * browser coming back online) tries at once.
 */
const connection = {
  owner: null,
  wake: null,
  timer: 0,

  /** Wait `ms` before the next attempt of `turn` (less if woken); rejects on abort. */
  wait(turn, ms) {
    this.owner = turn;
    return new Promise((resolve, reject) => {
      const until = performance.now() + ms;
      const signal = turn.controller.signal;
      const done = () => {
        cleanup();
        this.show('Reconnecting…');
        resolve();
      };
      const aborted = () => { cleanup(); reject(new DOMException('Aborted', 'AbortError')); };
      const cleanup = () => {
        clearInterval(this.timer);
        this.wake = null;
        window.removeEventListener('online', done);
        signal.removeEventListener('abort', aborted);
      };
      if (signal.aborted) { aborted(); return; }
      if (ms <= 0) { done(); return; }
      this.wake = done;
      window.addEventListener('online', done);
      signal.addEventListener('abort', aborted);
      const tick = () => {
        const left = Math.ceil((until - performance.now()) / 1000);
        if (left <= 0) { done(); return; }
        const where = navigator.onLine ? 'Cannot reach the server' : 'You are offline';
        this.show(`${where}. The answer goes on there; reconnecting in ${left} s…`);
      };
      clearInterval(this.timer);
      this.timer = setInterval(tick, 250);
      tick();
    });
  },

  show(text) {
    if (connectionText.textContent !== text) connectionText.textContent = text;
    connectionBar.dataset.state = 'reconnecting';
    connectionBar.hidden = false;
  },

  clear(turn) {
    if (turn && this.owner !== turn) return;
    clearInterval(this.timer);
    this.owner = null;
    this.wake = null;
    if (!navigator.onLine) {
      connectionText.textContent = 'You are offline.';
      connectionBar.dataset.state = 'offline';
      return;
    }
    connectionBar.hidden = true;
  },
};

reconnectNow.addEventListener('click', () => connection.wake?.());
window.addEventListener('offline', () => {
  if (connection.owner) return; // the countdown says so already
  connectionText.textContent = 'You are offline.';
  connectionBar.dataset.state = 'offline';
  connectionBar.hidden = false;
});
window.addEventListener('online', () => {
  if (!connection.owner) connectionBar.hidden = true;
});

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
