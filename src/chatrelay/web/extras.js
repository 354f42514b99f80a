// What a stored message carries besides its text (its `extra`, see docs/conversations.md):
// tool calls, a tool's result, reasoning, a refusal, images and other attachments.
// All of it is model or user output, so untrusted: every piece goes in as text
// (textContent), never as HTML; links are made here, by hand, for http(s) URLs only, and a
// data URL is never loaded (the page has no <img> for any of it) nor opened: it is shown
// shortened, as a download.

const DATA_URL_SHOWN = 40;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const isObject = (value) => value !== null && typeof value === 'object' && !Array.isArray(value);
const asText = (value) => (typeof value === 'string' ? value : '');

/**
 * A collapsed block: `<details>` whose summary is `label` (and an optional `code` name in
 * monospace), holding `body` as preformatted text.
 */
function block(kind, label, { name = '', ident = '', body = '' } = {}) {
  const details = el('details', `stored-extra extra extra-${kind}`);
  details.dataset.testid = `extra-${kind}`;
  const summary = el('summary', 'extra-summary');
  summary.append(el('span', 'extra-label', label));
  if (name) summary.append(' ', el('code', 'extra-name', name));
  if (ident) summary.append(' ', el('span', 'extra-id', ident));
  details.append(summary, el('pre', 'extra-body', body));
  return details;
}

/** Tool call arguments as indented JSON when they are JSON, as they came otherwise. */
export function prettyArguments(args) {
  if (typeof args !== 'string') return JSON.stringify(args ?? null, null, 2);
  try {
    return JSON.stringify(JSON.parse(args), null, 2);
  } catch {
    return args;
  }
}

function toolCallBlock(call) {
  // A function call, or a custom tool's (its "input" instead of "arguments").
  const fn = isObject(call.function) ? call.function : isObject(call.custom) ? call.custom : {};
  const args = 'arguments' in fn ? fn.arguments : fn.input;
  return block('tool-call', 'Tool call', {
    name: asText(fn.name) || '(unnamed)',
    ident: asText(call.id),
    body: prettyArguments(args ?? ''),
  });
}

/** "1.2 KB" */
function size(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

/**
 * A link to an attachment, never loading it: an http(s) URL opens in a new tab when clicked;
 * a data URL is shown shortened and saves as a file when clicked (a browser never navigates
 * a page to one); anything else is shown as text only.
 */
export function attachmentLink(url, kind = 'image') {
  const item = el('li', 'attachment');
  item.dataset.kind = kind;
  item.append(el('span', 'attachment-kind', `${kind}: `));
  if (/^https?:\/\//i.test(url)) {
    const link = el('a', 'attachment-link', url);
    link.href = url;
    link.target = '_blank';
    link.rel = 'noopener noreferrer nofollow';
    item.append(link);
  } else if (/^data:/i.test(url)) {
    const shown = `${url.slice(0, DATA_URL_SHOWN)}… (${size(url.length)})`;
    const link = el('a', 'attachment-link attachment-data', shown);
    link.href = url;
    const subtype = /^data:[a-z]+\/([a-z0-9.+-]+)/i.exec(url)?.[1]?.replace(/[^a-z0-9]/gi, '');
    link.download = subtype ? `${kind}.${subtype.slice(0, 10)}` : kind;
    link.rel = 'noopener noreferrer';
    link.title = 'Save this attachment';
    item.append(link);
  } else {
    item.append(el('span', 'attachment-text', url));
  }
  return item;
}

/** The parts of a message's content that are not text: a list of links, or null. */
export function attachmentList(content) {
  if (!Array.isArray(content)) return null;
  const list = el('ul', 'stored-extra attachments');
  list.dataset.testid = 'attachments';
  list.setAttribute('aria-label', 'Attachments');
  for (const part of content) {
    if (!isObject(part) || part.type === 'text') continue;
    const kind = typeof part.type === 'string' ? part.type.replace(/_url$/, '') : 'part';
    const body = isObject(part[part.type]) ? part[part.type] : {};
    if (typeof body.url === 'string') {
      list.append(attachmentLink(body.url, kind));
    } else if (typeof body.file_data === 'string' && /^data:/i.test(body.file_data)) {
      list.append(attachmentLink(body.file_data, kind));
    } else {
      // Inline base64 audio or a file (or an id): named, with its size, not offered.
      const name = asText(body.filename) || asText(body.file_id) || asText(body.format);
      const data = asText(body.data) || asText(body.file_data);
      const text = [name, data ? size(data.length) : ''].filter(Boolean).join(', ');
      const item = el('li', 'attachment', `${kind}${text ? `: ${text}` : ''}`);
      item.dataset.kind = kind;
      list.append(item);
    }
  }
  return list.childElementCount ? list : null;
}

/** Reasoning, as DeepSeek and llama.cpp (reasoning_content) or vLLM (reasoning) name it. */
function reasoningOf(extra) {
  return asText(extra.reasoning_content) || asText(extra.reasoning);
}

/**
 * An answer's extras, placed around its text: reasoning before it; a refusal, tool calls
 * and attachments after it. Each is marked `stored-extra`, so a new outcome clears them.
 */
export function showAnswerExtras(bubble, content, extra) {
  if (!isObject(extra)) return;
  const reasoning = reasoningOf(extra);
  if (reasoning) content.before(block('reasoning', 'Reasoning', { body: reasoning }));
  const after = [];
  const refusal = asText(extra.refusal);
  if (refusal) {
    const refused = block('refusal', 'Refused', { body: refusal });
    after.push(refused);
  }
  for (const call of Array.isArray(extra.tool_calls) ? extra.tool_calls : []) {
    if (isObject(call)) after.push(toolCallBlock(call));
  }
  if (isObject(extra.function_call)) after.push(toolCallBlock({ function: extra.function_call }));
  const attachments = attachmentList(extra.content);
  if (attachments) after.push(attachments);
  content.after(...after);
}

/** A question's attachments (images and other parts), after its text. */
export function showQuestionExtras(content, extra) {
  if (!isObject(extra)) return;
  const attachments = attachmentList(extra.content);
  if (attachments) content.after(attachments);
}

const NOTE_LABELS = {
  system: 'System message',
  developer: 'Developer message',
  tool: 'Tool result',
  function: 'Function result',
};

/**
 * A stored message that is neither a question nor an answer (system, developer, tool...):
 * one collapsed block in the list, its text inside.
 */
export function storedNote(list, stored) {
  const role = asText(stored.role) || 'message';
  const extra = isObject(stored.extra) ? stored.extra : {};
  const item = el('li', `message note-message role-${role.replace(/[^a-z]/gi, '')}`);
  item.dataset.testid = `message-${role}`;
  item.dataset.role = role;
  if (stored.id) item.dataset.id = stored.id;
  const details = block(role === 'tool' || role === 'function' ? 'tool-result' : 'instructions',
    NOTE_LABELS[role] ?? role, {
      name: asText(extra.name),
      ident: asText(extra.tool_call_id),
      body: asText(stored.content),
    });
  details.classList.remove('stored-extra'); // it is the message itself
  item.append(details);
  const attachments = attachmentList(extra.content);
  if (attachments) details.append(attachments);
  list.append(item);
  return item;
}
