// What happens after a server login fails, as PgBouncer 1.25 does it:
//   - every client waiting in the pool gets the server's error at once (kill_pool_logins), from
//     one failed login at PostgreSQL, and the log has one "closing because: <error>" line per
//     client and one for the server;
//   - a logged-in client that needs a server while the pool has none gets the cached error at
//     once (server_login_retry), also once server_login_retry is over: then its request starts
//     the next login, and only a login that succeeds ends the fast failures;
//   - RECONNECT and a changed [databases] entry make the pool forget its welcome: a client
//     logging in afterwards waits for a new server login (and gets its error, or is welcomed
//     once server_login_retry has passed), instead of logging in and failing fast on its first
//     query; the login may go over pool_size, since the pool may be full of servers waiting to
//     close.
// The server logins fail because the role's password changes on PostgreSQL while the userlist
// keeps the old one; a TCP gate in front of PostgreSQL counts the server connections.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { sleep } from '../lib/procs.js';
import { TcpGate } from '../lib/tcp-gate.js';
import { attemptLogin, query, wireLogin, type PgError, type WireClient } from '../lib/wire.js';
import { logLines, reEscape, settlesWithin, waitUntil } from '../lib/pool-helpers.js';
import { drainUntilClose } from '../lib/faults.js';
import { adminLogin, show } from './admin-lib.js';

const pg = await sharedPostgres();

const RETRY_S = 2;

/** A role of its own per describe block: its password is changed under pgbun. */
function role(name: string) {
  const pw = `${name}_pw`;
  return {
    name,
    pw,
    create: () => pg.createRole(name, pw),
    breakPassword: () => pg.query(`ALTER ROLE ${name} PASSWORD '${name}_other'`),
    fixPassword: () => pg.query(`ALTER ROLE ${name} PASSWORD '${pw}'`),
    authError: `password authentication failed for user "${name}"`,
  };
}

function files(r: ReturnType<typeof role>, databases: Record<string, string>, pgbouncer: Record<string, string | number> = {}) {
  return {
    ini: {
      databases,
      pgbouncer: {
        auth_type: 'trust', admin_users: 'admin', pool_mode: 'transaction', server_login_retry: RETRY_S,
        query_wait_timeout: 60, client_login_timeout: 60, ...pgbouncer,
      },
    },
    userlist: [[r.name, r.pw], ['admin', '']] as Array<[string, string]>,
  };
}

function start(r: ReturnType<typeof role>, databases: Record<string, string>, pgbouncer: Record<string, string | number> = {}): Promise<TestPgbun> {
  return startPgbun(files(r, databases, pgbouncer));
}

/**
 * For a describe block: create the role, start the gate and pgbun (databases() may name the
 * gate's port) before its tests, and stop them after; returns a getter for the pgbun.
 */
function bouncerFor(r: ReturnType<typeof role>, gate: TcpGate, databases: () => Record<string, string>,
  pgbouncer: Record<string, string | number> = {}): () => TestPgbun {
  let b: TestPgbun | undefined;
  before(async () => {
    await r.create();
    await gate.start();
    b = await start(r, databases(), pgbouncer);
  });
  after(async () => {
    await b?.stop();
    gate.close();
    await r.fixPassword();
  });
  return () => b!;
}

async function userLogin(b: TestPgbun, user: string, database: string): Promise<WireClient> {
  return (await wireLogin({ host: b.host, port: b.port }, { user, database })).client;
}

/** Log in, send one query, and read until the connection closes: the errors it got. */
async function queryUntilClosed(b: TestPgbun, user: string, database: string, sql = 'SELECT 1'): Promise<PgError[]> {
  const c = await userLogin(b, user, database);
  try {
    await c.write(query(sql));
    const o = await drainUntilClose(c, 30_000);
    assert.equal(o.closed, true, JSON.stringify(o));
    return o.errors;
  } finally {
    c.destroy();
  }
}

const fastFail = (message: string) => `server login has been failing, cached error: ${message} (server_login_retry)`;

describe('a failed server login and the clients waiting in the pool', () => {
  const r = role('it_lf_kill');
  const gate = new TcpGate(pg);
  const bouncer = bouncerFor(r, gate, () => ({ kp: `host=127.0.0.1 port=${gate.port} dbname=${TEST_DB}` }),
    { default_pool_size: 1, server_login_retry: 30 });

  test('every queued client gets the server\'s error from one failed login; one log line per client and one for the server', async () => {
    const b = bouncer();
    const admin = await adminLogin(b);
    const holder = await userLogin(b, r.name, 'kp');
    assert.equal((await holder.query('BEGIN')).error, null);
    assert.equal((await holder.query('SELECT 1')).error, null);
    assert.equal(gate.accepted, 1);
    await r.breakPassword();
    const waiters: WireClient[] = [];
    for (let i = 0; i < 3; i++) {
      const c = await userLogin(b, r.name, 'kp');
      await c.write(query('SELECT 2'));
      waiters.push(c);
    }
    await waitUntil('3 clients queued', async () => (await show(admin, 'SHOW POOLS')).find((p) => p.database === 'kp')?.cl_waiting,
      (v) => v === '3', 10_000);
    const off = b.logOffset();
    // room for a second server: the janitor opens it for the queue, and its login fails
    assert.equal((await admin.query('SET default_pool_size = 2')).error, null);
    const outcomes = await Promise.all(waiters.map((c) => drainUntilClose(c, 30_000)));
    for (const o of outcomes) {
      assert.equal(o.closed, true, JSON.stringify(o));
      assert.deepEqual(o.errors.map((e) => e.fields), [{ S: 'FATAL', C: '28P01', M: r.authError }], JSON.stringify(o));
    }
    await b.waitForLog(new RegExp(`S-0x[0-9a-f]+: kp/${r.name}@\\S+ closing because: ${reEscape(r.authError)} \\(age=\\d+s\\)`), 5000, off);
    const closing = logLines(b, new RegExp(`closing because: ${reEscape(r.authError)} \\(age`), off);
    assert.equal(closing.filter((l) => / C-0x/.test(l)).length, 3, closing.join('\n'));
    assert.equal(closing.filter((l) => / S-0x/.test(l)).length, 1, closing.join('\n'));
    assert.equal(gate.accepted, 2, 'one server login for the three clients');
    // the transaction holding the first server goes on
    const inTx = await holder.query('SELECT 3');
    assert.deepEqual(inTx.rows, [['3']]);
    assert.equal((await holder.query('COMMIT')).error, null);
    holder.destroy();
    for (const c of waiters) c.destroy();
    admin.destroy();
  });
});

describe('server_login_retry: clients that need a server while the pool has none', () => {
  const r = role('it_lf_retry');
  const gate = new TcpGate(pg);
  const bouncer = bouncerFor(r, gate, () => ({ rp: `host=127.0.0.1 port=${gate.port} dbname=${TEST_DB} pool_size=1` }));

  test('get the cached error at once, also after server_login_retry; then their request starts the next login, and a good login ends it', async () => {
    const b = bouncer();
    // the pool has its welcome; its only server goes away and the next login fails
    const first = await userLogin(b, r.name, 'rp');
    const pid = (await first.query('SELECT pg_backend_pid()')).rows[0]![0];
    await first.terminate();
    let off = b.logOffset();
    await pg.query(`SELECT pg_terminate_backend(${pid})`);
    await b.waitForLog(/closing because: server conn crashed\?/, 5000, off);
    await r.breakPassword();
    const failedAt = Date.now();
    assert.deepEqual((await queryUntilClosed(b, r.name, 'rp')).map((e) => e.M), [r.authError]);
    assert.equal(gate.accepted, 2);

    const soon = await queryUntilClosed(b, r.name, 'rp');
    assert.deepEqual(soon.map((e) => e.fields), [{ S: 'FATAL', C: '08P01', M: fastFail(r.authError) }]);
    // still inside server_login_retry (unless this machine was slow): no new login yet
    if (Date.now() - failedAt < (RETRY_S - 0.5) * 1000) assert.equal(gate.accepted, 2, 'no login before server_login_retry');

    // server_login_retry over, PostgreSQL fixed: the next client still gets the cached error,
    // and its request starts a login, which succeeds
    await r.fixPassword();
    await sleep(RETRY_S * 1000 + 300);
    off = b.logOffset();
    const late = await queryUntilClosed(b, r.name, 'rp');
    assert.deepEqual(late.map((e) => e.M), [fastFail(r.authError)]);
    await b.waitForLog(new RegExp(`S-0x[0-9a-f]+: rp/${r.name}@\\S+ new connection to server`), 5000, off);
    // pgbun logs the connect as it starts it: the gate may see it a moment later
    await waitUntil('the new login reaches PostgreSQL', () => gate.accepted, (n) => n === 3, 5000);
    const admin = await adminLogin(b);
    await waitUntil('the new server is idle', async () => (await show(admin, 'SHOW POOLS')).find((p) => p.database === 'rp')?.sv_idle,
      (v) => v === '1', 10_000);
    admin.destroy();
    const ok = await userLogin(b, r.name, 'rp');
    assert.deepEqual((await ok.query('SELECT 4')).rows, [['4']]);
    await ok.terminate();
  });
});

describe('RECONNECT and a changed [databases] entry: the pool forgets its welcome', () => {
  const r = role('it_lf_welcome');
  const gate = new TcpGate(pg);
  const dbs = (viaGate: boolean) => ({
    wp: pgConnstr(pg, { dbname: TEST_DB, pool_size: 1 }),
    wg: viaGate ? `host=127.0.0.1 port=${gate.port} dbname=${TEST_DB}` : pgConnstr(pg, { dbname: TEST_DB }),
  });
  const bouncer = bouncerFor(r, gate, () => dbs(false), { pool_mode: 'session' });

  test('after RECONNECT a login waits for a new server login: its error, then, fixed, a welcome once server_login_retry has passed', async () => {
    const b = bouncer();
    // a session holds the pool's only server (pool_size = 1)
    const holder = await userLogin(b, r.name, 'wp');
    assert.equal((await holder.query('SELECT 1')).error, null);
    const admin = await adminLogin(b);
    await r.breakPassword();
    assert.deepEqual((await admin.query('RECONNECT')).tags, ['RECONNECT']);
    // the login itself fails with the server's error: it needed a server login, although the
    // pool is full with the held server
    const off = b.logOffset();
    const failed = await attemptLogin({ host: b.host, port: b.port }, { user: r.name, database: 'wp', timeoutMs: 30_000 });
    assert.deepEqual(failed.error?.fields, { S: 'FATAL', C: '28P01', M: r.authError }, JSON.stringify(failed.error));
    failed.client.destroy();
    await b.waitForLog(new RegExp(`S-0x[0-9a-f]+: wp/${r.name}@\\S+ closing because: ${reEscape(r.authError)} \\(age`), 5000, off);
    // fixed within server_login_retry: a new client is not failed fast, it waits for the retry
    await r.fixPassword();
    const next = await attemptLogin({ host: b.host, port: b.port }, { user: r.name, database: 'wp', timeoutMs: 30_000 });
    assert.equal(next.error, null, JSON.stringify(next.error));
    // the held session still has its old server
    assert.equal((await holder.query('SELECT 2')).error, null);
    await holder.terminate();
    assert.deepEqual((await next.client.query('SELECT 3')).rows, [['3']]);
    await next.client.terminate();
    admin.destroy();
  });

  test('after a RELOAD that changes the entry, a login waits for a server login with the new definition', async () => {
    const b = bouncer();
    const c = await userLogin(b, r.name, 'wg');
    assert.equal((await c.query('SELECT 1')).error, null);
    await c.terminate();
    gate.hold = true;
    b.writeFiles(files(r, dbs(true), { pool_mode: 'session' }));
    const admin = await adminLogin(b);
    assert.deepEqual((await admin.query('RELOAD')).tags, ['RELOAD']);
    admin.destroy();
    const login = attemptLogin({ host: b.host, port: b.port }, { user: r.name, database: 'wg', timeoutMs: 30_000 });
    await waitUntil('a server connection reaches the gate', () => gate.accepted, (n) => n === 1, 10_000);
    assert.equal(await settlesWithin(login, 300), false, 'the login waits for the server login through the gate');
    gate.release();
    const a = await login;
    assert.equal(a.error, null, JSON.stringify(a.error));
    assert.deepEqual((await a.client.query('SELECT 4')).rows, [['4']]);
    await a.client.terminate();
  });
});
