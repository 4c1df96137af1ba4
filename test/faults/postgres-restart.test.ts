// PostgreSQL restarted or stopped under pgbun (a PRIVATE PostgreSQL: the shared one serves the
// other test files).
//   - pg_ctl restart -m fast / -m immediate under pgbench: clients may lose transactions, none
//     hangs, and a fresh query works within server_login_retry + a few seconds of PostgreSQL
//     accepting connections again;
//   - PostgreSQL stopped while clients hold a server, wait for one, or log in: each gets an
//     ErrorResponse (never a bare close); clients arriving during server_login_retry get their
//     error at once;
//   - a server login that fails (database CONNECTION LIMIT 0): clients waiting for that pool are
//     told at once, not after query_wait_timeout.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { assertPgbenchClean, pgbench } from '../lib/clients.js';
import {
  drainUntilClose, ensureBenchDatabase, isPoolerFatal, restartPostgres, startStoppedPostgres, stopPostgres, stopPostgresNow,
} from '../lib/faults.js';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { startPostgres, type TestPostgres } from '../lib/postgres.js';
import { sleep } from '../lib/procs.js';
import { login, roleUserlist, settlesWithin, waitUntil } from '../lib/pool-helpers.js';
import { attemptLogin, query, type PgError, type WireClient } from '../lib/wire.js';

const DB = 'fault_restart';
const LOGIN_RETRY = 3;
let pg: TestPostgres;

before(async () => {
  pg = await startPostgres();
  await ensureBenchDatabase(pg, DB);
});

after(async () => {
  if (pg) {
    stopPostgresNow(pg);
    await pg.stop();
  }
});

async function pooler(pgbouncer: Record<string, string | number>, databases: Record<string, string>): Promise<TestPgbun> {
  return startPgbun({
    ini: { pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', ...pgbouncer }, databases },
    userlist: roleUserlist(),
  });
}

/** Log in and run one query; resolves to null on success, else what went wrong. */
async function tryQuery(b: TestPgbun, db: string): Promise<string | null> {
  let c: WireClient | null = null;
  try {
    c = (await login(b, 'trust_user', db)).client;
    const r = await c.query('SELECT 4242', 10_000);
    return r.error ? JSON.stringify(r.error) : r.rows[0]?.[0] === '4242' ? null : 'wrong answer';
  } catch (e) {
    return (e as Error).message;
  } finally {
    c?.destroy();
  }
}

/**
 * A client holding the only server of pool `db` inside BEGIN, and one more client per load that
 * sends it (and so waits for that server).
 */
async function holderAndWaiters(b: TestPgbun, db: string, loads: Buffer[][]): Promise<{ holder: WireClient; waiters: WireClient[] }> {
  const { client: holder } = await login(b, 'trust_user', db);
  const waiters: WireClient[] = [];
  try {
    assert.equal((await holder.query('BEGIN')).status, 'T');
    assert.equal((await holder.query('SELECT 1')).error, null);
    for (const load of loads) {
      const { client } = await login(b, 'trust_user', db);
      waiters.push(client);
      void client.write(load).catch(() => {}); // a big load is not read while its client waits
    }
  } catch (e) {
    holder.destroy();
    for (const w of waiters) w.destroy();
    throw e;
  }
  return { holder, waiters };
}

describe('pg_ctl restart under pgbench', () => {
  let B: TestPgbun;
  before(async () => {
    B = await pooler({ server_login_retry: LOGIN_RETRY, query_wait_timeout: 30, server_connect_timeout: 5 },
      { tx: pgConnstr(pg, { dbname: DB, pool_size: 4 }) });
  });
  after(async () => {
    await B?.stop();
  });

  for (const mode of ['fast', 'immediate'] as const) {
    test(`pg_ctl restart -m ${mode}: no client hangs, service is back within server_login_retry + 5 s`, async () => {
      const run = pgbench(B.conn('trust_user', undefined, 'tx'), ['-n', '-c', '4', '-j', '2', '-T', '14'], { timeoutMs: 120_000 });
      await sleep(3000);
      await restartPostgres(pg, mode);
      const back = Date.now();
      let last: string | null = 'not tried';
      while ((last = await tryQuery(B, 'tx')) !== null && Date.now() - back < (LOGIN_RETRY + 5) * 1000) await sleep(200);
      const took = Date.now() - back;
      assert.equal(last, null, `a fresh query through the pooler ${took} ms after PostgreSQL came back: ${last}`);
      const r = await run;
      const ctx = `pgbench ${r.args.join(' ')}\n${r.stdout}\n${r.stderr.slice(-4000)}`;
      assert.equal(r.timedOut, false, `no pgbench client may hang\n${ctx}`);
      assert.ok((r.summary.transactions ?? 0) > 0, ctx);
      // and service is fully back: a clean run
      assertPgbenchClean(await pgbench(B.conn('trust_user', undefined, 'tx'), ['-n', '-c', '4', '-j', '2', '-T', '3'], { timeoutMs: 60_000 }), 10);
    });
  }
});

describe('PostgreSQL stopped while clients hold, wait for, or log in to a pool', () => {
  // one scenario in steps: PostgreSQL stays stopped from the first test to the last
  let B: TestPgbun;
  let stoppedAt = 0;
  before(async () => {
    B = await pooler({ server_login_retry: 10, query_wait_timeout: 6, client_login_timeout: 8, server_connect_timeout: 5 }, {
      one: pgConnstr(pg, { dbname: DB, pool_size: 1 }),
      fresh: pgConnstr(pg, { dbname: DB, pool_size: 1 }),
    });
  });
  after(async () => {
    if (stoppedAt) startStoppedPostgres(pg);
    await B?.stop();
  });

  test('the client holding the server and the clients waiting for it each get an ErrorResponse, never a bare close', async () => {
    const { holder, waiters } = await holderAndWaiters(B, 'one', [[query('SELECT 1')], [query('SELECT 1')]]);
    try {
      assert.equal(await settlesWithin(waiters[0].readMessage(300).catch(() => null), 200), false);
      stoppedAt = Date.now();
      stopPostgres(pg, 'fast');
      const outcomes = await Promise.all([holder, ...waiters].map((c) => drainUntilClose(c, 6_000 + 15_000)));
      const ctx = JSON.stringify(outcomes);
      for (const [i, o] of outcomes.entries()) {
        const who = i === 0 ? 'the client holding the server' : `waiting client ${i}`;
        assert.equal(o.closed, true, `${who} is closed within query_wait_timeout + 15 s: ${ctx}`);
        assert.ok(o.errors.length > 0, `${who} got an ErrorResponse before the close (not a bare close): ${ctx}`);
        assert.equal(o.errors.at(-1)!.S, 'FATAL', `${who}: ${ctx}`);
      }
      for (const o of outcomes.slice(1)) {
        assert.ok(isPoolerFatal(o.errors.at(-1), /^(query_wait_timeout|server login has been failing.*\(server_login_retry\))$/),
          `a waiting client gets PgBouncer's query_wait_timeout or server_login_retry FATAL: ${ctx}`);
      }
    } finally {
      holder.destroy();
      for (const w of waiters) w.destroy();
    }
  });

  test('a newcomer during server_login_retry gets the server_login_retry FATAL at once', async () => {
    assert.ok(stoppedAt > 0, 'PostgreSQL was stopped by the previous step');
    assert.ok(Date.now() - stoppedAt < 10_000 + 6_000, 'still inside server_login_retry of a recent failure');
    const t0 = Date.now();
    const newcomer = await login(B, 'trust_user', 'one').then(async ({ client }) => {
      await client.write(query('SELECT 1'));
      return drainUntilClose(client, 10_000);
    }, (e: Error) => ({ errors: [{ S: 'FATAL', C: '', M: e.message, fields: {} }], others: [], closed: true }));
    const took = Date.now() - t0;
    assert.equal(newcomer.closed, true, JSON.stringify(newcomer));
    assert.ok(newcomer.errors.length > 0, `the newcomer gets an ErrorResponse: ${JSON.stringify(newcomer)}`);
    assert.match(newcomer.errors.at(-1)!.M, /server_login_retry/, `${took} ms: ${JSON.stringify(newcomer)}`);
    assert.ok(took < 3000, `the newcomer is told at once, not after ${took} ms`);
  });

  test('a client logging in to a pool that never had a server gets an ErrorResponse', async () => {
    assert.ok(stoppedAt > 0, 'PostgreSQL was stopped by the previous steps');
    const fresh = await attemptLogin({ host: B.host, port: B.port }, { user: 'trust_user', database: 'fresh', timeoutMs: 30_000 });
    try {
      let outcome: { errors: PgError[]; closed: boolean };
      if (fresh.error) outcome = { errors: [fresh.error], closed: true };
      else {
        await fresh.client.write(query('SELECT 1'));
        outcome = await drainUntilClose(fresh.client, 30_000);
      }
      assert.ok(outcome.errors.length > 0, `an ErrorResponse, not a bare close: ${JSON.stringify(outcome)}`);
      assert.equal(outcome.errors.at(-1)!.S, 'FATAL', JSON.stringify(outcome));
    } finally {
      fresh.client.destroy();
    }
  });

  test('PostgreSQL back: queries through the pooler work again', async () => {
    assert.ok(stoppedAt > 0);
    startStoppedPostgres(pg);
    stoppedAt = 0;
    await waitUntil('a query through the pooler works again', () => tryQuery(B, 'one'), (r) => r === null, 20_000, 300);
  });
});

describe('a server login that fails while clients wait for the pool', () => {
  const GONE = 'fault_gone';
  let B: TestPgbun;
  before(async () => {
    await pg.query(`CREATE DATABASE ${GONE}`);
    // server_login_retry outlasts query_wait_timeout: the newcomer step is inside it even when
    // the waiting client had to wait for query_wait_timeout
    B = await pooler({ server_login_retry: 40, query_wait_timeout: 20, server_connect_timeout: 5 },
      { gone: pgConnstr(pg, { dbname: GONE, pool_size: 2 }) });
  });
  after(async () => {
    await B?.stop();
    await pg.query(`ALTER DATABASE ${GONE} CONNECTION LIMIT -1`).catch(() => {});
  });

  let loginFailedAt = 0;
  test('a client waiting for the pool when its server login fails is told at once, not after query_wait_timeout', async () => {
    const { client: x } = await login(B, 'trust_user', 'gone');
    try {
      assert.equal((await x.query('SELECT 1')).error, null);
      await pg.query(`ALTER DATABASE ${GONE} CONNECTION LIMIT 0`);
      await pg.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, 'postgres', [GONE]);
      await waitUntil('the idle server is gone', async () => (await pg.query(`SELECT 1 FROM pg_stat_activity WHERE datname = $1`, 'postgres', [GONE])).length, (n) => n === 0, 10_000);
      await sleep(300); // let the pooler see its idle server's EOF
      const t0 = Date.now();
      loginFailedAt = t0; // its query makes the pooler log in, and the login fails
      await x.write(query('SELECT 1'));
      const o = await drainUntilClose(x, 30_000);
      const took = Date.now() - t0;
      assert.ok(o.errors.length > 0, `an ErrorResponse: ${JSON.stringify(o)}`);
      assert.match(o.errors.at(-1)!.M, /too many connections|server_login_retry/, JSON.stringify(o));
      assert.ok(took < 5000, `told ${took} ms after its query (query_wait_timeout is 20 s): ${JSON.stringify(o)}`);
    } finally {
      x.destroy();
    }
  });

  test('a newcomer while that login keeps failing is told at once', async () => {
    assert.ok(loginFailedAt > 0, 'the previous step made the server login fail');
    assert.ok(Date.now() - loginFailedAt < 35_000, 'still inside server_login_retry');
    {
      const t1 = Date.now();
      const newcomer = await login(B, 'trust_user', 'gone').then(async ({ client }) => {
        await client.write(query('SELECT 1'));
        return drainUntilClose(client, 30_000);
      }, (e: Error) => ({ errors: [{ S: 'FATAL', C: '', M: e.message, fields: {} }], others: [], closed: true }));
      assert.ok(newcomer.errors.length > 0, JSON.stringify(newcomer));
      assert.match(newcomer.errors.at(-1)!.M, /server_login_retry|too many connections/, JSON.stringify(newcomer));
      assert.ok(Date.now() - t1 < 3000, `a newcomer during server_login_retry is told at once, not after ${Date.now() - t1} ms`);
    }
  });
});

describe('clients waiting for a server past query_wait_timeout', () => {
  let B: TestPgbun;
  before(async () => {
    B = await pooler({ query_wait_timeout: 3 }, { one: pgConnstr(pg, { dbname: DB, pool_size: 1 }) });
  });
  after(async () => {
    await B?.stop();
  });

  test('each gets FATAL query_wait_timeout before the close: one query, 500 pipelined queries, a 1 MB query', async () => {
    const { holder, waiters } = await holderAndWaiters(B, 'one', [
      [query('SELECT 1')],
      Array.from({ length: 500 }, (_, i) => query(`SELECT ${i}`)),
      [query(`SELECT '${'x'.repeat(1024 * 1024)}'`)],
    ]);
    try {
      const outcomes = await Promise.all(waiters.map((c) => drainUntilClose(c, 3_000 + 10_000)));
      for (const [i, o] of outcomes.entries()) {
        assert.equal(o.closed, true, `waiter ${i}: ${JSON.stringify(o)}`);
        assert.ok(isPoolerFatal(o.errors.at(-1), 'query_wait_timeout'), `waiter ${i} (${['one query', '500 pipelined queries', 'a 1 MB query'][i]}) gets FATAL query_wait_timeout, not a bare close: ${JSON.stringify(o)}`);
      }
      // the holder was not waiting: its transaction goes on
      assert.equal((await holder.query('COMMIT')).status, 'I');
    } finally {
      holder.destroy();
      for (const w of waiters) w.destroy();
    }
  });
});
