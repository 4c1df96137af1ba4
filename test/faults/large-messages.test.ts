// Large messages go through in pieces, not held whole: a 64 MB query, an unnamed Parse of a
// 64 MB query, and a Bind of a named prepared statement with a 64 MB parameter in transaction
// mode (where pgbun rewrites the statement name: it rewrites the Bind's head and streams its
// parameters). A named Parse is the one message pgbun keeps whole: its text is the statement
// it prepares on other servers. The client sends the
// first half and stops: that half must reach PostgreSQL (counted by a TCP gate in between)
// before the rest is sent; then the answer must be right.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { bindMessage, executeMessage, parseMessage, query, sync, type WireClient } from '../lib/wire.js';
import { login, roleUserlist, waitUntil } from '../lib/pool-helpers.js';
import { TcpGate } from '../lib/tcp-gate.js';

const pg = await sharedPostgres();
let B: TestPgbun;
let gate: TcpGate;

before(async () => {
  gate = await new TcpGate(pg).start();
  B = await startPgbun({
    ini: {
      pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', max_prepared_statements: 100 },
      databases: { [TEST_DB]: pgConnstr({ host: '127.0.0.1', port: gate.port }, { dbname: TEST_DB, pool_size: 2 }) },
    },
    userlist: roleUserlist(),
  });
});

after(async () => {
  await B?.stop();
  gate?.close();
});

/** Send `msg` in two halves: the first half must have reached PostgreSQL before the second goes. */
async function sendStreamed(c: WireClient, msg: Buffer): Promise<void> {
  const half = Math.floor(msg.length / 2);
  const before = gate.bytesUp;
  await c.write(msg.subarray(0, half));
  await waitUntil('the first half forwarded to PostgreSQL', () => gate.bytesUp - before, (n) => n >= half - 64, 20_000);
  await c.write(msg.subarray(half));
}

const MB = 1024 * 1024;
const SIZE = 64 * MB;

test('a Bind with a 64 MB parameter of a named statement (transaction mode): streamed, right answer', async () => {
  const { client } = await login(B, 'trust_user', TEST_DB);
  try {
    // warm up: a statement prepared and used once, so the first server knows it
    await client.write([parseMessage('big', 'SELECT length($1::text)'), sync()]);
    await client.readUntil('Z', 10_000);
    await sendStreamed(client, Buffer.concat([bindMessage('', 'big', ['a'.repeat(SIZE)]), executeMessage(), sync()]));
    const r = await client.collect(60_000);
    assert.equal(r.error, null, JSON.stringify(r.error));
    assert.deepEqual(r.rows, [[String(SIZE)]]);
    // the statement still works with a small parameter, and another statement after it
    await client.write([bindMessage('', 'big', ['xyz']), executeMessage(), sync()]);
    assert.deepEqual((await client.collect(10_000)).rows, [['3']]);
    assert.deepEqual((await client.query('SELECT 11')).rows, [['11']]);
  } finally {
    client.destroy();
  }
});

test('a Bind whose names come in a later read than its header is still right', async () => {
  const { client } = await login(B, 'trust_user', TEST_DB);
  try {
    await client.write([parseMessage('named_stmt', 'SELECT $1::text || $2::text'), sync()]);
    await client.readUntil('Z', 10_000);
    const bind = bindMessage('', 'named_stmt', ['x'.repeat(200_000), 'y']);
    // the header alone, then the names cut in the middle, then the rest
    for (const cut of [[3], [5], [9], [12], [1000]]) {
      let at = 0;
      for (const c of [...cut, bind.length]) {
        await client.write(bind.subarray(at, c));
        at = c;
        await new Promise((r) => setTimeout(r, 20));
      }
      await client.write([executeMessage(), sync()]);
      const r = await client.collect(10_000);
      assert.equal(r.error, null, JSON.stringify(r.error));
      assert.equal(r.rows[0]?.[0]?.length, 200_001);
    }
  } finally {
    client.destroy();
  }
});

test('an unnamed Parse of a 64 MB query (transaction mode, before and after a server is linked) is streamed', async () => {
  const { client } = await login(B, 'trust_user', TEST_DB);
  try {
    const big = Buffer.concat([parseMessage('', `SELECT 3 AS three -- ${'p'.repeat(SIZE)}`), bindMessage('', ''), executeMessage(), sync()]);
    // the client has no server yet: the Parse is its first message
    await sendStreamed(client, big);
    assert.deepEqual((await client.collect(60_000)).rows, [['3']]);
    // and inside a transaction, with a server linked
    assert.equal((await client.query('BEGIN')).error, null);
    await sendStreamed(client, big);
    assert.deepEqual((await client.collect(60_000)).rows, [['3']]);
    assert.equal((await client.query('COMMIT')).error, null);
  } finally {
    client.destroy();
  }
});

test('a 64 MB simple query goes through in pieces', async () => {
  const { client } = await login(B, 'trust_user', TEST_DB);
  try {
    await sendStreamed(client, query(`SELECT 1 AS one -- ${'z'.repeat(SIZE)}`));
    const r = await client.collect(60_000);
    assert.equal(r.error, null, JSON.stringify(r.error));
    assert.deepEqual(r.rows, [['1']]);
  } finally {
    client.destroy();
  }
});
