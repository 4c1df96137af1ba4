// The counters that `workers = N` share: slots found by name from any thread, limits that hold
// for the sum of every thread's share under contention, and a dead worker's share released.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { Counter, SharedTable } from '../../src/workers/shared.js';

test('a name has one slot, found again; other names and kinds get others', () => {
  const t = SharedTable.create(2, 64);
  const a = t.slot('pool', 'db\0alice');
  assert.ok(a >= 0);
  assert.equal(t.slot('pool', 'db\0alice'), a);
  assert.notEqual(t.slot('pool', 'db\0bob'), a);
  assert.notEqual(t.slot('db', 'db\0alice'), a);
  // a second view of the same buffer (another thread's) finds the same slot
  assert.equal(new SharedTable(t.buffer, 2).slot('pool', 'db\0alice'), a);
});

test('a full table says so with -1', () => {
  const t = SharedTable.create(1, 4);
  for (let i = 0; i < 4; i++) assert.ok(t.slot('db', `d${i}`) >= 0);
  assert.equal(t.slot('db', 'one too many'), -1);
  assert.ok(t.slot('db', 'd2') >= 0, 'existing names are still found');
});

test('tryAcquire stops at the limit; add and release keep the total the sum of the shares', () => {
  const t = SharedTable.create(3, 16);
  const s = t.slot('pool', 'p');
  assert.equal(t.tryAcquire(s, Counter.SERVERS, 0, 2), true);
  assert.equal(t.tryAcquire(s, Counter.SERVERS, 1, 2), true);
  assert.equal(t.tryAcquire(s, Counter.SERVERS, 2, 2), false);
  assert.equal(t.total(s, Counter.SERVERS), 2);
  assert.equal(t.share(s, Counter.SERVERS, 2), 0);
  // 0 = no limit
  assert.equal(t.tryAcquire(s, Counter.SERVERS, 2, 0), true);
  t.add(s, Counter.SERVERS, 0, -1);
  assert.equal(t.total(s, Counter.SERVERS), 2);
  assert.equal(t.total(s, Counter.CLIENTS), 0, 'counters are separate');
});

test('releaseWorker takes a dead worker\'s shares off every total', () => {
  const t = SharedTable.create(2, 16);
  const p = t.slot('pool', 'p');
  const d = t.slot('db', 'd');
  t.add(p, Counter.SERVERS, 0, 2);
  t.add(p, Counter.SERVERS, 1, 3);
  t.add(d, Counter.CLIENTS, 1, 7);
  t.releaseWorker(1);
  assert.equal(t.total(p, Counter.SERVERS), 2);
  assert.equal(t.share(p, Counter.SERVERS, 1), 0);
  assert.equal(t.total(d, Counter.CLIENTS), 0);
});

test('threads racing for a limit never take more than it allows', async () => {
  const t = SharedTable.create(4, 64);
  const limit = 1000;
  // each thread tries 2000 acquisitions on the same slot; the winners must add up to the limit
  const src = `
    const { workerData, parentPort } = require('node:worker_threads');
    import(workerData.mod).then(({ SharedTable }) => {
      const t = new SharedTable(workerData.buffer, 4);
      const s = t.slot('pool', 'contended');
      let won = 0;
      for (let i = 0; i < 2000; i++) if (t.tryAcquire(s, 0, workerData.w, ${limit})) won++;
      parentPort.postMessage(won);
    });`;
  const mod = new URL('../../src/workers/shared.js', import.meta.url).href;
  const wins = await Promise.all([0, 1, 2, 3].map((w) => new Promise<number>((resolve, reject) => {
    const worker = new Worker(src, { eval: true, workerData: { buffer: t.buffer, w, mod } });
    worker.once('message', resolve);
    worker.once('error', reject);
  })));
  const s = t.slot('pool', 'contended');
  assert.equal(wins.reduce((a, b) => a + b, 0), limit);
  assert.equal(t.total(s, Counter.SERVERS), limit);
  for (let w = 0; w < 4; w++) assert.equal(t.share(s, Counter.SERVERS, w), wins[w]);
});
