// Every pool limit of PgBouncer, in transaction mode, with PgBouncer's exact errors: pool_size
// with its per-database and per-user overrides, default_pool_size = 0 (unlimited),
// min_pool_size upkeep, reserve_pool_size + reserve_pool_timeout (log `taking connection from
// reserve_pool`), max_db_connections, max_user_connections (evicting an idle server of another
// pool, log `evicted`), max_db_client_connections, max_user_client_connections and
// max_client_conn with their exact FATALs.
//
// Server connections are counted in pg_stat_activity from a direct connection; every pgbun
// here points at databases of this file only (txp_lim*), so other test files do not count.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres } from '../lib/postgres.js';
import { sleep } from '../lib/procs.js';
import { WireClient } from '../lib/wire.js';
import {
  closingRe,
  ensureDatabase,
  expectFatal,
  login,
  roleUserlist,
  sampleWhile,
  serverCount,
  serverPids,
  waitUntil,
} from '../lib/pool-helpers.js';

const pg = await sharedPostgres();
const DBS = ['txp_lim', 'txp_lim0', 'txp_limmin', 'txp_limres', 'txp_limdb', 'txp_lima', 'txp_limb'];

let L: TestPgbun; // pool_size overrides, max_db_connections, max_user_connections
let L0: TestPgbun; // default_pool_size = 0
let LM: TestPgbun; // min_pool_size
let LR: TestPgbun; // reserve pool
let LC: TestPgbun; // client limits
let LX: TestPgbun; // max_client_conn

const open: WireClient[] = [];
async function cl(b: TestPgbun, db: string, user = 'trust_user'): Promise<WireClient> {
  const { client } = await login(b, user, db);
  open.push(client);
  return client;
}

before(async () => {
  for (const d of DBS) await ensureDatabase(pg, d);
  const base = { auth_type: 'trust', pool_mode: 'transaction', max_client_conn: 200 };
  const c = (dbname: string, extra: Record<string, string | number> = {}) => pgConnstr(pg, { dbname, ...extra });
  [L, L0, LM, LR, LC, LX] = await Promise.all([
    startPgbun({
      ini: {
        pgbouncer: { ...base, default_pool_size: 5 },
        databases: {
          l_pool2: c('txp_lim', { pool_size: 2 }),
          l_maxdb: c('txp_limdb', { max_db_connections: 2 }),
          u_a: c('txp_lima'),
          u_b: c('txp_limb'),
        },
        users: { md5_user: 'pool_size=3', scram_user: 'max_user_connections=1' },
      },
      userlist: roleUserlist(),
    }),
    startPgbun({ ini: { pgbouncer: { ...base, default_pool_size: 0 }, databases: { l0: c('txp_lim0') } }, userlist: roleUserlist() }),
    startPgbun({
      ini: { pgbouncer: { ...base, default_pool_size: 5, min_pool_size: 3 }, databases: { lmin: c('txp_limmin') } },
      userlist: roleUserlist(),
    }),
    startPgbun({
      ini: {
        pgbouncer: { ...base, default_pool_size: 1, reserve_pool_size: 1, reserve_pool_timeout: 0.5 },
        databases: { lres: c('txp_limres') },
      },
      userlist: roleUserlist(),
    }),
    startPgbun({
      ini: {
        pgbouncer: { ...base, max_db_client_connections: 3 },
        databases: { c_db: c('txp_lim', { max_db_client_connections: 2 }), c_other: c('txp_lim'), c_other2: c('txp_lim') },
        users: { md5_user: 'max_user_client_connections=2' },
      },
      userlist: roleUserlist(),
    }),
    startPgbun({ ini: { pgbouncer: { ...base, max_client_conn: 3 }, databases: { x: c('txp_lim') } }, userlist: roleUserlist() }),
  ]);
});

after(async () => {
  for (const c of open) c.destroy();
  await Promise.all([L, L0, LM, LR, LC, LX].map((b) => b?.stop()));
});

/**
 * n clients at once, each running `SELECT pg_sleep(sleepS)`; returns the most server
 * connections seen for (db, user) while they ran.
 */
async function concurrentSleepers(b: TestPgbun, database: string, user: string, n: number, pgdb: string, sleepS = 0.4): Promise<number> {
  const clients = await Promise.all(Array.from({ length: n }, () => cl(b, database, user)));
  const work = Promise.all(
    clients.map(async (c) => {
      const r = await c.query(`SELECT pg_sleep(${sleepS}), 1`, 30_000);
      assert.equal(r.error, null, JSON.stringify(r.error));
      assert.deepEqual(r.rows, [['', '1']]);
    }),
  );
  const samples = await sampleWhile(work, () => serverCount(pg, pgdb, user), 50);
  await Promise.all(clients.map((c) => c.terminate()));
  return Math.max(...samples, await serverCount(pg, pgdb, user));
}

describe('pool size', () => {
  test('per-database pool_size = 2 (over default_pool_size = 5): 8 busy clients use exactly 2 servers', async () => {
    assert.equal(await concurrentSleepers(L, 'l_pool2', 'trust_user', 8, 'txp_lim'), 2);
  });

  test('per-user pool_size = 3 overrides the database\'s 2', async () => {
    assert.equal(await concurrentSleepers(L, 'l_pool2', 'md5_user', 8, 'txp_lim'), 3);
  });

  test('default_pool_size = 0 means unlimited: 8 busy clients get 8 servers', async () => {
    // long enough that all 8 logins (one at a time per pool) finish before any query does
    assert.equal(await concurrentSleepers(L0, 'l0', 'trust_user', 8, 'txp_lim0', 1.5), 8);
  });
});

describe('min_pool_size = 3', () => {
  test('a pool with a client is filled up to 3 servers and kept there; without clients it is not', async () => {
    const c = await cl(LM, 'lmin');
    assert.deepEqual((await c.query('SELECT 1')).rows, [['1']]);
    const pids = await waitUntil('3 servers', () => serverPids(pg, 'txp_limmin'), (p) => p.length === 3, 5000);
    await sleep(800);
    assert.equal(await serverCount(pg, 'txp_limmin'), 3, 'not more than min_pool_size');
    // servers that die are replaced while the client is there
    await pg.query('SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid', 'postgres', [pids]);
    const again = await waitUntil('3 new servers', () => serverPids(pg, 'txp_limmin'), (p) => p.length === 3 && p.every((x) => !pids.includes(x)), 6000);
    assert.equal(again.length, 3);
    // no client: no upkeep
    await c.terminate();
    await sleep(300);
    await pg.query('SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid', 'postgres', [again]);
    await waitUntil('the servers to go', () => serverCount(pg, 'txp_limmin'), (n) => n === 0, 3000);
    await sleep(1200);
    assert.equal(await serverCount(pg, 'txp_limmin'), 0, 'a pool without clients (and no forced user) is not filled');
  });
});

describe('reserve pool', () => {
  test('reserve_pool_size = 1, reserve_pool_timeout = 0.5: a client waiting 0.5 s gets an extra server; logged', async () => {
    const off = LR.logOffset();
    const a = await cl(LR, 'lres');
    const b = await cl(LR, 'lres');
    const c = await cl(LR, 'lres');
    assert.equal((await a.query('BEGIN')).status, 'T');
    const pa = (await a.query('SELECT pg_backend_pid()')).rows[0][0];
    const started = Date.now();
    const rb = await b.query('SELECT pg_backend_pid()', 5000);
    const waited = Date.now() - started;
    assert.equal(rb.error, null);
    assert.notEqual(rb.rows[0][0], pa, 'b got a second (reserve) server');
    assert.ok(waited >= 450, `b waited ${waited} ms, less than reserve_pool_timeout`);
    assert.ok(waited < 3000, `b waited ${waited} ms`);
    await LR.waitForLog(/taking connection from reserve_pool/, 2000, off);
    assert.equal(await serverCount(pg, 'txp_limres'), 2);
    // pool_size + reserve_pool_size is the ceiling: with both servers busy a third client waits
    assert.equal((await b.query('BEGIN')).status, 'T');
    const third = c.query('SELECT 3');
    await sleep(1200);
    assert.equal(await serverCount(pg, 'txp_limres'), 2, 'no third server');
    await a.query('COMMIT');
    assert.deepEqual((await third).rows, [['3']]);
    await b.query('COMMIT');
  });
});

describe('max_db_connections and max_user_connections', () => {
  test('max_db_connections = 2: two pools of one database (6 busy clients) never have more than 2 servers together', async () => {
    const clients = [
      ...(await Promise.all(Array.from({ length: 3 }, () => cl(L, 'l_maxdb', 'trust_user')))),
      ...(await Promise.all(Array.from({ length: 3 }, () => cl(L, 'l_maxdb', 'md5_user')))),
    ];
    const work = Promise.all(
      clients.map(async (c) => {
        const r = await c.query('SELECT pg_sleep(0.3), current_user', 30_000);
        assert.equal(r.error, null, JSON.stringify(r.error));
      }),
    );
    const samples = await sampleWhile(work, () => serverCount(pg, 'txp_limdb'), 50);
    assert.equal(Math.max(...samples), 2, `samples: ${samples.join(',')}`);
    await Promise.all(clients.map((c) => c.terminate()));
  });

  test('max_user_connections = 1: the user\'s idle server in another pool is evicted (log "evicted")', async () => {
    const off = L.logOffset();
    const a = await cl(L, 'u_a', 'scram_user');
    const b = await cl(L, 'u_b', 'scram_user');
    assert.deepEqual((await a.query('SELECT current_database()')).rows, [['txp_lima']]);
    const [pidA] = await serverPids(pg, 'txp_lima', 'scram_user');
    assert.ok(pidA);
    const rb = await b.query('SELECT current_database()', 5000);
    assert.equal(rb.error, null);
    assert.deepEqual(rb.rows, [['txp_limb']]);
    await L.waitForLog(closingRe('S', 'u_a', 'scram_user', 'evicted'), 3000, off);
    await waitUntil('the evicted server to exit', () => serverPids(pg, 'txp_lima', 'scram_user'), (p) => p.length === 0);
    assert.equal(await serverCount(pg, 'txp_limb', 'scram_user'), 1);
    // and back: a's pool takes the user's one server again
    assert.deepEqual((await a.query('SELECT current_database()', 5000)).rows, [['txp_lima']]);
    assert.equal((await serverCount(pg, 'txp_lima', 'scram_user')) + (await serverCount(pg, 'txp_limb', 'scram_user')), 1);
  });
});

describe('client connection limits', () => {
  test('max_db_client_connections (per-database 2 over the global 3): FATAL "client connections exceeded (max_db_client_connections)"', async () => {
    const off = LC.logOffset();
    const a = await cl(LC, 'c_db');
    await cl(LC, 'c_db');
    await cl(LC, 'c_other'); // other databases do not count
    const c = await WireClient.connect({ host: LC.host, port: LC.port });
    open.push(c);
    await c.startup({ user: 'trust_user', database: 'c_db' });
    await expectFatal(c, 'client connections exceeded (max_db_client_connections)');
    await LC.waitForLog(closingRe('C', 'c_db', 'trust_user', 'client connections exceeded (max_db_client_connections)'), 3000, off);
    // one leaves: there is room again
    await a.terminate();
    await sleep(100);
    const d = await cl(LC, 'c_db');
    assert.deepEqual((await d.query('SELECT 1')).rows, [['1']]);
  });

  test('global max_db_client_connections = 3 applies to databases without their own', async () => {
    const mine = [await cl(LC, 'c_other2'), await cl(LC, 'c_other2'), await cl(LC, 'c_other2')];
    const c = await WireClient.connect({ host: LC.host, port: LC.port });
    open.push(c);
    await c.startup({ user: 'trust_user', database: 'c_other2' });
    await expectFatal(c, 'client connections exceeded (max_db_client_connections)');
    for (const m of mine) await m.terminate();
  });

  test('max_user_client_connections = 2 (per user, over all databases): FATAL "client connections exceeded (max_user_client_connections)"', async () => {
    const off = LC.logOffset();
    const a = await cl(LC, 'c_other', 'md5_user');
    await cl(LC, 'c_other2', 'md5_user');
    const c = await WireClient.connect({ host: LC.host, port: LC.port });
    open.push(c);
    await c.startup({ user: 'md5_user', database: 'c_other' });
    await expectFatal(c, 'client connections exceeded (max_user_client_connections)');
    await LC.waitForLog(closingRe('C', 'c_other', 'md5_user', 'client connections exceeded (max_user_client_connections)'), 3000, off);
    await a.terminate();
    await sleep(100);
    const d = await cl(LC, 'c_other', 'md5_user');
    assert.deepEqual((await d.query('SELECT current_user')).rows, [['md5_user']]);
  });

  test('max_client_conn = 3: FATAL "no more connections allowed (max_client_conn)"', async () => {
    const mine = [await cl(LX, 'x'), await cl(LX, 'x'), await cl(LX, 'x')];
    const c = await WireClient.connect({ host: LX.host, port: LX.port });
    open.push(c);
    await c.startup({ user: 'trust_user', database: 'x' });
    await expectFatal(c, 'no more connections allowed (max_client_conn)');
    await mine[0].terminate();
    await sleep(100);
    const d = await cl(LX, 'x');
    assert.deepEqual((await d.query('SELECT 1')).rows, [['1']]);
  });
});
