// Black-box tests of Arbor's OpenAI-compatible HTTP API, driven by the official `openai` npm
// client (a client nobody on this project wrote).
//
//   ARBOR_URL=http://127.0.0.1:PORT ARBOR_API_KEY=KEY ARBOR_MAX_CONCURRENT=4 \
//     node --test --test-reporter=tap openai.test.mjs
//
// The server must run with `--set server.api_key=$ARBOR_API_KEY` and
// `--set server.max_concurrent_requests=$ARBOR_MAX_CONCURRENT` (tests/e2e/run.sh does this).
// Tests run one after another (node:test's default for top-level tests in one file), so the
// concurrency limit only matters in the 429 test.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const BASE = process.env.ARBOR_URL ?? 'http://127.0.0.1:8000';
const KEY = process.env.ARBOR_API_KEY;
const MODEL = process.env.ARBOR_MODEL ?? 'tiny';
const MAX_CONCURRENT = Number(process.env.ARBOR_MAX_CONCURRENT ?? 4);
const CONTEXT = Number(process.env.ARBOR_CONTEXT ?? 2048);
const VOCAB = Number(process.env.ARBOR_VOCAB ?? 1206);

if (!KEY) {
  throw new Error('ARBOR_API_KEY must be set (the server must run with server.api_key)');
}

const client = new OpenAI({ baseURL: `${BASE}/v1`, apiKey: KEY, maxRetries: 0, timeout: 60_000 });
const T = { timeout: 90_000 };

const FINISH = new Set(['stop', 'length']);

function checkUsage(usage, { prompt, completion } = {}) {
  assert.ok(usage, 'usage is present');
  for (const k of ['prompt_tokens', 'completion_tokens', 'total_tokens']) {
    assert.ok(Number.isInteger(usage[k]) && usage[k] >= 0, `usage.${k} is a non-negative integer: ${usage[k]}`);
  }
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens, 'total = prompt + completion');
  if (prompt !== undefined) assert.equal(usage.prompt_tokens, prompt, 'usage.prompt_tokens');
  if (completion !== undefined) assert.equal(usage.completion_tokens, completion, 'usage.completion_tokens');
}

function checkEnvelope(resp, object) {
  assert.equal(typeof resp.id, 'string');
  assert.ok(resp.id.length > 0, 'id is non-empty');
  assert.equal(resp.object, object);
  assert.ok(Number.isInteger(resp.created), `created is an integer: ${resp.created}`);
  const now = Math.floor(Date.now() / 1000);
  assert.ok(Math.abs(resp.created - now) < 600, `created ${resp.created} is a Unix time near now ${now}`);
  assert.equal(resp.model, MODEL);
  assert.ok(Array.isArray(resp.choices));
}

async function expectError(promise, Cls, status) {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof Cls, `expected ${Cls.name}, got ${err?.constructor?.name}: ${err?.message}`);
    assert.equal(err.status, status);
    assert.ok(err.error && typeof err.error === 'object', 'the body carries an "error" object');
    assert.equal(typeof err.error.message, 'string');
    assert.equal(typeof err.error.type, 'string');
    assert.ok('param' in err.error, 'error.param is present (may be null)');
    assert.equal(Number(err.error.code), status, 'error.code is the HTTP status');
    return err;
  }
  assert.fail(`expected ${Cls.name} (${status}), but the request succeeded`);
}

const greedy = { temperature: 0, ignore_eos: true };

// ---------------------------------------------------------------------------------- models

test('models.list returns the served model', T, async () => {
  const ids = [];
  for await (const m of client.models.list()) {
    assert.equal(m.object, 'model');
    assert.equal(typeof m.owned_by, 'string');
    assert.ok(Number.isInteger(m.created));
    ids.push(m.id);
    if ('max_model_len' in m) assert.equal(m.max_model_len, CONTEXT, 'max_model_len (vLLM extension) is the context');
  }
  assert.deepEqual(ids, [MODEL]);
});

// ------------------------------------------------------------------------------ completions

test('completions: string prompt', T, async () => {
  const r = await client.completions.create({
    model: MODEL, prompt: 'The quick brown fox', max_tokens: 8, temperature: 0.7, top_p: 0.9, top_k: 50,
    min_p: 0.01, user: 'e2e',
  });
  checkEnvelope(r, 'text_completion');
  assert.equal(r.choices.length, 1);
  const c = r.choices[0];
  assert.equal(c.index, 0);
  assert.equal(typeof c.text, 'string');
  assert.ok(FINISH.has(c.finish_reason), `finish_reason ${c.finish_reason}`);
  checkUsage(r.usage);
  assert.ok(r.usage.prompt_tokens > 0);
  assert.ok(r.usage.completion_tokens >= 1 && r.usage.completion_tokens <= 8);
});

test('completions: token-id prompt', T, async () => {
  const ids = [1, 17, 42, 99, 300, 512, 1000, VOCAB - 1];
  const r = await client.completions.create({ model: MODEL, prompt: ids, max_tokens: 5, ...greedy });
  checkEnvelope(r, 'text_completion');
  assert.equal(r.choices.length, 1);
  assert.equal(typeof r.choices[0].text, 'string');
  checkUsage(r.usage, { prompt: ids.length, completion: 5 });
});

test('completions: n=2 gives two choices', T, async () => {
  const r = await client.completions.create({
    model: MODEL, prompt: 'Once upon a time', n: 2, max_tokens: 6, temperature: 1.0, seed: 7, ignore_eos: true,
  });
  checkEnvelope(r, 'text_completion');
  assert.equal(r.choices.length, 2);
  assert.deepEqual(r.choices.map((c) => c.index).sort(), [0, 1]);
  for (const c of r.choices) {
    assert.equal(typeof c.text, 'string');
    assert.equal(c.finish_reason, 'length');
  }
  checkUsage(r.usage, { completion: 12 });
});

test('completions: same seed gives the same text, other seeds differ', T, async () => {
  const req = (seed) => client.completions.create({
    model: MODEL, prompt: 'Seeded sampling test', max_tokens: 16, temperature: 1.0, seed, ignore_eos: true,
  });
  const a = await req(1234);
  const b = await req(1234);
  assert.equal(a.choices[0].text, b.choices[0].text, 'same seed, same text');
  const others = await Promise.all([req(1), req(2), req(3)]);
  const texts = new Set([a, ...others].map((r) => r.choices[0].text));
  assert.ok(texts.size > 1, 'four different seeds all gave identical text at temperature 1');
});

test('completions: max_tokens with ignore_eos ends with length and exact usage', T, async () => {
  const r = await client.completions.create({ model: MODEL, prompt: 'Count:', max_tokens: 7, ...greedy });
  assert.equal(r.choices[0].finish_reason, 'length');
  checkUsage(r.usage, { completion: 7 });
});

// Pick a stop string: two code points of `text`, printable (no U+FFFD, no control or blank
// characters), whose first occurrence is after the start, so the cut text is non-empty.
function pickStop(text) {
  const cps = [...text];
  for (let start = Math.floor(cps.length / 3); start + 2 <= cps.length; start++) {
    const s = cps.slice(start, start + 2).join('');
    if (/^[\p{L}\p{N}\p{P}]{2}$/u.test(s) && text.indexOf(s) > 0) return s;
  }
  return null;
}

test('completions: stop strings never appear in the text (and cut at the first match)', T, async () => {
  // Seeded sampling is deterministic (tested above) and gives more varied text than greedy.
  let base = null;
  let full = null;
  let stop = null;
  for (let seed = 1; seed <= 8 && !stop; seed++) {
    base = { model: MODEL, prompt: 'Stop string test:', max_tokens: 40, temperature: 1.0, seed, ignore_eos: true };
    full = (await client.completions.create(base)).choices[0].text;
    stop = pickStop(full);
  }
  assert.ok(stop, `no usable stop substring in 8 seeded texts, last ${JSON.stringify(full)}`);

  const r = await client.completions.create({ ...base, stop });
  const text = r.choices[0].text;
  assert.ok(!text.includes(stop), `text ${JSON.stringify(text)} contains the stop ${JSON.stringify(stop)}`);
  assert.equal(text, full.slice(0, full.indexOf(stop)), `text is the unstopped text up to the first ${JSON.stringify(stop)}`);
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.ok(r.usage.completion_tokens < 40, 'generation ended at the stop');

  // A list of stops, one of which never occurs.
  const r2 = await client.completions.create({ ...base, stop: ['\u0007never\u0007', stop] });
  assert.equal(r2.choices[0].text, text);
  assert.equal(r2.choices[0].finish_reason, 'stop');

  // Streaming must hold back partial matches: the concatenated text never contains the stop.
  const stream = await client.completions.create({ ...base, stop, stream: true });
  let streamed = '';
  let finish = null;
  for await (const chunk of stream) {
    for (const c of chunk.choices) {
      streamed += c.text ?? '';
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.ok(!streamed.includes(stop), `streamed text ${JSON.stringify(streamed)} contains the stop`);
  assert.equal(streamed, text, 'streamed text equals the non-streamed text');
  assert.equal(finish, 'stop');
});

test('completions: a stop that cuts the text reports finish_reason stop (greedy, stop at the start)', T, async () => {
  // Whatever the greedy text is (with random weights it may be U+FFFD from lone byte tokens),
  // a stop equal to its first two code points must end the choice with an empty text and "stop".
  const base = { model: MODEL, prompt: 'Stop string test:', max_tokens: 40, ...greedy };
  const full = (await client.completions.create(base)).choices[0].text;
  const stop = [...full].slice(0, 2).join('');
  assert.ok(stop.length > 0, 'greedy text is non-empty');
  const r = await client.completions.create({ ...base, stop });
  assert.ok(!r.choices[0].text.includes(stop), 'the stop is not in the text');
  assert.equal(r.choices[0].text, '', `text cut before ${JSON.stringify(stop)}`);
  assert.equal(r.choices[0].finish_reason, 'stop',
    `text was cut at the stop but finish_reason is ${r.choices[0].finish_reason} (completion_tokens ${r.usage.completion_tokens})`);
  let streamed = '';
  for await (const chunk of await client.completions.create({ ...base, stop, stream: true })) {
    for (const c of chunk.choices) streamed += c.text ?? '';
  }
  assert.ok(!streamed.includes(stop), `streamed text ${JSON.stringify(streamed.slice(0, 40))} contains the stop`);
});

test('completions: logprobs shape', T, async () => {
  const k = 3;
  const r = await client.completions.create({
    model: MODEL, prompt: 'Log probabilities', max_tokens: 6, logprobs: k, ...greedy,
  });
  const lp = r.choices[0].logprobs;
  assert.ok(lp && typeof lp === 'object', 'choices[0].logprobs is an object');
  const n = r.usage.completion_tokens;
  assert.equal(n, 6);
  assert.ok(Array.isArray(lp.tokens) && lp.tokens.length === n, `tokens has ${n} entries`);
  assert.ok(Array.isArray(lp.token_logprobs) && lp.token_logprobs.length === n, 'token_logprobs length');
  assert.ok(Array.isArray(lp.top_logprobs) && lp.top_logprobs.length === n, 'top_logprobs length');
  assert.ok(Array.isArray(lp.text_offset) && lp.text_offset.length === n, 'text_offset length');
  assert.equal(lp.text_offset[0], 0, 'text_offset starts at 0 without echo');
  for (let i = 0; i < n; i++) {
    assert.equal(typeof lp.tokens[i], 'string');
    assert.ok(Number.isFinite(lp.token_logprobs[i]) && lp.token_logprobs[i] <= 1e-6, `logprob ${lp.token_logprobs[i]} <= 0`);
    if (i > 0) assert.ok(lp.text_offset[i] >= lp.text_offset[i - 1], 'text_offset is non-decreasing');
    const top = lp.top_logprobs[i];
    assert.ok(top && typeof top === 'object', 'top_logprobs entry is an object');
    const vals = Object.values(top);
    assert.ok(vals.length >= k && vals.length <= k + 1, `top_logprobs[${i}] has ${vals.length} entries, want ${k} (or ${k + 1})`);
    for (const v of vals) assert.ok(Number.isFinite(v) && v <= 1e-6);
    // Greedy: the chosen token is the most likely one.
    assert.ok(Math.abs(Math.max(...vals) - lp.token_logprobs[i]) < 1e-3, 'greedy token has the top logprob');
  }
});

test('completions: echo with logprobs leads with the prompt (first token null), as the legacy API', T, async () => {
  const prompt = 'Echo this prompt';
  const base = { model: MODEL, prompt, max_tokens: 4, logprobs: 1, ...greedy };
  const plain = await client.completions.create(base);
  const r = await client.completions.create({ ...base, echo: true });
  assert.equal(r.choices[0].text, prompt + plain.choices[0].text, 'text is the prompt then the completion');
  const lp = r.choices[0].logprobs;
  const p = r.usage.prompt_tokens;
  assert.equal(lp.tokens.length, p + 4, 'prompt tokens then the 4 generated ones');
  assert.equal(lp.token_logprobs[0], null, "the first prompt token has no logprob");
  assert.equal(lp.top_logprobs[0], null);
  for (let i = 1; i < p + 4; i++) {
    assert.ok(Number.isFinite(lp.token_logprobs[i]) && lp.token_logprobs[i] <= 1e-6, `logprob ${i}`);
    if (i > 0) assert.ok(lp.text_offset[i] >= lp.text_offset[i - 1], 'text_offset is non-decreasing');
  }
  assert.equal(lp.text_offset[p], prompt.length, 'the completion starts after the prompt');
  assert.deepEqual(lp.tokens.slice(p), plain.choices[0].logprobs.tokens,
    'the generated tokens are the same as without echo');
  // On the CPU the logprobs are the same bits. On a GPU in bf16 the echo pass computes the LM
  // head for every prompt position, a GEMM of another shape than the last position alone, so
  // its logits round differently: a logit near 10 moves by up to 2^-8 of it, a log-probability
  // by about twice that.
  const tol = process.env.ARBOR_E2E_DEVICE === 'cuda' ? 0.1 : 0;
  lp.token_logprobs.slice(p).forEach((v, i) => {
    const want = plain.choices[0].logprobs.token_logprobs[i];
    assert.ok(Math.abs(v - want) <= tol,
      `the generated part's logprob ${i} is ${v} with echo, ${want} without (tolerance ${tol})`);
  });
  let streamed = '';
  for await (const chunk of await client.completions.create({ ...base, echo: true, stream: true })) {
    for (const c of chunk.choices) streamed += c.text ?? '';
  }
  assert.equal(streamed, r.choices[0].text, 'the stream echoes the prompt too');
});

test('completions: streaming concatenation equals the non-streamed text', T, async () => {
  const base = { model: MODEL, prompt: 'Streaming completions', max_tokens: 24, ...greedy };
  const whole = await client.completions.create(base);
  const stream = await client.completions.create({ ...base, stream: true, stream_options: { include_usage: true } });
  let text = '';
  let finish = null;
  let usage = null;
  const ids = new Set();
  for await (const chunk of stream) {
    ids.add(chunk.id);
    assert.equal(chunk.object, 'text_completion');
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += c.text ?? '';
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.equal(ids.size, 1, 'every chunk carries the same id');
  assert.equal(text, whole.choices[0].text);
  assert.equal(finish, 'length');
  checkUsage(usage, { completion: 24, prompt: whole.usage.prompt_tokens });
});

// ------------------------------------------------------------------------------------- chat

const messages = [
  { role: 'system', content: 'You are a terse assistant.' },
  { role: 'user', content: 'Say something.' },
  { role: 'assistant', content: 'Something.' },
  { role: 'user', content: 'Again, differently.' },
];

test('chat: messages give an assistant message', T, async () => {
  const r = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 10, temperature: 0.8, seed: 3 });
  checkEnvelope(r, 'chat.completion');
  assert.equal(r.choices.length, 1);
  const c = r.choices[0];
  assert.equal(c.index, 0);
  assert.equal(c.message.role, 'assistant');
  assert.equal(typeof c.message.content, 'string');
  assert.ok(FINISH.has(c.finish_reason), `finish_reason ${c.finish_reason}`);
  checkUsage(r.usage);
  assert.ok(r.usage.prompt_tokens > 10, 'the template and four messages take more than 10 tokens');
});

test('chat: max_completion_tokens with ignore_eos gives length and exact usage', T, async () => {
  const r = await client.chat.completions.create({ model: MODEL, messages, max_completion_tokens: 9, ...greedy });
  assert.equal(r.choices[0].finish_reason, 'length');
  checkUsage(r.usage, { completion: 9 });
});

async function collectChat(stream) {
  let content = '';
  let role = null;
  let finish = null;
  let usage = null;
  let usageChunks = 0;
  let afterUsage = 0;
  const ids = new Set();
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    assert.equal(chunk.model, MODEL);
    ids.add(chunk.id);
    if (usage) afterUsage++;
    if (chunk.usage) {
      usage = chunk.usage;
      usageChunks++;
      assert.deepEqual(chunk.choices, [], 'the usage chunk has empty choices');
    }
    for (const c of chunk.choices) {
      assert.equal(c.index, 0);
      if (c.delta?.role) role = c.delta.role;
      content += c.delta?.content ?? '';
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  return { content, role, finish, usage, usageChunks, afterUsage, ids };
}

test('chat: streamed deltas concatenate to the non-streamed content (greedy)', T, async () => {
  const base = { model: MODEL, messages, max_tokens: 24, ...greedy };
  const whole = await client.chat.completions.create(base);
  const s = await collectChat(await client.chat.completions.create({ ...base, stream: true }));
  assert.equal(s.role, 'assistant', 'a delta carries role "assistant"');
  assert.equal(s.ids.size, 1, 'every chunk carries the same id');
  assert.equal(s.content, whole.choices[0].message.content);
  assert.equal(s.finish, 'length');
  assert.equal(s.usage, null, 'no usage chunk without stream_options.include_usage');
});

test('chat: streamed deltas equal the non-streamed content (seeded sampling)', T, async () => {
  const base = { model: MODEL, messages, max_tokens: 20, temperature: 1.0, top_p: 0.95, seed: 99, ignore_eos: true };
  const whole = await client.chat.completions.create(base);
  const s = await collectChat(await client.chat.completions.create({ ...base, stream: true }));
  assert.equal(s.content, whole.choices[0].message.content);
});

test('chat: include_usage adds a final chunk with empty choices and usage', T, async () => {
  const base = { model: MODEL, messages, max_tokens: 12, ...greedy };
  const whole = await client.chat.completions.create(base);
  const s = await collectChat(await client.chat.completions.create({
    ...base, stream: true, stream_options: { include_usage: true },
  }));
  assert.equal(s.usageChunks, 1, 'exactly one chunk carries usage');
  assert.equal(s.afterUsage, 0, 'the usage chunk is the last one');
  checkUsage(s.usage, { prompt: whole.usage.prompt_tokens, completion: 12 });
  assert.equal(s.content, whole.choices[0].message.content);
});

test('chat: logprobs and top_logprobs shape', T, async () => {
  const r = await client.chat.completions.create({
    model: MODEL, messages, max_tokens: 5, logprobs: true, top_logprobs: 2, ...greedy,
  });
  const lp = r.choices[0].logprobs;
  assert.ok(lp && Array.isArray(lp.content), 'choices[0].logprobs.content is an array');
  assert.equal(lp.content.length, r.usage.completion_tokens);
  for (const e of lp.content) {
    assert.equal(typeof e.token, 'string');
    assert.ok(Number.isFinite(e.logprob) && e.logprob <= 1e-6);
    assert.ok(e.bytes === null || Array.isArray(e.bytes));
    assert.ok(Array.isArray(e.top_logprobs) && e.top_logprobs.length === 2, 'two top_logprobs per token');
    for (const t of e.top_logprobs) {
      assert.equal(typeof t.token, 'string');
      assert.ok(Number.isFinite(t.logprob) && t.logprob <= 1e-6);
    }
    assert.ok(Math.abs(Math.max(...e.top_logprobs.map((t) => t.logprob)) - e.logprob) < 1e-3, 'greedy token is the top one');
  }
  const none = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 3, ...greedy });
  assert.ok(none.choices[0].logprobs == null, 'no logprobs unless asked');
});

// ------------------------------------------------- request shapes real clients send (issue 9)

test('models.retrieve returns the served model; an unknown id is NotFoundError', T, async () => {
  const m = await client.models.retrieve(MODEL);
  assert.equal(m.id, MODEL);
  assert.equal(m.object, 'model');
  await expectError(client.models.retrieve('no-such-model'), OpenAI.NotFoundError, 404);
});

test('completions: a list of prompts gives len(prompt) x n choices (LangChain batching)', T, async () => {
  const r = await client.completions.create({
    model: MODEL, prompt: ['Once upon a time', 'The sky'], n: 2, max_tokens: 3, ...greedy,
  });
  checkEnvelope(r, 'text_completion');
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1, 2, 3]);
  assert.equal(r.choices[0].text, r.choices[1].text, 'greedy samples of one prompt agree');
  assert.equal(r.choices[2].text, r.choices[3].text, 'greedy samples of one prompt agree');
  checkUsage(r.usage, { completion: 12 });
  const ids = await client.completions.create({ model: MODEL, prompt: [[1, 2, 3], [4, 5]], max_tokens: 2, ...greedy });
  assert.equal(ids.choices.length, 2);
  checkUsage(ids.usage, { prompt: 5, completion: 4 });
});

test('completions: echo with max_tokens 0 scores the prompt (evaluation harnesses)', T, async () => {
  const prompt = 'The quick brown fox';
  const r = await client.completions.create({ model: MODEL, prompt, echo: true, max_tokens: 0, logprobs: 1 });
  const c = r.choices[0];
  assert.equal(c.text, prompt);
  assert.equal(c.finish_reason, 'length');
  checkUsage(r.usage, { completion: 0 });
  assert.equal(c.logprobs.token_logprobs[0], null, 'the first token has no log-prob');
  assert.ok(c.logprobs.token_logprobs.slice(1).every((x) => Number.isFinite(x) && x <= 1e-6));
  const offsets = c.logprobs.text_offset;
  assert.equal(offsets.length, r.usage.prompt_tokens);
  assert.ok(offsets.every((o, i) => i === 0 || o >= offsets[i - 1]), 'offsets never go back');
  assert.ok(offsets[offsets.length - 1] < prompt.length, 'offsets index the text in characters');
});

test('chat: without max_tokens it generates to the end of the context, not 16 tokens', T, async () => {
  const r = await client.chat.completions.create({ model: MODEL, messages, ...greedy });
  checkUsage(r.usage);
  assert.equal(r.usage.prompt_tokens + r.usage.completion_tokens, CONTEXT);
  assert.equal(r.choices[0].finish_reason, 'length');
});

test('chat: response_format text is accepted; responses carry a system_fingerprint', T, async () => {
  const r = await client.chat.completions.create({
    model: MODEL, messages, max_tokens: 2, response_format: { type: 'text' }, ...greedy,
  });
  assert.equal(typeof r.system_fingerprint, 'string');
  assert.ok(r.system_fingerprint.startsWith('fp_'));
  await expectError(client.chat.completions.create({
    model: MODEL, messages, max_tokens: 2, response_format: { type: 'json_object' },
  }), OpenAI.BadRequestError, 400);
});

test('POST /tokenize and /detokenize (vLLM\'s routes) round-trip', T, async () => {
  const post = async (path, body) => {
    const res = await fetch(`${BASE}${path}`, {
      method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${KEY}` },
      body: JSON.stringify(body),
    });
    assert.equal(res.status, 200, `${path}: ${res.status}`);
    return res.json();
  };
  const t = await post('/tokenize', { model: MODEL, prompt: 'Hello world', add_special_tokens: false });
  assert.equal(t.count, t.tokens.length);
  assert.equal(t.max_model_len, CONTEXT);
  const d = await post('/detokenize', { model: MODEL, tokens: t.tokens });
  assert.equal(d.prompt, 'Hello world');
});

// ----------------------------------------------------------------------------- auth, errors

test('auth: a wrong key gives AuthenticationError 401', T, async () => {
  const bad = new OpenAI({ baseURL: `${BASE}/v1`, apiKey: `${KEY}-wrong`, maxRetries: 0 });
  await expectError(bad.completions.create({ model: MODEL, prompt: 'x', max_tokens: 1 }), OpenAI.AuthenticationError, 401);
  await expectError(bad.chat.completions.create({ model: MODEL, messages, max_tokens: 1 }), OpenAI.AuthenticationError, 401);
  await expectError(bad.completions.create({ model: MODEL, prompt: 'x', max_tokens: 1, stream: true }),
    OpenAI.AuthenticationError, 401);
});

test('auth: a wrong key is refused on models.list too (every route needs the key)', T, async () => {
  const bad = new OpenAI({ baseURL: `${BASE}/v1`, apiKey: `${KEY}-wrong`, maxRetries: 0 });
  await expectError(bad.models.list(), OpenAI.AuthenticationError, 401);
});

test('errors: unknown model gives NotFoundError 404 with OpenAI\'s message', T, async () => {
  for (const call of [
    () => client.completions.create({ model: 'no-such-model', prompt: 'x', max_tokens: 1 }),
    () => client.chat.completions.create({ model: 'no-such-model', messages, max_tokens: 1 }),
  ]) {
    const err = await expectError(call(), OpenAI.NotFoundError, 404);
    assert.ok(err.error.message.includes('The model `no-such-model` does not exist.'), `message: ${err.error.message}`);
  }
});

test('errors: bad temperature gives BadRequestError 400 naming the field', T, async () => {
  for (const call of [
    () => client.completions.create({ model: MODEL, prompt: 'x', max_tokens: 1, temperature: -1 }),
    () => client.chat.completions.create({ model: MODEL, messages, max_tokens: 1, temperature: -0.5 }),
  ]) {
    const err = await expectError(call(), OpenAI.BadRequestError, 400);
    assert.ok(`${err.error.message} ${err.error.param}`.includes('temperature'), `message: ${err.error.message}`);
  }
});

// ------------------------------------------------------------------------------ concurrency

test('429 beyond max_concurrent_requests, and the slots come back', T, async () => {
  const extra = 4;
  const total = MAX_CONCURRENT + extra;
  const maxTokens = Math.min(1500, CONTEXT - 64);
  const starts = [];
  const t0 = Date.now();
  const answeredAfter = [];  // ms from sending to the response head (admission or 429)
  for (let i = 0; i < total; i++) {
    starts.push(client.completions.create({
      model: MODEL, prompt: `long stream ${i}`, max_tokens: maxTokens, stream: true, ...greedy,
    }).finally(() => answeredAfter.push(Date.now() - t0)));
  }
  const settled = await Promise.allSettled(starts);
  const admitted = settled.filter((s) => s.status === 'fulfilled').map((s) => s.value);
  const rejected = settled.filter((s) => s.status === 'rejected').map((s) => s.reason);
  // Drain the admitted streams whatever happens below, so their slots are released.
  const drain = Promise.all(admitted.map(async (stream) => {
    let finish = null;
    for await (const chunk of stream) for (const c of chunk.choices) if (c.finish_reason) finish = c.finish_reason;
    return finish;
  }));
  for (const e of rejected) {
    assert.ok(e instanceof OpenAI.RateLimitError, `rejection is RateLimitError, got ${e?.constructor?.name}: ${e?.message}`);
    assert.equal(e.status, 429);
    assert.equal(Number(e.error?.code), 429, 'error.code is 429');
  }
  const finishes = await drain;
  answeredAfter.sort((a, b) => a - b);
  assert.ok(admitted.length <= MAX_CONCURRENT,
    `${admitted.length} of ${total} concurrent requests admitted, limit ${MAX_CONCURRENT}; ` +
    `response heads came after [${answeredAfter.join(', ')}] ms (late ones waited in the server before being seen)`);
  assert.ok(admitted.length >= 1, 'at least one request admitted');
  assert.ok(rejected.length >= extra, `${rejected.length} rejected with 429, want >= ${extra}`);
  for (const f of finishes) assert.equal(f, 'length', 'admitted streams run to completion');

  // All slots are free again: MAX_CONCURRENT requests at once all succeed.
  const again = await Promise.all(Array.from({ length: MAX_CONCURRENT }, (_, i) =>
    client.completions.create({ model: MODEL, prompt: `after ${i}`, max_tokens: 4, ...greedy })));
  for (const r of again) assert.equal(r.usage.completion_tokens, 4);
});
