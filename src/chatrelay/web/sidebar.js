// The list of conversations in the sidebar: newest first, paged ("Load more"),
// searched (debounced ?q=), each with Rename (inline form) and Delete (a
// confirmation step in the page). Titles are user/model text: textContent only.

import {
  ApiError, deleteConversation, exportUrl, listConversations, renameConversation,
} from './api.js';

const PAGE = 20;
const MAX_PAGE = 100; // the server's largest limit
const SEARCH_DELAY_MS = 250;
const SVG = 'http://www.w3.org/2000/svg';

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function icon(path) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 16 16');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  const p = document.createElementNS(SVG, 'path');
  p.setAttribute('d', path);
  svg.append(p);
  return svg;
}

const PENCIL = 'M11.5 2.5l2 2L6 12l-3 1 1-3z';
const TRASH = 'M3 4.5h10M6.5 4.5V3h3v1.5M4.5 4.5l.7 8.5h5.6l.7-8.5';
const DOWNLOAD = 'M8 2.5v7.5M4.8 7l3.2 3.2L11.2 7M3 13h10';

function iconButton(className, label, path) {
  const button = el('button', `icon-button ${className}`);
  button.type = 'button';
  button.title = label;
  button.setAttribute('aria-label', label);
  button.append(icon(path));
  return button;
}

export class Sidebar {
  /** The conversations shown, in order: [{id, title, updated_at}]. */
  items = [];
  hasMore = false;
  activeId = null;
  #query = '';
  #seq = 0; // bumped by every listing, so a late answer cannot overwrite a newer one
  #searchTimer = 0;
  #loading = false;

  /**
   * els: {list, search, loadMore, status}
   * hooks: {onDeleted(id), onRenamed(id, title), onNavigate(id)}
   */
  constructor(els, hooks) {
    Object.assign(this, els);
    this.hooks = hooks;
    this.search.addEventListener('input', () => {
      clearTimeout(this.#searchTimer);
      this.#searchTimer = setTimeout(() => {
        this.#query = this.search.value.trim();
        this.reload({ fresh: true });
      }, SEARCH_DELAY_MS);
    });
    this.loadMore.addEventListener('click', () => this.more());
  }

  get query() { return this.#query; }

  /** Forget everything shown (sign-out). */
  clear() {
    this.#seq += 1;
    clearTimeout(this.#searchTimer);
    this.items = [];
    this.hasMore = false;
    this.activeId = null;
    this.#query = '';
    this.search.value = '';
    this.list.replaceChildren();
    this.#render();
  }

  /**
   * Load the first page again (after an answer, a sign-in...). Keeps as many
   * rows as were shown unless `fresh` (a new search), so "Load more" is not undone.
   */
  async reload({ fresh = false } = {}) {
    const limit = fresh ? PAGE : Math.min(MAX_PAGE, Math.max(PAGE, this.items.length));
    const seq = ++this.#seq;
    this.#setLoading(true);
    try {
      const page = await listConversations({ limit, q: this.#query });
      if (seq !== this.#seq) return;
      this.items = page.data;
      this.hasMore = page.hasMore;
      this.#renderAll();
      this.hooks.onListed?.();
    } catch (err) {
      if (seq !== this.#seq) return;
      this.#failed(err, () => this.reload({ fresh }));
    } finally {
      if (seq === this.#seq) this.#setLoading(false);
    }
  }

  async more() {
    if (this.#loading || !this.hasMore) return;
    const seq = ++this.#seq;
    this.#setLoading(true);
    try {
      const page = await listConversations({
        limit: PAGE, offset: this.items.length, q: this.#query,
      });
      if (seq !== this.#seq) return;
      const known = new Set(this.items.map((c) => c.id));
      const fresh = page.data.filter((c) => !known.has(c.id));
      this.items.push(...fresh);
      this.hasMore = page.hasMore;
      for (const c of fresh) this.list.append(this.#row(c));
      this.#render();
    } catch (err) {
      if (seq !== this.#seq) return;
      this.#failed(err, () => this.more());
    } finally {
      if (seq === this.#seq) this.#setLoading(false);
    }
  }

  /** Highlight `id` (or nothing). */
  setActive(id) {
    this.activeId = id;
    for (const row of this.list.children) {
      const on = row.dataset.id === id;
      row.classList.toggle('active', on);
      const link = row.querySelector('.conversation-link');
      if (on) link?.setAttribute('aria-current', 'page');
      else link?.removeAttribute('aria-current');
    }
  }

  /** A title known before the list says so (e.g. the one being shown). */
  titleOf(id) {
    return this.items.find((c) => c.id === id)?.title ?? null;
  }

  // ---- rendering ----------------------------------------------------------------

  #setLoading(on) {
    this.#loading = on;
    this.list.setAttribute('aria-busy', on ? 'true' : 'false');
    this.loadMore.disabled = on;
  }

  #renderAll() {
    // A row being renamed or confirmed is kept as it is: a reload (an answer
    // finishing meanwhile) must not throw away what the person is typing.
    const editing = new Map();
    for (const r of this.list.querySelectorAll('.conversation.renaming, .conversation.confirming')) {
      editing.set(r.dataset.id, r);
    }
    this.list.replaceChildren(...this.items.map((c) => editing.get(c.id) ?? this.#row(c)));
    this.#render();
  }

  #render() {
    this.loadMore.hidden = !this.hasMore;
    this.setActive(this.activeId);
    if (this.items.length) {
      this.status.hidden = true;
      this.status.replaceChildren();
    } else {
      this.status.hidden = false;
      this.status.textContent = this.#query
        ? `No chats match “${this.#query}”.`
        : 'No chats yet. Your conversations will appear here.';
    }
  }

  #failed(err, retry) {
    const button = el('button', 'status-retry', 'Retry');
    button.type = 'button';
    button.addEventListener('click', retry);
    this.status.replaceChildren(el('span', '', `Cannot load your chats: ${err.message}`), button);
    this.status.hidden = false;
  }

  #row(c) {
    const row = el('li', 'conversation');
    row.dataset.id = c.id;
    const link = el('a', 'conversation-link');
    link.href = `#c=${encodeURIComponent(c.id)}`;
    link.append(el('span', 'title', c.title || 'Untitled'));
    link.addEventListener('click', () => this.hooks.onNavigate?.(c.id));
    const actions = el('div', 'actions');
    const rename = iconButton('rename', 'Rename', PENCIL);
    const download = iconButton('export', 'Export', DOWNLOAD);
    const del = iconButton('delete', 'Delete', TRASH);
    rename.addEventListener('click', () => this.#startRename(row, c));
    download.addEventListener('click', () => this.#askExport(row, c));
    del.addEventListener('click', () => this.#askDelete(row, c));
    actions.append(rename, download, del);
    row.append(link, actions);
    return row;
  }

  // ---- rename -------------------------------------------------------------------

  #startRename(row, c) {
    if (row.classList.contains('renaming')) return;
    this.#cancelConfirm(row);
    row.classList.add('renaming');
    const form = el('form', 'rename-form');
    const input = el('input', 'rename-input');
    input.type = 'text';
    input.value = c.title;
    input.maxLength = 200;
    input.required = true;
    input.setAttribute('aria-label', 'New title');
    input.autocomplete = 'off';
    const error = el('p', 'row-error');
    error.hidden = true;
    error.setAttribute('role', 'alert');
    form.append(input, error);
    row.append(form);
    input.focus();
    input.select();

    let done = false;
    const finish = () => {
      done = true;
      form.remove();
      row.classList.remove('renaming');
    };
    const save = async () => {
      if (done) return;
      const title = input.value.trim();
      if (!title || title === c.title) { finish(); return; }
      done = true; // blur during the request must not save twice
      input.disabled = true;
      try {
        const updated = await renameConversation(c.id, title);
        c.title = typeof updated?.title === 'string' ? updated.title : title;
        row.querySelector('.title').textContent = c.title;
        for (const item of this.items) if (item.id === c.id) item.title = c.title;
        done = false;
        finish();
        this.hooks.onRenamed?.(c.id, c.title);
        row.querySelector('.conversation-link')?.focus();
      } catch (err) {
        done = false;
        input.disabled = false;
        error.textContent = err instanceof ApiError ? err.message : String(err);
        error.hidden = false;
        input.focus();
      }
    };
    form.addEventListener('submit', (e) => { e.preventDefault(); save(); });
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') {
        e.preventDefault(); // not "stop the answer"
        e.stopPropagation();
        finish();
        row.querySelector('.conversation-link')?.focus();
      }
    });
    // Clicking away keeps what was typed, like most title editors.
    input.addEventListener('blur', () => { if (!done && !input.disabled) save(); });
  }

  // ---- export -------------------------------------------------------------------

  /** The two download formats in place of the row's buttons, until one is picked. */
  #askExport(row, c) {
    if (row.classList.contains('confirming')) return;
    row.classList.add('confirming');
    const box = el('div', 'confirm export-choice');
    box.setAttribute('role', 'group');
    box.setAttribute('aria-label', 'Export format');
    const links = ['json', 'markdown'].map((format) => {
      const link = el('a', `export-${format}`, format === 'json' ? 'JSON' : 'Markdown');
      link.href = exportUrl(c.id, format);
      link.download = '';
      link.addEventListener('click', () => {
        // The download goes on; the row goes back to its buttons.
        setTimeout(() => this.#cancelConfirm(row), 0);
        row.querySelector('.conversation-link')?.focus();
      });
      return link;
    });
    const no = el('button', 'cancel-export', 'Cancel');
    no.type = 'button';
    box.append(el('span', 'confirm-text export-text', 'Download as'), ...links, no);
    row.append(box);
    links[0].focus();
    const close = () => {
      this.#cancelConfirm(row);
      row.querySelector('.export')?.focus();
    };
    no.addEventListener('click', close);
    box.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') {
        e.preventDefault();
        e.stopPropagation();
        close();
      }
    });
  }

  // ---- delete -------------------------------------------------------------------

  #askDelete(row, c) {
    if (row.classList.contains('confirming')) return;
    row.classList.add('confirming');
    const box = el('div', 'confirm');
    box.setAttribute('role', 'group');
    box.setAttribute('aria-label', 'Confirm delete');
    const question = el('span', 'confirm-text', 'Delete this chat?');
    const yes = el('button', 'confirm-delete', 'Delete');
    yes.type = 'button';
    const no = el('button', 'cancel-delete', 'Cancel');
    no.type = 'button';
    const error = el('p', 'row-error');
    error.hidden = true;
    error.setAttribute('role', 'alert');
    box.append(question, yes, no, error);
    row.append(box);
    no.focus();

    no.addEventListener('click', () => {
      this.#cancelConfirm(row);
      row.querySelector('.delete')?.focus();
    });
    box.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') {
        e.preventDefault();
        e.stopPropagation();
        this.#cancelConfirm(row);
        row.querySelector('.delete')?.focus();
      }
    });
    yes.addEventListener('click', async () => {
      yes.disabled = true;
      no.disabled = true;
      try {
        await deleteConversation(c.id);
      } catch (err) {
        // Already gone is what was asked for.
        if (!(err instanceof ApiError && err.status === 404)) {
          yes.disabled = false;
          no.disabled = false;
          error.textContent = `Cannot delete: ${err.message}`;
          error.hidden = false;
          return;
        }
      }
      this.items = this.items.filter((x) => x.id !== c.id);
      // Keep the keyboard in the list: on the next chat, else the search box.
      const next = row.nextElementSibling ?? row.previousElementSibling;
      row.remove();
      (next?.querySelector('.conversation-link') ?? this.search).focus();
      this.#render();
      this.hooks.onDeleted?.(c.id);
    });
  }

  #cancelConfirm(row) {
    row.querySelector('.confirm')?.remove();
    row.classList.remove('confirming');
  }
}
