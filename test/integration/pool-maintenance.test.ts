// Pool upkeep observed through the admin console: one server login in flight per pool,
// pool_idle_timeout, server_fast_close after RECONNECT (at the end of a transaction, and for an
// idle session at once), and the cancel queue (at most 2 x pool_size cancel connections,
// cancel_wait_timeout for the rest).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { sleep } from '../lib/procs.js';
import { WireClient, cancelRequest, startupMessage } from '../lib/wire.js';
import { closingRe, expectFatal, login, roleUserlist, waitUntil } from '../lib/pool-helpers.js';
import { adminLogin, show } from './admin-lib.js';
import { TcpGate } from '../lib/tcp-gate.js';

const pg = await sharedPostgres();


const USERS: Array<[string, string]> = [...roleUserlist(), ['admin', '']];

function poolRow(rows: Array<Record<string, string | null>>, db: string, user = 'trust_user'): Record<string, string | null> | undefined {
  return rows.find((r) => r.database === db && r.user === user);
}

describe('one server login in flight per pool', () => {
  const silent = new TcpGate(pg, { silent: true });
  let b: TestPgbun;
  before(async () => {
    await silent.start();
    b = await startPgbun({
      ini: {
        databases: { slow: `host=127.0.0.1 port=${silent.port} dbname=${TEST_DB}` },
        pgbouncer: { auth_type: 'trust', admin_users: 'admin', pool_mode: 'transaction', default_pool_size: 5, server_connect_timeout: 30 },
      },
      userlist: USERS,
    });
  });
  after(async () => {
    await b?.stop();
    silent.close();
  });

  test('three clients waiting for the first login open one server connection, not three', async () => {
    const clients: WireClient[] = [];
    for (let i = 0; i < 3; i++) {
      const c = await WireClient.connect({ host: b.host, port: b.port });
      c.write(startupMessage({ user: 'trust_user', database: 'slow' }));
      clients.push(c);
    }
    const admin = await adminLogin(b);
    await waitUntil('3 waiting clients', async () => poolRow(await show(admin, 'SHOW POOLS'), 'slow')?.cl_waiting, (v) => v === '3');
    await sleep(700); // a few janitor rounds: still one login
    const row = poolRow(await show(admin, 'SHOW POOLS'), 'slow')!;
    assert.equal(row.sv_login, '1');
    assert.equal(row.cl_waiting, '3');
    assert.equal(silent.accepted, 1);
    for (const c of clients) c.destroy();
    admin.destroy();
  });
});

describe('pool_idle_timeout', () => {
  let b: TestPgbun;
  before(async () => {
    b = await startPgbun({
      ini: {
        databases: { [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB }) },
        pgbouncer: { auth_type: 'trust', admin_users: 'admin', pool_mode: 'transaction', server_idle_timeout: 0.5, pool_idle_timeout: 1 },
      },
      userlist: USERS,
    });
  });
  after(async () => {
    await b?.stop();
  });

  test('a pool without clients and servers disappears from SHOW POOLS, with a log line', async () => {
    const admin = await adminLogin(b);
    const { client } = await login(b, 'trust_user', TEST_DB);
    await client.query('SELECT 1');
    const off = b.logOffset();
    await client.terminate();
    assert.ok(poolRow(await show(admin, 'SHOW POOLS'), TEST_DB), 'the pool exists right after the client left');
    await waitUntil('pool freed', async () => poolRow(await show(admin, 'SHOW POOLS'), TEST_DB) === undefined, (gone) => gone, 6000, 100);
    const line = await b.waitForLog(/cleaning up idle pool/, 3000, off);
    assert.match(line, new RegExp(`^\\S+ \\S+ \\S+ \\[\\d+\\] LOG cleaning up idle pool: ${TEST_DB}/trust_user$`));
    // a new client makes a new pool and works
    const again = await login(b, 'trust_user', TEST_DB);
    const r = await again.client.query('SELECT 2');
    assert.deepEqual(r.rows, [['2']]);
    await again.client.terminate();
    admin.destroy();
  });
});

describe('server_fast_close', () => {
  let fast: TestPgbun;
  let slow: TestPgbun;
  const ini = (fastClose: number) => ({
    databases: { [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB }) },
    pgbouncer: { auth_type: 'trust', admin_users: 'admin', pool_mode: 'session', server_fast_close: fastClose },
  });
  before(async () => {
    fast = await startPgbun({ ini: ini(1), userlist: USERS });
    slow = await startPgbun({ ini: ini(0), userlist: USERS });
  });
  after(async () => {
    await fast?.stop();
    await slow?.stop();
  });

  test('with server_fast_close = 1 a client is closed at the end of its transaction after RECONNECT', async () => {
    const admin = await adminLogin(fast);
    const { client } = await login(fast, 'trust_user', TEST_DB);
    await client.query('BEGIN');
    await client.query('SELECT 1');
    const r0 = await admin.query('RECONNECT');
    assert.deepEqual(r0.tags, ['RECONNECT']);
    // still inside the transaction: goes on
    const inTx = await client.query('SELECT 2');
    assert.deepEqual(inTx.rows, [['2']]);
    assert.equal(inTx.status, 'T');
    const from = fast.logOffset();
    const commit = await client.query('COMMIT');
    assert.deepEqual(commit.tags, ['COMMIT']);
    await expectFatal(client, 'database configuration changed');
    await fast.waitForLog(closingRe('C', TEST_DB, 'trust_user', 'database configuration changed'), 5000, from);
    admin.destroy();
  });

  test('with server_fast_close = 1 an idle session is closed soon after RECONNECT, without sending anything', async () => {
    const admin = await adminLogin(fast);
    const { client } = await login(fast, 'trust_user', TEST_DB);
    assert.deepEqual((await client.query('SELECT 1')).rows, [['1']]);
    const from = fast.logOffset();
    assert.deepEqual((await admin.query('RECONNECT')).tags, ['RECONNECT']);
    // the janitor closes it: the FATAL arrives although the client sent nothing
    await expectFatal(client, 'database configuration changed', 5000);
    await fast.waitForLog(closingRe('S', TEST_DB, 'trust_user', 'database configuration changed'), 5000, from);
    await fast.waitForLog(closingRe('C', TEST_DB, 'trust_user', 'database configuration changed'), 5000, from);
    admin.destroy();
  });

  test('with server_fast_close = 0 the client keeps its server until it leaves', async () => {
    const admin = await adminLogin(slow);
    const { client } = await login(slow, 'trust_user', TEST_DB);
    const pid1 = (await client.query('SELECT pg_backend_pid()')).rows[0]![0];
    await admin.query('RECONNECT');
    const pid2 = (await client.query('SELECT pg_backend_pid()')).rows[0]![0];
    assert.equal(pid2, pid1);
    const from = slow.logOffset();
    await client.terminate();
    await slow.waitForLog(closingRe('S', TEST_DB, 'trust_user', 'database configuration changed'), 5000, from);
    admin.destroy();
  });
});

describe('cancel queue', () => {
  const proxy = new TcpGate(pg);
  let b: TestPgbun;
  before(async () => {
    await proxy.start();
    b = await startPgbun({
      ini: {
        databases: { viaproxy: `host=127.0.0.1 port=${proxy.port} dbname=${TEST_DB} pool_size=1` },
        pgbouncer: { auth_type: 'trust', admin_users: 'admin', pool_mode: 'transaction', cancel_wait_timeout: 1 },
      },
      userlist: USERS,
    });
  });
  after(async () => {
    await b?.stop();
    proxy.close();
  });

  test('at most 2 x pool_size cancel connections; a queued cancel is dropped after cancel_wait_timeout', async () => {
    const admin = await adminLogin(b);
    const { client, login: li } = await login(b, 'trust_user', 'viaproxy');
    const key = li.backendKey!;
    const sleeping = client.query('SELECT pg_sleep(20)', 30_000);
    await sleep(200);
    proxy.hold = true; // cancel connections reach the proxy and stay there
    const cancels: WireClient[] = [];
    for (let i = 0; i < 3; i++) {
      const c = await WireClient.connect({ host: b.host, port: b.port });
      c.write(cancelRequest(key.pid, key.secret));
      cancels.push(c);
      await sleep(50);
    }
    const row = await waitUntil('cancel states', async () => poolRow(await show(admin, 'SHOW POOLS'), 'viaproxy'),
      (r) => r?.cl_active_cancel_req === '2' && r?.cl_waiting_cancel_req === '1');
    assert.equal(row!.sv_active_cancel, '2');
    const from = b.logOffset();
    await b.waitForLog(/closing because: cancel_wait_timeout \(age=\d+s\)/, 5000, from);
    const after1 = poolRow(await show(admin, 'SHOW POOLS'), 'viaproxy')!;
    assert.equal(after1.cl_waiting_cancel_req, '0');
    proxy.release(); // the two held cancels now reach PostgreSQL
    const r = await sleeping;
    assert.equal(r.error?.C, '57014');
    for (const c of cancels) c.destroy();
    await client.terminate();
    admin.destroy();
  });
});
