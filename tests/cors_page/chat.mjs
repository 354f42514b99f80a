// A browser app on another origin: the real `openai` package (served beside this page from
// tests/js/node_modules) streams a chat completion from chatrelay's /v1 with an API key.
// The query string says where and how: ?relay=http://host:port&key=cr_...&model=...
import OpenAI from "./openai/index.mjs";

const params = new URLSearchParams(location.search);
const status = document.querySelector("#status");
const answer = document.querySelector("#answer");

const client = new OpenAI({
  baseURL: `${params.get("relay")}/v1`,
  apiKey: params.get("key"),
  dangerouslyAllowBrowser: true,
  maxRetries: 0,
});

try {
  status.textContent = "streaming";
  const { data: stream, response } = await client.chat.completions
    .create({
      model: params.get("model"),
      messages: [{ role: "user", content: "Say hello from another origin" }],
      stream: true,
    })
    .withResponse();
  // An exposed header (Access-Control-Expose-Headers): readable across origins.
  document.querySelector("#conversation").textContent =
    response.headers.get("x-conversation-id") ?? "(hidden)";
  for await (const chunk of stream) {
    answer.textContent += chunk.choices[0]?.delta?.content ?? "";
  }
  status.textContent = "done";
} catch (error) {
  status.textContent = `failed: ${error.constructor.name}: ${error.message}`;
}
