// Error statuses and bodies (API.md §12).
import test from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { BASE, raw } from './helpers.mjs';

test('malformed JSON -> 400 with an error object (both shapes)', async () => {
  const r = await raw('/v1/chat/completions', { body: '{"messages": [' });
  assert.equal(r.status, 400);
  assert.equal(r.json.error.type, 'invalid_request_error');
  assert.equal(typeof r.json.error.message, 'string');
  const a = await raw('/v1/messages', { body: 'not json' });
  assert.equal(a.status, 400);
  assert.equal(a.json.type, 'error');
  assert.equal(a.json.error.type, 'invalid_request_error');
});

test('unknown endpoint -> 404', async () => {
  const r = await raw('/v1/nothing', { body: '{}' });
  assert.equal(r.status, 404);
  assert.equal(r.json.error.message, 'unknown endpoint');
  const g = await raw('/chat/completions', { method: 'GET' });
  assert.equal(g.status, 404);
});

test('oversized body -> 413', async () => {
  const big = JSON.stringify({ messages: [{ role: 'user', content: 'x'.repeat(1_500_000) }] });
  const r = await raw('/v1/chat/completions', { body: big });
  assert.equal(r.status, 413);
  assert.equal(r.json.error.code, 'request_too_large');
});

test('missing required fields -> 400 naming them', async () => {
  const r = await raw('/v1/chat/completions', { body: '{"model":"x"}' });
  assert.equal(r.status, 400);
  assert.equal(r.json.error.message, 'missing messages');
  assert.equal(r.json.error.param, 'messages');
  assert.equal((await raw('/v1/completions', { body: '{}' })).json.error.message, 'missing prompt');
  assert.equal((await raw('/v1/responses', { body: '{}' })).json.error.message, 'missing input');
  const e = await raw('/v1/chat/completions', { body: '{"messages":[],"reasoning_effort":"turbo"}' });
  assert.equal(e.status, 400);
  assert.match(e.json.error.message, /turbo/);
  const t = await raw('/v1/chat/completions', { body: '{"messages":"nope"}' });
  assert.equal(t.status, 400);
});

test('bad API key -> 401 (SDK AuthenticationError), health exempt, OPTIONS 204', async () => {
  const o = new OpenAI({ baseURL: `${BASE}/v1`, apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(o.models.list(), (e) => e.status === 401);
  const a = new Anthropic({ baseURL: BASE, apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(a.messages.create({ model: 'm', max_tokens: 1, messages: [{ role: 'user', content: 'x' }] }),
    (e) => e.status === 401 && e.error?.error?.type === 'authentication_error');
  const h = await fetch(`${BASE}/health`);
  assert.equal(h.status, 200);
  const opt = await fetch(`${BASE}/v1/chat/completions`, { method: 'OPTIONS' });
  assert.equal(opt.status, 204);
});

test('prompt longer than the context -> 400 context_length_exceeded / prompt is too long', async () => {
  const words = Array.from({ length: 20000 }, (_, i) => `w${i}`).join(' ');
  const r = await raw('/v1/chat/completions', { body: JSON.stringify({ messages: [{ role: 'user', content: words }] }) });
  assert.equal(r.status, 400);
  assert.equal(r.json.error.code, 'context_length_exceeded');
  const a = await raw('/v1/messages', { body: JSON.stringify({ max_tokens: 1, messages: [{ role: 'user', content: words }] }) });
  assert.equal(a.status, 400);
  assert.match(a.json.error.message, /^prompt is too long/);
});

test('a tool result whose call was not replayed -> 400 naming the id', async () => {
  const r = await raw('/v1/messages', { body: JSON.stringify({ max_tokens: 1, messages: [
    { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_nope', content: 'x' }] }] }) });
  assert.equal(r.status, 400);
  assert.match(r.json.error.message, /tool_use_id toolu_nope/);
  const o = await raw('/v1/responses', { body: JSON.stringify({ input: [{ type: 'function_call_output', call_id: 'call_nope', output: 'x' }] }) });
  assert.equal(o.status, 400);
  assert.match(o.json.error.message, /call_id call_nope/);
});
