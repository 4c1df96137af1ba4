import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomSmall } from '../../src/auth/random.js';

test('randomSmall hands out values of the asked length that later calls never overwrite', () => {
  const kept: Array<[Buffer, Buffer]> = [];
  // enough to cross several 4 KiB blocks, with sizes that do not divide 4096
  for (let i = 0; i < 2000; i++) {
    const n = [4, 8, 18][i % 3]!;
    const v = randomSmall(n);
    assert.equal(v.length, n);
    kept.push([v, Buffer.from(v)]);
  }
  for (const [view, copy] of kept) assert.deepEqual(view, copy);
  const hex = new Set(kept.filter(([v]) => v.length === 18).map(([v]) => v.toString('hex')));
  assert.equal(hex.size, kept.filter(([v]) => v.length === 18).length, '18-byte values repeat');
});

test('randomSmall output is not constant: every byte value shows up', () => {
  const seen = new Set<number>();
  for (let i = 0; i < 2000; i++) for (const b of randomSmall(8)) seen.add(b);
  assert.equal(seen.size, 256);
});
