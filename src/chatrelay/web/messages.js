// DOM for the messages in the conversation list.
// Model output is untrusted: it only ever goes in through textContent / text nodes.

const COLD_HINT_AFTER_S = 10;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function errorBox(message, hint, role) {
  const box = el('div', 'error');
  if (role) box.setAttribute('role', role);
  box.append(el('p', 'error-message', message));
  if (hint) box.append(el('p', 'error-hint', hint));
  return box;
}

export function addUserMessage(list, text) {
  const item = el('li', 'message user');
  item.dataset.testid = 'message-user';
  item.dataset.state = 'done';
  const bubble = el('div', 'bubble');
  bubble.append(el('span', 'visually-hidden', 'You: '), el('div', 'content', text));
  item.append(bubble);
  list.append(item);
  return item;
}

/** One assistant answer: waiting → streaming → done | stopped | error. */
export class AssistantMessage {
  #timer = 0;

  constructor(list, modelLabel) {
    this.item = el('li', 'message assistant');
    this.item.dataset.testid = 'message-assistant';
    this.item.dataset.state = 'waiting';
    const bubble = el('div', 'bubble');
    this.meta = el('div', 'meta', modelLabel || 'assistant');
    this.progress = el('div', 'progress');
    this.progress.setAttribute('role', 'status');
    this.progressText = el('span', 'progress-text');
    this.coldHint = el('span', 'progress-hint', 'Cold models can take a minute or more to load.');
    this.progress.append(el('span', 'spinner'), this.progressText, this.coldHint);
    this.content = el('div', 'content');
    bubble.append(this.meta, this.progress, this.content);
    this.item.append(bubble);
    this.bubble = bubble;
    list.append(this.item);
  }

  get state() { return this.item.dataset.state; }
  get text() { return this.content.textContent; }

  setModel(label) { this.meta.textContent = label; }

  /**
   * Show the waiting indicator with elapsed seconds until the first token. The
   * cold-model hint shows after a while, or at once when the model is known to be
   * cold (`cold`: true).
   */
  wait({ cold = false } = {}) {
    this.#clearExtras();
    this.content.replaceChildren();
    this.item.dataset.state = 'waiting';
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

  append(text) {
    if (this.state === 'waiting') {
      this.#stopWaiting();
      this.item.dataset.state = 'streaming';
    }
    // A text node per chunk: cheaper than rewriting textContent each time.
    this.content.append(document.createTextNode(text));
  }

  /** kind: 'done' | 'stopped'; note: optional small marker text. */
  finish(kind, note) {
    this.#stopWaiting();
    this.item.dataset.state = kind;
    if (note) this.#note(kind, note);
  }

  /** Show an error in place, keeping any partial text, with a Retry button (if onRetry). */
  fail(message, hint, onRetry) {
    this.#stopWaiting();
    this.item.dataset.state = 'error';
    this.bubble.append(errorBox(message, hint, 'alert'));
    if (!onRetry) return null;
    const retry = el('button', 'retry', 'Retry');
    retry.type = 'button';
    retry.dataset.testid = 'retry';
    retry.addEventListener('click', onRetry);
    this.bubble.append(retry);
    return retry;
  }

  /**
   * Show an answer as it was stored: its text and its final (or current) state.
   * status: complete | streaming | stopped | error | interrupted.
   */
  restore(stored, onRefresh) {
    this.#stopWaiting();
    if (stored.id) this.item.dataset.id = stored.id;
    this.item.dataset.stored = 'true';
    this.content.textContent = typeof stored.content === 'string' ? stored.content : '';
    const error = typeof stored.error === 'string' && stored.error ? stored.error : '';
    switch (stored.status) {
      case 'complete': {
        const finish = stored.finish_reason;
        this.item.dataset.state = 'done';
        if (finish === 'length') this.#note('done', '(cut at the token limit)');
        else if (finish && finish !== 'stop') this.#note('done', `(finished: ${finish})`);
        break;
      }
      case 'stopped':
        this.item.dataset.state = 'stopped';
        this.#note('stopped', 'stopped');
        break;
      case 'interrupted':
        this.item.dataset.state = 'interrupted';
        this.#note('interrupted', 'interrupted');
        this.bubble.append(errorBox(
          error || 'The server stopped before this answer was complete.',
          'Send your message again to ask once more.',
        ));
        break;
      case 'streaming': {
        this.item.dataset.state = 'generating';
        const note = this.#note('generating', 'Still being generated… ');
        const refresh = el('button', 'refresh', 'Refresh');
        refresh.type = 'button';
        refresh.addEventListener('click', onRefresh);
        note.append(refresh);
        break;
      }
      case 'error':
      default:
        this.item.dataset.state = 'error';
        this.bubble.append(errorBox(
          error || 'This answer failed.',
          'Send your message again to ask once more.',
        ));
    }
  }

  #note(kind, text) {
    const note = el('div', `note note-${kind}`, text);
    this.bubble.append(note);
    return note;
  }

  /** Retry is only meaningful for the latest exchange; drop it once the chat moves on. */
  dropRetry() { this.bubble.querySelector('.retry')?.remove(); }

  #stopWaiting() {
    clearInterval(this.#timer);
    this.#timer = 0;
    this.progress.hidden = true;
  }

  #clearExtras() {
    this.bubble.querySelectorAll('.error, .retry, .note').forEach((n) => n.remove());
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
    const t = text.trim();
    if (t) this.region.append(el('p', '', t));
  }
}
