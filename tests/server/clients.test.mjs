// Every request captured from a real agent client (shared/data/clients/*.json)
// is sent with its body exactly as captured, through the SDK of its protocol,
// and parsed to completion.  The test-only output hook bounds the generation
// (the captures ask for up to 32000 tokens), and makes the Codex turn end in a
// tool call so the function-call events are exercised too.
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { openai, anthropic, force, dsmlCall, CLIENTS } from './helpers.mjs';

const files = fs.readdirSync(CLIENTS).filter((f) => f.endsWith('.json')).sort();

test('captured client requests exist', () => assert.ok(files.length >= 4, `found ${files.length}`));

for (const f of files) {
  test(`replay ${f}`, { timeout: 600_000 }, async () => {
    const cap = JSON.parse(fs.readFileSync(path.join(CLIENTS, f), 'utf8'));
    const body = cap.body;
    const p = cap.path.split('?')[0];
    if (p === '/v1/chat/completions') {
      const stream = await openai.chat.completions.create(body, force('Let me think.</think>Done.'));
      let text = '', fin = null, usage = null;
      for await (const c of stream) {
        if (c.usage) usage = c.usage;
        text += c.choices[0]?.delta?.content ?? '';
        fin = c.choices[0]?.finish_reason ?? fin;
      }
      assert.equal(text, 'Done.');
      assert.equal(fin, 'stop');
      assert.ok(usage.prompt_tokens > 100);
    } else if (p === '/v1/responses') {
      const out = 'Plan: list files.</think>' + dsmlCall('exec_command', { cmd: 'ls' });
      const stream = await openai.responses.create(body, force(out));
      let term = null, seq = -1;
      for await (const e of stream) {
        assert.ok(e.sequence_number > seq);
        seq = e.sequence_number;
        if (e.type.startsWith('response.') && ['response.completed', 'response.incomplete', 'response.failed'].includes(e.type)) term = e;
      }
      assert.equal(term.type, 'response.completed');
      const fc = term.response.output.find((o) => o.type === 'function_call');
      assert.ok(fc, JSON.stringify(term.response.output));
      assert.ok(fc.name && fc.call_id);
      assert.deepEqual(JSON.parse(fc.arguments), { cmd: 'ls' });
      assert.ok(term.response.usage.input_tokens > 1000);
    } else if (p === '/v1/messages') {
      const stream = anthropic.beta.messages.stream(body, force('Thinking.</think>Hello.'));
      const msg = await stream.finalMessage();
      assert.equal(msg.stop_reason, 'end_turn');
      assert.equal(msg.content.find((b) => b.type === 'text').text, 'Hello.');
      const total = msg.usage.input_tokens + msg.usage.cache_read_input_tokens + msg.usage.cache_creation_input_tokens;
      assert.ok(total > 1000);
      const ct = await anthropic.beta.messages.countTokens({ model: body.model, messages: body.messages, system: body.system, tools: body.tools });
      assert.ok(ct.input_tokens > 1000);
    } else {
      assert.fail(`no SDK mapping for ${cap.path}`);
    }
  });
}
