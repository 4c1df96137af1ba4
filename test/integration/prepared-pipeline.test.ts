// Prepared statements in pipelines (transaction mode, max_prepared_statements > 0), as psycopg's
// pipeline mode sends them: new and already prepared named statements and unnamed ones in one
// pipeline, answered after a Flush without a Sync; a failing Parse inside a pipeline.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { bindMessage, describeMessage, executeMessage, flush, parseMessage, sync, type WireClient, type WireMessage } from '../lib/wire.js';
import { login, roleUserlist } from '../lib/pool-helpers.js';

const pg = await sharedPostgres();
let B: TestPgbun;

before(async () => {
  B = await startPgbun({
    ini: {
      pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', max_prepared_statements: 100 },
      databases: { [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB, pool_size: 1 }) },
    },
    userlist: roleUserlist(),
  });
});

after(async () => {
  await B?.stop();
});

const stmt = (name: string, sql: string): Buffer[] => [parseMessage(name, sql), bindMessage('', name), describeMessage('P', ''), executeMessage()];
const reuse = (name: string): Buffer[] => [bindMessage('', name), describeMessage('P', ''), executeMessage()];

/** Read until `n` CommandCompletes (or an error); the types and the DataRow values. */
async function readResults(c: WireClient, n: number): Promise<{ types: string; values: string[] }> {
  const out: WireMessage[] = [];
  let done = 0;
  while (done < n) {
    const m = await c.readMessage(5000);
    out.push(m);
    if (m.type === 'C') done++;
    if (m.type === 'E') break;
  }
  const values = out.filter((m) => m.type === 'D').map((m) => m.body.subarray(6).toString());
  return { types: out.map((m) => m.type).join(''), values };
}

async function client(): Promise<WireClient> {
  return (await login(B, 'trust_user', TEST_DB)).client;
}

test('new, already prepared and unnamed statements in one pipeline are answered after a Flush without Sync', async () => {
  // the only server learns `SELECT 1` from an earlier client
  const first = await client();
  await first.write([...stmt('s1', 'SELECT 1'), sync()]);
  await first.readUntil('Z');
  first.destroy();

  const c = await client();
  await c.write([...stmt('a', 'SELECT 2'), ...stmt('b', 'SELECT 1'), ...stmt('', 'SELECT 3'), ...reuse('b'), flush()]);
  const r = await readResults(c, 4);
  assert.equal(r.types, '12TDC12TDC12TDC2TDC');
  assert.deepEqual(r.values, ['2', '1', '3', '1']);
  await c.write(sync());
  await c.readUntil('Z');
  // and once more in the other order, on the same connection
  await c.write([...stmt('', 'SELECT 3'), ...stmt('d', 'SELECT 1'), ...reuse('a'), flush()]);
  const r2 = await readResults(c, 3);
  assert.deepEqual(r2.values, ['3', '1', '2']);
  await c.write(sync());
  await c.readUntil('Z');
  c.destroy();
});

test('a Parse that fails inside a pipeline: the error, the rest skipped up to Sync; every name of it can be used or prepared again', async () => {
  await pg.query('DROP TABLE IF EXISTS pipeline_later', TEST_DB);
  const c = await client();
  await c.write([...stmt('p1', 'SELECT 1'), ...stmt('p2', 'SELECT count(*) FROM pipeline_later'), ...stmt('p3', 'SELECT 2'),
    ...stmt('p4', 'SELECT 42'), sync()]);
  const msgs = await c.readUntil('Z', 5000);
  assert.equal(msgs.map((m) => m.type).join(''), '12TDCEZ');
  // as in PgBouncer, the names stay the client's and are prepared where they are used: p3 (the
  // server knew SELECT 2), p4 (sent, skipped by PostgreSQL), and p2 once its table exists
  await pg.query('CREATE TABLE pipeline_later (a int)', TEST_DB);
  await pg.query('GRANT ALL ON pipeline_later TO PUBLIC', TEST_DB);
  try {
    await c.write([...reuse('p3'), ...reuse('p4'), ...reuse('p1'), ...reuse('p2'), sync()]);
    const again = await c.readUntil('Z', 5000);
    assert.equal(again.map((m) => m.type).join(''), '2TDC2TDC2TDC2TDCZ');
    assert.deepEqual(again.filter((m) => m.type === 'D').map((m) => m.body.subarray(6).toString()), ['2', '42', '1', '0']);
    // a name whose Parse never took effect may also be prepared again, as PostgreSQL allows;
    // one that did may not
    const c2 = await client();
    await c2.write([...stmt('q1', 'SELECT * FROM no_such_table_at_all'), sync()]);
    assert.equal((await c2.readUntil('Z', 5000)).map((m) => m.type).join(''), 'EZ');
    await c2.write([...stmt('q1', 'SELECT 7'), sync()]);
    const q1 = await c2.readUntil('Z', 5000);
    assert.equal(q1.map((m) => m.type).join(''), '12TDCZ');
    await c2.write([parseMessage('q1', 'SELECT 8'), sync()]);
    await c2.expectError({ severity: 'FATAL', message: 'prepared statement name is already in use', closed: true });
    c2.destroy();
  } finally {
    c.destroy();
    await pg.query('DROP TABLE IF EXISTS pipeline_later', TEST_DB);
  }
});

test('an error before the client sent its Sync: what it sends up to the Sync is skipped, then all works again', async () => {
  // the only server knows `SELECT 1` (first test), so a Parse of it is answered by pgbun
  const c = await client();
  await c.write([...stmt('', 'SELECT aaaa'), flush()]);
  const err = await c.readUntil('E', 5000);
  assert.equal(err.at(-1)!.type, 'E');
  // PostgreSQL skips these up to the Sync: no answer, not even pgbun's own for a known statement
  await c.write([...stmt('', 'SELECT 123'), ...stmt('known', 'SELECT 1'), flush()]);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(c.pending.length, 0, 'nothing answered before the Sync');
  await c.write(sync());
  assert.equal((await c.readUntil('Z', 5000)).map((m) => m.type).join(''), 'Z');
  // afterwards: a named statement of the known text, and the skipped name, both work
  await c.write([...stmt('again', 'SELECT 1'), ...reuse('known'), sync()]);
  const after = await c.readUntil('Z', 5000);
  assert.equal(after.map((m) => m.type).join(''), '12TDC2TDCZ');
  c.destroy();
});
