// Client authentication (trust, plain, md5, scram-sha-256) against every
// kind of userlist secret (plain, md5, SCRAM copied from pg_authid), server logins to roles that
// PostgreSQL authenticates with SCRAM, md5 and trust, and every failure with PgBouncer's exact
// answer: pgbun's own errors are FATAL 08P01 with only S/C/M fields,
// unknown users and databases are not revealed, server login errors are relayed with the
// server's SQLSTATE.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pgClient, psql } from '../lib/clients.js';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { sleep } from '../lib/procs.js';
import {
  AUTH,
  attemptLogin,
  md5ClientResponse,
  passwordMessage,
  query as queryMsg,
  saslInitialResponse,
  ScramClient,
  WireClient,
  type LoginAttempt,
  type LoginOptions,
  type PgError,
} from '../lib/wire.js';

const pg = await sharedPostgres();

const PLAIN = 'it_auth_plain'; // server SCRAM; userlist holds the plain password
const PLAIN_PW = 'au_plain_pw';
const STALE = 'it_auth_stale'; // server SCRAM with another password than the userlist's
const RETRY = 'it_auth_retry'; // password changed on the server while pgbun runs
const GONE_DB = 'it_auth_no_such_db';
const SCRAM_CODES = [AUTH.SASL, AUTH.SASL_CONTINUE, AUTH.SASL_FINAL, AUTH.OK];

const bouncers: TestPgbun[] = [];
let md5B: TestPgbun;
let scramB: TestPgbun;
let plainB: TestPgbun;
let trustB: TestPgbun;
let failB: TestPgbun;

const target = (b: TestPgbun) => ({ host: b.host, port: b.port });
const attempt = (b: TestPgbun, opts: LoginOptions): Promise<LoginAttempt> => attemptLogin(target(b), { database: TEST_DB, ...opts });

/** A successful login whose session runs a query as `user`. */
async function assertLogin(b: TestPgbun, opts: LoginOptions, codes: number[]): Promise<void> {
  const a = await attempt(b, opts);
  try {
    assert.equal(a.error, null, `login of ${opts.user} failed: ${JSON.stringify(a.error)}`);
    assert.deepEqual(a.authCodes, codes);
    assert.equal(a.login!.status, 'I');
    const r = await a.client.query('SELECT current_user, current_database()');
    assert.equal(r.error, null, JSON.stringify(r.error));
    assert.deepEqual(r.rows, [[opts.user, TEST_DB]]);
  } finally {
    await a.client.terminate();
  }
}

/** pgbun's own FATAL: exact text, 08P01 (unless `code`), only S/C/M, then the connection closes. */
async function assertOwnFatal(a: LoginAttempt, message: string, code = '08P01'): Promise<void> {
  try {
    assert.ok(a.error, `expected FATAL "${message}", but the login succeeded`);
    assert.deepEqual(a.error.fields, { S: 'FATAL', C: code, M: message });
    await a.client.waitClose(3000);
  } finally {
    a.client.destroy();
  }
}

/** The client keeps working after a failure: a fresh login + query through the same pgbun. */
async function assertServing(b: TestPgbun): Promise<void> {
  assert.equal(b.proc.exitCode, null, 'pgbun exited');
  const user = b === trustB ? 'trust_user' : 'md5_user';
  const password = b === trustB ? undefined : 'md5_pass';
  if (b === scramB) return assertLogin(b, { user: 'scram_user', password: 'scram_pass' }, SCRAM_CODES);
  const a = await attempt(b, { user, password });
  assert.equal(a.error, null, JSON.stringify(a.error));
  assert.deepEqual((await a.client.query('SELECT 1')).rows, [['1']]);
  await a.client.terminate();
}

before(async () => {
  await pg.createRole(PLAIN, PLAIN_PW);
  await pg.createRole(STALE, 'the_real_pw');
  await pg.createRole(RETRY, 'retry_pw_1');
  const scram = await pg.secretOf('scram_user');
  const md5 = await pg.secretOf('md5_user');
  const databases = {
    [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB }),
    gonedb: pgConnstr(pg, { dbname: GONE_DB }),
  };
  const start = async (pgbouncer: Record<string, string | number>, userlist: Array<[string, string]>, extra: Record<string, Record<string, string>> = {}) => {
    const b = await startPgbun({ ini: { databases, ...extra, pgbouncer: { pool_mode: 'session', ...pgbouncer } }, userlist });
    bouncers.push(b);
    return b;
  };
  [md5B, scramB, plainB, trustB, failB] = await Promise.all([
    start({ auth_type: 'md5' }, [
      ['scram_user', scram],
      ['md5_user', md5],
      ['trust_user', 'trust_pass'],
      [PLAIN, PLAIN_PW],
      [STALE, 'stale_pw'],
    ]),
    start({ auth_type: 'scram-sha-256' }, [
      ['scram_user', scram],
      ['md5_user', md5],
      [PLAIN, PLAIN_PW],
    ]),
    start({ auth_type: 'plain' }, [
      ['scram_user', scram],
      ['md5_user', md5],
      [PLAIN, PLAIN_PW],
    ]),
    start(
      { auth_type: 'trust' },
      [
        ['trust_user', ''],
        ['md5_user', md5],
        ['scram_user', scram],
      ],
      { users: { it_auth_users_only: 'pool_mode=session' } },
    ),
    // short timeouts for the server-login failure cases
    start({ auth_type: 'md5', client_login_timeout: 3, query_wait_timeout: 3, server_login_retry: 30 }, [
      ['md5_user', md5],
      [RETRY, 'retry_pw_1'],
    ]),
  ]);
});

after(async () => {
  for (const b of bouncers) await b.stop();
  for (const r of [PLAIN, STALE, RETRY]) await pg.query(`DROP ROLE IF EXISTS ${r}`).catch(() => {});
});

describe('auth_type = md5', () => {
  test('md5 secret: AuthenticationMD5Password, server login by md5 (md5_user)', async () => {
    await assertLogin(md5B, { user: 'md5_user', password: 'md5_pass' }, [AUTH.MD5, AUTH.OK]);
  });

  test('SCRAM secret from pg_authid: falls back to SCRAM-SHA-256, server login by SCRAM pass-through', async () => {
    const a = await attempt(md5B, { user: 'scram_user', password: 'scram_pass' });
    assert.equal(a.error, null, JSON.stringify(a.error));
    assert.deepEqual(a.authCodes, SCRAM_CODES);
    assert.deepEqual(a.mechanisms, ['SCRAM-SHA-256']);
    assert.deepEqual((await a.client.query('SELECT current_user')).rows, [['scram_user']]);
    await a.client.terminate();
  });

  test('plain secret: md5 challenge; server login by SCRAM (role with SCRAM) and trust (trust_user)', async () => {
    await assertLogin(md5B, { user: PLAIN, password: PLAIN_PW }, [AUTH.MD5, AUTH.OK]);
    await assertLogin(md5B, { user: 'trust_user', password: 'trust_pass' }, [AUTH.MD5, AUTH.OK]);
  });

  test('wrong password: FATAL 08P01 "password authentication failed" (md5 and plain secrets)', async () => {
    for (const user of ['md5_user', PLAIN]) {
      const off = md5B.logOffset();
      const a = await attempt(md5B, { user, password: 'wrong' });
      assert.deepEqual(a.authCodes, [AUTH.MD5]);
      await assertOwnFatal(a, 'password authentication failed');
      await md5B.waitForLog(new RegExp(`C-0x[0-9a-f]+: ${TEST_DB}/${user}@127\\.0\\.0\\.1:\\d+ closing because: password authentication failed \\(age=\\d+s\\)$`), 3000, off);
    }
    await assertServing(md5B);
  });

  test('wrong password with a SCRAM secret: "SASL authentication failed"', async () => {
    const a = await attempt(md5B, { user: 'scram_user', password: 'wrong' });
    assert.deepEqual(a.authCodes, [AUTH.SASL, AUTH.SASL_CONTINUE]);
    await assertOwnFatal(a, 'SASL authentication failed');
  });

  test('unknown user: full mock md5 exchange, then "password authentication failed"', async () => {
    const a = await attempt(md5B, { user: 'it_auth_nobody', password: 'whatever' });
    assert.deepEqual(a.authCodes, [AUTH.MD5]);
    await assertOwnFatal(a, 'password authentication failed');
    // the same through psql and the pg driver
    const p = await psql(md5B.conn('it_auth_nobody', 'whatever', TEST_DB), 'SELECT 1');
    assert.equal(p.code, 2);
    assert.match(p.stderr, /FATAL: {2}password authentication failed\n/);
    await assert.rejects(pgClient(md5B.conn('it_auth_nobody', 'whatever', TEST_DB)), (e: PgError & { code?: string; message: string }) => {
      assert.equal(e.code, '08P01');
      assert.equal(e.message, 'password authentication failed');
      return true;
    });
  });

  test('unknown database: "no such database" only after a correct password', async () => {
    const ok = await attempt(md5B, { user: 'md5_user', password: 'md5_pass', database: 'it_auth_nodb' });
    assert.deepEqual(ok.authCodes, [AUTH.MD5]); // no AuthenticationOk before the error
    await assertOwnFatal(ok, 'no such database: it_auth_nodb');
    const wrong = await attempt(md5B, { user: 'md5_user', password: 'wrong', database: 'it_auth_nodb' });
    await assertOwnFatal(wrong, 'password authentication failed');
    const nobody = await attempt(md5B, { user: 'it_auth_nobody', password: 'x', database: 'it_auth_nodb' });
    assert.deepEqual(nobody.authCodes, [AUTH.MD5]);
    await assertOwnFatal(nobody, 'password authentication failed');
    await assertServing(md5B);
  });

  test('md5 response of the wrong length / garbage: "password authentication failed"', async () => {
    const c = await WireClient.connect(target(md5B));
    await c.startup({ user: 'md5_user', database: TEST_DB });
    const m = await c.readMessage();
    assert.equal(m.type, 'R');
    assert.equal(m.body.readInt32BE(0), AUTH.MD5);
    // a correct answer for another salt
    await c.write(passwordMessage(md5ClientResponse('md5_pass', 'md5_user', Buffer.from([1, 2, 3, 4]))));
    await c.expectError({ severity: 'FATAL', code: '08P01', message: 'password authentication failed', onlySCM: true });
    c.destroy();
  });
});

describe('auth_type = scram-sha-256', () => {
  test('SCRAM secret: SASL offering only SCRAM-SHA-256; server signature verified by the client', async () => {
    const a = await attempt(scramB, { user: 'scram_user', password: 'scram_pass' });
    assert.equal(a.error, null, JSON.stringify(a.error));
    assert.deepEqual(a.authCodes, SCRAM_CODES);
    assert.deepEqual(a.mechanisms, ['SCRAM-SHA-256']);
    // the SCRAM exchange uses the stored secret's salt and iterations
    const secret = await pg.secretOf('scram_user');
    const [, iter, salt] = /^SCRAM-SHA-256\$(\d+):([^$]+)\$/.exec(secret)!;
    assert.match(a.serverFirst!, new RegExp(`,s=${salt.replace(/[+/=]/g, '\\$&')},i=${iter}$`));
    assert.deepEqual((await a.client.query('SELECT current_user')).rows, [['scram_user']]);
    await a.client.terminate();
  });

  test('plain secret: ad-hoc SCRAM secret for the client, SCRAM from the password to the server', async () => {
    await assertLogin(scramB, { user: PLAIN, password: PLAIN_PW }, SCRAM_CODES);
  });

  test('md5 secret cannot do SCRAM: "SASL authentication failed" even with the right password', async () => {
    const a = await attempt(scramB, { user: 'md5_user', password: 'md5_pass' });
    assert.equal(a.authCodes[0], AUTH.SASL);
    await assertOwnFatal(a, 'SASL authentication failed');
  });

  test('wrong password: "SASL authentication failed" after server-first', async () => {
    for (const user of ['scram_user', PLAIN]) {
      const a = await attempt(scramB, { user, password: 'wrong' });
      assert.deepEqual(a.authCodes, [AUTH.SASL, AUTH.SASL_CONTINUE]);
      await assertOwnFatal(a, 'SASL authentication failed');
    }
    await assertServing(scramB);
  });

  test('unknown user: mock SCRAM exchange with a salt stable per user name, then "SASL authentication failed"', async () => {
    const a1 = await attempt(scramB, { user: 'it_auth_nobody', password: 'x' });
    assert.deepEqual(a1.authCodes, [AUTH.SASL, AUTH.SASL_CONTINUE]);
    await assertOwnFatal(a1, 'SASL authentication failed');
    const a2 = await attempt(scramB, { user: 'it_auth_nobody', password: 'y' });
    await assertOwnFatal(a2, 'SASL authentication failed');
    const salt = (sf?: string) => /,s=([^,]+),i=(\d+)$/.exec(sf ?? '')?.slice(1);
    assert.ok(salt(a1.serverFirst), `server-first: ${a1.serverFirst}`);
    assert.deepEqual(salt(a1.serverFirst), salt(a2.serverFirst));
    const other = await attempt(scramB, { user: 'it_auth_nobody2', password: 'x' });
    await assertOwnFatal(other, 'SASL authentication failed');
    assert.notDeepEqual(salt(other.serverFirst), salt(a1.serverFirst));
  });

  test('unknown database after a correct SCRAM exchange: "no such database"', async () => {
    const a = await attempt(scramB, { user: 'scram_user', password: 'scram_pass', database: 'it_auth_nodb' });
    await assertOwnFatal(a, 'no such database: it_auth_nodb');
    const w = await attempt(scramB, { user: 'scram_user', password: 'wrong', database: 'it_auth_nodb' });
    await assertOwnFatal(w, 'SASL authentication failed');
  });

  test('a SASL mechanism other than SCRAM-SHA-256: "client selected an invalid SASL authentication mechanism"', async () => {
    const c = await WireClient.connect(target(scramB));
    await c.startup({ user: 'scram_user', database: TEST_DB });
    const m = await c.readMessage();
    assert.equal(m.body.readInt32BE(0), AUTH.SASL);
    await c.write(saslInitialResponse('SCRAM-SHA-256-PLUS', new ScramClient({ password: 'scram_pass' }).clientFirst()));
    await c.expectError({ severity: 'FATAL', code: '08P01', message: 'client selected an invalid SASL authentication mechanism', onlySCM: true });
    c.destroy();
    await assertServing(scramB);
  });

  test('pg driver and psql log in with SCRAM and see the SASL error text on a wrong password', async () => {
    const c = await pgClient(scramB.conn('scram_user', 'scram_pass', TEST_DB));
    assert.equal((await c.query('SELECT current_user AS u')).rows[0].u, 'scram_user');
    await c.end();
    const p = await psql(scramB.conn('scram_user', 'wrong', TEST_DB), 'SELECT 1');
    assert.equal(p.code, 2);
    assert.match(p.stderr, /FATAL: {2}SASL authentication failed\n/);
  });
});

describe('auth_type = plain', () => {
  test('cleartext password checked against md5 and plain secrets', async () => {
    await assertLogin(plainB, { user: 'md5_user', password: 'md5_pass' }, [AUTH.CLEARTEXT, AUTH.OK]);
    await assertLogin(plainB, { user: PLAIN, password: PLAIN_PW }, [AUTH.CLEARTEXT, AUTH.OK]);
  });

  test('SCRAM secret without a SCRAM client exchange: "server login failed: wrong password type"', async () => {
    const a = await attempt(plainB, { user: 'scram_user', password: 'scram_pass' });
    await assertOwnFatal(a, 'server login failed: wrong password type');
  });

  test('wrong, empty and unknown-user passwords', async () => {
    const wrong = await attempt(plainB, { user: 'md5_user', password: 'wrong' });
    assert.deepEqual(wrong.authCodes, [AUTH.CLEARTEXT]);
    await assertOwnFatal(wrong, 'password authentication failed');
    const empty = await attempt(plainB, { user: 'md5_user', password: '' });
    await assertOwnFatal(empty, 'empty password returned by client');
    const nobody = await attempt(plainB, { user: 'it_auth_nobody', password: 'x' });
    assert.deepEqual(nobody.authCodes, [AUTH.CLEARTEXT]);
    await assertOwnFatal(nobody, 'password authentication failed');
    await assertServing(plainB);
  });
});

describe('auth_type = trust', () => {
  test('users in auth_file log in without a password; server login by trust and by the md5 secret', async () => {
    await assertLogin(trustB, { user: 'trust_user' }, [AUTH.OK]);
    await assertLogin(trustB, { user: 'md5_user' }, [AUTH.OK]);
  });

  test('a user not in auth_file (also one only in [users]): "trust" authentication failed', async () => {
    for (const user of ['it_auth_nobody', 'it_auth_users_only']) {
      const a = await attempt(trustB, { user });
      assert.deepEqual(a.authCodes, []);
      await assertOwnFatal(a, '"trust" authentication failed');
    }
    await assertServing(trustB);
  });

  test('unknown database: "no such database"', async () => {
    await assertOwnFatal(await attempt(trustB, { user: 'trust_user', database: 'it_auth_nodb' }), 'no such database: it_auth_nodb');
  });

  test('SCRAM secret but the server wants SCRAM and the client did none: "server login failed: wrong password type"', async () => {
    const off = trustB.logOffset();
    await assertOwnFatal(await attempt(trustB, { user: 'scram_user' }), 'server login failed: wrong password type');
    await trustB.waitForLog(/closing because: server login failed: wrong password type \(age=\d+s\)/, 3000, off);
    await assertServing(trustB);
  });
});

describe('server login failures', () => {
  test('a [databases] entry naming a database missing on the server: the server error with SQLSTATE 3D000', async () => {
    const off = failB.logOffset();
    const a = await attempt(failB, { user: 'md5_user', password: 'md5_pass', database: 'gonedb' });
    await assertOwnFatal(a, `database "${GONE_DB}" does not exist`, '3D000');
    await failB.waitForLog(new RegExp(`C-0x[0-9a-f]+: gonedb/md5_user@\\S+ closing because: database "${GONE_DB}" does not exist \\(age=\\d+s\\)`), 3000, off);
    // PgBouncer 1.25 closes the server with the server's message too (1.18 said "login failed")
    await failB.waitForLog(new RegExp(`S-0x[0-9a-f]+: gonedb/md5_user@\\S+ closing because: database "${GONE_DB}" does not exist \\(age=\\d+s\\)`), 3000, off);
  });

  test('the userlist password is stale: the server\'s 28P01 relayed', async () => {
    const a = await attempt(md5B, { user: STALE, password: 'stale_pw' });
    assert.deepEqual(a.authCodes, [AUTH.MD5]);
    await assertOwnFatal(a, `password authentication failed for user "${STALE}"`, '28P01');
    await assertServing(md5B);
  });

  test('within server_login_retry: a new client of a pool without a server waits, then "client_login_timeout (server down)"; a queued client gets the server\'s error, a later one the cached error', async () => {
    // 1) pool gonedb already failed its login (previous test): the next client waits for the
    //    welcome until client_login_timeout (3 s), no new server login before server_login_retry
    const goneNext = (async () => {
      const started = Date.now();
      const a = await attempt(failB, { user: 'md5_user', password: 'md5_pass', database: 'gonedb', timeoutMs: 10_000 });
      assert.deepEqual(a.authCodes, [AUTH.MD5]);
      assert.ok(Date.now() - started >= 2000, `answered after ${Date.now() - started} ms`);
      await assertOwnFatal(a, 'client_login_timeout (server down)');
    })();

    // 2) pool (testdb, RETRY) has a welcome; its only server goes away and the role's password
    //    changes on the server: the next server login fails.
    const first = await attempt(failB, { user: RETRY, password: 'retry_pw_1' });
    assert.equal(first.error, null, JSON.stringify(first.error));
    const pid = (await first.client.query('SELECT pg_backend_pid()')).rows[0][0];
    await first.client.terminate();
    let off = failB.logOffset();
    await pg.query(`SELECT pg_terminate_backend(${pid})`);
    await failB.waitForLog(new RegExp(`S-0x[0-9a-f]+: ${TEST_DB}/${RETRY}@\\S+ closing because: `), 5000, off);
    await pg.query(`ALTER ROLE ${RETRY} PASSWORD 'retry_pw_2'`);
    off = failB.logOffset();
    const second = await attempt(failB, { user: RETRY, password: 'retry_pw_1' });
    assert.equal(second.error, null, 'login to pgbun itself works (welcome cached)');
    await second.client.write(queryMsg('SELECT 1'));
    const secondError = second.client.expectError({ timeoutMs: 10_000 });
    secondError.catch(() => {});
    await failB.waitForLog(/login failed: FATAL password authentication failed for user/, 5000, off);
    await sleep(100);
    // a third client: logged in, needs a server, the pool has none and its last login failed
    const third = await attempt(failB, { user: RETRY, password: 'retry_pw_1' });
    assert.equal(third.error, null);
    await third.client.write(queryMsg('SELECT 2'));
    const err = await third.client.expectError({ timeoutMs: 3000 });
    assert.deepEqual(err.fields, {
      S: 'FATAL',
      C: '08P01',
      M: `server login has been failing, cached error: password authentication failed for user "${RETRY}" (server_login_retry)`,
    });
    await third.client.waitClose();
    third.client.destroy();
    // the second one was queued for the server whose login failed: it got the server's error
    // at once, with the server's SQLSTATE (PgBouncer relays it to every client waiting in the pool)
    assert.deepEqual((await secondError).fields, { S: 'FATAL', C: '28P01', M: `password authentication failed for user "${RETRY}"` });
    second.client.destroy();
    await failB.waitForLog(new RegExp(`C-0x[0-9a-f]+: ${TEST_DB}/${RETRY}@\\S+ closing because: password authentication failed for user "${RETRY}" \\(age=\\d+s\\)`), 5000, off);
    await goneNext;
    await assertServing(failB);
  });
});
