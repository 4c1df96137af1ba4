// auth_dbname as PgBouncer 1.25 uses it: a [databases] entry (or `*`) naming the reserved
// `pgbouncer` loads and RELOADs, and each login through it fails with "bouncer config error",
// logged once per attempt; console logins of users not in auth_file run auth_query in the
// global auth_dbname (without one they end at the reserved `pgbouncer`), then must be in
// admin_users or stats_users before any password is asked; a pool in front of the console
// logs in to it with the secret auth_query found; `auth_dbname = pgbouncer` is refused by SET
// and never stored.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pgConnstr, startPgbun, type IniSpec, type PgbunFiles, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { AUTH, attemptLogin, type LoginOptions, type WireClient, type WireTarget } from '../lib/wire.js';
import { adminLogin, eventually, expectAdminError, expectTag, show } from './admin-lib.js';

const pg = await sharedPostgres();
let b: TestPgbun;
let admin: WireClient;

const RESERVED = /ERROR .*cannot use the reserved "pgbouncer" database as an auth_dbname/g;
const CONSOLE_ADMIN = 'cons_admin';

/** The config; `authDb` = the global auth_dbname (none: not in the file). */
function files(authDb: string | null): PgbunFiles & { ini: IniSpec } {
  return {
    ini: {
      pgbouncer: {
        auth_type: 'md5',
        auth_user: 'postgres', // trusted by the test PostgreSQL, not in auth_file
        // finds the user only when run in the database `postgres`: proves where it ran
        auth_query: "SELECT rolname, rolpassword FROM pg_authid WHERE rolname=$1 AND current_database() = 'postgres'",
        admin_users: CONSOLE_ADMIN,
        stats_users: 'md5_user',
        server_tls_sslmode: 'disable',
        ...(authDb === null ? {} : { auth_dbname: authDb }),
      },
      databases: {
        [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB }),
        authdb: pgConnstr(pg, { dbname: 'postgres' }),
        reserved: pgConnstr(pg, { dbname: TEST_DB, auth_dbname: 'pgbouncer' }),
        // pgbun's own console behind a pool
        selfconsole: 'host=127.0.0.1 port={{port}} dbname=pgbouncer',
        '*': pgConnstr(pg, { auth_dbname: 'pgbouncer' }),
      },
    },
    userlist: [[CONSOLE_ADMIN, 'cons_pw']],
  };
}

before(async () => {
  b = await startPgbun(files(null));
  admin = await adminLogin(b, CONSOLE_ADMIN, 'cons_pw');
});

after(async () => {
  await admin?.terminate();
  await b?.stop();
});

const target = (): WireTarget => ({ host: b.host, port: b.port });

async function loginFails(opts: LoginOptions, message: string, codes: number[]): Promise<void> {
  const a = await attemptLogin(target(), opts);
  try {
    assert.deepEqual(a.error?.fields, { S: 'FATAL', C: '08P01', M: message }, `login ${JSON.stringify(opts)}`);
    assert.deepEqual(a.authCodes, codes, `login ${JSON.stringify(opts)}`);
    await a.client.waitClose(3000);
  } finally {
    a.client.destroy();
  }
}

/** Logs in (md5), runs `sql`, returns its rows. */
async function loginAndQuery(opts: LoginOptions, sql: string): Promise<Array<Array<string | null>>> {
  const a = await attemptLogin(target(), opts);
  try {
    assert.equal(a.error, null, `login ${JSON.stringify(opts)} failed: ${JSON.stringify(a.error)}`);
    assert.deepEqual(a.authCodes, [AUTH.MD5, AUTH.OK]);
    const r = await a.client.query(sql);
    assert.equal(r.error, null, `${sql}: ${JSON.stringify(r.error)}`);
    return r.rows;
  } finally {
    await a.client.terminate();
  }
}

const reservedLines = (from: number): number => b.log().slice(from).match(RESERVED)?.length ?? 0;

describe('auth_dbname = pgbouncer in [databases] and for the console', () => {
  test('the file with it loads and RELOADs; every login through it fails, logged once per attempt', async () => {
    const from = b.logOffset();
    await expectTag(admin, 'RELOAD', 'RELOAD');
    const md5 = { user: 'md5_user', password: 'md5_pass' };
    // a configured database, an auto-database from `*`, and the console without a global
    // auth_dbname (its auth database is then its own: `pgbouncer`)
    await loginFails({ ...md5, database: 'reserved' }, 'bouncer config error', []);
    await loginFails({ ...md5, database: 'some_autodb' }, 'bouncer config error', []);
    await loginFails({ ...md5, database: 'pgbouncer' }, 'bouncer config error', []);
    await eventually('three reserved-auth_dbname lines', () => reservedLines(from) >= 3);
    // users in auth_file are not looked up: no auth database involved
    const rows = await loginAndQuery({ user: CONSOLE_ADMIN, password: 'cons_pw', database: 'pgbouncer' }, 'SHOW VERSION');
    assert.equal(rows.length, 1);
    assert.equal(reservedLines(from), 3);
  });
});

describe('console logins through auth_query in the global auth_dbname', () => {
  before(async () => {
    b.writeFiles(files('authdb'));
    await expectTag(admin, 'RELOAD', 'RELOAD');
  });

  test('a stats_users member found by auth_query logs in with its password, with stats rights', async () => {
    const a = await attemptLogin(target(), { user: 'md5_user', password: 'md5_pass', database: 'pgbouncer' });
    try {
      assert.equal(a.error, null, JSON.stringify(a.error));
      assert.deepEqual(a.authCodes, [AUTH.MD5, AUTH.OK]);
      assert.ok((await show(a.client, 'SHOW STATS')).some((r) => r.database === 'pgbouncer'));
      await expectAdminError(a.client, 'PAUSE', 'admin access needed');
    } finally {
      await a.client.terminate();
    }
    await loginFails({ user: 'md5_user', password: 'wrong', database: 'pgbouncer' }, 'password authentication failed', [AUTH.MD5]);
  });

  test('found but in neither admin_users nor stats_users: "not allowed" before any password', async () => {
    await loginFails({ user: 'scram_user', password: 'scram_pass', database: 'pgbouncer' }, 'not allowed', []);
  });

  test('not found by auth_query: "no such user"', async () => {
    await loginFails({ user: 'aq_nobody_here', password: 'x', database: 'pgbouncer' }, 'no such user', []);
  });

  test('a pool in front of the console logs in with the secret auth_query found', async () => {
    const rows = await loginAndQuery({ user: 'md5_user', password: 'md5_pass', database: 'selfconsole' }, 'SHOW VERSION');
    assert.match(rows[0]?.[0] ?? '', /^PgBouncer /);
  });

  test('the global auth_dbname serves the other databases; an entry\'s own auth_dbname still wins', async () => {
    const rows = await loginAndQuery({ user: 'md5_user', password: 'md5_pass', database: TEST_DB }, 'SELECT current_user');
    assert.deepEqual(rows, [['md5_user']]);
    const from = b.logOffset();
    await loginFails({ user: 'md5_user', password: 'md5_pass', database: 'reserved' }, 'bouncer config error', []);
    await eventually('the reserved-auth_dbname line', () => reservedLines(from) >= 1);
    assert.equal(reservedLines(from), 1);
  });
});

describe('the global auth_dbname = pgbouncer', () => {
  test('SET refuses it and keeps the value in force', async () => {
    const from = b.logOffset();
    await expectAdminError(admin, 'SET auth_dbname = pgbouncer', 'SET failed');
    await b.waitForLog(/ERROR invalid value "pgbouncer" for parameter auth_dbname/, 3000, from);
    // PgBouncer's reason comes first, once
    assert.equal(reservedLines(from), 1);
    const config = await show(admin, 'SHOW CONFIG');
    assert.equal(config.find((r) => r.key === 'auth_dbname')?.value, 'authdb');
    await loginAndQuery({ user: 'md5_user', password: 'md5_pass', database: 'pgbouncer' }, 'SHOW VERSION');
  });
});
