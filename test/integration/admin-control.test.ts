// The console's process control commands (https://www.pgbouncer.org/usage.html): each command's
// effect, tag, errors and log line; PAUSE/RESUME under pgbench without a failed transaction; the
// SHUTDOWN modes.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { assertPgbenchClean, pgbench } from '../lib/clients.js';
import type { TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { sleep } from '../lib/procs.js';
import { attemptLogin, query, sendCancel, WireClient, wireLogin } from '../lib/wire.js';
import {
  adminLogin, eventually, expectAdminError, expectTag, pendingAfter, show, startAdminBouncer, userLogin,
} from './admin-lib.js';

const pg = await sharedPostgres();

let b: TestPgbun;
let admin: WireClient;

before(async () => {
  await pg.ensurePgbench();
  b = await startAdminBouncer(pg);
  admin = await adminLogin(b);
});

after(async () => {
  await admin?.terminate();
  await b?.stop();
});

async function pool(db: string): Promise<Record<string, string | null> | undefined> {
  return (await show(admin, 'SHOW POOLS')).find((r) => r.database === db && r.user === 'trust_user');
}

async function database(name: string): Promise<Record<string, string | null> | undefined> {
  return (await show(admin, 'SHOW DATABASES')).find((r) => r.name === name);
}

async function state(c: WireClient = admin): Promise<Record<string, string>> {
  return Object.fromEntries((await show(c, 'SHOW STATE')).map((r) => [r.key!, r.value!]));
}

async function backendPid(c: WireClient): Promise<string> {
  return (await c.query('SELECT pg_backend_pid()')).rows[0]![0]!;
}

describe('PAUSE and RESUME', () => {
  test('PAUSE answers only once servers are released; queries wait; RESUME runs them', async () => {
    const holder = await userLogin(b);
    const other = await userLogin(b);
    const pa = await adminLogin(b);
    try {
      await holder.query('BEGIN');
      await holder.query('SELECT 1');
      await other.query('SELECT 1'); // a second server, idle now
      assert.equal((await pool(TEST_DB))!.sv_idle, '1');
      const from = b.logOffset();
      // PAUSE and a second query in one write: the second is answered after PAUSE completes
      await pa.write([query('PAUSE'), query('SHOW STATE')]);
      const paused = pa.collect(15_000);
      assert.ok(await pendingAfter(paused, 400), 'PAUSE must wait for the server in use');
      await b.waitForLog(/LOG PAUSE command issued/, 2000, from);
      await b.waitForLog(/S-0x[0-9a-f]+: testdb\/trust_user@127\.0\.0\.1:\d+ closing because: pause mode \(age=\d+s\)/, 2000, from);
      assert.deepEqual(await state(), { active: 'no', paused: 'yes', suspended: 'no' });
      await expectAdminError(admin, 'PAUSE', 'already suspended/paused');
      await expectAdminError(admin, `PAUSE ${TEST_DB}`, 'already suspended/paused');
      await expectAdminError(admin, 'SUSPEND', 'already suspended/paused');
      await expectAdminError(admin, 'KILL', 'already suspended/paused');
      // a new transaction waits; the one in flight goes on
      const waiting = other.query('SELECT 2', 15_000);
      await eventually('cl_waiting = 1', async () => (await pool(TEST_DB))?.cl_waiting === '1');
      assert.deepEqual((await holder.query('SELECT 3')).rows, [['3']]);
      assert.ok(await pendingAfter(paused, 100));
      await holder.query('COMMIT');
      const r = await paused;
      assert.deepEqual(r.tags, ['PAUSE']);
      assert.equal(r.status, 'I');
      const held = await pa.collect();
      assert.deepEqual(held.rows, [['active', 'no'], ['paused', 'yes'], ['suspended', 'no']]);
      assert.equal((await show(admin, 'SHOW SERVERS')).filter((s) => s.database === TEST_DB).length, 0);
      assert.ok(await pendingAfter(waiting, 200));
      await expectTag(admin, 'RESUME', 'RESUME');
      assert.deepEqual((await waiting).rows, [['2']]);
      assert.deepEqual(await state(), { active: 'yes', paused: 'no', suspended: 'no' });
      await expectAdminError(admin, 'RESUME', 'pooler is not paused/suspended');
      await b.waitForLog(/LOG RESUME command issued/, 1000, from);
    } finally {
      await holder.terminate();
      await other.terminate();
      await pa.terminate();
    }
  });

  test('a CancelRequest with the key of an admin waiting for PAUSE resumes the pooler', async () => {
    const holder = await userLogin(b);
    const { client: pa, login } = await wireLogin({ host: b.host, port: b.port }, { user: 'admin', database: 'pgbouncer' });
    try {
      await holder.query('BEGIN');
      const pausing = pa.query('PAUSE', 10_000);
      assert.ok(await pendingAfter(pausing, 300));
      assert.equal((await state()).paused, 'yes');
      await sendCancel({ host: b.host, port: b.port }, login.backendKey!);
      const r = await pausing;
      assert.equal(r.error, null);
      assert.deepEqual(r.tags, ['RESUME']);
      assert.deepEqual(await state(), { active: 'yes', paused: 'no', suspended: 'no' });
      assert.deepEqual((await holder.query('SELECT 1')).rows, [['1']]);
      await holder.query('COMMIT');
    } finally {
      await holder.terminate();
      await pa.terminate();
    }
  });

  test('PAUSE db pauses one database; RESUME db; errors', async () => {
    await expectAdminError(admin, 'PAUSE pgbouncer', 'cannot pause admin db: pgbouncer');
    await expectAdminError(admin, 'PAUSE nosuch', 'no such database: nosuch');
    const s = await userLogin(b, 'small');
    const t = await userLogin(b, TEST_DB);
    try {
      await s.query('SELECT 1');
      await expectTag(admin, 'PAUSE small', 'PAUSE');
      assert.equal((await database('small'))!.paused, '1');
      assert.equal((await database(TEST_DB))!.paused, '0');
      assert.deepEqual(await state(), { active: 'yes', paused: 'no', suspended: 'no' });
      assert.deepEqual((await t.query('SELECT 7')).rows, [['7']]);
      const q = s.query('SELECT 8', 10_000);
      assert.ok(await pendingAfter(q, 300));
      await expectAdminError(admin, 'SUSPEND', 'cannot suspend with paused databases');
      await expectAdminError(admin, `RESUME ${TEST_DB}`, `database ${TEST_DB} is not paused`);
      await expectAdminError(admin, 'RESUME nosuch', 'no such database: nosuch');
      await expectAdminError(admin, 'RESUME', 'pooler is not paused/suspended');
      await expectTag(admin, 'RESUME small', 'RESUME');
      assert.deepEqual((await q).rows, [['8']]);
      assert.match(b.log(), /LOG PAUSE 'small' command issued[\s\S]*LOG RESUME 'small' command issued/);
    } finally {
      await s.terminate();
      await t.terminate();
    }
  });

  test('PAUSE/RESUME under pgbench: no failed transaction', async () => {
    const run = pgbench(b.conn('trust_user', undefined, 'benchdb'), ['-n', '-c', '8', '-j', '2', '-T', '5']);
    await sleep(1200);
    await expectTag(admin, 'PAUSE', 'PAUSE', 20_000);
    const p = await pool('benchdb');
    assert.deepEqual([p!.sv_active, p!.sv_idle, p!.sv_used, p!.sv_tested, p!.sv_login], ['0', '0', '0', '0', '0']);
    await sleep(400);
    assert.ok(Number((await pool('benchdb'))!.cl_waiting) > 0, 'pgbench clients queue while paused');
    await expectTag(admin, 'RESUME', 'RESUME');
    await sleep(800);
    await expectTag(admin, 'PAUSE benchdb', 'PAUSE', 20_000);
    await sleep(300);
    await expectTag(admin, 'RESUME benchdb', 'RESUME');
    const r = await run;
    assertPgbenchClean(r);
    const stats = (await show(admin, 'SHOW STATS_TOTALS')).find((s) => s.database === 'benchdb')!;
    assert.ok(Number(stats.xact_count) >= r.summary.transactions!, `${stats.xact_count} >= ${r.summary.transactions}`);
    assert.doesNotMatch(b.log(), /benchdb\/trust_user@[^ ]+ pooler error/);
  });
});

describe('SUSPEND', () => {
  test('stops the pooler until RESUME; new connections wait unanswered, then are served', async () => {
    const c = await userLogin(b);
    const s = await adminLogin(b);
    try {
      await c.query('SELECT 1');
      await expectTag(s, 'SUSPEND', 'SUSPEND');
      assert.deepEqual(await state(s), { active: 'no', paused: 'no', suspended: 'yes' });
      const q = c.query('SELECT 5', 10_000);
      assert.ok(await pendingAfter(q, 300), 'nothing is read while suspended');
      // a new connection is not served (as in PgBouncer's listen backlog) but not refused either
      const newcomer = wireLogin({ host: b.host, port: b.port }, { user: 'trust_user', database: TEST_DB, timeoutMs: 10_000 });
      newcomer.catch(() => {});
      assert.ok(await pendingAfter(newcomer, 500), 'a login during SUSPEND waits');
      await expectAdminError(s, 'SUSPEND', 'already suspended/paused');
      await expectTag(s, 'RESUME', 'RESUME');
      assert.deepEqual((await q).rows, [['5']]);
      const { client: late } = await newcomer;
      assert.deepEqual((await late.query('SELECT 6')).rows, [['6']]);
      await late.terminate();
      assert.match(b.log(), /LOG SUSPEND command issued/);
    } finally {
      await c.terminate();
      await s.terminate();
    }
  });

  test('resumes by itself when the last admin disconnects', async () => {
    const s = await adminLogin(b);
    await expectTag(s, 'SUSPEND', 'SUSPEND');
    const from = b.logOffset();
    await admin.terminate();
    await s.terminate();
    await b.waitForLog(/LOG admin disappeared when suspended, doing RESUME/, 3000, from);
    admin = await adminLogin(b);
    assert.deepEqual(await state(), { active: 'yes', paused: 'no', suspended: 'no' });
    const c = await userLogin(b);
    assert.deepEqual((await c.query('SELECT 1')).rows, [['1']]);
    await c.terminate();
  });
});

describe('DISABLE, ENABLE, RECONNECT, WAIT_CLOSE, KILL, KILL_CLIENT', () => {
  test('DISABLE rejects new logins to the database, ENABLE undoes it', async () => {
    await expectAdminError(admin, 'DISABLE', 'a database is required');
    await expectAdminError(admin, 'ENABLE', 'a database is required');
    await expectAdminError(admin, 'DISABLE pgbouncer', 'cannot disable admin db: pgbouncer');
    await expectAdminError(admin, 'ENABLE pgbouncer', 'cannot enable admin db: pgbouncer');
    await expectAdminError(admin, 'DISABLE nosuch', 'no such database: nosuch');
    const existing = await userLogin(b, 'small');
    try {
      await expectTag(admin, 'DISABLE small', 'DISABLE');
      assert.equal((await database('small'))!.disabled, '1');
      const denied = await attemptLogin({ host: b.host, port: b.port }, { user: 'trust_user', database: 'small' });
      assert.deepEqual([denied.error?.S, denied.error?.C, denied.error?.M], ['FATAL', '08P01', 'database "small" is disabled']);
      assert.deepEqual((await existing.query('SELECT 1')).rows, [['1']], 'connected clients go on');
      await expectTag(admin, 'ENABLE small', 'ENABLE');
      assert.equal((await database('small'))!.disabled, '0');
      const again = await userLogin(b, 'small');
      await again.terminate();
      assert.match(b.log(), /LOG DISABLE 'small' command issued[\s\S]*LOG ENABLE 'small' command issued/);
    } finally {
      await existing.terminate();
    }
  });

  test('RECONNECT marks servers close_needed; WAIT_CLOSE answers once they are gone', async () => {
    await expectAdminError(admin, 'RECONNECT pgbouncer', 'cannot reconnect admin db: pgbouncer');
    await expectAdminError(admin, 'RECONNECT nosuch', 'no such database: nosuch');
    await expectAdminError(admin, 'WAIT_CLOSE pgbouncer', 'cannot wait in admin db: pgbouncer');
    await expectAdminError(admin, 'WAIT_CLOSE nosuch', 'no such database: nosuch');
    const a = await userLogin(b);
    const w = await adminLogin(b);
    try {
      await a.query('BEGIN');
      const pid1 = await backendPid(a);
      await expectTag(admin, `RECONNECT ${TEST_DB}`, 'RECONNECT');
      const sv = (await show(admin, 'SHOW SERVERS')).find((s) => s.remote_pid === pid1)!;
      assert.equal(sv.close_needed, '1');
      const waiting = w.query(`WAIT_CLOSE ${TEST_DB}`, 10_000);
      assert.ok(await pendingAfter(waiting, 400), 'the server in use is not closed under the transaction');
      assert.equal(await backendPid(a), pid1);
      await a.query('COMMIT');
      assert.deepEqual((await waiting).tags, ['WAIT_CLOSE']);
      assert.notEqual(await backendPid(a), pid1, 'a new server after release');
      await expectTag(admin, 'RECONNECT', 'RECONNECT');
      await expectTag(admin, 'WAIT_CLOSE', 'WAIT_CLOSE', 5000);
      assert.match(b.log(), /LOG RECONNECT 'testdb' command issued[\s\S]*LOG WAIT_CLOSE 'testdb' command issued[\s\S]*LOG RECONNECT command issued[\s\S]*LOG WAIT_CLOSE command issued/);
    } finally {
      await a.terminate();
      await w.terminate();
    }
  });

  test('KILL db closes its clients and servers (`database removed`) and leaves it paused', async () => {
    await expectAdminError(admin, 'KILL pgbouncer', 'cannot kill admin db: pgbouncer');
    await expectAdminError(admin, 'KILL nosuch', 'no such database: nosuch');
    const idle = await userLogin(b, 'small');
    const inTx = await userLogin(b, 'small');
    const bystander = await userLogin(b, TEST_DB);
    await idle.query('SELECT 1');
    await inTx.query('BEGIN');
    const from = b.logOffset();
    await expectTag(admin, 'KILL small', 'KILL');
    for (const c of [idle, inTx]) {
      await c.expectError({ severity: 'FATAL', code: '08P01', message: 'database removed', onlySCM: true });
    }
    assert.equal((await database('small'))!.paused, '1');
    assert.equal(await pool('small'), undefined, 'the pool is gone');
    assert.deepEqual((await bystander.query('SELECT 1')).rows, [['1']]);
    await b.waitForLog(/LOG KILL 'small' command issued/, 1000, from);
    await b.waitForLog(/S-0x[0-9a-f]+: small\/trust_user@[^ ]+ closing because: database removed/, 1000, from);
    // a new client of the paused database waits for RESUME
    const late = wireLogin({ host: b.host, port: b.port }, { user: 'trust_user', database: 'small', timeoutMs: 10_000 });
    assert.ok(await pendingAfter(late, 300));
    await expectTag(admin, 'RESUME small', 'RESUME');
    const { client } = await late;
    assert.deepEqual((await client.query('SELECT 2')).rows, [['2']]);
    await client.terminate();

    // KILL without a database: all of them, and the pooler is paused
    await expectTag(admin, 'KILL', 'KILL');
    await bystander.expectError({ severity: 'FATAL', message: 'database removed' });
    assert.deepEqual(await state(), { active: 'no', paused: 'yes', suspended: 'no' });
    assert.match(b.log(), /LOG KILL command issued/);
    await expectTag(admin, 'RESUME', 'RESUME');
  });

  test('KILL_CLIENT id disconnects that client with `admin forced disconnect`', async () => {
    const v = await userLogin(b, TEST_DB, 'trust_user', { application_name: 'victim' });
    const id = (await show(admin, 'SHOW CLIENTS')).find((r) => r.application_name === 'victim')!.id!;
    await expectAdminError(admin, 'KILL_CLIENT', 'invalid client pointer supplied');
    await expectAdminError(admin, 'KILL_CLIENT abc', 'invalid client pointer supplied');
    await expectAdminError(admin, 'KILL_CLIENT 99999999', 'client not found');
    await expectTag(admin, `KILL_CLIENT ${id}`, 'KILL_CLIENT');
    await v.expectError({ severity: 'FATAL', code: '08P01', message: 'admin forced disconnect', onlySCM: true });
    assert.equal((await show(admin, 'SHOW CLIENTS')).some((r) => r.id === id), false);
    await b.waitForLog(new RegExp(`LOG KILL_CLIENT '${id}' command issued`), 1000);
    await b.waitForLog(/testdb\/trust_user@[^ ]+ closing because: admin forced disconnect/, 1000);
  });
});

describe('SHUTDOWN', () => {
  test('SHUTDOWN WAIT_FOR_CLIENTS: TCP closed, clients served until they leave, then exit', async () => {
    const p = await startAdminBouncer(pg);
    const c = await userLogin(p);
    const a = await adminLogin(p);
    await expectTag(a, 'SHUTDOWN WAIT_FOR_CLIENTS', 'SHUTDOWN');
    await eventually('TCP listener closed', async () => {
      try {
        (await WireClient.connect({ host: p.host, port: p.port }, 500)).destroy();
        return false;
      } catch {
        return true;
      }
    });
    const viaUnix = await attemptLogin({ path: p.socketPath }, { user: 'trust_user', database: TEST_DB });
    assert.equal(viaUnix.error?.M, 'pooler is shutting down');
    const unixAdmin = (await wireLogin({ path: p.socketPath }, { user: 'admin', database: 'pgbouncer' })).client;
    await expectAdminError(unixAdmin, 'RESUME', 'pooler is shutting down');
    assert.deepEqual((await c.query('SELECT 1')).rows, [['1']]);
    await c.terminate();
    await unixAdmin.terminate();
    assert.equal(await p.waitExit(300), null, 'an admin is still connected');
    await a.terminate();
    assert.deepEqual(await p.waitExit(5000), { code: 0, signal: null });
    assert.match(p.log(), /LOG SHUTDOWN WAIT_FOR_CLIENTS command issued[\s\S]*LOG client connections dropped, exiting/);
  });

  test('SHUTDOWN WAIT_FOR_SERVERS: waiting clients dropped, exit once servers are released', async () => {
    const p = await startAdminBouncer(pg);
    const a = await adminLogin(p);
    const holder = await userLogin(p, 'small');
    const waiter = await userLogin(p, 'small');
    await holder.query('BEGIN');
    await waiter.write(query('SELECT 1'));
    await eventually('a waiting client', async () =>
      (await show(a, 'SHOW POOLS')).find((r) => r.database === 'small')?.cl_waiting === '1');
    await expectTag(a, 'SHUTDOWN WAIT_FOR_SERVERS', 'SHUTDOWN');
    await waiter.expectError({ severity: 'FATAL', code: '08P01', message: 'server shutting down' });
    assert.deepEqual((await holder.query('SELECT 2')).rows, [['2']], 'the transaction in flight finishes');
    assert.equal(p.proc.exitCode, null);
    await holder.query('COMMIT');
    assert.deepEqual(await p.waitExit(5000), { code: 0, signal: null });
    assert.match(p.log(), /LOG SHUTDOWN WAIT_FOR_SERVERS command issued[\s\S]*closing because: pause mode[\s\S]*LOG server connections dropped, exiting/);
  });

  test('SHUTDOWN: immediate exit without a reply', async () => {
    const p = await startAdminBouncer(pg);
    const a = await adminLogin(p);
    await a.write(query('SHUTDOWN'));
    await a.closedPromise;
    assert.equal(a.pending.length, 0, 'no reply');
    assert.deepEqual(await p.waitExit(5000), { code: 0, signal: null });
    assert.match(p.log(), /LOG SHUTDOWN command issued/);
  });
});
