// Real JavaScript clients of chatrelay's /v1 (issue 20, items 7 and 10), run on Node 20 by
// tests/e2e/test_js_sdk_clients.py against a chatrelay with a fake upstream behind it:
//
// * the AI SDK (`ai` 6 with `@ai-sdk/openai` 3, its Chat Completions model) doing a tool
//   round trip with generateText and with streamText, structured output with generateObject
//   and with generateText's Output.object, and a stream that fails after it started;
// * the `openai` package: a stream that fails after it started, two parallel tool calls
//   accumulated by its own stream() helper, and a round trip with its runTools() helper.
//
// Environment: SDK_SCENARIO (one of SCENARIOS below), RELAY_BASE_URL (the API's base, the
// relay's URL plus /v1), RELAY_API_KEY, RELAY_MODEL.
//
// What the client sees is written to stdout as JSON lines: {"event": "request", "body": ...}
// for each request body the SDK hands to fetch (as it sent it, before chatrelay saw it),
// {"event": "warnings", ...} for the AI SDK's warnings (it would print them otherwise), then
// one {"event": "result", ...} with what the client got. An exception nobody expected is
// {"event": "crashed", ...} and exit status 1.

import { createOpenAI } from '@ai-sdk/openai';
import {
  generateObject,
  generateText,
  Output,
  stepCountIs,
  streamText,
  tool,
} from 'ai';
import OpenAI from 'openai';
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

function aiModel() {
  const provider = createOpenAI({ baseURL: BASE_URL, apiKey: API_KEY, fetch: recordingFetch });
  return provider.chat(MODEL);
}

function openaiClient() {
  return new OpenAI({ baseURL: BASE_URL, apiKey: API_KEY, maxRetries: 0, fetch: recordingFetch });
}

function described(error) {
  if (error === undefined || error === null) return error;
  if (!(error instanceof Error)) return { plain: error };
  return {
    name: error.name,
    constructor: error.constructor?.name,
    message: error.message,
    isAPIError: error instanceof OpenAI.APIError,
    status: error.status ?? error.statusCode,
    type: error.type,
    code: error.code,
    error: error.error,
    cause: error.cause === undefined ? undefined : described(error.cause),
  };
}

// ---- the AI SDK -------------------------------------------------------------------------

function weatherTool(executed) {
  return tool({
    description: 'The weather in a city now',
    inputSchema: z.object({ city: z.string() }),
    execute: async ({ city }) => {
      executed.push({ city });
      return { city, temperature: 22, unit: 'C' };
    },
  });
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

const WEATHER_QUESTION = 'What is the weather in Paris?';

async function aiGenerateTools() {
  const executed = [];
  const result = await generateText({
    model: aiModel(),
    tools: { get_weather: weatherTool(executed) },
    stopWhen: stepCountIs(2),
    maxRetries: 0,
    prompt: WEATHER_QUESTION,
  });
  return {
    text: result.text,
    finishReason: result.finishReason,
    executed,
    steps: result.steps.map(stepSummary),
  };
}

async function aiStreamTools() {
  const executed = [];
  const errors = [];
  const result = streamText({
    model: aiModel(),
    tools: { get_weather: weatherTool(executed) },
    stopWhen: stepCountIs(2),
    maxRetries: 0,
    prompt: WEATHER_QUESTION,
    onError: ({ error }) => errors.push(described(error)),
  });
  const parts = [];
  for await (const part of result.fullStream) {
    if (part.type === 'text-delta') parts.push({ type: part.type, text: part.text });
    else if (part.type === 'tool-input-delta') parts.push({ type: part.type, delta: part.delta });
    else if (part.type === 'tool-call') {
      parts.push({ type: part.type, toolCallId: part.toolCallId, input: part.input });
    } else if (part.type === 'finish') {
      parts.push({ type: part.type, finishReason: part.finishReason });
    } else if (part.type === 'error') parts.push({ type: part.type, error: described(part.error) });
    else parts.push({ type: part.type });
  }
  return {
    text: await result.text,
    finishReason: await result.finishReason,
    executed,
    errors,
    steps: (await result.steps).map(stepSummary),
    parts,
  };
}

const CITY = z.object({
  name: z.string(),
  country: z.string(),
  landmarks: z.array(z.string()),
});

async function aiGenerateObject() {
  const result = await generateObject({
    model: aiModel(),
    schema: CITY,
    schemaName: 'city',
    maxRetries: 0,
    prompt: 'Describe Paris.',
  });
  return { object: result.object, finishReason: result.finishReason };
}

async function aiOutputObject() {
  const result = await generateText({
    model: aiModel(),
    output: Output.object({ schema: CITY, name: 'city' }),
    maxRetries: 0,
    prompt: 'Describe Paris.',
  });
  return { output: result.output, text: result.text, finishReason: result.finishReason };
}

async function aiStreamError() {
  const errors = [];
  const result = streamText({
    model: aiModel(),
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
  return { parts, errors, finishReason: await result.finishReason };
}

// ---- the openai package -------------------------------------------------------------------

async function openaiStreamError() {
  const client = openaiClient();
  const stream = await client.chat.completions.create({
    model: MODEL,
    messages: [{ role: 'user', content: 'Say hello.' }],
    stream: true,
  });
  const deltas = [];
  let thrown = null;
  try {
    for await (const chunk of stream) {
      const content = chunk.choices[0]?.delta?.content;
      if (content) deltas.push(content);
    }
  } catch (error) {
    thrown = described(error);
  }
  return { deltas, thrown };
}

const PARALLEL_TOOLS = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'The weather in a city now',
      parameters: {
        type: 'object',
        properties: { city: { type: 'string' } },
        required: ['city'],
      },
    },
  },
  {
    type: 'function',
    function: {
      name: 'get_time',
      description: 'The local time in a timezone',
      parameters: {
        type: 'object',
        properties: { timezone: { type: 'string' } },
        required: ['timezone'],
      },
    },
  },
];

const PARALLEL_QUESTION = [{ role: 'user', content: 'Weather in Paris and time in Tokyo?' }];

async function openaiStreamTools() {
  const client = openaiClient();
  const runner = client.chat.completions.stream({
    model: MODEL,
    messages: PARALLEL_QUESTION,
    tools: PARALLEL_TOOLS,
    stream_options: { include_usage: true },
  });
  const argumentsDone = [];
  runner.on('tool_calls.function.arguments.done', (event) =>
    argumentsDone.push({ index: event.index, name: event.name, arguments: event.arguments }),
  );
  const completion = await runner.finalChatCompletion();
  const choice = completion.choices[0];
  return {
    finishReason: choice.finish_reason,
    message: choice.message,
    argumentsDone,
    usage: completion.usage,
  };
}

async function openaiRunTools() {
  const client = openaiClient();
  const executed = [];
  const functions = {
    get_weather: ({ city }) => ({ city, temperature: 22, unit: 'C' }),
    get_time: ({ timezone }) => ({ timezone, time: '18:00' }),
  };
  const runner = client.chat.completions.runTools({
    model: MODEL,
    messages: PARALLEL_QUESTION,
    stream: true,
    tools: PARALLEL_TOOLS.map(({ function: { name, description, parameters } }) => ({
      type: 'function',
      function: {
        name,
        description,
        parameters,
        parse: JSON.parse,
        function: (args) => {
          executed.push({ name, args });
          return functions[name](args);
        },
      },
    })),
  });
  const content = await runner.finalContent();
  return { content, executed, messages: runner.messages };
}

const SCENARIOS = {
  'ai-generate-tools': aiGenerateTools,
  'ai-stream-tools': aiStreamTools,
  'ai-generate-object': aiGenerateObject,
  'ai-output-object': aiOutputObject,
  'ai-stream-error': aiStreamError,
  'openai-stream-error': openaiStreamError,
  'openai-stream-tools': openaiStreamTools,
  'openai-run-tools': openaiRunTools,
};

try {
  const scenario = SCENARIOS[SCENARIO];
  if (!scenario) throw new Error(`SDK_SCENARIO must be one of ${Object.keys(SCENARIOS)}`);
  report({ event: 'result', scenario: SCENARIO, ...(await scenario()) });
} catch (error) {
  report({ event: 'crashed', error: described(error), stack: error?.stack });
  process.exitCode = 1;
}
