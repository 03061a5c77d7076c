// Forced tool-call round trips (test-only output hook): the DSML the "model"
// emits becomes API tool calls, and the next turn, replaying those calls as
// JSON (keys reordered), renders the exact sampled bytes back (API.md §19),
// so the live KV prefix is reused.
import test from 'node:test';
import assert from 'node:assert/strict';
import { openai, anthropic, force, dsmlCall } from './helpers.mjs';

const SCHEMA = { type: 'object', properties: { city: { type: 'string' }, days: { type: 'integer' } }, required: ['city'] };
const CALL = 'The user wants weather; call the tool.</think>Checking.' + dsmlCall('get_weather', { city: 'Paris', days: 3 });

test('chat: forced tool call (stream), then the tool result continues from the live prefix', async () => {
  const tools = [{ type: 'function', function: { name: 'get_weather', description: 'Weather by city', parameters: SCHEMA } }];
  const messages = [{ role: 'user', content: 'Weather in Paris for 3 days?' }];
  const stream = await openai.chat.completions.create(
    { model: 'deepseek-v4-flash', stream: true, stream_options: { include_usage: true }, max_tokens: 200, messages, tools, tool_choice: 'required' },
    force(CALL));
  const calls = [];
  let content = '', reasoning = '', finish = null, usage = null;
  for await (const c of stream) {
    if (c.usage) usage = c.usage;
    const ch = c.choices[0];
    if (!ch) continue;
    if (ch.finish_reason) finish = ch.finish_reason;
    if (ch.delta.content) content += ch.delta.content;
    if (ch.delta.reasoning_content) reasoning += ch.delta.reasoning_content;
    for (const d of ch.delta.tool_calls ?? []) {
      if (d.id) { assert.equal(d.type, 'function'); calls[d.index] = { id: d.id, name: d.function.name, args: '' }; }
      calls[d.index].args += d.function?.arguments ?? '';
    }
  }
  assert.equal(finish, 'tool_calls');
  assert.equal(content, 'Checking.');
  assert.equal(reasoning, 'The user wants weather; call the tool.');
  assert.equal(calls.length, 1);
  assert.match(calls[0].id, /^call_[0-9a-f]{32}$/);
  assert.equal(calls[0].name, 'get_weather');
  assert.deepEqual(JSON.parse(calls[0].args), { city: 'Paris', days: 3 });
  messages.push({ role: 'assistant', content, reasoning_content: reasoning,
    tool_calls: [{ id: calls[0].id, type: 'function', function: { name: 'get_weather', arguments: JSON.stringify({ days: 3, city: 'Paris' }) } }] });
  messages.push({ role: 'tool', tool_call_id: calls[0].id, content: 'sunny, 21C' });
  const r2 = await openai.chat.completions.create({ model: 'deepseek-v4-flash', max_tokens: 32, messages, tools }, force('Fine.</think>It is sunny.'));
  assert.equal(r2.choices[0].message.content, 'It is sunny.');
  assert.ok(r2.usage.prompt_tokens_details.cached_tokens >= usage.prompt_tokens + usage.completion_tokens - 1,
    `expected the whole first turn to be reused: ${JSON.stringify(r2.usage)} after ${JSON.stringify(usage)}`);
});

test('chat: non-streaming tool call shape', async () => {
  const r = await openai.chat.completions.create({
    model: 'm', max_tokens: 200, messages: [{ role: 'user', content: 'Weather?' }],
    tools: [{ type: 'function', function: { name: 'get_weather', parameters: SCHEMA } }],
  }, force(CALL));
  const m = r.choices[0].message;
  assert.equal(r.choices[0].finish_reason, 'tool_calls');
  assert.equal(m.tool_calls[0].function.name, 'get_weather');
  assert.equal(m.tool_calls[0].function.arguments, '{"city":"Paris","days":3}');
});

test('anthropic: forced tool_use (stream), tool_result round trip', async () => {
  const tools = [{ name: 'get_weather', description: 'Weather by city', input_schema: SCHEMA }];
  const messages = [{ role: 'user', content: 'Weather in Paris?' }];
  const stream = anthropic.messages.stream({ model: 'claude-x', max_tokens: 200, messages, tools, tool_choice: { type: 'any' } }, force(CALL));
  const msg = await stream.finalMessage();
  assert.equal(msg.stop_reason, 'tool_use');
  const kinds = msg.content.map((b) => b.type);
  assert.deepEqual(kinds, ['thinking', 'text', 'tool_use']);
  const tu = msg.content[2];
  assert.match(tu.id, /^toolu_[0-9a-f]{32}$/);
  assert.deepEqual(tu.input, { city: 'Paris', days: 3 });
  messages.push({ role: 'assistant', content: msg.content });
  messages.push({ role: 'user', content: [{ type: 'tool_result', tool_use_id: tu.id, content: 'sunny' }] });
  const r2 = await anthropic.messages.create({ model: 'claude-x', max_tokens: 32, messages, tools }, force('ok</think>Sunny.'));
  assert.equal(r2.content.at(-1).text, 'Sunny.');
  assert.ok(r2.usage.cache_read_input_tokens > msg.usage.cache_creation_input_tokens,
    `live prefix reused: ${JSON.stringify(r2.usage)}`);
});

test('responses: forced function call, replayed with its output', async () => {
  const tools = [{ type: 'function', name: 'get_weather', description: 'Weather', parameters: SCHEMA },
    { type: 'web_search' }, { type: 'namespace', name: 'mcp__x__', tools: [{ name: 'ping', parameters: { type: 'object', properties: {} } }] }];
  const stream = await openai.responses.create({ model: 'm', input: 'Weather?', tools, stream: true, store: false }, force(CALL));
  let done = null;
  const added = [];
  for await (const e of stream) {
    if (e.type === 'response.output_item.added') added.push(e.item.type);
    if (e.type === 'response.completed') done = e.response;
  }
  assert.ok(done, 'terminal response.completed');
  const fc = done.output.find((o) => o.type === 'function_call');
  assert.equal(fc.name, 'get_weather');
  assert.match(fc.call_id, /^call_/);
  assert.deepEqual(JSON.parse(fc.arguments), { city: 'Paris', days: 3 });
  assert.ok(added.includes('function_call'));
  // Codex replays the output items: the message, then the call.
  const msgItem = done.output.find((o) => o.type === 'message');
  const input = [{ role: 'user', content: 'Weather?' }, msgItem, { type: 'function_call', call_id: fc.call_id, name: 'get_weather', arguments: fc.arguments },
    { type: 'function_call_output', call_id: fc.call_id, output: 'sunny' }];
  const r2 = await openai.responses.create({ model: 'm', input, tools, max_output_tokens: 32 }, force('x</think>Sunny.'));
  assert.equal(r2.output.at(-1).content[0].text, 'Sunny.');
  // The replay has no reasoning item (summary off): the visible-transcript
  // binding still continues the live KV that holds the hidden reasoning.
  assert.ok(r2.usage.input_tokens_details.cached_tokens >= done.usage.input_tokens + done.usage.output_tokens - 1,
    JSON.stringify({ first: done.usage, second: r2.usage }));
  const bad = await openai.responses.create({ model: 'm', input: [{ type: 'function_call_output', call_id: 'call_unknown', output: 'x' }] })
    .then(() => null, (e) => e);
  assert.equal(bad?.status, 400);
});

test('chat: thinking turns without tools continue the live KV (hidden reasoning kept)', async () => {
  const messages = [{ role: 'user', content: 'Tell me a fact.' }];
  const r1 = await openai.chat.completions.create({ model: 'm', max_tokens: 64, messages }, force('Some private reasoning.</think>Water is wet.'));
  assert.equal(r1.choices[0].message.content, 'Water is wet.');
  messages.push({ role: 'assistant', content: 'Water is wet.' });
  messages.push({ role: 'user', content: 'Another one.' });
  const r2 = await openai.chat.completions.create({ model: 'm', max_tokens: 64, messages }, force('More.</think>Fire is hot.'));
  assert.equal(r2.choices[0].message.content, 'Fire is hot.');
  assert.ok(r2.usage.prompt_tokens_details.cached_tokens >= r1.usage.prompt_tokens + r1.usage.completion_tokens - 1,
    JSON.stringify({ first: r1.usage, second: r2.usage }));
});

test('responses: a custom tool comes back as custom_tool_call with free-text input', async () => {
  const tools = [{ type: 'custom', name: 'apply_patch', description: 'Apply a patch' }];
  const out = 'Patch it.</think>' + dsmlCall('apply_patch', { input: '*** Begin Patch\n*** End Patch' });
  const r = await openai.responses.create({ model: 'm', input: 'fix it', tools }, force(out));
  const item = r.output.find((o) => o.type === 'custom_tool_call');
  assert.ok(item, JSON.stringify(r.output));
  assert.equal(item.name, 'apply_patch');
  assert.equal(item.input, '*** Begin Patch\n*** End Patch');
});
