// Server connections that go away under pgbun: pg_terminate_backend on its server backends while
// clients are inside a transaction, inside a query, or not using the server at all, and at random
// under pgbench load (transaction pooling). Only the client linked to the killed server may get
// an error (PgBouncer's FATAL `server conn crashed?`, 08P01); the others go on, the pool refills,
// and no client hangs.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pgbench, assertPgbenchClean } from '../lib/clients.js';
import { drainUntilClose, ensureBenchDatabase, faultSeed, isPoolerFatal, Rng } from '../lib/faults.js';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres } from '../lib/postgres.js';
import { sleep } from '../lib/procs.js';
import { login, roleUserlist, serverPids, waitUntil } from '../lib/pool-helpers.js';
import { query, type WireClient } from '../lib/wire.js';

const pg = await sharedPostgres();
const DB = 'fault_server';
let B: TestPgbun;

before(async () => {
  await ensureBenchDatabase(pg, DB);
  B = await startPgbun({
    ini: {
      pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', query_wait_timeout: 60, server_login_retry: 1 },
      databases: { tx: pgConnstr(pg, { dbname: DB, pool_size: 4 }) },
    },
    userlist: roleUserlist(),
  });
});

after(async () => {
  await B?.stop();
});

const terminate = async (pid: number): Promise<boolean> =>
  (await pg.query<{ ok: boolean }>('SELECT pg_terminate_backend($1) AS ok', 'postgres', [pid]))[0]?.ok === true;

async function backendOf(c: WireClient): Promise<number> {
  const r = await c.query('SELECT pg_backend_pid()');
  assert.equal(r.error, null, JSON.stringify(r.error));
  return Number(r.rows[0][0]);
}

/** The client got `server conn crashed?` (perhaps after the server's own 57P01 FATAL) and was closed. */
function assertCrashed(seen: Awaited<ReturnType<typeof drainUntilClose>>, what: string): void {
  const ctx = `${what}: ${JSON.stringify(seen)}`;
  assert.equal(seen.closed, true, `${ctx}: the connection must close`);
  assert.ok(seen.errors.length > 0, `${ctx}: an ErrorResponse before the close`);
  assert.ok(isPoolerFatal(seen.errors.at(-1), 'server conn crashed?'), `${ctx}: last error is FATAL 08P01 "server conn crashed?" (only S, C, M)`);
  for (const e of seen.errors.slice(0, -1)) assert.equal(e.C, '57P01', `${ctx}: only the server's own termination error before it`);
}

async function works(c: WireClient, what: string): Promise<void> {
  const r = await c.query('SELECT 4242', 15_000);
  assert.equal(r.error, null, `${what}: ${JSON.stringify(r.error)}`);
  assert.deepEqual(r.rows, [['4242']], what);
}

describe('server connections terminated under pgbun', () => {
  test('inside a transaction: that client gets FATAL "server conn crashed?", a bystander goes on', async () => {
    const { client: a } = await login(B, 'trust_user', 'tx');
    const { client: bystander } = await login(B, 'trust_user', 'tx');
    try {
      assert.equal((await a.query('BEGIN')).status, 'T');
      const pid = await backendOf(a);
      assert.equal((await bystander.query('BEGIN')).status, 'T');
      const otherPid = await backendOf(bystander);
      assert.notEqual(pid, otherPid);
      assert.ok(await terminate(pid));
      assertCrashed(await drainUntilClose(a, 15_000), 'client in BEGIN');
      // the bystander's own transaction is intact
      const r = await bystander.query('SELECT pg_backend_pid(), txid_current_if_assigned() IS NULL');
      assert.equal(r.error, null);
      assert.equal(Number(r.rows[0][0]), otherPid);
      assert.equal((await bystander.query('COMMIT')).status, 'I');
      await works(bystander, 'bystander after the kill');
    } finally {
      a.destroy();
      bystander.destroy();
    }
  });

  test('inside a long query: told at once with FATAL "server conn crashed?" and the close', async () => {
    const { client: c } = await login(B, 'trust_user', 'tx');
    try {
      await c.write(query('SELECT pg_sleep(60)'));
      const pid = await waitUntil('the pg_sleep backend', async () => {
        const rows = await pg.query<{ pid: number }>(`SELECT pid FROM pg_stat_activity WHERE datname = $1 AND query = 'SELECT pg_sleep(60)' AND state = 'active'`, 'postgres', [DB]);
        return rows[0]?.pid ?? 0;
      }, (p) => p > 0, 10_000);
      const t0 = Date.now();
      assert.ok(await terminate(Number(pid)));
      const seen = await drainUntilClose(c, 20_000);
      assertCrashed(seen, 'client inside pg_sleep(60)');
      assert.ok(Date.now() - t0 < 15_000, `told after ${Date.now() - t0} ms`);
    } finally {
      c.destroy();
    }
  });

  test('idle servers terminated: clients that are not in a transaction never notice', async () => {
    const clients = await Promise.all([0, 1, 2].map(async () => (await login(B, 'trust_user', 'tx')).client));
    try {
      // three servers in the pool, all idle after these queries
      await Promise.all(clients.map((c) => c.query('SELECT pg_sleep(0.2)')));
      const pids = await serverPids(pg, DB);
      assert.ok(pids.length >= 1, 'servers in the pool');
      for (const p of pids) await terminate(p);
      await waitUntil('terminated backends gone', () => serverPids(pg, DB), (now) => now.every((p) => !pids.includes(p)), 10_000);
      for (const [i, c] of clients.entries()) await works(c, `idle client ${i} after its old servers died`);
      for (const [i, c] of clients.entries()) await works(c, `idle client ${i}, second query`);
    } finally {
      for (const c of clients) c.destroy();
    }
  });

  test('random terminations under pgbench: only clients on a killed server abort, nobody hangs, the pool refills', async () => {
    const seed = faultSeed();
    console.log(`# server-faults seed ${seed} (PGBUN_FAULTS_SEED=${seed} replays it)`);
    const rng = new Rng(seed);
    const dir = fs.mkdtempSync(path.join(B.dir, 'bench-'));
    const script = path.join(dir, 'tx.sql');
    fs.writeFileSync(script, [
      '\\set aid random(1, 100000)',
      'BEGIN;',
      'SELECT abalance FROM pgbench_accounts WHERE aid = :aid;',
      'SELECT pg_sleep(0.02);',
      'UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;',
      'END;',
    ].join('\n') + '\n');
    fs.chmodSync(dir, 0o755);
    const clients = 8;
    const run = pgbench(B.conn('trust_user', undefined, 'tx'), ['-n', '-c', String(clients), '-j', '2', '-T', '12', '-f', script], { timeoutMs: 90_000 });
    let done = false;
    void run.finally(() => (done = true));
    let kills = 0;
    const killedPids: number[] = [];
    await sleep(2000);
    const until = Date.now() + 8000;
    while (!done && Date.now() < until && kills < clients - 2) {
      const pids = await serverPids(pg, DB);
      if (pids.length > 0) {
        const pid = rng.pick(pids);
        if (await terminate(pid)) {
          kills++;
          killedPids.push(pid);
        }
      }
      await sleep(rng.int(600, 1200));
    }
    const r = await run;
    const out = `${r.stdout}\n${r.stderr}`;
    const ctx = `kills=${kills} (${killedPids.join(',')})\n--- pgbench ---\n${out.slice(-6000)}`;
    assert.equal(r.timedOut, false, `no pgbench client may hang\n${ctx}`);
    assert.ok(kills > 0, ctx);
    const aborted = out.split('\n').filter((l) => /client \d+ (script \d+ )?aborted/.test(l));
    assert.ok(aborted.length <= kills, `at most one client per killed server aborts\n${ctx}`);
    // every error pgbench saw is about a killed server
    const errLines = out.split('\n').filter((l) => /error|FATAL|ERROR/.test(l) && !/Run was aborted|number of failed/.test(l));
    for (const l of errLines) {
      assert.match(l, /server conn crashed\?|terminating connection due to administrator command|aborted|server closed the connection unexpectedly|perhaps/, `unexpected error line ${JSON.stringify(l)}\n${ctx}`);
    }
    assert.ok((r.summary.transactions ?? 0) > 0, ctx);
    assert.equal(r.summary.failed ?? 0, 0, `transactions fail only by aborting their client\n${ctx}`);
    // the pool refills: a clean pgbench run afterwards
    const again = await pgbench(B.conn('trust_user', undefined, 'tx'), ['-n', '-c', '4', '-j', '2', '-T', '3', '-f', script], { timeoutMs: 60_000 });
    assertPgbenchClean(again, 10);
    await waitUntil('servers back in the pool', () => serverPids(pg, DB), (p) => p.length >= 1, 10_000);
  });
});
