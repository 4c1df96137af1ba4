// Cancel requests in transaction mode: a CancelRequest with pgbun's key reaches the
// server the client is linked to at that moment, and never a server that has since been given to
// another client; cancels for idle or queued clients are dropped (`cancel request for idle
// client`); an unknown key is dropped (`failed cancel request`).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres } from '../lib/postgres.js';
import { sleep } from '../lib/procs.js';
import { cancelRequest, sendCancel, WireClient, type LoginResult } from '../lib/wire.js';
import { ensureDatabase, login, logLines, roleUserlist } from '../lib/pool-helpers.js';

const pg = await sharedPostgres();
const DB = 'txp_cancel';
let B: TestPgbun;
const open: WireClient[] = [];

before(async () => {
  await ensureDatabase(pg, DB);
  B = await startPgbun({
    ini: {
      pgbouncer: { auth_type: 'trust', pool_mode: 'transaction' },
      databases: { one: pgConnstr(pg, { dbname: DB, pool_size: 1 }), two: pgConnstr(pg, { dbname: DB, pool_size: 2 }) },
    },
    userlist: roleUserlist(),
  });
});

after(async () => {
  for (const c of open) c.destroy();
  await B?.stop();
});

async function cl(db: string): Promise<{ c: WireClient; key: { pid: number; secret: number } }> {
  const { client, login: l } = await login(B, 'trust_user', db);
  open.push(client);
  return { c: client, key: (l as LoginResult).backendKey! };
}

const target = () => ({ host: B.host, port: B.port });

describe('cancel in transaction mode', () => {
  test('a cancel stops the running query of the client that sent it; the client goes on', async () => {
    const { c, key } = await cl('one');
    const t0 = Date.now();
    const running = c.query('SELECT pg_sleep(10)', 15_000);
    await sleep(300);
    await sendCancel(target(), key);
    const r = await running;
    assert.ok(Date.now() - t0 < 4000, 'cancelled early');
    assert.equal(r.error?.C, '57014');
    assert.equal(r.error?.M, 'canceling statement due to user request');
    assert.equal(r.status, 'I');
    assert.deepEqual((await c.query('SELECT 1')).rows, [['1']]);
  });

  test('with two clients on two servers only the one named by the key is cancelled', async () => {
    const a = await cl('two');
    const b = await cl('two');
    const ra = a.c.query('SELECT pg_sleep(10), pg_backend_pid()', 15_000);
    const rb = b.c.query('SELECT pg_sleep(1.5), pg_backend_pid()', 15_000);
    await sleep(300);
    await sendCancel(target(), a.key);
    const [xa, xb] = await Promise.all([ra, rb]);
    assert.equal(xa.error?.C, '57014');
    assert.equal(xb.error, null, JSON.stringify(xb.error));
    assert.equal(xb.rows.length, 1);
  });

  test('a cancel for a client whose server was released and given to another client does not cancel that client', async () => {
    const off = B.logOffset();
    const a = await cl('one');
    const b = await cl('one');
    const pa = (await a.c.query('SELECT pg_backend_pid()')).rows[0][0];
    // a is idle now; its former server runs b's query
    const t0 = Date.now();
    const rb = b.c.query("SELECT pg_sleep(1.5), pg_backend_pid(), 'b finished'", 10_000);
    await sleep(300);
    await sendCancel(target(), a.key);
    const r = await rb;
    assert.equal(r.error, null, `b's query must not be cancelled: ${JSON.stringify(r.error)}`);
    assert.equal(r.rows[0][1], pa, 'b really was on the server a used before');
    assert.equal(r.rows[0][2], 'b finished');
    assert.ok(Date.now() - t0 >= 1400);
    await B.waitForLog(/cancel request for idle client/, 2000, off);
    assert.deepEqual((await a.c.query('SELECT 1')).rows, [['1']]);
  });

  test('a cancel for a client queued for a server is dropped; the client is served later', async () => {
    const off = B.logOffset();
    const a = await cl('one');
    const b = await cl('one');
    assert.equal((await a.c.query('BEGIN')).status, 'T');
    const rb = b.c.query("SELECT 'served'", 10_000);
    await sleep(200);
    await sendCancel(target(), b.key);
    await B.waitForLog(/cancel request for idle client/, 2000, off);
    // one line, the close's, as PgBouncer logs it
    const lines = logLines(B, /cancel request for idle client/, off);
    assert.equal(lines.length, 1, lines.join('\n'));
    assert.match(lines[0]!, /closing because: cancel request for idle client \(age=\d+s\)$/);
    await a.c.query('COMMIT');
    const r = await rb;
    assert.equal(r.error, null, JSON.stringify(r.error));
    assert.deepEqual(r.rows, [['served']]);
  });

  test('a cancel racing the end of the query never hits the next client\'s query on that server', async () => {
    // a's query ends at about the moment its cancel is delivered; b is already queued for the
    // server. Whatever becomes of a's query, b's must not be cancelled: the server may only go
    // to b once the cancel is over (PostgreSQL closed the cancel connection).
    const a = await cl('one');
    const b = await cl('one');
    for (let i = 0; i < 40; i++) {
      const ra = a.c.query(`SELECT pg_sleep(${(i % 20) * 0.002})`, 5000);
      const cancel = sendCancel(target(), a.key).catch(() => {});
      const rb = b.c.query('SELECT pg_sleep(0.05), 1', 5000);
      await ra;
      const r = await rb;
      await cancel;
      assert.equal(r.error, null, `round ${i}: b was cancelled: ${JSON.stringify(r.error)}`);
    }
  });

  test('an unknown key: the cancel connection is closed, logged "failed cancel request"', async () => {
    const off = B.logOffset();
    const c = await WireClient.connect(target());
    open.push(c);
    await c.write(cancelRequest(12345, 67890));
    await c.waitClose(3000);
    await B.waitForLog(/failed cancel request/, 2000, off);
    // one line, the close's, as PgBouncer logs it
    const lines = logLines(B, /failed cancel request/, off);
    assert.equal(lines.length, 1, lines.join('\n'));
    assert.match(lines[0]!, /closing because: failed cancel request \(age=\d+s\)$/);
  });
});
