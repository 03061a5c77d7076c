// Shared helpers for the ds4-server node suite.  The C driver tests/test_server.c
// starts the server and passes its address and paths through the environment;
// every connection goes to 127.0.0.1 only.
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { spawn } from 'node:child_process';
import net from 'node:net';
import fs from 'node:fs';

export const BASE = process.env.DS4_BASE ?? 'http://127.0.0.1:8000';
export const KEY = process.env.DS4_API_KEY ?? 'test-key';
export const SERVER_BIN = process.env.DS4_SERVER_BIN;
export const MODEL = process.env.DS4_MODEL;
export const TMP = process.env.DS4_TMP ?? '/tmp';
export const CLIENTS = process.env.DS4_CLIENTS;

if (!BASE.startsWith('http://127.0.0.1:')) throw new Error(`tests talk to loopback only, got ${BASE}`);

export const openai = new OpenAI({ baseURL: `${BASE}/v1`, apiKey: KEY, maxRetries: 0, timeout: 300_000 });
export const anthropic = new Anthropic({ baseURL: BASE, apiKey: KEY, maxRetries: 0, timeout: 300_000 });

// TEST ONLY hook (server --test-hooks): the model emits exactly this text.
export function force(text) {
  return { headers: { 'x-ds4-test-output': encodeURIComponent(text) } };
}

export const DSML = '\uff5cDSML\uff5c';
export function dsmlCall(name, params) {
  let s = `\n\n<${DSML}tool_calls>\n<${DSML}invoke name="${name}">\n`;
  for (const [k, v] of Object.entries(params)) {
    const isStr = typeof v === 'string';
    s += `<${DSML}parameter name="${k}" string="${isStr}">${isStr ? v : JSON.stringify(v)}</${DSML}parameter>\n`;
  }
  return s + `</${DSML}invoke>\n</${DSML}tool_calls>`;
}

export async function raw(path, { method = 'POST', body, headers = {}, base = BASE } = {}) {
  const h = { authorization: `Bearer ${KEY}`, 'content-type': 'application/json', ...headers };
  const r = await fetch(`${base}${path}`, { method, headers: h, body, signal: AbortSignal.timeout(120_000) });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* SSE or empty */ }
  return { status: r.status, headers: r.headers, text, json };
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

const spawned = new Set();
process.on('exit', () => { for (const c of spawned) c.kill('SIGKILL'); });

// Starts a private ds4-server (for restart scenarios); resolves when /health answers.
export async function startServer(args, logPath) {
  const port = await freePort();
  const log = fs.openSync(logPath, 'a');
  const child = spawn(SERVER_BIN, ['-m', MODEL, '--host', '127.0.0.1', '--port', String(port), ...args],
    { stdio: ['ignore', log, log] });
  // A failing test must not leave a server behind or keep node alive.
  child.unref();
  spawned.add(child);
  child.once('exit', () => spawned.delete(child));
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`ds4-server exited early (${child.exitCode}); see ${logPath}`);
    try {
      const r = await fetch(`${base}/health`, { signal: AbortSignal.timeout(2000) });
      if (r.status === 200) break;
    } catch { /* not up yet */ }
    if (Date.now() > deadline) { child.kill('SIGKILL'); throw new Error('ds4-server did not start'); }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    base, child,
    stop: () => new Promise((resolve) => {
      if (child.exitCode !== null) { resolve({ code: child.exitCode, sig: child.signalCode }); return; }
      child.ref(); // keep node alive until it has exited
      child.once('exit', (code, sig) => resolve({ code, sig }));
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 60_000).unref();
    }),
  };
}
