// Soak (opt-in: `node dist/test/run.js --faults --soak=SECONDS`): mixed load with logins for the
// given time — pgbench -C (a login per transaction), plain pgbench, and psql logins in a loop —
// while the pooler's RSS, open fds and live objects (the console's SHOW MEM `used` counts) are
// sampled every few seconds. The series is printed; the test fails if they keep growing: the
// average of the last third above the middle third's by more than a margin. Every pgbench run
// must be clean.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { assertPgbenchClean, pgbench, psql, type PgbenchResult } from '../lib/clients.js';
import { ensureBenchDatabase, fdCount, rssKb } from '../lib/faults.js';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres } from '../lib/postgres.js';
import { sleep } from '../lib/procs.js';
import type { WireClient } from '../lib/wire.js';
import { adminLogin, show, USERLIST } from '../integration/admin-lib.js';
import { SOAK_SECONDS } from './options.js';

const DB = 'fault_soak';
let B: TestPgbun;
let admin: WireClient;

interface Sample {
  t: number;
  rssMb: number;
  fds: number;
  objects: number;
}

const avg = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

// only with --soak=SECONDS: a long run on purpose, not part of the default suite or CI (the file
// then defines no test at all rather than a skipped one)
if (SOAK_SECONDS > 0) describe('soak', () => {
  before(async () => {
    const pg = await sharedPostgres();
    await ensureBenchDatabase(pg, DB);
    B = await startPgbun({
      ini: {
        pgbouncer: { auth_type: 'trust', admin_users: 'admin', stats_users: 'stats', pool_mode: 'transaction', max_client_conn: 500 },
        databases: { soak: pgConnstr(pg, { dbname: DB, pool_size: 6 }) },
      },
      userlist: USERLIST,
    });
    admin = await adminLogin(B);
  });

  after(async () => {
    await admin?.terminate();
    await B?.stop();
  });

  test(`soak for --soak=SECONDS (${SOAK_SECONDS || 'off'}): RSS, fds and live objects stop growing under mixed load with logins`,
    { timeout: (SOAK_SECONDS + 300) * 1000 }, async () => {
      const pid = B.proc.pid!;
      const deadline = Date.now() + SOAK_SECONDS * 1000;
      const conn = B.conn('trust_user', undefined, 'soak');
      const benchRuns: PgbenchResult[] = [];
      let psqlLogins = 0;
      const chunk = (): string => String(Math.max(1, Math.min(30, Math.round((deadline - Date.now()) / 1000))));
      const loops = [
        (async () => {
          while (Date.now() < deadline - 1000) benchRuns.push(await pgbench(conn, ['-n', '-C', '-S', '-c', '4', '-j', '1', '-T', chunk()]));
        })(),
        (async () => {
          while (Date.now() < deadline - 1000) benchRuns.push(await pgbench(conn, ['-n', '-c', '4', '-j', '1', '-T', chunk()]));
        })(),
        (async () => {
          while (Date.now() < deadline) {
            const r = await psql(conn, 'SELECT 1', { timeoutMs: 30_000 });
            assert.equal(r.code, 0, r.stderr);
            psqlLogins++;
          }
        })(),
      ];
      const samples: Sample[] = [];
      const every = Math.max(2000, Math.round((SOAK_SECONDS * 1000) / 40));
      const t0 = Date.now();
      while (Date.now() < deadline) {
        const mem = await show(admin, 'SHOW MEM');
        const objects = mem.filter((r) => /^(client|server|pool|user|db)_cache$/.test(r.name ?? '')).reduce((a, r) => a + Number(r.used), 0);
        const s: Sample = { t: Math.round((Date.now() - t0) / 1000), rssMb: rssKb(pid) / 1024, fds: fdCount(pid), objects };
        samples.push(s);
        console.log(`# soak t=${s.t}s rss=${s.rssMb.toFixed(1)}MB fds=${s.fds} objects=${s.objects}`);
        await sleep(Math.min(every, Math.max(0, deadline - Date.now())));
      }
      await Promise.all(loops);
      console.log(`# soak: ${benchRuns.length} pgbench runs, ${psqlLogins} psql logins, ${samples.length} samples`);
      for (const r of benchRuns) assertPgbenchClean(r, 1);
      assert.ok(samples.length >= 6, `too few samples (${samples.length}): soak at least ${6 * 2} s`);
      const third = Math.floor(samples.length / 3);
      const mid = samples.slice(third, 2 * third);
      const last = samples.slice(2 * third);
      const grow = (k: keyof Sample): [number, number] => [avg(mid.map((s) => s[k])), avg(last.map((s) => s[k]))];
      const [rMid, rLast] = grow('rssMb');
      const [fMid, fLast] = grow('fds');
      const [oMid, oLast] = grow('objects');
      const series = JSON.stringify(samples);
      assert.ok(rLast <= rMid + Math.max(20, rMid * 0.1), `RSS keeps growing: middle third ${rMid.toFixed(1)} MB, last third ${rLast.toFixed(1)} MB\n${series}`);
      assert.ok(fLast <= fMid + 10, `fds keep growing: middle third ${fMid.toFixed(1)}, last third ${fLast.toFixed(1)}\n${series}`);
      assert.ok(oLast <= oMid + 20, `live objects keep growing: middle third ${oMid.toFixed(1)}, last third ${oLast.toFixed(1)}\n${series}`);
    });
});
