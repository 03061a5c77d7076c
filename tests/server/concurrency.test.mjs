// Eight clients stream at once: the FIFO worker runs them one by one, every
// stream completes, and none carries another's tokens.
import test from 'node:test';
import assert from 'node:assert/strict';
import { openai, force } from './helpers.mjs';

test('8 concurrent streams complete without interleaving', { timeout: 600_000 }, async () => {
  const N = 8;
  const want = Array.from({ length: N }, (_, i) => `client ${i} says ${'abcdefgh'[i]}${'abcdefgh'[i]} and number ${i * 111} twice ${i}`);
  const runs = want.map(async (w, i) => {
    const s = await openai.chat.completions.create({
      model: 'deepseek-chat', stream: true, max_tokens: 64,
      messages: [{ role: 'user', content: `request ${i}` }],
    }, force(w));
    let text = '', fin = null, id = null;
    for await (const c of s) {
      id ??= c.id;
      assert.equal(c.id, id);
      text += c.choices[0]?.delta?.content ?? '';
      fin = c.choices[0]?.finish_reason ?? fin;
    }
    return { text, fin };
  });
  const res = await Promise.all(runs);
  res.forEach((r, i) => {
    assert.equal(r.text, want[i]);
    assert.equal(r.fin, 'stop');
  });
});
