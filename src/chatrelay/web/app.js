// chatrelay chat page: wires the composer, the model list and the message list
// to the API. The conversation lives in memory only (for now).

import { ApiError, listModels, startChat, stopMessage } from './api.js';
import { AssistantMessage, Announcer, addUserMessage } from './messages.js';

const $ = (id) => document.getElementById(id);
const form = $('composer');
const prompt = $('prompt');
const sendBtn = $('send');
const modelSelect = $('model');
const list = $('messages');
const scroller = $('scroller');
const empty = $('empty');
const jump = $('jump');
const notice = $('notice');
const announcer = new Announcer($('live'));

/** Messages sent with every request: [{role, content}]. */
let history = [];
/** The exchange in flight, or null. */
let current = null;
/** Bumped by "New chat" so a late-finishing request cannot write into the new chat. */
let epoch = 0;
/** The assistant message whose Retry button is still valid. */
let lastFailed = null;

// ---- models -----------------------------------------------------------------

function modelLabel(m) {
  return m.owned_by ? `${m.id} (${m.owned_by})` : m.id;
}

function selectedModelLabel() {
  const opt = modelSelect.selectedOptions[0];
  return opt && opt.value ? opt.textContent : 'assistant';
}

async function loadModels() {
  modelSelect.disabled = true;
  try {
    const { default: def, data } = await listModels();
    const previous = modelSelect.value;
    modelSelect.replaceChildren(...data.map((m) => new Option(modelLabel(m), m.id)));
    if (!data.length) modelSelect.append(new Option('No models configured', ''));
    const keep = data.some((m) => m.id === previous) ? previous : def;
    if (keep) modelSelect.value = keep;
    hideNotice();
  } catch (err) {
    modelSelect.replaceChildren(new Option('Models unavailable', ''));
    showNotice(`Cannot load the model list: ${err.message}`, loadModels);
  } finally {
    modelSelect.disabled = false;
    modelSelect.title = selectedModelLabel();
  }
}

function showNotice(text, onRetry) {
  const retry = document.createElement('button');
  retry.type = 'button';
  retry.className = 'notice-retry';
  retry.textContent = 'Retry';
  retry.addEventListener('click', onRetry);
  const msg = document.createElement('span');
  msg.textContent = text;
  notice.replaceChildren(msg, retry);
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
  if (e.key === 'Escape' && current) { e.preventDefault(); stop(); }
});
$('new-chat').addEventListener('click', newChat);
modelSelect.addEventListener('change', () => { modelSelect.title = selectedModelLabel(); });

// ---- conversation -----------------------------------------------------------

function send() {
  const text = prompt.value.trim();
  if (!text || current) return;
  lastFailed?.dropRetry();
  lastFailed = null;
  history.push({ role: 'user', content: text });
  addUserMessage(list, text);
  empty.hidden = true;
  prompt.value = '';
  autosize();
  const answer = new AssistantMessage(list, selectedModelLabel());
  run(answer, history.map((m) => ({ ...m })));
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

function newChat() {
  stop();
  epoch += 1;
  current = null;
  setBusy(false);
  history = [];
  lastFailed = null;
  list.replaceChildren();
  announcer.reset();
  empty.hidden = false;
  follow(true);
  prompt.focus();
}

/** Run one request for `answer`; resolves when it is finished, stopped or failed. */
async function run(answer, messages) {
  const turn = { controller: new AbortController(), messageId: null, stopRequested: false, epoch };
  current = turn;
  setBusy(true);
  announcer.reset();
  answer.wait();
  follow(true);

  let outcome;
  try {
    const stream = await startChat({ messages, model: modelSelect.value }, turn.controller.signal);
    turn.messageId = stream.id;
    outcome = await consume(stream.events, answer);
  } catch (err) {
    if (turn.stopRequested) outcome = { kind: 'stopped' };
    else if (err instanceof ApiError) outcome = { kind: 'error', error: err };
    else outcome = { kind: 'error', error: new ApiError(lostMessage(err), { network: true, midStream: true }) };
  }
  if (turn.epoch !== epoch) return; // "New chat" was pressed meanwhile
  if (current === turn) current = null;
  setBusy(false);
  settle(answer, outcome, messages);
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

function settle(answer, outcome, messages) {
  if (outcome.kind === 'error') {
    const { error } = outcome;
    if (error.status === 404) loadModels(); // the list may be stale
    announcer.flush(`Error: ${error.message}`);
    answer.fail(error.message, hintFor(error), () => retry(answer, messages));
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
  // Whatever the reader saw becomes part of the history the model gets next time.
  if (answer.text) history.push({ role: 'assistant', content: answer.text });
}

function retry(answer, messages) {
  if (current || answer !== lastFailed) return;
  lastFailed = null;
  // Same messages; the currently selected model, so "pick another model" fixes a 404.
  run(answer, messages);
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
      return 'Choose a model from the list at the top, then press Retry.';
    case 429:
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

// ---- start ------------------------------------------------------------------

setBusy(false);
autosize();
loadModels();
prompt.focus();
