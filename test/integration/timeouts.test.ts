// Every client, server and query timeout of PgBouncer in transaction mode, with the exact client
// FATAL (08P01, only S/C/M) and the `closing because: <reason> (age=Ns)` log lines:
// query_timeout (running query: `query timeout`; waiting client: `query_timeout`, per-user
// override), query_wait_timeout (+ the query_wait_notify NOTICE), idle_transaction_timeout,
// transaction_timeout, client_idle_timeout, client_login_timeout, server_connect_timeout,
// server_lifetime, server_idle_timeout (not below min_pool_size), server_check_delay +
// server_check_query. Small (fractional) values keep every case within about two seconds; the
// janitor runs about every 1/3 s.

import * as net from 'node:net';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres } from '../lib/postgres.js';
import { freePort, sleep } from '../lib/procs.js';
import { parseErrorFields, WireClient } from '../lib/wire.js';
import {
  closingRe,
  ensureDatabase,
  expectFatal,
  login,
  roleUserlist,
  serverPids,
  waitUntil,
} from '../lib/pool-helpers.js';

const pg = await sharedPostgres();
const DB = 'txp_tmo';
const DB2 = 'txp_tmo2'; // server lifetime / idle timeout / check query: counted apart

const started: TestPgbun[] = [];
const open: WireClient[] = [];
let blackhole: net.Server;
const held: net.Socket[] = [];

async function bouncer(settings: Record<string, string | number>, databases: Record<string, string>, users?: Record<string, string>): Promise<TestPgbun> {
  const b = await startPgbun({
    ini: {
      pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', max_client_conn: 100, ...settings },
      databases,
      ...(users ? { users } : {}),
    },
    userlist: roleUserlist(),
  });
  started.push(b);
  return b;
}

async function cl(b: TestPgbun, db: string, user = 'trust_user'): Promise<WireClient> {
  const { client } = await login(b, user, db);
  open.push(client);
  return client;
}

const one = (extra: Record<string, string | number> = {}) => pgConnstr(pg, { dbname: DB, pool_size: 1, ...extra });

let QT: TestPgbun; // query_timeout = 1
let QU: TestPgbun; // [users] md5_user query_timeout = 1, global 0
let QW: TestPgbun; // query_wait_timeout = 1
let QN: TestPgbun; // query_wait_notify = 0.5
let IT: TestPgbun; // idle_transaction_timeout = 1
let TT: TestPgbun; // transaction_timeout = 1
let CI: TestPgbun; // client_idle_timeout = 1
let CL: TestPgbun; // client_login_timeout = 1
let SC: TestPgbun; // server_connect_timeout = 1 (server that never answers)
let SL: TestPgbun; // server_lifetime = 1
let SI: TestPgbun; // server_idle_timeout = 1, min_pool_size on one database
let CK: TestPgbun; // server_check_delay = 0, server_check_query
let CE: TestPgbun; // server_check_delay = 0, server_check_query at its default (<empty>)

before(async () => {
  await ensureDatabase(pg, DB);
  await ensureDatabase(pg, DB2);
  await ensureDatabase(pg, 'txp_tmo3');
  await ensureDatabase(pg, 'txp_tmo4');
  await pg.query(`ALTER DATABASE txp_tmo4 SET log_statement = 'all'`);
  // a "server" that accepts TCP connections and never says anything
  blackhole = net.createServer((s) => {
    held.push(s);
    s.on('error', () => {});
  });
  const bhPort = await freePort();
  await new Promise<void>((r) => blackhole.listen(bhPort, '127.0.0.1', r));
  [QT, QU, QW, QN, IT, TT, CI, CL, SC, SL, SI, CK, CE] = await Promise.all([
    bouncer({ query_timeout: 1, query_wait_timeout: 10 }, { t: one() }),
    bouncer({ query_timeout: 0 }, { t: one({ pool_size: 2 }) }, { md5_user: 'query_timeout=1' }),
    bouncer({ query_wait_timeout: 1 }, { t: one() }),
    bouncer({ query_wait_timeout: 5, query_wait_notify: 0.5 }, { t: one() }),
    bouncer({ idle_transaction_timeout: 1 }, { t: one() }),
    bouncer({ transaction_timeout: 1 }, { t: one() }),
    bouncer({ client_idle_timeout: 1 }, { t: one() }),
    bouncer({ client_login_timeout: 1 }, { t: one() }),
    bouncer(
      { server_connect_timeout: 1, query_wait_timeout: 2.5, server_login_retry: 0.5 },
      {
        dead: `host=127.0.0.1 port=${bhPort} dbname=${DB} pool_size=1`,
      },
    ),
    bouncer({ server_lifetime: 1, server_idle_timeout: 0 }, { t: pgConnstr(pg, { dbname: DB2, pool_size: 2 }) }),
    bouncer(
      { server_idle_timeout: 1, server_lifetime: 3600 },
      { t: pgConnstr(pg, { dbname: 'txp_tmo3', pool_size: 3 }), tmin: pgConnstr(pg, { dbname: 'txp_tmo3', pool_size: 3, min_pool_size: 1 }) },
    ),
    bouncer({ server_check_delay: 0, server_check_query: "SELECT 'txp_check_probe'" }, { t: pgConnstr(pg, { dbname: 'txp_tmo4', pool_size: 1 }) }),
    bouncer({ server_check_delay: 0 }, { t: pgConnstr(pg, { dbname: 'txp_tmo4', pool_size: 1 }) }),
  ]);
});

after(async () => {
  for (const c of open) c.destroy();
  for (const s of held) s.destroy();
  blackhole?.close();
  await Promise.all(started.map((b) => b.stop()));
});

const pidOf = async (c: WireClient): Promise<string> => (await c.query('SELECT pg_backend_pid()')).rows[0][0]!;

/** Send a query without reading its answer. */
async function send(c: WireClient, sql: string): Promise<void> {
  const body = Buffer.from(sql + '\0');
  const len = Buffer.alloc(4);
  len.writeInt32BE(body.length + 4, 0);
  await c.write(Buffer.concat([Buffer.from('Q'), len, body]));
}

/** Elapsed ms of `p`. */
async function timed<T>(p: Promise<T>): Promise<[T, number]> {
  const t = Date.now();
  const v = await p;
  return [v, Date.now() - t];
}

describe('query_timeout', () => {
  test('a query running longer: server closed, client FATAL "query timeout"; both logged', async () => {
    const off = QT.logOffset();
    const a = await cl(QT, 't');
    const pid = await pidOf(a);
    await send(a, 'SELECT pg_sleep(2)');
    const [, ms] = await timed(expectFatal(a, 'query timeout', 4000));
    assert.ok(ms >= 800 && ms < 2500, `after ${ms} ms`);
    await QT.waitForLog(closingRe('S', 't', 'trust_user', 'query timeout'), 2000, off);
    await QT.waitForLog(closingRe('C', 't', 'trust_user', 'query timeout'), 2000, off);
    // the next client gets a new server at once
    const b = await cl(QT, 't');
    assert.notEqual(await pidOf(b), pid);
    await waitUntil('the old backend to exit', () => serverPids(pg, DB), (p) => !p.map(String).includes(pid), 5000);
  });

  test('a client waiting for a server longer than query_timeout: FATAL "query_timeout"', async () => {
    const off = QT.logOffset();
    const a = await cl(QT, 't');
    const b = await cl(QT, 't');
    assert.equal((await a.query('BEGIN')).status, 'T'); // holds the only server, no query running
    await send(b, 'SELECT 1');
    const [, ms] = await timed(expectFatal(b, 'query_timeout', 4000));
    assert.ok(ms >= 800 && ms < 2500, `after ${ms} ms`);
    await QT.waitForLog(closingRe('C', 't', 'trust_user', 'query_timeout'), 2000, off);
    // a was not running a query: untouched
    assert.deepEqual((await a.query('SELECT 1')).rows, [['1']]);
    await a.query('COMMIT');
  });

  test('per-user query_timeout = 1 (global 0) applies to that user only', async () => {
    const a = await cl(QU, 't', 'md5_user');
    const b = await cl(QU, 't', 'trust_user');
    const slow = b.query('SELECT pg_sleep(1.6), 1', 5000);
    await send(a, 'SELECT pg_sleep(3)');
    await expectFatal(a, 'query timeout', 4000);
    const r = await slow;
    assert.equal(r.error, null);
    assert.deepEqual(r.rows, [['', '1']]);
  });
});

describe('query_wait_timeout and query_wait_notify', () => {
  test('query_wait_timeout = 1: a client queued for a server gets FATAL "query_wait_timeout"', async () => {
    const off = QW.logOffset();
    const a = await cl(QW, 't');
    const b = await cl(QW, 't');
    assert.equal((await a.query('BEGIN')).status, 'T');
    await send(b, 'SELECT 1');
    const [, ms] = await timed(expectFatal(b, 'query_wait_timeout', 4000));
    assert.ok(ms >= 800 && ms < 2500, `after ${ms} ms`);
    await QW.waitForLog(closingRe('C', 't', 'trust_user', 'query_wait_timeout'), 2000, off);
    await QW.waitForLog(/WARNING C-0x[0-9a-f]+: t\/trust_user@\S+ pooler error: query_wait_timeout$/, 2000, off);
    await a.query('COMMIT');
  });

  test('query_wait_notify = 0.5: a queued client gets the NOTICE, then its result', async () => {
    const a = await cl(QN, 't');
    const b = await cl(QN, 't');
    assert.equal((await a.query('BEGIN')).status, 'T');
    await send(b, "SELECT 'served'");
    const t0 = Date.now();
    const m = await b.readMessage(3000);
    const ms = Date.now() - t0;
    assert.equal(m.type, 'N', 'a NoticeResponse first');
    const n = parseErrorFields(m.body);
    assert.deepEqual(
      { S: n.S, C: n.C, M: n.M },
      { S: 'NOTICE', C: '00000', M: 'No server connection available in postgres backend, client being queued' },
    );
    assert.ok(ms >= 350 && ms < 2000, `notice after ${ms} ms`);
    await a.query('COMMIT');
    const r = await b.collect();
    assert.equal(r.error, null);
    assert.deepEqual(r.rows, [['served']]);
    assert.equal(r.notices.length, 0, 'one notice per wait');
  });
});

describe('idle_transaction_timeout and transaction_timeout', () => {
  test('idle_transaction_timeout = 1: an idle open transaction is ended, FATAL "idle transaction timeout"', async () => {
    const off = IT.logOffset();
    const a = await cl(IT, 't');
    assert.equal((await a.query('BEGIN')).status, 'T');
    const pid = await pidOf(a);
    const [, ms] = await timed(expectFatal(a, 'idle transaction timeout', 4000));
    assert.ok(ms >= 700 && ms < 2500, `after ${ms} ms`);
    await IT.waitForLog(closingRe('S', 't', 'trust_user', 'idle transaction timeout'), 2000, off);
    await IT.waitForLog(closingRe('C', 't', 'trust_user', 'idle transaction timeout'), 2000, off);
    await waitUntil('the backend to exit', () => serverPids(pg, DB), (p) => !p.map(String).includes(pid), 3000);
  });

  test('idle_transaction_timeout does not hit a transaction that is busy, nor an idle client outside a transaction', async () => {
    const a = await cl(IT, 't');
    assert.equal((await a.query('BEGIN')).status, 'T');
    assert.equal((await a.query('SELECT pg_sleep(1.5)', 5000)).error, null);
    assert.deepEqual((await a.query('COMMIT')).tags, ['COMMIT']);
    await sleep(1500);
    assert.deepEqual((await a.query('SELECT 1')).rows, [['1']]);
  });

  test('transaction_timeout = 1: a transaction open longer (though never idle long) gets FATAL "transaction timeout"', async () => {
    const off = TT.logOffset();
    const a = await cl(TT, 't');
    assert.equal((await a.query('BEGIN')).status, 'T');
    const t0 = Date.now();
    let err = null;
    while (Date.now() - t0 < 4000) {
      await sleep(200);
      try {
        const r = await a.query('SELECT 1', 3000);
        assert.equal(r.status, 'T');
      } catch (e) {
        err = e;
        break;
      }
    }
    assert.ok(err, 'the connection was closed');
    const ms = Date.now() - t0;
    assert.ok(ms >= 800 && ms < 3000, `after ${ms} ms`);
    await TT.waitForLog(closingRe('C', 't', 'trust_user', 'transaction timeout'), 2000, off);
    // the exact FATAL: a second client, reading it directly
    const b = await cl(TT, 't');
    assert.equal((await b.query('BEGIN')).status, 'T');
    await expectFatal(b, 'transaction timeout', 4000);
  });

  test('transaction_timeout leaves autocommit queries alone', async () => {
    const a = await cl(TT, 't');
    for (let i = 0; i < 6; i++) {
      assert.deepEqual((await a.query('SELECT 1')).rows, [['1']]);
      await sleep(250);
    }
  });
});

describe('client timeouts', () => {
  test('client_idle_timeout = 1: an idle logged-in client gets FATAL "client_idle_timeout"', async () => {
    const off = CI.logOffset();
    const a = await cl(CI, 't');
    await a.query('SELECT 1');
    const [, ms] = await timed(expectFatal(a, 'client_idle_timeout', 4000));
    assert.ok(ms >= 800 && ms < 2500, `after ${ms} ms`);
    await CI.waitForLog(closingRe('C', 't', 'trust_user', 'client_idle_timeout'), 2000, off);
  });

  test('client_idle_timeout does not apply to a client linked to a server (inside a transaction)', async () => {
    const a = await cl(CI, 't');
    assert.equal((await a.query('BEGIN')).status, 'T');
    await sleep(1700);
    assert.deepEqual((await a.query('SELECT 1')).rows, [['1']]);
    await a.query('COMMIT');
  });

  test('client_login_timeout = 1: a client that never finishes its login gets FATAL "client_login_timeout"', async () => {
    const off = CL.logOffset();
    const a = await WireClient.connect({ host: CL.host, port: CL.port });
    open.push(a);
    const [, ms] = await timed(expectFatal(a, 'client_login_timeout', 4000));
    assert.ok(ms >= 800 && ms < 2500, `after ${ms} ms`);
    await CL.waitForLog(/closing because: client_login_timeout \(age=\d+s\)/, 2000, off);
    // a logged-in client is not subject to it
    const b = await cl(CL, 't');
    await sleep(1500);
    assert.deepEqual((await b.query('SELECT 1')).rows, [['1']]);
  });
});

describe('server connection timeouts and hygiene', () => {
  test('server_connect_timeout = 1: a server that never answers is closed ("connect timeout"); the client waits, then "query_wait_timeout"', async () => {
    const off = SC.logOffset();
    const a = await WireClient.connect({ host: SC.host, port: SC.port });
    open.push(a);
    await a.startup({ user: 'trust_user', database: 'dead' });
    const [, ms] = await timed(expectFatal(a, 'query_wait_timeout', 6000));
    assert.ok(ms >= 2000 && ms < 4500, `after ${ms} ms`);
    const line = await SC.waitForLog(closingRe('S', 'dead', 'trust_user', 'connect timeout'), 1000, off);
    assert.match(line, /\(age=1s\)$/);
  });

  test('server_lifetime = 1: an unused server older than that is closed ("server lifetime over")', async () => {
    const off = SL.logOffset();
    const a = await cl(SL, 't');
    const pid = await pidOf(a);
    const line = await SL.waitForLog(closingRe('S', 't', 'trust_user', 'server lifetime over'), 4000, off);
    assert.match(line, /\(age=[12]s\)$/);
    await waitUntil('the backend to exit', () => serverPids(pg, DB2), (p) => !p.map(String).includes(pid), 3000);
    // the client carries on with a new server
    const again = await pidOf(a);
    assert.notEqual(again, pid);
  });

  test('server_lifetime does not close a server while a client uses it', async () => {
    const a = await cl(SL, 't');
    assert.equal((await a.query('BEGIN')).status, 'T');
    const pid = await pidOf(a);
    await sleep(1800);
    assert.equal(await pidOf(a), pid);
    await a.query('COMMIT');
  });

  test('server_idle_timeout = 1: idle servers are closed ("server idle timeout"), but not below min_pool_size', async () => {
    const off = SI.logOffset();
    const run3 = async (db: string) => {
      const cs = await Promise.all([cl(SI, db), cl(SI, db), cl(SI, db)]);
      await Promise.all(cs.map((c) => c.query('SELECT pg_sleep(0.3)')));
      return cs;
    };
    await run3('t');
    await waitUntil('idle servers of "t" to close', () => SI.log().slice(off).match(/t\/trust_user@\S+ closing because: server idle timeout \(age=\d+s\)/g)?.length ?? 0, (n) => n === 3, 4000);
    await run3('tmin');
    await waitUntil(
      'servers of "tmin" down to min_pool_size',
      () => SI.log().slice(off).match(/tmin\/trust_user@\S+ closing because: server idle timeout \(age=\d+s\)/g)?.length ?? 0,
      (n) => n === 2,
      4000,
    );
    await sleep(1500);
    assert.equal(SI.log().slice(off).match(/tmin\/trust_user@\S+ closing because: server idle timeout/g)?.length, 2, 'one server stays');
    assert.equal((await serverPids(pg, 'txp_tmo3')).length, 1);
  });

  test('server_check_delay = 0: server_check_query runs before each reuse of an idle server', async () => {
    const a = await cl(CK, 't');
    const m1 = `check_marker_1_${Date.now()}`;
    const m2 = `check_marker_2_${Date.now()}`;
    assert.deepEqual((await a.query(`SELECT '${m1}'`)).rows, [[m1]]);
    await sleep(100);
    assert.deepEqual((await a.query(`SELECT '${m2}'`)).rows, [[m2]]);
    const log = await waitUntil('both markers in the server log', () => pg.log(), (l) => l.includes(m2));
    const between = log.slice(log.indexOf(`SELECT '${m1}'`), log.indexOf(`SELECT '${m2}'`));
    assert.match(between, /trust_user@txp_tmo4 LOG: {2}statement: SELECT 'txp_check_probe'/);
  });

  test('server_check_query default "<empty>": the check is an empty query', async () => {
    const a = await cl(CE, 't', 'md5_user');
    const m1 = `empty_marker_1_${Date.now()}`;
    const m2 = `empty_marker_2_${Date.now()}`;
    assert.deepEqual((await a.query(`SELECT '${m1}'`)).rows, [[m1]]);
    await sleep(100);
    assert.deepEqual((await a.query(`SELECT '${m2}'`)).rows, [[m2]]);
    const log = await waitUntil('both markers in the server log', () => pg.log(), (l) => l.includes(m2));
    const between = log.slice(log.indexOf(`SELECT '${m1}'`), log.indexOf(`SELECT '${m2}'`)).split('\n');
    assert.ok(between.some((l) => / md5_user@txp_tmo4 LOG: {2}statement: $/.test(l)), between.join('\n'));
  });
});
