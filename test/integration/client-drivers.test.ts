// Real clients through pgbun in session mode, configured by a pgbouncer.ini
// written for PgBouncer (auth_type scram-sha-256 and md5, a userlist holding SCRAM, md5 and plain
// secrets, PgBouncer's default pool sizes): psql, pgbench (-S and TPC-B, -M simple / extended /
// prepared, -C), and the `pg` and `postgres` npm drivers, with zero failed transactions.
//
// Runtime budget: one 30 s `pgbench -c 50 -j 2 -T 30 -S`, every other
// run is a few seconds.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  assertPgbenchClean,
  pgbench,
  pgClient,
  pgPool,
  postgresJs,
  psql,
  psqlRaw,
  type PgbenchResult,
} from '../lib/clients.js';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { AUTH, wireLogin } from '../lib/wire.js';

const pg = await sharedPostgres();
const PLAIN_ROLE = 'it_clients_plain'; // server: SCRAM; userlist: the plain password
const PLAIN_PW = 'plain_pw_1';

let scramBouncer: TestPgbun; // auth_type = scram-sha-256
let md5Bouncer: TestPgbun; // auth_type = md5

/** pgbun must still run, and must not have reported a pooler error to any client. */
function assertHealthy(b: TestPgbun, from = 0): void {
  assert.equal(b.proc.exitCode, null, `pgbun exited:\n${b.stderr()}`);
  assert.equal(b.proc.signalCode, null);
  const bad = b
    .log()
    .slice(from)
    .split('\n')
    .filter((l) => / (ERROR|FATAL|WARNING) /.test(l) || /pooler error/.test(l));
  assert.deepEqual(bad, [], 'pgbun log has errors');
}

function assertBench(r: PgbenchResult, expect: { clients: number; mode: string; type: string }): void {
  const ctx = assertPgbenchClean(r);
  assert.equal(r.summary.clients, expect.clients, ctx);
  assert.equal(r.summary.queryMode, expect.mode, ctx);
  assert.equal(r.summary.transactionType, expect.type, ctx);
  assert.doesNotMatch(r.stderr, /ERROR|FATAL|server closed the connection/, ctx);
}

const SELECT_ONLY = '<builtin: select only>';
const TPCB = '<builtin: TPC-B (sort of)>';

before(async () => {
  const benchdb = await pg.ensurePgbench();
  await pg.createRole(PLAIN_ROLE, PLAIN_PW, { stored: 'scram-sha-256' });
  await pg.query(`GRANT pgbench_owner TO ${PLAIN_ROLE}`);
  const scram = await pg.secretOf('scram_user');
  const md5 = await pg.secretOf('md5_user');
  const databases = {
    [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB }),
    benchdb: pgConnstr(pg, { dbname: benchdb }),
  };
  // As an operator writes it for PgBouncer: everything else at PgBouncer's defaults
  // (default_pool_size 20, max_client_conn 100, server_reset_query DISCARD ALL).
  scramBouncer = await startPgbun({
    ini: { databases, pgbouncer: { auth_type: 'scram-sha-256', pool_mode: 'session' } },
    userlist: [
      ['scram_user', scram],
      [PLAIN_ROLE, PLAIN_PW],
    ],
  });
  md5Bouncer = await startPgbun({
    ini: { databases, pgbouncer: { auth_type: 'md5', pool_mode: 'session' } },
    userlist: [
      ['scram_user', scram],
      ['md5_user', md5],
      [PLAIN_ROLE, PLAIN_PW],
    ],
  });
});

after(async () => {
  await scramBouncer?.stop();
  await md5Bouncer?.stop();
  await pg.query(`DROP ROLE IF EXISTS ${PLAIN_ROLE}`).catch(() => {});
});

describe('pgbench through pgbun (session mode)', () => {
  test('pgbench -c 50 -j 2 -T 30 -S (scram-sha-256, SCRAM secret, default pool size 20): zero failed', async () => {
    const off = scramBouncer.logOffset();
    const r = await pgbench(scramBouncer.conn('scram_user', 'scram_pass', 'benchdb'), ['-S', '-c', '50', '-j', '2', '-T', '30'], {
      timeoutMs: 120_000,
    });
    assertBench(r, { clients: 50, mode: 'simple', type: SELECT_ONLY });
    assert.equal(r.summary.threads, 2);
    // at least a few hundred transactions per second even on a loaded CI machine
    assert.ok(r.summary.transactions! > 3000, `only ${r.summary.transactions} transactions in 30 s`);
    assertHealthy(scramBouncer, off);
    // 50 clients logged in, plus pgbench's own first connection (scale check, vacuum)
    const logins = scramBouncer.log().slice(off).match(/login attempt: db=benchdb user=scram_user tls=no replication=no/g) ?? [];
    assert.equal(logins.length, 51);
    // the pool never exceeded default_pool_size = 20 server connections
    const servers = scramBouncer.log().slice(off).match(/S-0x[0-9a-f]+: benchdb\/scram_user@\S+ new connection to server/g) ?? [];
    assert.ok(servers.length >= 1 && servers.length <= 20, `${servers.length} server connections opened`);
  });

  test('default TPC-B (with its vacuum step), md5 auth with an md5 secret: zero failed', async () => {
    const off = md5Bouncer.logOffset();
    const r = await pgbench(md5Bouncer.conn('md5_user', 'md5_pass', 'benchdb'), ['-c', '10', '-j', '2', '-T', '5'], { timeoutMs: 60_000 });
    assertBench(r, { clients: 10, mode: 'simple', type: TPCB });
    assertHealthy(md5Bouncer, off);
  });

  test('-S -M extended, md5 auth with an md5 secret', async () => {
    const r = await pgbench(md5Bouncer.conn('md5_user', 'md5_pass', 'benchdb'), ['-n', '-S', '-M', 'extended', '-c', '8', '-j', '2', '-T', '3']);
    assertBench(r, { clients: 8, mode: 'extended', type: SELECT_ONLY });
  });

  test('-S -M prepared, md5 auth falling back to SCRAM for a SCRAM secret', async () => {
    const r = await pgbench(md5Bouncer.conn('scram_user', 'scram_pass', 'benchdb'), ['-n', '-S', '-M', 'prepared', '-c', '4', '-j', '2', '-T', '3']);
    assertBench(r, { clients: 4, mode: 'prepared', type: SELECT_ONLY });
  });

  test('TPC-B -M extended, scram-sha-256 auth with a plain secret (server login by SCRAM from the plain password)', async () => {
    const r = await pgbench(scramBouncer.conn(PLAIN_ROLE, PLAIN_PW, 'benchdb'), ['-n', '-M', 'extended', '-c', '4', '-j', '2', '-T', '3']);
    assertBench(r, { clients: 4, mode: 'extended', type: TPCB });
  });

  test('-C -S (a new connection per transaction), scram-sha-256 with a plain secret', async () => {
    const off = scramBouncer.logOffset();
    const r = await pgbench(scramBouncer.conn(PLAIN_ROLE, PLAIN_PW, 'benchdb'), ['-n', '-C', '-S', '-c', '4', '-j', '2', '-T', '3']);
    assertBench(r, { clients: 4, mode: 'simple', type: SELECT_ONLY });
    // one login per transaction (plus the initial connections), each closed cleanly
    const logins = (scramBouncer.log().slice(off).match(new RegExp(`login attempt: db=benchdb user=${PLAIN_ROLE} `, 'g')) ?? []).length;
    assert.ok(logins >= r.summary.transactions!, `${logins} logins for ${r.summary.transactions} transactions`);
    assertHealthy(scramBouncer, off);
  });

  test('-C TPC-B -M extended, md5 auth with a plain secret', async () => {
    const r = await pgbench(md5Bouncer.conn(PLAIN_ROLE, PLAIN_PW, 'benchdb'), ['-n', '-C', '-M', 'extended', '-c', '4', '-j', '2', '-T', '3']);
    assertBench(r, { clients: 4, mode: 'extended', type: TPCB });
  });
});

describe('psql through pgbun', () => {
  test('queries, errors that keep the session, COPY out and in', async () => {
    const c = scramBouncer.conn('scram_user', 'scram_pass', TEST_DB);
    const r = await psql(c, 'SELECT current_user, current_database(), 6 * 7');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.rows, [['scram_user', TEST_DB, '42']]);

    // an ERROR is forwarded (SQLSTATE and text from PostgreSQL) and the session goes on
    const e = await psqlRaw(c, ['-A', '-t', '-c', 'SELECT 1/0', '-c', 'SELECT 2']);
    assert.match(e.stderr, /ERROR: {2}division by zero/);
    assert.equal(e.stdout.trim(), '2');

    const table = `it_clients_copy_${process.pid}`;
    const copy = await psqlRaw(c, ['-q', '-v', 'ON_ERROR_STOP=1', '-A', '-t', '-f', '-'], {
      input: [
        `CREATE TABLE ${table} (id int, t text);`,
        `COPY ${table} FROM STDIN;`,
        ...Array.from({ length: 500 }, (_, i) => `${i}\trow ${i}`),
        '\\.',
        `SELECT count(*), sum(id) FROM ${table};`,
        `COPY (SELECT id FROM ${table} ORDER BY id) TO STDOUT;`,
        `DROP TABLE ${table};`,
      ].join('\n') + '\n',
    });
    assert.equal(copy.code, 0, copy.stderr);
    const lines = copy.stdout.trim().split('\n');
    assert.equal(lines[0], `500|${(499 * 500) / 2}`);
    assert.equal(lines.length, 501);
    assert.equal(lines[500], '499');
  });

  test('psql with md5 auth: md5 secret gets AuthenticationMD5Password, SCRAM secret gets SASL', async () => {
    const r = await psql(md5Bouncer.conn('md5_user', 'md5_pass', TEST_DB), 'SELECT current_user');
    assert.deepEqual(r.rows, [['md5_user']], r.stderr);
    const s = await psql(md5Bouncer.conn('scram_user', 'scram_pass', TEST_DB), 'SELECT current_user');
    assert.deepEqual(s.rows, [['scram_user']], s.stderr);
    // what psql saw, on the wire
    const md5 = await wireLogin({ host: md5Bouncer.host, port: md5Bouncer.port }, { user: 'md5_user', database: TEST_DB, password: 'md5_pass' });
    assert.deepEqual(md5.login.authCodes, [AUTH.MD5, AUTH.OK]);
    await md5.client.terminate();
  });
});

describe('npm drivers through pgbun', () => {
  test('pg: simple and extended queries, errors, transactions, a large result', async () => {
    const c = await pgClient(scramBouncer.conn('scram_user', 'scram_pass', TEST_DB));
    try {
      assert.deepEqual((await c.query('SELECT current_user AS u')).rows, [{ u: 'scram_user' }]);
      // extended protocol (Parse/Bind/Execute) with parameters
      const r = await c.query('SELECT $1::int + 1 AS n, $2::text AS t, $3::text AS z', [41, 'hello', null]);
      assert.deepEqual(r.rows, [{ n: 42, t: 'hello', z: null }]);
      // a named prepared statement reused
      for (let i = 0; i < 3; i++) {
        const p = await c.query({ name: 'it_add', text: 'SELECT $1::int * 2 AS d', values: [i] });
        assert.equal(p.rows[0].d, i * 2);
      }
      await assert.rejects(c.query('SELECT 1/0'), (e: { code?: string }) => e.code === '22012');
      await assert.rejects(c.query('SELECT $1::int', ['x']), (e: { code?: string }) => e.code === '22P02');
      await c.query('BEGIN');
      await c.query('CREATE TEMP TABLE it_pg_tx (x int)');
      await c.query('INSERT INTO it_pg_tx VALUES (1), (2)');
      await c.query('ROLLBACK');
      await assert.rejects(c.query('SELECT * FROM it_pg_tx'), (e: { code?: string }) => e.code === '42P01');
      const big = await c.query('SELECT g, repeat($1, 100) AS pad FROM generate_series(1, 50000) g', ['x']);
      assert.equal(big.rowCount, 50000);
      assert.equal(big.rows[49999].g, 50000);
      assert.equal(big.rows[0].pad.length, 100);
    } finally {
      await c.end();
    }
  });

  test('pg.Pool: 8 connections running 200 queries concurrently', async () => {
    const pool = pgPool(md5Bouncer.conn('md5_user', 'md5_pass', TEST_DB), { max: 8 });
    try {
      const results = await Promise.all(
        Array.from({ length: 200 }, (_, i) => pool.query('SELECT $1::int AS i, pg_backend_pid() AS pid', [i])),
      );
      results.forEach((r, i) => assert.equal(r.rows[0].i, i));
      const pids = new Set(results.map((r) => r.rows[0].pid));
      assert.ok(pids.size >= 1 && pids.size <= 8, `${pids.size} backends`);
    } finally {
      await pool.end();
    }
  });

  test('postgres (postgres.js): tagged queries, a transaction, unsafe multi-statement', async () => {
    for (const [b, user, pw] of [
      [md5Bouncer, 'md5_user', 'md5_pass'],
      [md5Bouncer, 'scram_user', 'scram_pass'],
      [scramBouncer, PLAIN_ROLE, PLAIN_PW],
    ] as const) {
      const sql = postgresJs(b.conn(user, pw, TEST_DB));
      try {
        const rows = await sql`SELECT current_user AS u, ${41}::int + 1 AS n, ${'x'}::text AS t`;
        assert.deepEqual([...rows], [{ u: user, n: 42, t: 'x' }]);
        const inTx = await sql.begin(async (tx) => {
          await tx`CREATE TEMP TABLE it_pgjs (x int)`;
          await tx`INSERT INTO it_pgjs VALUES (1), (2), (3)`;
          return tx`SELECT sum(x)::int AS s FROM it_pgjs`;
        });
        assert.equal(inTx[0].s, 6);
        const multi = await sql.unsafe('SELECT 1 AS a; SELECT 2 AS b');
        assert.equal(multi.length, 2);
        await assert.rejects(sql`SELECT 1/0`, (e: { code?: string }) => e.code === '22012');
        const after = await sql`SELECT 3 AS c`;
        assert.equal(after[0].c, 3);
      } finally {
        await sql.end();
      }
    }
    assertHealthy(md5Bouncer);
  });
});
