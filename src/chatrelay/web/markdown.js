// Model text → safe DOM. Model output is untrusted: markdown-it runs with raw HTML off (tags
// in the text stay text) and its link check on (no javascript:, vbscript:, file:, data:
// links); DOMPurify then cleans the HTML once more before the page ever parses it as a
// document fragment. Nothing the model writes can add a script, a handler, a style, an
// image request or a form.

import markdownit from './vendor/markdown-it.min.js';
import './vendor/purify.min.js'; // UMD build: sets globalThis.DOMPurify

const { DOMPurify } = globalThis;

const md = markdownit({
  html: false, // "<img onerror=...>" is shown as those characters
  linkify: true, // bare URLs become links (http, https, mailto only, see below)
  breaks: true, // chat models mean a line break when they write one
  typographer: false,
});

// Images would make the browser fetch whatever URL a model names (and violate img-src):
// show them as a link to the image instead.
md.renderer.rules.image = (tokens, idx, options, env, self) => {
  const token = tokens[idx];
  const src = token.attrGet('src') ?? '';
  const alt = self.renderInlineAsText(token.children ?? [], options, env) || src;
  return `<a href="${md.utils.escapeHtml(src)}">${md.utils.escapeHtml(alt)}</a>`;
};

// Table alignment comes as style="text-align:..."; the CSP forbids inline styles, so it
// becomes a class.
md.core.ruler.push('align_as_class', (state) => {
  for (const token of state.tokens) {
    if (token.type !== 'th_open' && token.type !== 'td_open') continue;
    const style = token.attrGet('style');
    if (!style) continue;
    const align = /text-align:\s*(left|right|center)/.exec(style)?.[1];
    token.attrs = token.attrs.filter(([name]) => name !== 'style');
    if (align) token.attrJoin('class', `align-${align}`);
  }
});

const PURIFY = {
  RETURN_DOM_FRAGMENT: true,
  ALLOWED_URI_REGEXP: /^(?:https?|mailto):/i,
  FORBID_TAGS: ['style', 'img', 'svg', 'math', 'form', 'input', 'button', 'textarea',
    'select', 'iframe', 'object', 'embed', 'video', 'audio', 'source', 'picture'],
  FORBID_ATTR: ['style', 'id', 'name', 'srcset', 'src'],
  ALLOW_DATA_ATTR: false,
};

/** The markdown `text` as a sanitised fragment, with code blocks and links finished. */
export function renderMarkdown(text) {
  const fragment = DOMPurify.sanitize(md.render(text), PURIFY);
  for (const link of fragment.querySelectorAll('a')) {
    if (!link.hasAttribute('href')) {
      // Its URL was refused: keep the words, lose the link.
      link.replaceWith(...link.childNodes);
      continue;
    }
    link.target = '_blank';
    link.rel = 'noopener noreferrer nofollow';
  }
  for (const pre of fragment.querySelectorAll('pre')) decorateCode(pre);
  // The line breaks between blocks are no text of the answer.
  for (const node of [...fragment.childNodes]) {
    if (node.nodeType === Node.TEXT_NODE && !node.textContent.trim()) node.remove();
  }
  return fragment;
}

/** A fenced code block gets a header with its language and a Copy button. */
function decorateCode(pre) {
  const code = pre.querySelector('code');
  const lang = /(?:^|\s)language-(\S+)/.exec(code?.className ?? '')?.[1] ?? '';
  const block = document.createElement('div');
  block.className = 'code-block';
  const head = document.createElement('div');
  head.className = 'code-head';
  const label = document.createElement('span');
  label.className = 'code-lang';
  label.textContent = lang || 'text';
  const copy = document.createElement('button');
  copy.type = 'button';
  copy.className = 'copy-code';
  copy.textContent = 'Copy';
  copy.setAttribute('aria-label', lang ? `Copy ${lang} code` : 'Copy code');
  head.append(label, copy);
  pre.replaceWith(block);
  block.append(head, pre);
}

/**
 * Make `container`'s children those of `fragment`, keeping the leading nodes that did not
 * change: while an answer grows only its last block changes, so a selection or a focused
 * Copy button in the earlier ones survives each re-render.
 */
export function patchChildren(container, fragment) {
  const next = [...fragment.childNodes];
  const old = [...container.childNodes];
  let same = 0;
  while (same < next.length && same < old.length && old[same].isEqualNode(next[same])) same += 1;
  for (let i = old.length - 1; i >= same; i -= 1) old[i].remove();
  container.append(...next.slice(same));
}

/** Put `text` on the clipboard; true when it worked. */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // No permission, or not a secure context: the old way, through a hidden textarea.
    const focused = document.activeElement;
    const area = document.createElement('textarea');
    area.value = text;
    area.setAttribute('readonly', '');
    area.className = 'visually-hidden';
    document.body.append(area);
    area.select();
    let ok = false;
    try { ok = document.execCommand('copy'); } catch { ok = false; }
    area.remove();
    if (focused instanceof HTMLElement) focused.focus();
    return ok;
  }
}
