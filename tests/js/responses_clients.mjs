// The AI SDK's default OpenAI model, `openai(model)` from `@ai-sdk/openai` 3 (with `ai` 6),
// which speaks the Responses API (/v1/responses), run on Node 20 by
// tests/e2e/test_js_responses_clients.py against a chatrelay with a fake upstream behind it:
// a tool round trip with generateText, a plain streamText, generateObject, and a second turn
// that hands the first turn's response messages back (the SDK then sends the earlier
// assistant message as an `item_reference`, since `store` defaults to true).
//
// Environment: SDK_SCENARIO (one of SCENARIOS below), RELAY_BASE_URL (the API's base, the
// relay's URL plus /v1), RELAY_API_KEY, RELAY_MODEL.
//
// Output, as tests/js/sdk_clients.mjs writes it: JSON lines on stdout, {"event": "request",
// "url", "body"} for each request body the SDK hands to fetch, {"event": "warnings", ...} for
// the AI SDK's warnings, then one {"event": "result", ...} with what the client got. An
// exception nobody expected is {"event": "crashed", ...} and exit status 1.

import { createOpenAI } from '@ai-sdk/openai';
import { generateObject, generateText, stepCountIs, streamText, tool } from 'ai';
import { z } from 'zod';

const SCENARIO = process.env.SDK_SCENARIO;
const BASE_URL = process.env.RELAY_BASE_URL;
const API_KEY = process.env.RELAY_API_KEY;
const MODEL = process.env.RELAY_MODEL;

function report(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// The AI SDK prints warnings with console.info/warn (stdout): report them instead.
globalThis.AI_SDK_LOG_WARNINGS = ({ warnings, provider, model }) =>
  report({ event: 'warnings', warnings, provider, model });

// Every request body, as the SDK sent it.
async function recordingFetch(input, init) {
  if (init?.body && typeof init.body === 'string') {
    report({ event: 'request', url: String(input), body: JSON.parse(init.body) });
  }
  return fetch(input, init);
}

// The default model: the provider called as a function is its Responses model (not .chat).
function responsesModel() {
  const openai = createOpenAI({ baseURL: BASE_URL, apiKey: API_KEY, fetch: recordingFetch });
  return openai(MODEL);
}

function described(error) {
  if (error === undefined || error === null) return error;
  if (!(error instanceof Error)) return { plain: error };
  return {
    name: error.name,
    message: error.message,
    status: error.statusCode,
    responseBody: error.responseBody,
    cause: error.cause === undefined ? undefined : described(error.cause),
  };
}

function stepSummary(step) {
  return {
    text: step.text,
    finishReason: step.finishReason,
    toolCalls: step.toolCalls.map((c) => ({
      toolCallId: c.toolCallId,
      toolName: c.toolName,
      input: c.input,
    })),
    toolResults: step.toolResults.map((r) => ({
      toolCallId: r.toolCallId,
      toolName: r.toolName,
      output: r.output,
    })),
  };
}

async function generateTools() {
  const executed = [];
  const result = await generateText({
    model: responsesModel(),
    tools: {
      get_weather: tool({
        description: 'The weather in a city now',
        inputSchema: z.object({ city: z.string() }),
        execute: async ({ city }) => {
          executed.push({ city });
          return { city, temperature: 22, unit: 'C' };
        },
      }),
    },
    stopWhen: stepCountIs(2),
    maxRetries: 0,
    prompt: 'What is the weather in Paris?',
  });
  return {
    text: result.text,
    finishReason: result.finishReason,
    executed,
    steps: result.steps.map(stepSummary),
  };
}

async function streamPlain() {
  const errors = [];
  const result = streamText({
    model: responsesModel(),
    maxRetries: 0,
    prompt: 'Say hello.',
    onError: ({ error }) => errors.push(described(error)),
  });
  const parts = [];
  for await (const part of result.fullStream) {
    if (part.type === 'text-delta') parts.push({ type: part.type, text: part.text });
    else if (part.type === 'error') parts.push({ type: part.type, error: described(part.error) });
    else if (part.type === 'finish' || part.type === 'finish-step') {
      parts.push({ type: part.type, finishReason: part.finishReason });
    } else parts.push({ type: part.type });
  }
  const usage = await result.usage;
  return {
    parts,
    errors,
    text: await result.text,
    finishReason: await result.finishReason,
    usage: { inputTokens: usage.inputTokens, outputTokens: usage.outputTokens },
  };
}

async function generateCity() {
  const result = await generateObject({
    model: responsesModel(),
    schema: z.object({
      name: z.string(),
      country: z.string(),
      landmarks: z.array(z.string()),
    }),
    schemaName: 'city',
    maxRetries: 0,
    prompt: 'Describe Paris.',
  });
  return { object: result.object, finishReason: result.finishReason };
}

// Two turns, the second carrying the first's response messages as the SDK returned them.
async function multiTurn() {
  const model = responsesModel();
  const question = { role: 'user', content: 'Capital of France?' };
  const first = await generateText({ model, maxRetries: 0, messages: [question] });
  const second = await generateText({
    model,
    maxRetries: 0,
    messages: [question, ...first.response.messages, { role: 'user', content: 'Its population?' }],
  });
  return {
    first: {
      text: first.text,
      responseId: first.response.id,
      itemId: first.providerMetadata?.openai?.itemId,
      responseMessages: first.response.messages,
    },
    second: { text: second.text, finishReason: second.finishReason },
  };
}

const SCENARIOS = {
  'generate-tools': generateTools,
  'stream-text': streamPlain,
  'generate-object': generateCity,
  'multi-turn': multiTurn,
};

try {
  const scenario = SCENARIOS[SCENARIO];
  if (!scenario) throw new Error(`SDK_SCENARIO must be one of ${Object.keys(SCENARIOS)}`);
  report({ event: 'result', scenario: SCENARIO, ...(await scenario()) });
} catch (error) {
  report({ event: 'crashed', error: described(error), stack: error?.stack });
  process.exitCode = 1;
}
