// pgbench through pgbun with workers = 3: 60 clients spread over three loops share one pool of
// default_pool_size = 5 in transaction mode. The pool's servers move between the loops (a loop
// whose clients wait gets an idle server another loop gives up), and the test checks what a
// user would see: zero failed transactions, never more than 5 server connections on PostgreSQL
// (sampled from pg_stat_activity for a role of this file's own), no client starved past
// query_wait_timeout (3 s: a starved client's transaction would fail), no error in the log.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { assertPgbenchClean, pgbench } from '../lib/clients.js';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres } from '../lib/postgres.js';
import { sampleWhile, serverCount, waitUntil } from '../lib/pool-helpers.js';
import { adminLogin, show } from './admin-lib.js';

const pg = await sharedPostgres();
const ROLE = 'wk_bench';
const PW = 'wk_bench_pw';
let benchdb: string;
let b: TestPgbun;

before(async () => {
  benchdb = await pg.ensurePgbench();
  await pg.createRole(ROLE, PW);
  await pg.query(`GRANT pgbench_owner TO ${ROLE}`);
  b = await startPgbun({
    ini: {
      pgbouncer: {
        auth_type: 'md5', pool_mode: 'transaction', default_pool_size: 5, max_client_conn: 200,
        query_wait_timeout: 3, workers: 3, admin_users: ROLE,
      },
      databases: { benchdb: pgConnstr(pg, { dbname: benchdb }) },
    },
    userlist: [[ROLE, PW]],
  });
  // the main thread accepts as soon as it listens; the worker threads are up at `process up`
  await b.waitForLog(/LOG process up:/, 10_000);
});

after(async () => {
  await b?.stop();
  await pg.query(`DROP ROLE IF EXISTS ${ROLE}`).catch(() => {});
});

describe('workers = 3, default_pool_size = 5, 60 clients', () => {
  for (const [mode, args] of [['prepared', ['-M', 'prepared']], ['extended', ['-M', 'extended', '-S']]] as const) {
    test(`pgbench -c 60 -j 2 -T 5 ${args.join(' ')}: zero failed, at most 5 servers, every loop served`, async () => {
      const off = b.logOffset();
      const run = pgbench(b.conn(ROLE, PW, 'benchdb'), ['-n', '-c', '60', '-j', '2', '-T', '5', ...args], { timeoutMs: 120_000 });
      const samples = sampleWhile(run, () => serverCount(pg, benchdb, ROLE), 100);
      // which loops the pgbench clients are on (a connection's id modulo 3), seen mid-run
      const loops = new Set<number>();
      const admin = await adminLogin(b, ROLE, PW);
      try {
        await waitUntil('pgbench clients', async () => (await show(admin, 'SHOW CLIENTS')).filter((c) => c.database === 'benchdb'),
          (rows) => rows.length === 60, 10_000, 100).then((rows) => { for (const c of rows) loops.add(Number(c.id) % 3); });
      } finally {
        await admin.terminate();
      }
      const r = await run;
      const ctx = assertPgbenchClean(r, 60);
      assert.equal(r.summary.clients, 60, ctx);
      assert.equal(r.summary.queryMode, mode, ctx);
      assert.deepEqual([...loops].sort(), [0, 1, 2], 'clients on every loop');
      const most = Math.max(0, ...await samples);
      assert.ok(most >= 1 && most <= 5, `server connections of ${ROLE}: up to ${most}, pool size 5`);
      const bad = b.log().slice(off).split('\n').filter((l) => / (ERROR|FATAL|WARNING) /.test(l));
      assert.deepEqual(bad, [], 'pgbun logged errors');
      assert.equal(b.proc.exitCode, null, 'pgbun still runs');
    });
  }

  test('the console counts the transactions of every loop', async () => {
    const admin = await adminLogin(b, ROLE, PW);
    try {
      const [row] = (await show(admin, 'SHOW STATS_TOTALS')).filter((x) => x.database === 'benchdb');
      // both runs above: at least one transaction per client each
      assert.ok(Number(row!.xact_count) >= 120, `xact_count ${row!.xact_count}`);
    } finally {
      await admin.terminate();
    }
  });
});
