// Real agent clients against ds4-server (docs/clients.md).  The clients
// themselves are not run here (they are installed by hand, see the doc); this
// file keeps what that run needs and found:
//  * the TEST ONLY --test-force-output flag that scripts the outputs of a
//    real client's turns (clients cannot send the x-ds4-test-output header);
//  * the tool-result turns each client sent back after a forced tool call
//    (tests/server/fixtures/*.json, captured 2026-11-23 on loopback, paths
//    rewritten to /home/user/project), replayed exactly as captured;
//  * count_tokens answering above the context (it used to be a 400).
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { anthropic, raw, force, startServer, SERVER_BIN, MODEL, TMP, KEY } from './helpers.mjs';

const FIXTURES = path.join(path.dirname(new URL(import.meta.url).pathname), 'fixtures');

test('--test-force-output: scripted outputs in order, header wins, then sampling', { timeout: 120_000 }, async () => {
  const srv = await startServer(['--api-key', KEY, '--test-hooks',
    '--test-force-output', 'a%0Ab</think>First.', '--test-force-output', 'x</think>Second ✓'],
  path.join(TMP, 'server-force-output.log'));
  try {
    const c = new OpenAI({ baseURL: `${srv.base}/v1`, apiKey: KEY, maxRetries: 0 });
    const ask = (opts) => c.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'hi' }], max_tokens: 8 }, opts);
    let r = await ask();
    assert.equal(r.choices[0].message.content, 'First.');
    assert.equal(r.choices[0].message.reasoning_content, 'a\nb');   // percent-decoded
    assert.equal(r.choices[0].finish_reason, 'stop');
    r = await ask(force('y</think>From the header.'));            // does not consume the script
    assert.equal(r.choices[0].message.content, 'From the header.');
    r = await ask();
    assert.equal(r.choices[0].message.content, 'Second ✓');
    r = await ask();                                               // script used up: sampled again
    assert.ok(r.usage.completion_tokens <= 8);
    assert.notEqual(r.choices[0].message.content, 'Second ✓');
  } finally {
    const { code } = await srv.stop();
    assert.equal(code, 0);
  }
});

test('--test-force-output is refused without --test-hooks', () => {
  const p = spawnSync(SERVER_BIN, ['-m', MODEL, '--port', '0', '--test-force-output', 'x'], { encoding: 'utf8', timeout: 30_000 });
  assert.notEqual(p.status, 0);
  assert.match(p.stderr + p.stdout, /--test-force-output requires --test-hooks/);
});

// Each fixture is the client's request after its forced tool call ran: the
// history holds the assistant turn (reasoning + calls) and the tool results.
// A private server: Claude Code's turn (~19k tokens) exceeds the shared
// server's 16k context.
const FINAL = 'Done.</think>README.txt says: hello file.';
test('replay the tool-result turns of real clients', { timeout: 900_000 }, async (t) => {
  const srv = await startServer(['--api-key', KEY, '--test-hooks', '--ctx', '32768', '-t', '2'],
    path.join(TMP, 'server-agents.log'));
  const oa = new OpenAI({ baseURL: `${srv.base}/v1`, apiKey: KEY, maxRetries: 0, timeout: 600_000 });
  const an = new Anthropic({ baseURL: srv.base, apiKey: KEY, maxRetries: 0, timeout: 600_000 });
  try {
    for (const f of fs.readdirSync(FIXTURES).filter((x) => x.endsWith('.json') && !x.includes('count_tokens')).sort()) {
      await t.test(f, () => replay(JSON.parse(fs.readFileSync(path.join(FIXTURES, f), 'utf8')), oa, an));
    }
  } finally {
    const { code } = await srv.stop();
    assert.equal(code, 0);
  }
});

async function replay(cap, oa, an) {
  const body = cap.body;
  const p = cap.path.split('?')[0];
  if (p === '/v1/messages') {
    assert.ok(body.messages.at(-1).content.filter((b) => b.type === 'tool_result').length >= 2);
    const msg = await an.beta.messages.stream(body, force(FINAL)).finalMessage();
    assert.equal(msg.stop_reason, 'end_turn');
    assert.equal(msg.content.find((b) => b.type === 'text').text, 'README.txt says: hello file.');
    assert.ok(msg.usage.input_tokens + msg.usage.cache_read_input_tokens + msg.usage.cache_creation_input_tokens > 1000);
  } else if (p === '/v1/responses') {
    assert.ok(body.input.filter((i) => i.type === 'function_call_output').length >= 2);
    let term = null, text = '';
    for await (const e of await oa.responses.create(body, force(FINAL))) {
      if (e.type === 'response.output_text.delta') text += e.delta;
      if (['response.completed', 'response.incomplete', 'response.failed'].includes(e.type)) term = e;
    }
    assert.equal(term.type, 'response.completed');
    assert.equal(text, 'README.txt says: hello file.');
  } else if (p === '/v1/chat/completions') {
    assert.ok(body.messages.filter((m) => m.role === 'tool').length >= 2);
    let text = '', fin = null;
    for await (const c of await oa.chat.completions.create(body, force(FINAL))) {
      text += c.choices[0]?.delta?.content ?? '';
      fin = c.choices[0]?.finish_reason ?? fin;
    }
    assert.equal(text, 'README.txt says: hello file.');
    assert.equal(fin, 'stop');
  } else {
    assert.fail(`no SDK mapping for ${cap.path}`);
  }
}

// Claude Code counts a large Read result with count_tokens before deciding how
// much of it to keep; the count is wanted precisely when it exceeds the
// context, so it must not be the context-overflow 400 of /v1/messages.
test('count_tokens answers above the context (captured Claude Code request)', { timeout: 120_000 }, async () => {
  const cap = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'v1_messages_count_tokens_claude-code_big_read.json'), 'utf8'));
  assert.equal(cap.path.split('?')[0], '/v1/messages/count_tokens');
  const ct = await anthropic.beta.messages.countTokens(cap.body);
  assert.ok(ct.input_tokens > 60000, `input_tokens ${ct.input_tokens}`);   // the shared server has 16k
  const r = await raw('/v1/messages', { body: JSON.stringify({ ...cap.body, max_tokens: 16 }) });
  assert.equal(r.status, 400);
  assert.match(r.json.error.message, /^prompt is too long/);
});
