// `tandem serve` through the official `openai` npm client: chat completions (whole and
// streamed), legacy completions, the model list, and errors as the client's APIError classes.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { args, requireModules, startServer } from './server.mjs';

const { tandem, models } = args();
requireModules(['openai']);
const { default: OpenAI } = await import('openai');

const KEY = 'test-key-123';
let server, client;
const chat = (extra = {}) => ({
  model: 'stories260K',
  messages: [{ role: 'user', content: 'Tell me a story.' }],
  temperature: 0,
  max_tokens: 24,
  ...extra,
});

before(async () => {
  server = await startServer(tandem, ['-m', `${models}/stories260K.gguf`, '--api-key', KEY]);
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: KEY, maxRetries: 0 });
});
after(async () => {
  assert.equal(await server.stop(), 0, 'SIGTERM stops the server with exit code 0');
});

let wholeText = null;

test('models.list names the loaded model', async () => {
  const list = await client.models.list();
  assert.equal(list.data.length, 1);
  assert.equal(list.data[0].object, 'model');
  assert.ok(list.data[0].id.length > 0);
});

test('chat.completions.create, not streamed', async () => {
  const r = await client.chat.completions.create(chat());
  assert.equal(r.object, 'chat.completion');
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.ok(r.choices[0].message.content.length > 0);
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 24);
  assert.ok(r.usage.prompt_tokens > 0);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + 24);
  wholeText = r.choices[0].message.content;
});

test('chat.completions.create, streamed, gives the same greedy text', async () => {
  const stream = await client.chat.completions.create(
    chat({ stream: true, stream_options: { include_usage: true } }));
  let text = '', finish = null, usage = null, chunks = 0, role = null;
  for await (const chunk of stream) {
    chunks += 1;
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      if (c.delta?.role) role = c.delta.role;
      if (c.delta?.content) text += c.delta.content;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.ok(chunks >= 3, `only ${chunks} chunks`);
  assert.equal(role, 'assistant');
  assert.equal(finish, 'length');
  assert.ok(usage, 'stream_options.include_usage gives a usage chunk');
  assert.equal(usage.completion_tokens, 24);
  assert.equal(text, wholeText);
});

test('a stop string ends the reply before it', async () => {
  // Three characters from the middle of the greedy text.
  assert.ok(wholeText.length > 8, wholeText);
  const stop = wholeText.slice(wholeText.length >> 1, (wholeText.length >> 1) + 3);
  const r = await client.chat.completions.create(chat({ stop: [stop] }));
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.equal(r.choices[0].message.content, wholeText.slice(0, wholeText.indexOf(stop)));
});

test('completions.create continues a prompt as the reference implementation does', async () => {
  const golden = readFileSync(`${models}/golden/stories260K_t0_n64_once.txt`, 'utf8');
  const prompt = 'Once upon a time';
  const r = await client.completions.create({ model: 'stories260K', prompt, max_tokens: 60, temperature: 0 });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(prompt + r.choices[0].text + '\n', golden);
});

test('errors arrive as the client\'s error classes', async () => {
  await assert.rejects(client.chat.completions.create(chat({ n: 2 })),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && e.param === 'n');
  await assert.rejects(client.chat.completions.create(chat({ messages: [] })),
    (e) => e instanceof OpenAI.BadRequestError && /messages/.test(e.message));
  const wrong = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(wrong.chat.completions.create(chat()),
    (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
});
