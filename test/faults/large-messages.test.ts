// Large messages go through in pieces, not held whole: a 64 MB query, and a Bind of a named
// prepared statement with a 64 MB parameter in transaction mode (where pgbun rewrites the
// statement name: it rewrites the Bind's head and streams its parameters). pgbun's memory must
// not grow by the message's size, and the results must be right.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { bindMessage, executeMessage, parseMessage, query, sync } from '../lib/wire.js';
import { login, roleUserlist } from '../lib/pool-helpers.js';

const pg = await sharedPostgres();
let B: TestPgbun;

before(async () => {
  B = await startPgbun({
    ini: {
      pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', max_prepared_statements: 100 },
      databases: { [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB, pool_size: 2 }) },
    },
    userlist: roleUserlist(),
  });
});

after(async () => {
  await B?.stop();
});

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
}

const MB = 1024 * 1024;
const SIZE = 64 * MB;

test('a Bind with a 64 MB parameter of a named statement (transaction mode): right answer, pgbun does not hold it', async () => {
  const pid = B.proc.pid!;
  const { client } = await login(B, 'trust_user', TEST_DB);
  try {
    // warm up: a statement prepared and used once, so the first server knows it
    await client.write([parseMessage('big', 'SELECT length($1::text)'), sync()]);
    await client.readUntil('Z', 10_000);
    const before = rssMb(pid);
    const value = 'a'.repeat(SIZE);
    await client.write([bindMessage('', 'big', [value]), executeMessage(), sync()]);
    const r = await client.collect(60_000);
    assert.equal(r.error, null, JSON.stringify(r.error));
    assert.deepEqual(r.rows, [[String(SIZE)]]);
    const grown = rssMb(pid) - before;
    assert.ok(grown < 40, `pgbun grew by ${grown.toFixed(1)} MB for a ${SIZE / MB} MB Bind`);
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

test('a 64 MB simple query goes through in pieces', async () => {
  const pid = B.proc.pid!;
  const { client } = await login(B, 'trust_user', TEST_DB);
  try {
    const before = rssMb(pid);
    await client.write(query(`SELECT 1 AS one -- ${'z'.repeat(SIZE)}`));
    const r = await client.collect(60_000);
    assert.equal(r.error, null, JSON.stringify(r.error));
    assert.deepEqual(r.rows, [['1']]);
    const grown = rssMb(pid) - before;
    assert.ok(grown < 40, `pgbun grew by ${grown.toFixed(1)} MB for a ${SIZE / MB} MB query`);
  } finally {
    client.destroy();
  }
});
