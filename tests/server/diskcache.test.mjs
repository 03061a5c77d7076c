// Disk KV cache across restarts (API.md §18): a long prompt leaves a cold
// checkpoint; after a restart a prompt sharing that prefix loads it and
// prefills only its own suffix; a checkpoint with a flipped byte is rejected
// (logged) and the request still succeeds from a cold prefill.
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startServer, TMP, KEY } from './helpers.mjs';

const dir = path.join(TMP, 'kvdisk');
const logPath = path.join(TMP, 'diskcache-server.log');
const args = ['--ctx', '8192', '-t', '2', '--kv-disk-dir', dir, '--api-key', KEY, '--test-hooks', '--nothink'];
const system = Array.from({ length: 220 }, (_, i) => `Rule ${i}: the quick brown fox number ${i} jumps over the lazy dog.`).join(' ');

async function ask(base, question) {
  const r = await fetch(`${base}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
    body: JSON.stringify({ model: 'm', max_tokens: 2, messages: [{ role: 'system', content: system }, { role: 'user', content: question }] }),
    signal: AbortSignal.timeout(300_000),
  });
  assert.equal(r.status, 200);
  return (await r.json()).usage;
}

const logText = () => fs.readFileSync(logPath, 'utf8');

test('restart resumes a long prompt from disk; corrupt files are rejected', { timeout: 900_000 }, async () => {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.rmSync(logPath, { force: true });
  let srv = await startServer(args, logPath);
  const u1 = await ask(srv.base, 'What is rule 3?');
  assert.ok(u1.prompt_tokens >= 2000, `prompt has ${u1.prompt_tokens} tokens`);
  assert.equal(u1.prompt_tokens_details.cached_tokens, 0);
  assert.equal((await srv.stop()).code, 0);
  assert.match(logText(), /saved [0-9a-f]{40}\.kv reason=cold/);

  srv = await startServer(args, logPath);
  const mark = logText().length;
  const u2 = await ask(srv.base, 'And what does rule 7 say, exactly?');
  const suffix = u2.prompt_tokens - u2.prompt_tokens_details.cached_tokens;
  assert.ok(u2.prompt_tokens_details.cached_tokens >= 2000, JSON.stringify(u2));
  assert.ok(suffix > 0 && suffix < 40, `suffix ${suffix}`);
  const tail = logText().slice(mark);
  assert.match(tail, /disk hit [0-9a-f]{40}\.kv/);
  const m = tail.match(/prefill after disk hit = (\d+) tokens/);
  assert.ok(m, tail);
  assert.equal(Number(m[1]), suffix);
  assert.equal(u2.prompt_tokens_details.cache_write_tokens, suffix);
  assert.equal((await srv.stop()).code, 0);

  // Flip one byte in the middle of every checkpoint.
  const files = fs.readdirSync(dir).filter((f) => /^[0-9a-f]{40}\.kv$/.test(f));
  assert.ok(files.length >= 1);
  for (const f of files) {
    const p = path.join(dir, f);
    const b = fs.readFileSync(p);
    b[Math.floor(b.length / 2)] ^= 0x10;
    fs.writeFileSync(p, b);
  }
  srv = await startServer(args, logPath);
  const mark2 = logText().length;
  const u3 = await ask(srv.base, 'And what does rule 7 say, exactly?');
  assert.equal(u3.prompt_tokens_details.cached_tokens, 0);
  assert.match(logText().slice(mark2), /rejected [0-9a-f]{40}\.kv: (checksum mismatch|payload)/);
  assert.equal((await srv.stop()).code, 0);
});

test('exact tool-call replay survives a restart (tool-id map in the checkpoint)', { timeout: 600_000 }, async () => {
  const { dsmlCall, force } = await import('./helpers.mjs');
  const dir2 = path.join(TMP, 'kvdisk-tools');
  const log2 = path.join(TMP, 'diskcache-tools.log');
  fs.rmSync(dir2, { recursive: true, force: true });
  fs.rmSync(log2, { force: true });
  const a = ['--ctx', '4096', '-t', '2', '--kv-disk-dir', dir2, '--kv-cache-min-tokens', '16', '--api-key', KEY, '--test-hooks'];
  const tools = [{ name: 'Bash', description: 'Run a command', input_schema: { type: 'object', properties: { command: { type: 'string' }, timeout: { type: 'integer' } } } }];
  const post = async (base, body, out) => {
    const r = await fetch(`${base}/v1/messages`, {
      method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': KEY, ...force(out).headers },
      body: JSON.stringify(body), signal: AbortSignal.timeout(120_000),
    });
    assert.equal(r.status, 200);
    return r.json();
  };
  let srv = await startServer(a, log2);
  const messages = [{ role: 'user', content: 'List the files, please.' }];
  const m1 = await post(srv.base, { model: 'm', max_tokens: 200, tools, messages },
    'Use Bash.</think>' + dsmlCall('Bash', { command: 'ls -la', timeout: 30 }));
  assert.equal(m1.stop_reason, 'tool_use');
  assert.equal((await srv.stop()).code, 0);

  srv = await startServer(a, log2);
  try {
    await continueAfterRestart(srv);
  } finally {
    assert.equal((await srv.stop()).code, 0);
  }

  async function continueAfterRestart(srv) {
  assert.match(fs.readFileSync(log2, 'utf8'), /tool-id maps of \d+ checkpoints loaded/);
  const tu = m1.content.find((b) => b.type === 'tool_use');
  messages.push({ role: 'assistant', content: m1.content.map((b) => (b.type === 'tool_use' ? { ...b, input: { timeout: 30, command: 'ls -la' } } : b)) });
  messages.push({ role: 'user', content: [{ type: 'tool_result', tool_use_id: tu.id, content: 'a.txt b.txt' }] });
  const m2 = await post(srv.base, { model: 'm', max_tokens: 32, tools, messages }, 'ok</think>Two files.');
  assert.equal(m2.content.at(-1).text, 'Two files.');
  const first = m1.usage.cache_creation_input_tokens + m1.usage.output_tokens;
  assert.ok(m2.usage.cache_read_input_tokens >= first - 1, JSON.stringify({ m1: m1.usage, m2: m2.usage }));
  assert.match(fs.readFileSync(log2, 'utf8'), /tool_replay: mem=1/);
  }
});
