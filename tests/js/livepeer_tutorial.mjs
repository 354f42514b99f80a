// The Livepeer docs' Next.js chatbot ("Chatbot with Livepeer LLM", docs.livepeer.org
// v2/developers/build/tutorials/build-a-chatbot-with-livepeer-llm), replayed on Node 20 with
// no packages (tests/e2e/test_livepeer_gateway.py runs it against chatrelay's POST /llm):
//
// * its route handler, src/app/api/chat/route.ts, as written (TypeScript types taken out),
//   served by a tiny stand-in for Next's runtime: an HTTP server that hands each request to
//   POST() as a fetch Request and pipes the returned Response's body back, unbuffered, as
//   the edge runtime does;
// * the reader loop of its Chat component, src/app/components/Chat.tsx, as written, with
//   React's state as a plain variable, sending each question of QUESTIONS in turn (the
//   history goes with each, as the component's state does).
//
// Environment: LIVEPEER_GATEWAY_URL and LIVEPEER_LLM_MODEL as in the tutorial's .env.local;
// LIVEPEER_API_KEY sends `Authorization: Bearer` (the tutorial's "Production
// Considerations"); QUESTIONS, a JSON list. The route handler sends max_tokens
// (TUTORIAL_MAX_TOKENS, 256 by default), which the tutorial's listing forgets and a gateway
// refuses without (400 "missing required fields"); TUTORIAL_VERBATIM=1 sends the body
// exactly as listed.
//
// What the client sees is written to stdout as JSON lines, for the test to read as it
// happens: {"event": "line", "line": ...} for every line the reader loop takes (before it
// skips the ones that are not data), {"event": "refused", ...} when the route handler's
// response is not ok, and {"event": "done", "messages": [...], "stops": n} at the end.

import http from 'node:http';

const GATEWAY_URL = process.env.LIVEPEER_GATEWAY_URL;
const MODEL = process.env.LIVEPEER_LLM_MODEL;
const API_KEY = process.env.LIVEPEER_API_KEY;
const VERBATIM = process.env.TUTORIAL_VERBATIM === '1';
const MAX_TOKENS = Number(process.env.TUTORIAL_MAX_TOKENS || 256);
const QUESTIONS = JSON.parse(process.env.QUESTIONS || '["Hello"]');

function report(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// ---- src/app/api/chat/route.ts ---------------------------------------------------------

async function POST(req) {
  const { messages } = await req.json();

  const headers = { 'Content-Type': 'application/json' };
  if (API_KEY) headers.Authorization = `Bearer ${API_KEY}`;
  const body = { model: MODEL, messages, stream: true };
  if (!VERBATIM) body.max_tokens = MAX_TOKENS;

  const response = await fetch(`${GATEWAY_URL}/llm`, {
    method: 'POST',
    headers,
    body: JSON.stringify(body),
  });

  if (!response.ok || !response.body) {
    return new Response(`Gateway returned ${response.status}`, {
      status: 502,
    });
  }

  // Pipe the SSE stream straight through to the client.
  return new Response(response.body, {
    headers: {
      'Content-Type': 'text/event-stream',
      'Cache-Control': 'no-cache',
      Connection: 'keep-alive',
    },
  });
}

// ---- Next's runtime, as far as the route handler needs it -------------------------------

function startApp() {
  const server = http.createServer(async (incoming, outgoing) => {
    const parts = [];
    for await (const part of incoming) parts.push(part);
    const request = new Request(`http://127.0.0.1${incoming.url}`, {
      method: incoming.method,
      headers: { 'Content-Type': incoming.headers['content-type'] ?? '' },
      body: Buffer.concat(parts),
    });
    const response = await POST(request);
    outgoing.writeHead(response.status, Object.fromEntries(response.headers));
    if (response.body) {
      for await (const chunk of response.body) outgoing.write(chunk);
    }
    outgoing.end();
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

// ---- src/app/components/Chat.tsx: sendMessage() -----------------------------------------

let messages = [
  {
    role: 'system',
    content: 'You are a helpful assistant. Keep responses concise.',
  },
];
const setMessages = (update) => {
  messages = typeof update === 'function' ? update(messages) : update;
};
let stops = 0; // how many times the loop saw finish_reason "stop" (for the test only)

async function sendMessage(appUrl, input) {
  const userMessage = { role: 'user', content: input };
  const newMessages = [...messages, userMessage];
  setMessages(newMessages);

  // Add an empty assistant message that we'll fill as tokens arrive.
  setMessages((prev) => [...prev, { role: 'assistant', content: '' }]);

  const response = await fetch(`${appUrl}/api/chat`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ messages: newMessages }),
  });

  if (!response.ok || !response.body) {
    report({ event: 'refused', status: response.status, body: await response.text() });
    return;
  }

  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';

  while (true) {
    const { done, value } = await reader.read();
    if (done) break;

    buffer += decoder.decode(value, { stream: true });
    const lines = buffer.split('\n');
    buffer = lines.pop() ?? '';

    for (const line of lines) {
      report({ event: 'line', line });
      if (!line.startsWith('data: ')) continue;
      const data = line.slice(6).trim();
      if (!data) continue;

      try {
        const chunk = JSON.parse(data);
        const token = chunk.choices?.[0]?.delta?.content ?? '';
        const finished = chunk.choices?.[0]?.finish_reason === 'stop';

        if (token) {
          setMessages((prev) => {
            const next = [...prev];
            next[next.length - 1] = {
              ...next[next.length - 1],
              content: next[next.length - 1].content + token,
            };
            return next;
          });
        }

        if (finished) {
          stops += 1;
          break;
        }
      } catch {
        // Skip malformed chunks
      }
    }
  }
}

const server = await startApp();
const appUrl = `http://127.0.0.1:${server.address().port}`;
for (const question of QUESTIONS) {
  await sendMessage(appUrl, question);
}
server.closeAllConnections();
server.close();
process.stdout.write(JSON.stringify({ event: 'done', messages, stops }) + '\n', () => {
  process.exit(0);
});
