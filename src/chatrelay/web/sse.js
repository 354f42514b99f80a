// Incremental Server-Sent Events parsing for the chat stream.
//
// Network reads can split an event, a line, a UTF-8 character or even a "\r\n"
// pair anywhere, so the parser keeps the unfinished tail between reads. chatrelay
// uses `data:` and `id:` (the event's number in its answer, for resuming with
// Last-Event-ID); `event:` and `retry:` are ignored.

export class SSEParser {
  #buf = '';
  #data = null; // lines of the current event's data, or null if it has none yet
  /** The last event id seen, as EventSource keeps it: it carries over to later events. */
  lastEventId = null;

  /** Feed decoded text; returns the events it completed: [{data, id}]. */
  push(text) {
    this.#buf += text;
    return this.#drain(false);
  }

  /** The stream ended: finish what is left. */
  end() {
    const out = this.#drain(true);
    if (this.#buf !== '') this.#line(this.#buf, out);
    this.#buf = '';
    // The spec drops an event that lacks its closing blank line; we keep it,
    // because losing a final "[DONE]" or error would hurt more than it helps.
    this.#dispatch(out);
    return out;
  }

  #drain(final) {
    const out = [];
    const eol = /\r\n|\r|\n/g;
    let start = 0;
    let m;
    while ((m = eol.exec(this.#buf)) !== null) {
      // A lone "\r" at the very end may be the first half of "\r\n": wait for more.
      if (!final && m[0] === '\r' && eol.lastIndex === this.#buf.length) break;
      this.#line(this.#buf.slice(start, m.index), out);
      start = eol.lastIndex;
    }
    this.#buf = this.#buf.slice(start);
    return out;
  }

  #dispatch(out) {
    if (this.#data !== null) out.push({ data: this.#data.join('\n'), id: this.lastEventId });
    this.#data = null;
  }

  #line(line, out) {
    if (line === '') { // blank line: dispatch the event
      this.#dispatch(out);
      return;
    }
    if (line.startsWith(':')) return; // comment / keep-alive
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') (this.#data ??= []).push(value);
    else if (field === 'id' && !value.includes('\0')) this.lastEventId = value;
  }
}

/**
 * Yield each event ({data, id}) of a fetch Response body. Breaking out of the
 * loop (or an abort) cancels the underlying reader. A connection that breaks
 * rejects with a TypeError, as fetch does.
 */
export async function* readSSE(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder(); // strips a leading BOM, as SSE requires
  const parser = new SSEParser();
  let finished = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        finished = true;
        yield* parser.push(decoder.decode());
        yield* parser.end();
        return;
      }
      yield* parser.push(decoder.decode(value, { stream: true }));
    }
  } finally {
    // Stop the network read if the consumer gave up early.
    if (!finished) reader.cancel().catch(() => {});
  }
}
