// Clients killed (socket destroyed, no Terminate) at bad moments: inside BEGIN, inside a long
// query, in the middle of COPY FROM STDIN, in the middle of a message. With pool_size 1 the next
// client gets the very server pool the victim used, in transaction and in session mode; it must
// see nothing the victim left behind: no open transaction, no SET value, no temp table, no
// advisory lock, no prepared statement (SQL PREPARE or protocol Parse), no COPY rows.
// The database has client_connection_check_interval set so that a backend whose socket pgbun
// closed notices it even inside pg_sleep (its locks go away instead of lingering for the sleep).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres } from '../lib/postgres.js';
import { sleep } from '../lib/procs.js';
import { ensureDatabase, login, roleUserlist, waitUntil } from '../lib/pool-helpers.js';
import { message, parseErrorFields, parseMessage, query, sync, type WireClient } from '../lib/wire.js';

const pg = await sharedPostgres();
const DB = 'fault_kills';
let B: TestPgbun;

before(async () => {
  await ensureDatabase(pg, DB);
  await pg.query(`ALTER DATABASE ${DB} SET client_connection_check_interval = '300ms'`);
  await pg.query('CREATE TABLE IF NOT EXISTS leak_copy (x int)', DB);
  await pg.query('GRANT ALL ON leak_copy TO PUBLIC', DB);
  B = await startPgbun({
    ini: {
      pgbouncer: { auth_type: 'trust', query_wait_timeout: 60 },
      databases: {
        tx: pgConnstr(pg, { dbname: DB, pool_size: 1, pool_mode: 'transaction' }),
        sess: pgConnstr(pg, { dbname: DB, pool_size: 1, pool_mode: 'session' }),
      },
    },
    userlist: roleUserlist(),
  });
});

after(async () => {
  await B?.stop();
});

type Mode = 'tx' | 'sess';

async function ok(c: WireClient, sql: string): Promise<string[][]> {
  const r = await c.query(sql, 15_000);
  assert.equal(r.error, null, `${sql}: ${JSON.stringify(r.error)}`);
  return r.rows as string[][];
}

/** Session state a later client must never see; inside BEGIN when `inTx`. */
async function leaveState(c: WireClient, inTx: boolean): Promise<number> {
  if (inTx) assert.equal((await c.query('BEGIN')).status, 'T');
  await ok(c, `SET statement_timeout = '4242ms'`);
  await ok(c, `SET fault.marker = 'leak'`);
  await ok(c, 'CREATE TEMP TABLE leak_tmp (x int)');
  await ok(c, 'SELECT pg_advisory_lock(4242)');
  await ok(c, 'PREPARE leak_prep AS SELECT 42');
  await c.write([parseMessage('leak_stmt', 'SELECT 43'), sync()]);
  const r = await c.collect(15_000);
  assert.equal(r.error, null, JSON.stringify(r.error));
  return Number((await ok(c, 'SELECT pg_backend_pid()'))[0][0]);
}

/** The next client of the pool: it must get a server soon and find it clean. */
async function assertNextClientClean(mode: Mode, what: string): Promise<void> {
  const t0 = Date.now();
  const { client: c } = await login(B, 'trust_user', mode);
  try {
    const first = await c.query('SELECT 1', 20_000);
    assert.equal(first.error, null, `${what}: ${JSON.stringify(first.error)}`);
    assert.equal(first.status, 'I', `${what}: no open transaction`);
    assert.ok(Date.now() - t0 < 20_000, `${what}: the next client got a server in ${Date.now() - t0} ms`);
    // each check in its own query, in one transaction so that transaction mode keeps one server
    assert.equal((await c.query('BEGIN')).status, 'T');
    const rows = await ok(c, `SELECT txid_current_if_assigned() IS NULL,
        current_setting('statement_timeout'),
        coalesce(current_setting('fault.marker', true), ''),
        to_regclass('pg_temp.leak_tmp') IS NULL,
        (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()),
        (SELECT count(*) FROM pg_prepared_statements),
        (SELECT count(*) FROM leak_copy)`);
    assert.deepEqual(rows[0], ['t', '0', '', 't', '0', '0', '0'],
      `${what}: [no xid, statement_timeout, fault.marker, no temp table, advisory locks, prepared statements, COPY rows]`);
    assert.equal((await c.query('ROLLBACK')).status, 'I');
    // the protocol-level statement is unknown too: PostgreSQL's 26000, or (transaction mode with
    // max_prepared_statements) the pooler's own FATAL for a name this client never prepared
    await c.write([message('D', Buffer.from('Sleak_stmt\0')), sync()]);
    const d = (await c.readUntil(['E'], 10_000)).at(-1)!;
    const e = parseErrorFields(d.body);
    assert.ok(e.C === '26000' || (e.S === 'FATAL' && e.M === 'prepared statement did not exist'),
      `${what}: statement leak_stmt must not exist: ${JSON.stringify(e)}`);
  } finally {
    c.destroy();
  }
  // and nothing of the victim lingers in the database
  await waitUntil(`${what}: no advisory lock left in ${DB}`, async () =>
    Number((await pg.query<{ n: string }>(`SELECT count(*) AS n FROM pg_locks l JOIN pg_database d ON d.oid = l.database
        WHERE l.locktype = 'advisory' AND d.datname = $1`, 'postgres', [DB]))[0].n), (n) => n === 0, 10_000);
  await waitUntil(`${what}: no backend of ${DB} idle in transaction`, async () =>
    Number((await pg.query<{ n: string }>(`SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1 AND state LIKE 'idle in transaction%'`,
      'postgres', [DB]))[0].n), (n) => n === 0, 10_000);
}

async function activeQuery(sql: string): Promise<void> {
  await waitUntil(`"${sql}" running`, async () =>
    (await pg.query(`SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND query = $2 AND state = 'active'`, 'postgres', [DB, sql])).length,
  (n) => n > 0, 10_000);
}

for (const mode of ['tx', 'sess'] as const) {
  const label = mode === 'tx' ? 'transaction mode' : 'session mode';
  // transaction mode hands servers on between transactions: state outside one is the
  // application's business there (as in PgBouncer), so the victim works inside BEGIN
  const inTx = mode === 'tx';

  describe(`${label}, pool_size 1: a killed client leaves nothing behind`, () => {
    before(async () => {
      await pg.query('TRUNCATE leak_copy', DB);
    });

    test('killed inside BEGIN', async () => {
      const { client: v } = await login(B, 'trust_user', mode);
      await leaveState(v, true);
      v.destroy();
      await assertNextClientClean(mode, `${label}, killed inside BEGIN`);
    });

    if (mode === 'sess') {
      test('killed while idle after SET, temp table, advisory lock, PREPARE and Parse', async () => {
        const { client: v } = await login(B, 'trust_user', mode);
        await leaveState(v, false);
        v.destroy();
        await assertNextClientClean(mode, `${label}, killed while idle`);
      });
    }

    test('killed inside a long query (pg_sleep)', async () => {
      const { client: v } = await login(B, 'trust_user', mode);
      await leaveState(v, inTx);
      await v.write(query('SELECT pg_sleep(30)'));
      await activeQuery('SELECT pg_sleep(30)');
      v.destroy();
      await assertNextClientClean(mode, `${label}, killed inside pg_sleep(30)`);
    });

    test('killed in the middle of COPY FROM STDIN', async () => {
      const { client: v } = await login(B, 'trust_user', mode);
      await leaveState(v, inTx);
      await v.write(query('COPY leak_copy FROM STDIN'));
      const g = await v.readUntil('G', 10_000);
      assert.equal(g.at(-1)?.type, 'G');
      const rows: Buffer[] = [];
      for (let i = 0; i < 200; i++) rows.push(message('d', `${i}\n`));
      await v.write(rows);
      await sleep(100);
      v.destroy();
      await assertNextClientClean(mode, `${label}, killed inside COPY FROM STDIN`);
    });

    test('killed in the middle of a message', async () => {
      const { client: v } = await login(B, 'trust_user', mode);
      await leaveState(v, inTx);
      const q = query(`INSERT INTO leak_copy VALUES (1); SELECT 'the rest of this message never arrives'`);
      await v.write(q.subarray(0, 20));
      await sleep(100);
      v.destroy();
      await assertNextClientClean(mode, `${label}, killed in the middle of a Query message`);
    });
  });
}
