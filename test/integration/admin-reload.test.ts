// RELOAD (and SIGHUP) with PgBouncer's semantics: defaults
// restored for reloadable keys, NULL-default keys kept, startup-only keys ignored, auth_file
// re-read only when its stat changed, changed databases' servers closed when released, removed
// databases dropped, pool sizes live, a broken file keeps the pooler running (F0000), and pgbench
// sees no failed transaction across reloads.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { assertPgbenchClean, pgbench } from '../lib/clients.js';
import { pgConnstr, type PgbunFiles, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { sleep } from '../lib/procs.js';
import { attemptLogin, WireClient } from '../lib/wire.js';
import {
  ADMIN, STATS, USERLIST, adminDatabases, adminLogin, eventually, expectAdminError, expectTag, show,
  startAdminBouncer, userLogin,
} from './admin-lib.js';

const pg = await sharedPostgres();

let b: TestPgbun;
let admin: WireClient;

const BASE_SETTINGS = {
  auth_type: 'trust', admin_users: `${ADMIN}, newbie`, stats_users: STATS, pool_mode: 'transaction',
  query_wait_timeout: 33, server_check_delay: 7,
};

/** The ini with the test databases, `pgbouncer` settings replaced/added, databases replaced/removed. */
function ini(settings: Record<string, string | number | null> = {}, dbs: Record<string, string | null> = {}): PgbunFiles['ini'] {
  const pgbouncer: Record<string, string | number> = {};
  for (const [k, v] of Object.entries({ ...BASE_SETTINGS, ...settings })) if (v !== null) pgbouncer[k] = v;
  const databases: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...adminDatabases(pg), ...dbs })) if (v !== null) databases[k] = v;
  return { databases, pgbouncer };
}

async function config(): Promise<Map<string, string | null>> {
  return new Map((await show(admin, 'SHOW CONFIG')).map((r) => [r.key!, r.value]));
}

async function reload(files: PgbunFiles): Promise<void> {
  b.writeFiles(files);
  await expectTag(admin, 'RELOAD', 'RELOAD');
}

before(async () => {
  await pg.ensurePgbench();
  b = await startAdminBouncer(pg, {}, { ini: ini() });
  admin = await adminLogin(b);
});

after(async () => {
  await admin?.terminate();
  await b?.stop();
});

describe('settings on RELOAD', () => {
  test('reloadable keys return to the file or the default; NULL-default keys and startup-only keys are kept', async () => {
    await expectTag(admin, 'SET query_wait_timeout = 44', 'SET query_wait_timeout=44');
    await expectTag(admin, 'SET verbose = 1', 'SET verbose=1');
    assert.equal((await config()).get('query_wait_timeout'), '44');
    await reload({ ini: ini() });
    let cfg = await config();
    assert.equal(cfg.get('query_wait_timeout'), '33', 'the file value replaces SET');
    assert.equal(cfg.get('verbose'), '1', 'verbose has no default: SET survives RELOAD');
    assert.equal(cfg.get('server_check_delay'), '7');
    // a line removed from the file reverts to its default; listen_port cannot change after start
    await reload({ ini: ini({ server_check_delay: null, listen_port: b.port + 1, pool_mode: 'session' }) });
    cfg = await config();
    assert.equal(cfg.get('server_check_delay'), '30');
    assert.equal(cfg.get('pool_mode'), 'session');
    assert.equal(cfg.get('listen_port'), String(b.port));
    const c = await userLogin(b);
    assert.deepEqual((await c.query('SELECT 1')).rows, [['1']]);
    await c.terminate();
    await reload({ ini: ini() });
    assert.equal((await config()).get('pool_mode'), 'transaction');
    assert.match(b.log(), /LOG RELOAD command issued/);
    await expectTag(admin, 'SET verbose = 0', 'SET verbose=0');
  });

  test('auth_file: re-read when its stat changed, not otherwise; removed users stay known', async () => {
    const newbie = (): Promise<boolean> => attemptLogin({ host: b.host, port: b.port }, { user: 'newbie', database: 'pgbouncer' })
      .then(async (r) => {
        if (r.login) await r.client.terminate();
        return r.login !== null;
      });
    assert.equal(await newbie(), false);
    const file = b.userlistPath;
    const setMtime = (): void => fs.utimesSync(file, 1_000_000_000, 1_000_000_000);
    await reload({ userlist: [...USERLIST, ['newbie', '']] });
    assert.equal(await newbie(), true);
    setMtime();
    await expectTag(admin, 'RELOAD', 'RELOAD'); // stat changed (mtime): read again, same users
    assert.equal(await newbie(), true);
    // same size, same inode, same mtime: PgBouncer (and pgbun) do not look at the content
    b.writeFiles({ userlist: [...USERLIST, ['oldbie', '']] });
    setMtime();
    await expectTag(admin, 'RELOAD', 'RELOAD');
    assert.equal(await newbie(), true, 'unchanged stat: file not re-read');
    // a real change: newbie is gone from the file, still listed, but cannot log in
    await reload({ userlist: USERLIST });
    assert.equal(await newbie(), false);
    assert.ok((await show(admin, 'SHOW USERS')).some((u) => u.name === 'newbie'));
  });

  test('the HBA file is re-read on every RELOAD', async () => {
    const hbaLogin = (): Promise<string | null> => attemptLogin({ host: b.host, port: b.port }, { user: ADMIN, database: 'pgbouncer' })
      .then(async (r) => {
        if (r.login) await r.client.terminate();
        return r.error?.M ?? null;
      });
    try {
      await reload({ hba: 'host all all 127.0.0.1/32 trust\nlocal all all trust\n', ini: ini({ auth_type: 'hba' }) });
      assert.equal((await config()).get('auth_hba_file'), b.hbaPath);
      assert.equal(await hbaLogin(), null);
      await reload({ hba: 'host pgbouncer admin 127.0.0.1/32 reject\nhost all all 127.0.0.1/32 trust\n' });
      assert.equal(await hbaLogin(), 'login rejected');
    } finally {
      await reload({ ini: ini() });
    }
    assert.equal(await hbaLogin(), null);
  });
});

describe('databases on RELOAD', () => {
  test('a changed definition closes servers when released, never under a transaction', async () => {
    const holder = await userLogin(b);
    try {
      await holder.query('BEGIN');
      const pid1 = (await holder.query('SELECT pg_backend_pid()')).rows[0]![0]!;
      const from = b.logOffset();
      await reload({ ini: ini({}, { [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB, application_name: 'reloaded' }) }) });
      const sv = (await show(admin, 'SHOW SERVERS')).find((s) => s.remote_pid === pid1)!;
      assert.equal(sv.close_needed, '1');
      assert.equal(sv.state, 'active');
      assert.deepEqual((await holder.query('SELECT pg_backend_pid()')).rows, [[pid1]], 'same server inside the transaction');
      await holder.query('COMMIT');
      const pid2 = (await holder.query('SELECT pg_backend_pid()')).rows[0]![0]!;
      assert.notEqual(pid2, pid1);
      await b.waitForLog(/S-0x[0-9a-f]+: testdb\/trust_user@[^ ]+ closing because: database configuration changed/, 2000, from);
      assert.equal((await show(admin, 'SHOW SERVERS')).filter((s) => s.close_needed === '1').length, 0);
    } finally {
      await holder.terminate();
    }
  });

  test('a removed database is dropped: its clients get `database removed`', async () => {
    const idle = await userLogin(b, 'small');
    const inTx = await userLogin(b, 'small');
    await idle.query('SELECT 1');
    await inTx.query('BEGIN');
    const from = b.logOffset();
    await reload({ ini: ini({}, { small: null }) });
    for (const c of [idle, inTx]) await c.expectError({ severity: 'FATAL', code: '08P01', message: 'database removed' });
    await b.waitForLog(/WARNING dropping database 'small' as it does not exist anymore or inactive auto-database/, 1000, from);
    await b.waitForLog(/closing because: database removed/, 1000, from);
    assert.equal((await show(admin, 'SHOW DATABASES')).some((d) => d.name === 'small'), false);
    assert.equal((await show(admin, 'SHOW POOLS')).some((d) => d.database === 'small'), false);
    const gone = await attemptLogin({ host: b.host, port: b.port }, { user: 'trust_user', database: 'small' });
    assert.equal(gone.error?.M, 'no such database: small');
    await reload({ ini: ini() });
    const back = await userLogin(b, 'small');
    assert.deepEqual((await back.query('SELECT 1')).rows, [['1']]);
    await back.terminate();
  });

  test('pool sizes change live: excess idle servers are closed', async () => {
    await reload({ ini: ini({}, { [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB, pool_size: 4 }) }) });
    const clients = await Promise.all([0, 1, 2, 3].map(() => userLogin(b)));
    try {
      for (const c of clients) await c.query('BEGIN');
      for (const c of clients) await c.query('COMMIT');
      const poolRow = async (): Promise<Record<string, string | null>> =>
        (await show(admin, 'SHOW POOLS')).find((p) => p.database === TEST_DB && p.user === 'trust_user')!;
      assert.equal((await poolRow()).sv_idle, '4');
      const from = b.logOffset();
      await reload({ ini: ini({ default_pool_size: 9 }, { [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB, pool_size: 2 }) }) });
      await eventually('2 idle servers', async () => (await poolRow()).sv_idle === '2');
      const lines = b.log().slice(from).split('\n').filter((l) => /closing because: too many servers in the pool/.test(l));
      assert.equal(lines.length, 2);
      const dbs = new Map((await show(admin, 'SHOW DATABASES')).map((d) => [d.name, d.pool_size]));
      assert.equal(dbs.get(TEST_DB), '2');
      assert.equal(dbs.get('benchdb'), '9', 'default_pool_size applies live');
    } finally {
      for (const c of clients) await c.terminate();
      await reload({ ini: ini() });
    }
  });

  test('a broken file: ERROR F0000, the pooler keeps running, nothing is dropped', async () => {
    b.writeFiles({ ini: ini({ query_wait_timeout: 55 }, { small: null }) });
    fs.appendFileSync(b.iniPath, 'this line is not valid\n');
    const from = b.logOffset();
    await expectAdminError(admin, 'RELOAD', 'RELOAD failed, see logs for additional details', 'F0000');
    await b.waitForLog(/ERROR syntax error in configuration \(.*pgbun\.ini:\d+\), stopping loading/, 1000, from);
    await b.waitForLog(/WARNING config file loading failed/, 1000, from);
    assert.ok((await show(admin, 'SHOW DATABASES')).some((d) => d.name === 'small'), 'small is not dropped');
    assert.equal((await config()).get('query_wait_timeout'), '55', 'settings read before the bad line apply');
    const c = await userLogin(b, 'small');
    assert.deepEqual((await c.query('SELECT 1')).rows, [['1']]);
    await c.terminate();
    // the same through SIGHUP
    const off = b.logOffset();
    b.signal('SIGHUP');
    await b.waitForLog(/LOG got SIGHUP, re-reading config/, 2000, off);
    await b.waitForLog(/WARNING config file loading failed/, 2000, off);
    assert.equal(b.proc.exitCode, null);
    await reload({ ini: ini() });
    assert.equal((await config()).get('query_wait_timeout'), '33');
  });

  test('auth_dbname = pgbouncer: that RELOAD fails, and the value is not kept for the next one', async () => {
    // PgBouncer's suite, test_auth_dbname_usage_global_setting: the refused line is logged once,
    // and the RELOAD that restores the previous file succeeds
    b.writeFiles({ ini: ini({ auth_dbname: 'pgbouncer', query_wait_timeout: 66 }) });
    const from = b.logOffset();
    await expectAdminError(admin, 'RELOAD', 'RELOAD failed, see logs for additional details', 'F0000');
    await b.waitForLog(/ERROR cannot use the reserved "pgbouncer" database as an auth_dbname/, 1000, from);
    await b.waitForLog(/ERROR invalid value "pgbouncer" for parameter auth_dbname in configuration \(.*pgbun\.ini:\d+\)/, 1000, from);
    assert.equal((await config()).get('auth_dbname'), null, 'the refused auth_dbname is not in force');
    await reload({ ini: ini() });
    assert.equal(b.log().slice(from).match(/as an auth_dbname/g)?.length, 1, 'logged by the failed RELOAD only');
    assert.equal((await config()).get('query_wait_timeout'), '33');
  });
});

describe('RELOAD under load', () => {
  test('pgbench through several RELOADs (pool sizes, a changed database): no failed transaction', async () => {
    const run = pgbench(b.conn('trust_user', undefined, 'benchdb'), ['-n', '-c', '8', '-j', '2', '-T', '5']);
    await sleep(1000);
    await reload({ ini: ini({ default_pool_size: 3 }) });
    await sleep(700);
    await reload({ ini: ini({ default_pool_size: 3 }, { benchdb: pgConnstr(pg, { dbname: 'benchdb', application_name: 'after_reload' }) }) });
    await sleep(700);
    await expectTag(admin, 'RELOAD', 'RELOAD');
    await sleep(700);
    await reload({ ini: ini() });
    const r = await run;
    assertPgbenchClean(r);
    assert.doesNotMatch(b.log(), /benchdb\/trust_user@[^ ]+ pooler error/);
    assert.match(b.log(), /benchdb\/trust_user@[^ ]+ closing because: database configuration changed/);
  });
});
