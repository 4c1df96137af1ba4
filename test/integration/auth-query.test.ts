// auth_user / auth_query / auth_dbname: users that are not in auth_file are looked up on the server
// with the extended protocol ($1 = user name), with PgBouncer 1.25's default query (pg_authid, NULL
// for expired passwords, only rolcanlogin roles) and 1.18's (pg_shadow); md5 and SCRAM secrets from
// pg_authid are used for the client and for the server login (SCRAM pass-through); NULL secrets
// never match; no row = FATAL "no such user"; per-database auth_user/auth_query/auth_dbname; query
// errors and wrong column counts.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pgClient, psql } from '../lib/clients.js';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { AUTH, attemptLogin, type LoginOptions, type WireTarget } from '../lib/wire.js';

const pg = await sharedPostgres();
let b: TestPgbun;
const EXPIRED = 'aq_expired';
const NOLOGIN = 'aq_nologin';
/** finds the user only when run in the database `postgres` */
const ONLY_IN_POSTGRES_DB = "'SELECT rolname, rolpassword FROM pg_authid WHERE rolname=$1 AND current_database() = ''postgres'''";
const SCRAM = [AUTH.SASL, AUTH.SASL_CONTINUE, AUTH.SASL_FINAL, AUTH.OK];

before(async () => {
  await pg.createRole(EXPIRED, 'expired_pw');
  await pg.query(`ALTER ROLE ${EXPIRED} VALID UNTIL '2001-01-01'`);
  await pg.createRole(NOLOGIN, 'nologin_pw');
  await pg.createRole('aq_badpw', 'the-password');
  await pg.query(`ALTER ROLE ${NOLOGIN} NOLOGIN`);
  const db = (extra: Record<string, string> = {}): string => pgConnstr(pg, { dbname: TEST_DB, ...extra });
  b = await startPgbun({
    ini: {
      pgbouncer: {
        auth_type: 'md5',
        auth_user: 'postgres', // trusted by the test PostgreSQL, not in auth_file
        server_tls_sslmode: 'disable',
        log_connections: 1,
        admin_users: 'aq_admin',
      },
      databases: {
        [TEST_DB]: db(),
        // 1.18's default query, per database
        oldquery: db({ auth_query: "'SELECT usename, passwd FROM pg_shadow WHERE usename=$1'" }),
        // the query runs in another database's pool
        viaauthdb: db({ auth_dbname: 'authdb', auth_query: ONLY_IN_POSTGRES_DB }),
        notviaauthdb: db({ auth_query: ONLY_IN_POSTGRES_DB }),
        authdb: pgConnstr(pg, { dbname: 'postgres' }),
        missingauthdb: db({ auth_dbname: 'no_such_authdb' }),
        badquery: db({ auth_query: "'SELECT no_such_column FROM pg_authid WHERE rolname=$1'" }),
        threecols: db({ auth_query: "'SELECT rolname, rolpassword, 1 FROM pg_authid WHERE rolname=$1'" }),
        // a different auth_user for one database: not allowed to read pg_authid
        weakauth: db({ auth_user: 'trust_user' }),
        // an auth_user whose auth_file password the server refuses
        badauthuser: db({ auth_user: 'aq_badpw' }),
      },
    },
    userlist: [['trust_user', ''], ['aq_admin', 'aq_admin_pw'], ['aq_badpw', 'not-the-password']],
  });
});

after(async () => {
  await b?.stop();
});

const target = (): WireTarget => ({ host: b.host, port: b.port });

async function loginOk(opts: LoginOptions, codes: number[]): Promise<void> {
  const a = await attemptLogin(target(), { database: TEST_DB, ...opts });
  try {
    assert.equal(a.error, null, `login ${JSON.stringify(opts)} failed: ${JSON.stringify(a.error)}`);
    assert.deepEqual(a.authCodes, codes);
    const r = await a.client.query('SELECT current_user');
    assert.deepEqual(r.rows, [[opts.user]]);
  } finally {
    await a.client.terminate();
  }
}

async function loginFails(opts: LoginOptions, message: string, codes?: number[]): Promise<void> {
  const a = await attemptLogin(target(), { database: TEST_DB, ...opts });
  try {
    assert.deepEqual(a.error?.fields, { S: 'FATAL', C: '08P01', M: message }, `login ${JSON.stringify(opts)}`);
    if (codes) assert.deepEqual(a.authCodes, codes);
    await a.client.waitClose(3000);
  } finally {
    a.client.destroy();
  }
}

describe('auth_query with the default query (pg_authid)', () => {
  test('md5 secret: md5 exchange with the client, md5 login to the server', async () => {
    await loginOk({ user: 'md5_user', password: 'md5_pass' }, [AUTH.MD5, AUTH.OK]);
    await loginFails({ user: 'md5_user', password: 'wrong' }, 'password authentication failed', [AUTH.MD5]);
  });

  test('SCRAM secret: SCRAM with the client, pass-through to the server (psql, pg driver)', async () => {
    await loginOk({ user: 'scram_user', password: 'scram_pass' }, SCRAM);
    await loginFails({ user: 'scram_user', password: 'wrong' }, 'SASL authentication failed');
    const r = await psql({ host: b.host, port: b.port, user: 'scram_user', password: 'scram_pass', database: TEST_DB }, 'SELECT current_user');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.rows, [['scram_user']]);
    const c = await pgClient({ host: b.host, port: b.port, user: 'scram_user', password: 'scram_pass', database: TEST_DB });
    try {
      assert.equal((await c.query('SELECT current_user AS u')).rows[0].u, 'scram_user');
    } finally {
      await c.end();
    }
  });

  test('an expired password is NULL: no password matches', async () => {
    await loginFails({ user: EXPIRED, password: 'expired_pw' }, 'password authentication failed', [AUTH.MD5]);
  });

  test('no row (unknown role, NOLOGIN role): FATAL "no such user" before any password', async () => {
    await loginFails({ user: 'aq_nobody', password: 'x' }, 'no such user', []);
    await loginFails({ user: NOLOGIN, password: 'nologin_pw' }, 'no such user', []);
  });

  test('a user in auth_file is not looked up (its empty password never matches)', async () => {
    await loginFails({ user: 'trust_user', password: 'x' }, 'password authentication failed', [AUTH.MD5]);
  });
});

describe('auth_query settings', () => {
  test("1.18's default query (pg_shadow) per database", async () => {
    await loginOk({ user: 'md5_user', password: 'md5_pass', database: 'oldquery' }, [AUTH.MD5, AUTH.OK]);
    await loginFails({ user: 'aq_nobody', password: 'x', database: 'oldquery' }, 'no such user');
  });

  test('auth_dbname: the query runs in the pool of that database', async () => {
    await loginOk({ user: 'md5_user', password: 'md5_pass', database: 'viaauthdb' }, [AUTH.MD5, AUTH.OK]);
    // the same query in the client's own database finds nobody
    await loginFails({ user: 'md5_user', password: 'md5_pass', database: 'notviaauthdb' }, 'no such user');
  });

  test('an auth_dbname that is not configured: "bouncer config error"', async () => {
    const off = b.logOffset();
    await loginFails({ user: 'md5_user', password: 'md5_pass', database: 'missingauthdb' }, 'bouncer config error');
    await b.waitForLog(/authentication database "no_such_authdb" is not configured\./, 3000, off);
  });

  test('a disabled auth_dbname: "authentication database "X" is disabled"', async () => {
    const admin = async (cmd: string): Promise<void> => {
      const a = await attemptLogin(target(), { user: 'aq_admin', password: 'aq_admin_pw', database: 'pgbouncer' });
      try {
        assert.equal(a.error, null, JSON.stringify(a.error));
        const r = await a.client.query(cmd);
        assert.equal(r.error, null, JSON.stringify(r.error));
      } finally {
        await a.client.terminate();
      }
    };
    await admin('DISABLE authdb');
    try {
      await loginFails({ user: 'md5_user', password: 'md5_pass', database: 'viaauthdb' }, 'authentication database "authdb" is disabled');
    } finally {
      await admin('ENABLE authdb');
    }
    await loginOk({ user: 'md5_user', password: 'md5_pass', database: 'viaauthdb' }, [AUTH.MD5, AUTH.OK]);
  });

  test('a failing query: the server is closed, the client told only "bouncer config error"; two columns are required', async () => {
    // PgBouncer tells a client that is not logged in yet the generic message; the log says why
    let off = b.logOffset();
    await loginFails({ user: 'md5_user', password: 'md5_pass', database: 'badquery' }, 'bouncer config error');
    await b.waitForLog(/S: error in auth_query: ERROR column "no_such_column" does not exist/, 3000, off);
    await b.waitForLog(/S-\w+: badquery\/postgres@[^ ]+ closing because: auth_query failed/, 3000, off);
    off = b.logOffset();
    await loginFails({ user: 'md5_user', password: 'md5_pass', database: 'threecols' }, 'bouncer config error');
    await b.waitForLog(/closing because: expected 2 columns from auth_query, not 3/, 3000, off);
    // pgbun goes on serving
    await loginOk({ user: 'md5_user', password: 'md5_pass' }, [AUTH.MD5, AUTH.OK]);
  });

  test('a per-database auth_user without the rights to read pg_authid: the query fails', async () => {
    const off = b.logOffset();
    await loginFails({ user: 'md5_user', password: 'md5_pass', database: 'weakauth' }, 'bouncer config error');
    await b.waitForLog(/S: error in auth_query: ERROR permission denied/, 3000, off);
  });

  test('the auth_user cannot log in to the server: its error reaches the waiting client', async () => {
    const a = await attemptLogin(target(), { user: 'md5_user', password: 'md5_pass', database: 'badauthuser' });
    try {
      assert.equal(a.error?.S, 'FATAL');
      assert.equal(a.error?.C, '28P01');
      assert.equal(a.error?.M, 'password authentication failed for user "aq_badpw"');
      assert.deepEqual(a.authCodes, []);
    } finally {
      a.client.destroy();
    }
  });

  test('unknown database: mock authentication, no auth_query', async () => {
    await loginFails({ user: 'md5_user', password: 'md5_pass', database: 'no_such_db_here' }, 'no such database: no_such_db_here', [AUTH.MD5]);
  });
});
