// The per-server queue of outstanding requests behind prepared-statement handling
// (ServerPrepared): first in, first out across its ring buffer's wrap and growth, and the Syncs
// PostgreSQL ignores in COPY mode taken out from behind the head without disturbing the rest.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { F_BIND, F_EXECUTE, F_PARSE, F_SYNC } from '../../src/protocol/constants.js';
import { ServerPrepared } from '../../src/pool/prepared.js';

function drain(q: ServerPrepared): Array<[number, string | null]> {
  const out: Array<[number, string | null]> = [];
  while (q.queued > 0) {
    out.push([q.headKind(), q.headName()]);
    q.pop();
  }
  return out;
}

test('first in, first out, across the ring buffer wrapping and growing', () => {
  const q = new ServerPrepared();
  let next = 0;
  const expected: Array<[number, string | null]> = [];
  // push and pop unevenly so that the head walks around the 64 slots, then grow past them
  for (let round = 0; round < 50; round++) {
    for (let i = 0; i < 7; i++) {
      const name = `n${next++}`;
      q.push(F_PARSE, 0, null, name);
      expected.push([F_PARSE, name]);
    }
    for (let i = 0; i < 5; i++) {
      assert.deepEqual([q.headKind(), q.headName()], expected.shift());
      q.pop();
    }
  }
  assert.equal(q.queued, expected.length);
  assert.ok(q.queued > 64, 'grew past the first buffer');
  assert.deepEqual(drain(q), expected);
  assert.equal(q.headKind(), 0, 'empty');
});

test('dropSyncs: the first n Syncs behind the head go, everything else keeps its order', () => {
  const q = new ServerPrepared();
  const items: Array<[number, string]> = [[F_EXECUTE, 'copy'], [F_SYNC, 's1'], [F_BIND, 'b'], [F_SYNC, 's2'], [F_SYNC, 's3'], [F_EXECUTE, 'e']];
  for (const [k, n] of items) q.push(k, 0, null, n);
  q.dropSyncs(2);
  assert.deepEqual(drain(q).map(([, n]) => n), ['copy', 'b', 's3', 'e']);
  // the head itself is never dropped, even if it is a Sync; n larger than the Syncs there is fine
  for (const [k, n] of [[F_SYNC, 'head'], [F_SYNC, 'x'], [F_EXECUTE, 'y']] as Array<[number, string]>) q.push(k, 0, null, n);
  q.dropSyncs(5);
  assert.deepEqual(drain(q).map(([, n]) => n), ['head', 'y']);
});

test('dropSyncs across the wrap of the ring buffer', () => {
  const q = new ServerPrepared();
  for (let i = 0; i < 60; i++) q.push(F_BIND, 0, null, `old${i}`);
  for (let i = 0; i < 60; i++) q.pop();
  // the head is near the end of the buffer now; these wrap around
  const names = ['copy', 's1', 'p', 's2', 'x', 's3', 'y', 'z'];
  for (const n of names) q.push(n.startsWith('s') ? F_SYNC : F_EXECUTE, 0, null, n);
  assert.equal(q.actAt(0), 0);
  q.dropSyncs(2);
  assert.deepEqual(drain(q).map(([, n]) => n), ['copy', 'p', 'x', 's3', 'y', 'z']);
});
