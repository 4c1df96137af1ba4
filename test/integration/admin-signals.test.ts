// Signals with PgBouncer >= 1.23 semantics (https://www.pgbouncer.org/usage.html#signals) and `-R`.
//   HUP reload · INT = SHUTDOWN WAIT_FOR_SERVERS · TERM = SHUTDOWN WAIT_FOR_CLIENTS · a second
//   INT/TERM exits at once · QUIT exits at once · USR1 PAUSE · USR2 RESUME (ignored while
//   shutting down).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pgConnstr } from '../lib/pgbun.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { canConnect } from '../lib/procs.js';
import { WireClient } from '../lib/wire.js';
import { ADMIN, STATS, adminDatabases, adminLogin, eventually, show, startAdminBouncer, userLogin } from './admin-lib.js';

const pg = await sharedPostgres();

async function tcpClosed(host: string, port: number): Promise<boolean> {
  try {
    (await WireClient.connect({ host, port }, 500)).destroy();
    return false;
  } catch {
    return true;
  }
}

describe('signals', () => {
  test('SIGHUP reloads the config', async () => {
    const b = await startAdminBouncer(pg);
    try {
      const admin = await adminLogin(b);
      b.reload({
        ini: {
          databases: { ...adminDatabases(pg), added: pgConnstr(pg, { dbname: TEST_DB }) },
          pgbouncer: { auth_type: 'trust', admin_users: ADMIN, stats_users: STATS, pool_mode: 'statement' },
        },
      });
      await b.waitForLog(/LOG got SIGHUP, re-reading config/);
      await eventually('the new database', async () => (await show(admin, 'SHOW DATABASES')).some((d) => d.name === 'added'));
      const cfg = new Map((await show(admin, 'SHOW CONFIG')).map((r) => [r.key, r.value]));
      assert.equal(cfg.get('pool_mode'), 'statement');
      await admin.terminate();
    } finally {
      await b.stop();
    }
  });

  test('SIGUSR1 pauses, SIGUSR2 resumes, each with its log line', async () => {
    const b = await startAdminBouncer(pg);
    try {
      const admin = await adminLogin(b);
      const c = await userLogin(b);
      await c.query('SELECT 1');
      const st = async (): Promise<string> => (await show(admin, 'SHOW STATE')).map((r) => r.value).join(',');
      b.signal('SIGUSR1');
      await b.waitForLog(/LOG got SIGUSR1, pausing all activity/);
      assert.equal(await st(), 'no,yes,no');
      // the idle server is closed in pause mode, queries wait
      await b.waitForLog(/closing because: pause mode/);
      const q = c.query('SELECT 2', 10_000);
      await eventually('a waiting client', async () =>
        (await show(admin, 'SHOW POOLS')).find((p) => p.database === TEST_DB)?.cl_waiting === '1');
      b.signal('SIGUSR1');
      await b.waitForLog(/LOG got SIGUSR1, but already paused\/suspended/);
      b.signal('SIGUSR2');
      await b.waitForLog(/LOG got SIGUSR2, continuing from PAUSE/);
      assert.deepEqual((await q).rows, [['2']]);
      assert.equal(await st(), 'yes,no,no');
      b.signal('SIGUSR2');
      await b.waitForLog(/LOG got SIGUSR2, but not paused\/suspended/);
      await c.terminate();
      await admin.terminate();
    } finally {
      await b.stop();
    }
  });

  test('SIGINT: safe shutdown once servers are released; SIGUSR2 is ignored meanwhile', async () => {
    const b = await startAdminBouncer(pg);
    const holder = await userLogin(b);
    await holder.query('BEGIN');
    b.signal('SIGINT');
    await b.waitForLog(/LOG got SIGINT, shutting down, waiting for all servers connections to be released/);
    await eventually('TCP listener closed', () => tcpClosed(b.host, b.port));
    b.signal('SIGUSR2');
    await b.waitForLog(/LOG got SIGUSR2 while shutting down, ignoring/);
    assert.deepEqual((await holder.query('SELECT 1')).rows, [['1']], 'the transaction goes on');
    assert.equal(await b.waitExit(300), null);
    await holder.query('COMMIT');
    assert.deepEqual(await b.waitExit(5000), { code: 0, signal: null });
    assert.match(b.log(), /LOG server connections dropped, exiting/);
  });

  test('SIGTERM: waits for every client to disconnect', async () => {
    const b = await startAdminBouncer(pg);
    const c = await userLogin(b);
    await c.query('SELECT 1');
    b.signal('SIGTERM');
    await b.waitForLog(/LOG got SIGTERM, shutting down, waiting for all clients disconnect/);
    await eventually('TCP listener closed', () => tcpClosed(b.host, b.port));
    assert.deepEqual((await c.query('SELECT 2')).rows, [['2']]);
    assert.equal(await b.waitExit(300), null);
    await c.terminate();
    assert.deepEqual(await b.waitExit(5000), { code: 0, signal: null });
    assert.match(b.log(), /LOG client connections dropped, exiting/);
  });

  test('a second SIGTERM/SIGINT during shutdown exits at once', async () => {
    const b = await startAdminBouncer(pg);
    const c = await userLogin(b);
    await c.query('SELECT 1');
    b.signal('SIGTERM');
    await b.waitForLog(/LOG got SIGTERM, shutting down/);
    b.signal('SIGINT');
    assert.deepEqual(await b.waitExit(5000), { code: 0, signal: null });
    assert.match(b.log(), /LOG got SIGINT while shutting down, fast exit/);
    c.destroy();
  });

  test('SIGQUIT exits at once, clients or not', async () => {
    const b = await startAdminBouncer(pg);
    const c = await userLogin(b);
    await c.query('BEGIN');
    b.signal('SIGQUIT');
    assert.deepEqual(await b.waitExit(5000), { code: 0, signal: null });
    assert.match(b.log(), /LOG got SIGQUIT, fast exit/);
    await c.closedPromise;
  });

  test('-R: the deprecation warning, then a FATAL naming the so_reuseport rolling restart, exit 1', async () => {
    const b = await startAdminBouncer(pg, {}, { args: ['-R'], waitReady: false });
    const exit = await b.waitExit(10_000);
    assert.deepEqual(exit, { code: 1, signal: null });
    const log = b.log() + b.stderr();
    assert.match(log, /WARNING Online restart is deprecated, use so_reuseport instead/);
    assert.match(log, /FATAL online restart \(-R\) is not supported by pgbun: .*so_reuseport = 1.*SHUTDOWN WAIT_FOR_CLIENTS/);
    assert.equal(await canConnect({ host: b.host, port: b.port }), false, 'it never listened');
  });
});
