// SCRAM pass-through. The userlist holds only the SCRAM secret copied
// from pg_authid (PostgreSQL has the same secret): a client's SCRAM proof gives pgbun the
// ClientKey, with which it logs in to PostgreSQL (several server connections, psql, pgbench)
// and verifies the server's signature with the stored ServerKey. Where pass-through is
// impossible the errors are exact: a forced user= gets `server login failed: wrong password
// type`, an md5-only server the same, a secret the server does not share the server's 28P01.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pgbench, pgPool, psql } from '../lib/clients.js';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { AUTH, attemptLogin, type LoginOptions } from '../lib/wire.js';
import { buildScramSecret } from '../../src/auth/scram.js';

const pg = await sharedPostgres();
let b: TestPgbun;
const PT = 'pt_user';
const PT_PW = 'pt_pass';
const OTHER = 'pt_other'; // the server's secret has another salt than the userlist's
const SCRAM = [AUTH.SASL, AUTH.SASL_CONTINUE, AUTH.SASL_FINAL, AUTH.OK];

before(async () => {
  await pg.createRole(PT, PT_PW);
  await pg.createRole(OTHER, 'other_pw');
  const ptSecret = await pg.secretOf(PT);
  assert.match(ptSecret, /^SCRAM-SHA-256\$4096:/);
  b = await startPgbun({
    ini: {
      pgbouncer: { auth_type: 'scram-sha-256', server_tls_sslmode: 'disable', pool_mode: 'session' },
      databases: {
        [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB }),
        forced: pgConnstr(pg, { dbname: TEST_DB, user: PT }),
        // md5_user: the server asks md5, which a SCRAM secret cannot answer
        md5db: pgConnstr(pg, { dbname: TEST_DB }),
      },
    },
    userlist: [
      [PT, ptSecret],
      [OTHER, buildScramSecret('other_pw', 4096)],
      ['md5_user', buildScramSecret('md5_pass', 4096)],
    ],
  });
});

after(async () => {
  await b?.stop();
});

async function attempt(opts: LoginOptions) {
  return attemptLogin({ host: b.host, port: b.port }, { database: TEST_DB, ...opts });
}

describe('SCRAM pass-through', () => {
  test('the client proves the password; pgbun logs in to PostgreSQL with the recovered ClientKey', async () => {
    const a = await attempt({ user: PT, password: PT_PW });
    try {
      assert.equal(a.error, null, JSON.stringify(a.error));
      assert.deepEqual(a.authCodes, SCRAM);
      const r = await a.client.query('SELECT current_user');
      assert.deepEqual(r.rows, [[PT]]);
    } finally {
      await a.client.terminate();
    }
  });

  test('several server connections log in with the keys (pg pool of 4 in parallel, psql, pgbench)', async () => {
    const pool = pgPool({ host: b.host, port: b.port, user: PT, password: PT_PW, database: TEST_DB }, { max: 4 });
    try {
      const rs = await Promise.all([0, 1, 2, 3].map(() => pool.query('SELECT pg_backend_pid() AS pid, pg_sleep(0.2)')));
      assert.equal(new Set(rs.map((r) => r.rows[0].pid)).size, 4, 'four server connections');
    } finally {
      await pool.end();
    }
    const r = await psql({ host: b.host, port: b.port, user: PT, password: PT_PW, database: TEST_DB }, 'SELECT current_user');
    assert.equal(r.code, 0, r.stderr);
    const script = path.join(b.dir, 'select1.sql');
    fs.writeFileSync(script, 'SELECT 1;\n');
    const bench = await pgbench({ host: b.host, port: b.port, user: PT, password: PT_PW, database: TEST_DB }, ['-n', '-f', script, '-c', '3', '-t', '20']);
    assert.equal(bench.code, 0, bench.stderr + bench.stdout);
    assert.equal(bench.summary.transactions, 60);
  });

  test('a wrong password never reaches the server: "SASL authentication failed"', async () => {
    const a = await attempt({ user: PT, password: 'wrong' });
    try {
      assert.deepEqual(a.error?.fields, { S: 'FATAL', C: '08P01', M: 'SASL authentication failed' });
    } finally {
      a.client.destroy();
    }
  });

  test('a forced user= database: "server login failed: wrong password type"', async () => {
    const a = await attempt({ user: PT, password: PT_PW, database: 'forced' });
    try {
      assert.deepEqual(a.error?.fields, { S: 'FATAL', C: '08P01', M: 'server login failed: wrong password type' });
    } finally {
      a.client.destroy();
    }
  });

  test('a server that asks for md5: "server login failed: wrong password type"', async () => {
    const a = await attempt({ user: 'md5_user', password: 'md5_pass', database: 'md5db' });
    try {
      assert.deepEqual(a.authCodes, SCRAM.slice(0, 3));
      assert.deepEqual(a.error?.fields, { S: 'FATAL', C: '08P01', M: 'server login failed: wrong password type' });
    } finally {
      a.client.destroy();
    }
  });

  test('the server has another secret for the same password: its own 28P01 reaches the client', async () => {
    const a = await attempt({ user: OTHER, password: 'other_pw' });
    try {
      assert.equal(a.error?.S, 'FATAL');
      assert.equal(a.error?.C, '28P01');
      assert.equal(a.error?.M, `password authentication failed for user "${OTHER}"`);
    } finally {
      a.client.destroy();
    }
  });
});
