// The cancel key layout of PgBouncer 1.21+ (src/pool/cancel-key.ts): the first byte's top bit
// cleared; with peering, bytes 1-2 the issuing peer_id little-endian and the low 2 bits of byte
// 7 the hop TTL, 3 when issued. pgbun's own: with workers > 1, the low 6 bits of byte 3 the
// issuing event loop.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  CANCEL_KEY_LEN, CANCEL_KEY_TTL, CANCEL_KEY_WORKERS, cancelKeyPeerId, cancelKeyTtl, cancelKeyWorker, makeCancelKey,
  withCancelKeyTtl,
} from '../../src/pool/cancel-key.js';
import { MAX_WORKERS } from '../../src/config/settings.js';

const ALL_ONES = Buffer.alloc(8, 0xff);
const ZEROS = Buffer.alloc(8, 0);

test('without peering: the random bytes as they are, but for the top bit of the first', () => {
  assert.deepEqual(makeCancelKey(ALL_ONES, 0), Buffer.from('7fffffffffffffff', 'hex'));
  assert.deepEqual(makeCancelKey(ZEROS, 0), ZEROS);
  const r = Buffer.from('f123456789abcdef', 'hex');
  assert.deepEqual(makeCancelKey(r, 0), Buffer.from('7123456789abcdef', 'hex'));
});

test('with peering: peer_id in bytes 1-2 little-endian, TTL 3 in the low bits of byte 7', () => {
  const r = Buffer.from('f123456789abcdec', 'hex');
  assert.deepEqual(makeCancelKey(r, 1), Buffer.from('7101006789abcdef', 'hex'));
  assert.deepEqual(makeCancelKey(r, 0x1234), Buffer.from('7134126789abcdef', 'hex'));
  // the largest peer_id (14 bits): byte 2's top two bits stay clear
  assert.deepEqual(makeCancelKey(ALL_ONES, 16383), Buffer.from('7fff3fffffffffff', 'hex'));
  assert.deepEqual(makeCancelKey(ZEROS, 16383), Buffer.from('00ff3f0000000003', 'hex'));
  for (const id of [1, 2, 255, 256, 1000, 16383]) {
    const key = makeCancelKey(ALL_ONES, id);
    assert.equal(key.length, CANCEL_KEY_LEN);
    assert.equal(cancelKeyPeerId(key), id);
    assert.equal(cancelKeyTtl(key), CANCEL_KEY_TTL);
    assert.equal(key.readInt32BE(0) > 0, true, 'the "pid" half is positive');
  }
});

test('the key is a copy: the random block it came from may be reused', () => {
  const r = Buffer.from('0123456789abcdef', 'hex');
  const key = makeCancelKey(r, 7);
  r.fill(0);
  assert.deepEqual(key, Buffer.from('0107006789abcdef', 'hex'));
});

test('withCancelKeyTtl changes only the low 2 bits of byte 7, on a copy', () => {
  const key = makeCancelKey(ALL_ONES, 42);
  const two = withCancelKeyTtl(key, 2);
  assert.equal(cancelKeyTtl(two), 2);
  assert.equal(cancelKeyTtl(key), 3, 'the original is unchanged');
  assert.deepEqual(two.subarray(0, 7), key.subarray(0, 7));
  assert.equal(two[7], 0xfe);
  assert.equal(withCancelKeyTtl(two, 0)[7], 0xfc);
  assert.deepEqual(withCancelKeyTtl(withCancelKeyTtl(key, 0), CANCEL_KEY_TTL), key);
  assert.equal(cancelKeyPeerId(withCancelKeyTtl(key, 0)), 42);
});

test('with several loops: the loop index in the low 6 bits of byte 3, the rest as without', () => {
  const r = Buffer.from('f123456789abcdef', 'hex');
  assert.deepEqual(makeCancelKey(r, 0, 0), Buffer.from('71234540' + '89abcdef', 'hex'));
  assert.deepEqual(makeCancelKey(r, 0, 5), Buffer.from('71234545' + '89abcdef', 'hex'));
  assert.deepEqual(makeCancelKey(ALL_ONES, 0, 0), Buffer.from('7fffffc0ffffffff', 'hex'));
  assert.deepEqual(makeCancelKey(ZEROS, 0, 63), Buffer.from('0000003f00000000', 'hex'));
  // with peering too: peer_id and TTL where they were, the loop beside them
  assert.deepEqual(makeCancelKey(r, 0x1234, 2), Buffer.from('71341242' + '89abcdef', 'hex'));
  for (let w = 0; w < MAX_WORKERS; w++) {
    for (const peer of [0, 1, 16383]) {
      const key = makeCancelKey(ALL_ONES, peer, w);
      assert.equal(cancelKeyWorker(key), w);
      if (peer > 0) {
        assert.equal(cancelKeyPeerId(key), peer);
        assert.equal(cancelKeyTtl(key), CANCEL_KEY_TTL);
        // a hop to a peer keeps the loop
        assert.equal(cancelKeyWorker(withCancelKeyTtl(key, 1)), w);
      }
    }
  }
  assert.ok(MAX_WORKERS <= CANCEL_KEY_WORKERS, 'every loop workers may start has its own key bits');
});

test('one loop (null): the key is the same as before loops were added', () => {
  const r = Buffer.from('f123456789abcdef', 'hex');
  assert.deepEqual(makeCancelKey(r, 0, null), makeCancelKey(r, 0));
  assert.deepEqual(makeCancelKey(r, 7, null), Buffer.from('7107006789abcdef', 'hex'));
});
