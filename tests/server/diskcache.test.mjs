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
