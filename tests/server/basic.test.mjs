// Discovery, health, and the four generation endpoints (stream + non-stream) through the official SDKs.
import test from 'node:test';
import assert from 'node:assert/strict';
import { openai, anthropic, raw } from './helpers.mjs';

test('GET /health needs no key and reports the model', async () => {
  const r = await fetch(`${process.env.DS4_BASE}/health`);
  assert.equal(r.status, 200);
  const j = await r.json();
  assert.equal(j.status, 'ok');
  assert.equal(typeof j.context_length, 'number');
});

test('models list parses in both SDKs', async () => {
  const ids = [];
  for await (const m of openai.models.list()) ids.push(m.id);
  assert.ok(ids.includes('deepseek-v4-flash') && ids.includes('deepseek-chat'), ids.join(','));
  const am = await anthropic.models.list();
  assert.equal(am.data[0].id, 'deepseek-v4-flash');
  const one = await openai.models.retrieve('deepseek-v4-flash');
  assert.equal(one.id, 'deepseek-v4-flash');
  const missing = await raw('/v1/models/nope', { method: 'GET' });
  assert.equal(missing.status, 404);
  assert.equal(missing.json.error.code, 'model_not_found');
});

test('chat completion, non-streaming, with usage', async () => {
  const r = await openai.chat.completions.create({
    model: 'whatever-name', max_tokens: 6, messages: [{ role: 'user', content: 'Hello there' }],
  });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.model, 'whatever-name');
  assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.ok(r.usage.prompt_tokens > 0);
  assert.ok(r.usage.completion_tokens <= 6);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  assert.equal(typeof r.usage.prompt_tokens_details.cached_tokens, 'number');
});

test('chat completion stream: role first, finish, usage chunk, [DONE]', async () => {
  const stream = await openai.chat.completions.create({
    model: 'deepseek-v4-flash', max_tokens: 6, stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'Stream please' }],
  });
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  const fin = chunks.find((c) => c.choices[0]?.finish_reason);
  assert.ok(['stop', 'length'].includes(fin.choices[0].finish_reason));
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.ok(last.usage.prompt_tokens > 0);
  assert.ok(new Set(chunks.map((c) => c.id)).size === 1);
  const text = await raw('/v1/chat/completions', {
    body: JSON.stringify({ max_tokens: 2, stream: true, messages: [{ role: 'user', content: 'x' }] }),
  });
  assert.match(text.headers.get('content-type'), /text\/event-stream/);
  assert.ok(text.text.trimEnd().endsWith('data: [DONE]'));
});

test('legacy completions, both shapes', async () => {
  const r = await openai.completions.create({ model: 'm', prompt: 'Say hi', max_tokens: 5 });
  assert.equal(r.object, 'text_completion');
  assert.equal(typeof r.choices[0].text, 'string');
  assert.ok(r.usage.prompt_tokens > 0);
  const s = await openai.completions.create({ model: 'm', prompt: 'Say hi', max_tokens: 4, stream: true });
  let n = 0, fin = null;
  for await (const c of s) { n++; if (c.choices[0]?.finish_reason) fin = c.choices[0].finish_reason; }
  assert.ok(n >= 1);
  assert.ok(['stop', 'length'].includes(fin));
});

test('responses: streamed events are well-formed and terminal', async () => {
  const stream = await openai.responses.create({
    model: 'deepseek-v4-flash', input: 'Write a word', max_output_tokens: 6, stream: true,
    reasoning: { effort: 'high', summary: 'auto' }, store: false, include: [],
  });
  const evs = [];
  for await (const e of stream) evs.push(e);
  assert.equal(evs[0].type, 'response.created');
  for (let i = 1; i < evs.length; i++) assert.ok(evs[i].sequence_number > evs[i - 1].sequence_number);
  const term = evs.at(-1);
  assert.ok(['response.completed', 'response.incomplete'].includes(term.type), term.type);
  assert.ok(term.response.usage.input_tokens > 0);
  assert.equal(typeof term.response.usage.input_tokens_details.cached_tokens, 'number');
  const nonstream = await openai.responses.create({ model: 'x', input: 'hi', max_output_tokens: 3 });
  assert.equal(nonstream.object, 'response');
  assert.ok(nonstream.usage.output_tokens <= 3);
});

test('anthropic messages: stream accumulates, non-stream shape, count_tokens', async () => {
  const stream = anthropic.messages.stream({
    model: 'claude-sonnet-4-5', max_tokens: 6, messages: [{ role: 'user', content: 'Hi!' }],
    system: [{ type: 'text', text: 'x-anthropic-billing-header: cch=123' }, { type: 'text', text: 'Be brief.' }],
  });
  const types = [];
  stream.on('streamEvent', (e) => types.push(e.type));
  const msg = await stream.finalMessage();
  assert.equal(types[0], 'message_start');
  assert.equal(types.at(-1), 'message_stop');
  assert.ok(msg.content.some((b) => b.type === 'text'));
  assert.equal(msg.model, 'claude-sonnet-4-5');
  assert.ok(['end_turn', 'max_tokens'].includes(msg.stop_reason));
  assert.equal(typeof msg.usage.cache_read_input_tokens, 'number');
  const ns = await anthropic.messages.create({ model: 'm', max_tokens: 4, messages: [{ role: 'user', content: 'yo' }] });
  assert.equal(ns.type, 'message');
  assert.match(ns.id, /^msg_[0-9a-f]{24}$/);
  const ct = await anthropic.messages.countTokens({ model: 'm', messages: [{ role: 'user', content: 'count me' }] });
  assert.ok(ct.input_tokens > 3);
  const withTools = await anthropic.messages.countTokens({
    model: 'm', messages: [{ role: 'user', content: 'count me' }],
    tools: [{ name: 'Bash', description: 'run a shell command', input_schema: { type: 'object', properties: { command: { type: 'string' } } } }],
  });
  assert.ok(withTools.input_tokens > ct.input_tokens, 'tools are counted');
});

test('stop sequences truncate before the match, in every protocol', async () => {
  const { force } = await import('./helpers.mjs');
  const out = 'Thinking.</think>Hello there STOP and more text';
  const c = await openai.chat.completions.create({ model: 'm', max_tokens: 64, stop: ['STOP'], messages: [{ role: 'user', content: 'x' }] }, force(out));
  assert.equal(c.choices[0].message.content, 'Hello there ');
  assert.equal(c.choices[0].finish_reason, 'stop');
  const s = await openai.chat.completions.create({ model: 'm', max_tokens: 64, stop: 'STOP', stream: true, messages: [{ role: 'user', content: 'x' }] }, force(out));
  let text = '';
  for await (const ch of s) text += ch.choices[0]?.delta?.content ?? '';
  assert.equal(text, 'Hello there ');
  const a = await anthropic.messages.create({ model: 'm', max_tokens: 64, stop_sequences: ['STOP'], messages: [{ role: 'user', content: 'x' }] }, force(out));
  assert.equal(a.stop_reason, 'stop_sequence');
  assert.equal(a.stop_sequence, 'STOP');
  assert.equal(a.content.at(-1).text, 'Hello there ');
});
