// DOM for the messages in the conversation list.
// Model output is untrusted: it is rendered by markdown.js (markdown-it without raw HTML,
// then DOMPurify) or inserted as text. User text is only ever inserted as text.

import { showAnswerExtras, showQuestionExtras } from './extras.js';
import { copyText, patchChildren, renderMarkdown } from './markdown.js';

const COLD_HINT_AFTER_S = 10;
const COPIED_MS = 1500;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(className, text, label) {
  const b = el('button', className, text);
  b.type = 'button';
  if (label) b.setAttribute('aria-label', label);
  return b;
}

function errorBox(message, hint, role) {
  const box = el('div', 'error');
  if (role) box.setAttribute('role', role);
  box.append(el('p', 'error-message', message));
  if (hint) box.append(el('p', 'error-hint', hint));
  return box;
}

/** A Copy button for `text()`, which says "Copied" for a moment. */
function copyButton(text, label) {
  const b = button('copy', 'Copy', label);
  b.addEventListener('click', async () => {
    const ok = await copyText(text());
    b.textContent = ok ? 'Copied' : 'Copy failed';
    setTimeout(() => { b.textContent = 'Copy'; }, COPIED_MS);
  });
  return b;
}

// A code block's Copy button lives in rendered markdown (rebuilt while streaming), so one
// listener on the list serves them all.
export function handleCodeCopy(list) {
  list.addEventListener('click', async (e) => {
    const target = e.target instanceof Element ? e.target.closest('.copy-code') : null;
    if (!target) return;
    const code = target.closest('.code-block')?.querySelector('pre code, pre');
    if (!code) return;
    const ok = await copyText(code.textContent);
    target.textContent = ok ? 'Copied' : 'Copy failed';
    setTimeout(() => { target.textContent = 'Copy'; }, COPIED_MS);
  });
}

/** A question: its text, Copy, and (for the last one) Edit. */
export class UserMessage {
  constructor(list, text, { onEdit } = {}) {
    this.text = text;
    this.item = el('li', 'message user');
    this.item.dataset.testid = 'message-user';
    this.item.dataset.state = 'done';
    this.bubble = el('div', 'bubble');
    this.content = el('div', 'content', text);
    this.bubble.append(el('span', 'visually-hidden', 'You: '), this.content);
    this.actions = el('div', 'message-actions');
    this.editButton = button('edit', 'Edit', 'Edit your last message');
    this.editButton.addEventListener('click', () => onEdit?.(this));
    this.actions.append(copyButton(() => this.text, 'Copy your message'), this.editButton);
    this.item.append(this.bubble, this.actions);
    list.append(this.item);
  }

  setText(text) {
    this.text = text;
    this.content.textContent = text;
  }

  /** What the stored question carried besides its text: its images and other parts. */
  showExtras(extra) { showQuestionExtras(this.content, extra); }

  get editing() { return this.item.classList.contains('editing'); }

  /**
   * Edit in place: a text box with the question, Enter (or "Send") sends it with
   * `onSubmit(text)`, Esc (or "Cancel") leaves it as it was.
   */
  startEdit(onSubmit) {
    if (this.editing) return;
    this.item.classList.add('editing');
    const form = el('form', 'edit-form');
    form.setAttribute('aria-label', 'Edit your message');
    const area = el('textarea', 'edit-input');
    area.value = this.text;
    area.rows = Math.min(8, Math.max(2, this.text.split('\n').length));
    area.setAttribute('aria-label', 'Edited message');
    const row = el('div', 'edit-actions');
    const save = el('button', 'primary edit-send', 'Send');
    save.type = 'submit';
    const cancel = button('edit-cancel', 'Cancel');
    row.append(save, cancel);
    form.append(area, row);
    this.bubble.append(form);
    area.focus();
    area.setSelectionRange(area.value.length, area.value.length);

    const close = () => {
      form.remove();
      this.item.classList.remove('editing');
    };
    const submit = () => {
      const text = area.value.trim();
      if (!text) { area.focus(); return; }
      close();
      onSubmit(text);
    };
    form.addEventListener('submit', (e) => { e.preventDefault(); submit(); });
    cancel.addEventListener('click', () => { close(); this.editButton.focus(); });
    area.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        submit();
      } else if (e.key === 'Escape') {
        e.preventDefault(); // not "stop the answer"
        e.stopPropagation();
        close();
        this.editButton.focus();
      }
    });
  }
}

/** One assistant answer: waiting → streaming → done | stopped | error. */
export class AssistantMessage {
  #timer = 0;
  #retryTimer = 0;
  #parts = [];
  #frame = 0;
  #lastRender = 0;
  #renderCost = 0;
  #clearOnText = false;
  #length = 0;

  constructor(list, modelLabel, { onRegenerate } = {}) {
    this.item = el('li', 'message assistant');
    this.item.dataset.testid = 'message-assistant';
    this.state = 'waiting';
    const bubble = el('div', 'bubble');
    this.meta = el('div', 'meta', modelLabel || 'assistant');
    this.progress = el('div', 'progress');
    this.progress.setAttribute('role', 'status');
    this.progressText = el('span', 'progress-text');
    this.coldHint = el('span', 'progress-hint', 'Cold models can take a minute or more to load.');
    this.progress.append(el('span', 'spinner'), this.progressText, this.coldHint);
    this.content = el('div', 'content markdown');
    bubble.append(this.meta, this.progress, this.content);
    this.actions = el('div', 'message-actions');
    this.regenerateButton = button('regenerate', 'Regenerate', 'Regenerate this answer');
    this.regenerateButton.addEventListener('click', () => onRegenerate?.(this));
    this.actions.append(copyButton(() => this.text, 'Copy the answer'), this.regenerateButton);
    this.item.append(bubble, this.actions);
    this.bubble = bubble;
    list.append(this.item);
  }

  get state() { return this.item.dataset.state; }

  /** waiting | streaming | done | stopped | error | interrupted */
  set state(value) {
    this.item.dataset.state = value;
    // Assistive technology waits for the answer to settle before reading it as a whole.
    if (value === 'waiting' || value === 'streaming') this.item.setAttribute('aria-busy', 'true');
    else this.item.removeAttribute('aria-busy');
  }

  /** The answer as the model wrote it (markdown source). */
  get text() { return this.#parts.join(''); }

  /** How many characters of text it has (without joining them). */
  get length() { return this.#length; }

  setModel(label) { this.meta.textContent = label; }

  /**
   * Show the waiting indicator with elapsed seconds until the first token. The
   * cold-model hint shows after a while, or at once when the model is known to be
   * cold (`cold`: true).
   */
  wait({ cold = false } = {}) {
    this.clearExtras();
    this.setText('');
    this.state = 'waiting';
    this.progress.hidden = false;
    this.coldHint.hidden = !cold;
    const started = performance.now();
    const tick = () => {
      const secs = Math.floor((performance.now() - started) / 1000);
      this.progressText.textContent = `Waiting for the model… ${secs} s`;
      this.coldHint.hidden = !cold && secs < COLD_HINT_AFTER_S;
    };
    tick();
    clearInterval(this.#timer);
    this.#timer = setInterval(tick, 1000);
  }

  /** Following an answer already under way (a reload, a reconnect): its text so far. */
  attach(text, { replay = false } = {}) {
    this.clearExtras();
    this.#stopWaiting();
    this.setText(text);
    // A replay from the start sends the whole text again: what is shown stays until it comes.
    this.#clearOnText = replay;
    this.state = text ? 'streaming' : 'waiting';
    if (!text) this.wait();
  }

  append(text) {
    if (this.#clearOnText) {
      this.#clearOnText = false;
      this.#parts = [];
      this.#length = 0;
    }
    if (this.state === 'waiting') {
      this.#stopWaiting();
      this.state = 'streaming';
    }
    this.#parts.push(text);
    this.#length += text.length;
    this.#schedule();
  }

  /** The server starts the answer's text over (a role chunk): forget what was shown. */
  restart() {
    this.#clearOnText = false;
    this.#parts = [];
    this.#length = 0;
    this.#schedule();
  }

  /** Replace the whole text and show it now. */
  setText(text) {
    this.#parts = text ? [text] : [];
    this.#length = text ? text.length : 0;
    this.#clearOnText = false;
    this.renderNow();
  }

  /** While the connection is lost the answer says so (it goes on on the server). */
  setConnection(lost) {
    if (lost) this.item.dataset.connection = 'lost';
    else delete this.item.dataset.connection;
  }

  // Re-rendering the markdown once per animation frame at most (tokens come faster than
  // frames), and less often when a long answer makes a render costly.
  #schedule() {
    if (this.#frame) return;
    this.#frame = requestAnimationFrame((now) => {
      this.#frame = 0;
      if (now - this.#lastRender < this.#renderCost * 4) {
        this.#schedule();
        return;
      }
      this.renderNow();
    });
  }

  renderNow() {
    if (this.#frame) cancelAnimationFrame(this.#frame);
    this.#frame = 0;
    const started = performance.now();
    patchChildren(this.content, renderMarkdown(this.text));
    this.#lastRender = performance.now();
    this.#renderCost = this.#lastRender - started;
    this.onRender?.();
  }

  /** kind: 'done' | 'stopped'; note: optional small marker text. */
  finish(kind, note) {
    this.#stopWaiting();
    this.setConnection(false);
    this.#clearOnText = false;
    this.renderNow();
    this.state = kind;
    if (note) this.#note(kind, note);
  }

  /**
   * Show an error in place, keeping any partial text, with a Retry button (if onRetry).
   * `waitSeconds`: Retry only becomes possible after that long (a rate limit), counting down.
   */
  fail(message, hint, onRetry, { code = '', waitSeconds = 0 } = {}) {
    this.#stopWaiting();
    this.setConnection(false);
    this.#clearOnText = false;
    this.renderNow();
    this.state = 'error';
    if (code) this.item.dataset.error = code;
    else delete this.item.dataset.error;
    this.bubble.append(errorBox(message, hint, 'alert'));
    if (!onRetry) return null;
    const retry = button('retry', 'Retry');
    retry.dataset.testid = 'retry';
    retry.addEventListener('click', onRetry);
    this.bubble.append(retry);
    if (waitSeconds > 0) {
      const until = performance.now() + waitSeconds * 1000;
      const tick = () => {
        const left = Math.ceil((until - performance.now()) / 1000);
        if (left > 0) {
          retry.disabled = true;
          retry.textContent = `Retry in ${left} s`;
        } else {
          clearInterval(this.#retryTimer);
          retry.disabled = false;
          retry.textContent = 'Retry';
        }
      };
      tick();
      clearInterval(this.#retryTimer);
      this.#retryTimer = setInterval(tick, 250);
    }
    return retry;
  }

  /**
   * Show an answer as it was stored: its text and its final state.
   * status: complete | stopped | error | interrupted (streaming ones are attached to).
   */
  restore(stored) {
    this.#stopWaiting();
    if (stored.id) this.item.dataset.id = stored.id;
    this.item.dataset.stored = 'true';
    this.setText(typeof stored.content === 'string' ? stored.content : '');
    // Reasoning, tool calls, a refusal: collapsed blocks around the text (extras.js).
    showAnswerExtras(this.bubble, this.content, stored.extra);
    const error = typeof stored.error === 'string' && stored.error ? stored.error : '';
    switch (stored.status) {
      case 'complete': {
        const finish = stored.finish_reason;
        this.state = 'done';
        if (finish === 'length') this.#note('done', '(cut at the token limit)');
        else if (finish && finish !== 'stop') this.#note('done', `(finished: ${finish})`);
        break;
      }
      case 'stopped':
        this.state = 'stopped';
        this.#note('stopped', 'stopped');
        break;
      case 'interrupted':
        this.state = 'interrupted';
        this.#note('interrupted', 'interrupted');
        this.bubble.append(errorBox(
          error || 'The server stopped before this answer was complete.',
          'Press Regenerate to ask once more.',
        ));
        break;
      case 'error':
      default:
        this.state = 'error';
        this.bubble.append(errorBox(
          error || 'This answer failed.',
          'Press Regenerate to ask once more.',
        ));
    }
  }

  #note(kind, text) {
    const note = el('div', `note note-${kind}`, text);
    this.bubble.append(note);
    return note;
  }

  /** Retry is only meaningful for the latest exchange; drop it once the chat moves on. */
  dropRetry() {
    clearInterval(this.#retryTimer);
    this.bubble.querySelector('.retry')?.remove();
  }

  #stopWaiting() {
    clearInterval(this.#timer);
    this.#timer = 0;
    this.progress.hidden = true;
  }

  /** Forget the marks of an earlier outcome (errors, Retry, notes) before it goes again. */
  clearExtras() {
    clearInterval(this.#retryTimer);
    delete this.item.dataset.error;
    this.setConnection(false);
    this.bubble.querySelectorAll('.error, .retry, .note, .stored-extra').forEach((n) => n.remove());
  }
}

/**
 * Polite live region for screen readers. Announcing every token would be noise,
 * so text is passed on in sentence-sized pieces.
 */
export class Announcer {
  #pending = '';

  constructor(region) { this.region = region; }

  reset() { this.#pending = ''; this.region.replaceChildren(); }

  push(text) {
    this.#pending += text;
    let cut = 0;
    for (const m of this.#pending.matchAll(/[.!?…:;]\s|\n/g)) cut = m.index + m[0].length;
    if (!cut && this.#pending.length > 300) cut = this.#pending.lastIndexOf(' ') + 1;
    if (cut > 0) {
      this.say(this.#pending.slice(0, cut));
      this.#pending = this.#pending.slice(cut);
    }
  }

  flush(extra) {
    if (this.#pending.trim()) this.say(this.#pending);
    this.#pending = '';
    if (extra) this.say(extra);
  }

  say(text) {
    // Markdown marks read aloud are noise: "## Steps" is "Steps".
    const t = text.replace(/[#*_`>|~]+/g, ' ').replace(/\s+/g, ' ').trim();
    if (t) this.region.append(el('p', '', t));
  }
}
