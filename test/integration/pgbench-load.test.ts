// pgbench through pgbun in transaction and statement mode, 100 clients over a pool of
// default_pool_size = 5, -M simple / extended / prepared, -S and TPC-B. The long run:
// `pgbench -c 100 -j 2 -T 30 -M prepared` in transaction mode finishes with zero failed
// transactions. Statement mode runs only what is valid there (-S, a script without
// BEGIN); TPC-B in statement mode must fail with the statement-mode error.
//
// The number of server connections is sampled from pg_stat_activity during every run (a role of
// this file's own, so other test files using benchdb do not count) and must never exceed 5.
//
// Runtime: one 30 s run, every other run 3 s.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { assertPgbenchClean, pgbench, type PgbenchResult } from '../lib/clients.js';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres } from '../lib/postgres.js';
import { closingRe, sampleWhile, serverCount } from '../lib/pool-helpers.js';

const pg = await sharedPostgres();
// one role per pgbun instance: each instance's idle servers are counted separately
const ROLES = { tx: 'txp_bench_tx', st: 'txp_bench_st' };
const PW = 'txp_bench_pw';
const SELECT_ONLY = '<builtin: select only>';
const TPCB = '<builtin: TPC-B (sort of)>';
const STMT_ERR = 'transaction blocks not allowed in statement pooling mode';

let benchdb: string;
let tx: TestPgbun;
let st: TestPgbun;
let scriptDir: string;

before(async () => {
  benchdb = await pg.ensurePgbench();
  for (const role of Object.values(ROLES)) {
    await pg.createRole(role, PW);
    await pg.query(`GRANT pgbench_owner TO ${role}`);
  }
  const ini = (mode: string) => ({
    pgbouncer: { auth_type: 'trust', pool_mode: mode, default_pool_size: 5, max_client_conn: 300 },
    databases: { benchdb: pgConnstr(pg, { dbname: benchdb }) },
  });
  [tx, st] = await Promise.all([
    startPgbun({ ini: ini('transaction'), userlist: [[ROLES.tx, PW]] }),
    startPgbun({ ini: ini('statement'), userlist: [[ROLES.st, PW]] }),
  ]);
  scriptDir = fs.mkdtempSync(path.join(os.tmpdir(), 'txp-bench-'));
});

after(async () => {
  await Promise.all([tx?.stop(), st?.stop()]);
  for (const role of Object.values(ROLES)) await pg.query(`DROP ROLE IF EXISTS ${role}`).catch(() => {});
  if (scriptDir) fs.rmSync(scriptDir, { recursive: true, force: true });
});

/** Run pgbench through b while sampling the role's server connections. */
function roleOf(b: TestPgbun): string {
  return b === tx ? ROLES.tx : ROLES.st;
}

async function bench(b: TestPgbun, args: string[]): Promise<{ r: PgbenchResult; maxServers: number }> {
  const run = pgbench(b.conn(roleOf(b), PW, 'benchdb'), ['-n', ...args], { timeoutMs: 120_000 });
  const samples = await sampleWhile(run, () => serverCount(pg, benchdb, roleOf(b)), 100);
  return { r: await run, maxServers: Math.max(0, ...samples) };
}

function assertOk(b: TestPgbun, off: number, res: { r: PgbenchResult; maxServers: number }, mode: string, type: string): void {
  const { r, maxServers } = res;
  const ctx = assertPgbenchClean(r, 101);
  assert.equal(r.summary.clients, 100, ctx);
  assert.equal(r.summary.queryMode, mode, ctx);
  assert.equal(r.summary.transactionType, type, ctx);
  assert.doesNotMatch(r.stderr, /ERROR|FATAL|server closed the connection/, ctx);
  assert.ok(maxServers >= 1 && maxServers <= 5, `server connections of ${roleOf(b)}: up to ${maxServers}, pool size 5`);
  const bad = b
    .log()
    .slice(off)
    .split('\n')
    .filter((l) => / (ERROR|FATAL|WARNING) /.test(l));
  assert.deepEqual(bad, [], 'pgbun logged errors');
  assert.equal(b.proc.exitCode, null, 'pgbun still runs');
}

describe('transaction mode, default_pool_size = 5, 100 clients', () => {
  test('pgbench -c 100 -j 2 -T 30 -M prepared (TPC-B): zero failed transactions', async () => {
    const off = tx.logOffset();
    const res = await bench(tx, ['-c', '100', '-j', '2', '-T', '30', '-M', 'prepared']);
    assertOk(tx, off, res, 'prepared', TPCB);
    assert.ok(res.r.summary.transactions! > 1000, `only ${res.r.summary.transactions} transactions in 30 s`);
  });

  for (const [mode, select] of [
    ['simple', true],
    ['extended', true],
    ['prepared', true],
    ['simple', false],
    ['extended', false],
  ] as const) {
    test(`pgbench -c 100 -j 2 -T 3 -M ${mode}${select ? ' -S' : ' (TPC-B)'}: zero failed`, async () => {
      const off = tx.logOffset();
      const res = await bench(tx, ['-c', '100', '-j', '2', '-T', '3', '-M', mode, ...(select ? ['-S'] : [])]);
      assertOk(tx, off, res, mode, select ? SELECT_ONLY : TPCB);
    });
  }
});

describe('statement mode, default_pool_size = 5, 100 clients', () => {
  for (const mode of ['simple', 'extended', 'prepared']) {
    test(`pgbench -c 100 -j 2 -T 3 -M ${mode} -S: zero failed`, async () => {
      const off = st.logOffset();
      const res = await bench(st, ['-c', '100', '-j', '2', '-T', '3', '-M', mode, '-S']);
      assertOk(st, off, res, mode, SELECT_ONLY);
    });
  }

  test('a custom script without BEGIN (UPDATE, SELECT, INSERT as single statements), -M prepared: zero failed', async () => {
    const file = path.join(scriptDir, 'nobegin.sql');
    fs.writeFileSync(
      file,
      [
        '\\set aid random(1, 100000 * :scale)',
        '\\set delta random(-5000, 5000)',
        'UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;',
        'SELECT abalance FROM pgbench_accounts WHERE aid = :aid;',
        'INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, :aid, :delta, CURRENT_TIMESTAMP);',
        '',
      ].join('\n'),
    );
    const off = st.logOffset();
    const res = await bench(st, ['-c', '100', '-j', '2', '-T', '3', '-M', 'prepared', '-f', file]);
    assertOk(st, off, res, 'prepared', file);
  });

  test(`TPC-B (BEGIN ... END) fails with "${STMT_ERR}"`, async () => {
    const off = st.logOffset();
    const r = await pgbench(st.conn(ROLES.st, PW, 'benchdb'), ['-n', '-c', '4', '-j', '1', '-t', '5'], { timeoutMs: 60_000 });
    const ctx = `--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`;
    assert.notEqual(r.code, 0, ctx);
    assert.equal(r.summary.aborted, true, ctx);
    assert.match(r.stderr, new RegExp(`FATAL: {1,2}${STMT_ERR}`), ctx);
    await st.waitForLog(closingRe('C', 'benchdb', ROLES.st, STMT_ERR), 3000, off);
    assert.equal(st.proc.exitCode, null, 'pgbun still runs');
  });
});
