// Control storms under pgbench (transaction pooling), each for ~12 s: SIGHUP every 0.2-0.5 s
// with changing pool sizes, RELOAD on the console with the same, PAUSE/RESUME, RECONNECT, and
// KILL of another database. pgbench must lose no transaction; only the KILL storm may cut
// clients off, and only those of the killed database, each with PgBouncer's FATAL
// `database removed` (never a bare close, never a hang).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { assertPgbenchClean, pgbench, type PgbenchResult } from '../lib/clients.js';
import { ensureBenchDatabase, faultSeed, Rng } from '../lib/faults.js';
import { pgConnstr, startPgbun, type IniSpec, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres } from '../lib/postgres.js';
import { isAlive, sleep } from '../lib/procs.js';
import { login, waitUntil } from '../lib/pool-helpers.js';
import { parseErrorFields, PgServerError, query, type PgError, type WireClient } from '../lib/wire.js';
import { adminLogin, expectTag, show, USERLIST } from '../integration/admin-lib.js';

const pg = await sharedPostgres();
const DB = 'fault_storms';
const STORM_MS = 11_000;
const seed = faultSeed();
const rng = new Rng(seed);
let B: TestPgbun;
let admin: WireClient;

function ini(benchPool: number, defaultPool: number): IniSpec {
  return {
    pgbouncer: { auth_type: 'trust', admin_users: 'admin', pool_mode: 'transaction', default_pool_size: defaultPool, query_wait_timeout: 60 },
    databases: {
      bench: pgConnstr(pg, { dbname: DB, pool_size: benchPool }),
      victim: pgConnstr(pg, { dbname: DB }),
    },
  };
}

before(async () => {
  console.log(`# storms seed ${seed} (PGBUN_FAULTS_SEED=${seed} replays it)`);
  await ensureBenchDatabase(pg, DB);
  B = await startPgbun({ ini: ini(4, 4), userlist: USERLIST });
  admin = await adminLogin(B);
});

after(async () => {
  await admin?.terminate();
  await B?.stop();
});

/** pgbench on `bench` for the storm's length, while `storm` runs until pgbench is done. */
async function underPgbench(storm: (stop: () => boolean) => Promise<number>): Promise<{ bench: PgbenchResult; count: number }> {
  let finished = false;
  const run = pgbench(B.conn('trust_user', undefined, 'bench'), ['-n', '-c', '4', '-j', '2', '-T', String(STORM_MS / 1000)], { timeoutMs: 120_000 })
    .finally(() => (finished = true));
  const count = await storm(() => finished);
  const bench = await run;
  assert.ok(isAlive(B.proc.pid!), 'the pooler survived the storm');
  return { bench, count };
}

async function benchPoolSize(): Promise<string | null | undefined> {
  return (await show(admin, 'SHOW DATABASES')).find((r) => r.name === 'bench')?.pool_size;
}

/**
 * Rewrite the ini with random pool sizes every 0.2-0.5 s and have it reloaded by `reload`, under
 * pgbench; pgbench must stay clean and the last pool_size must be in force afterwards.
 */
async function reloadStorm(what: string, reload: () => Promise<void>): Promise<void> {
  let last = 4;
  const { bench, count } = await underPgbench(async (stop) => {
    let n = 0;
    while (!stop()) {
      last = rng.int(1, 8);
      B.writeFiles({ ini: ini(last, rng.int(1, 10)) });
      await reload();
      n++;
      await sleep(rng.int(200, 500));
    }
    return n;
  });
  console.log(`# ${count} ${what}`);
  assertPgbenchClean(bench, 10);
  await waitUntil('the last pool_size is in force', benchPoolSize, (v) => v === String(last), 5000);
}

describe('control storms under pgbench', () => {
  test('SIGHUP every 0.2-0.5 s with changing pool sizes: no transaction lost, the last config applies', async () => {
    await reloadStorm('SIGHUPs', async () => B.signal('SIGHUP'));
  });

  test('RELOAD on the console every 0.2-0.5 s with changing pool sizes: no transaction lost, the last config applies', async () => {
    await reloadStorm('RELOADs', async () => void (await expectTag(admin, 'RELOAD', 'RELOAD')));
  });

  test('PAUSE/RESUME storm (whole pooler and one database): no transaction lost', async () => {
    B.writeFiles({ ini: ini(4, 4) });
    await expectTag(admin, 'RELOAD', 'RELOAD');
    const { bench, count } = await underPgbench(async (stop) => {
      let n = 0;
      while (!stop()) {
        const target = rng.next() < 0.5 ? '' : ' bench';
        await expectTag(admin, `PAUSE${target}`, 'PAUSE', 20_000);
        await sleep(rng.int(20, 300));
        await expectTag(admin, `RESUME${target}`, 'RESUME');
        n++;
        await sleep(rng.int(100, 400));
      }
      return n;
    });
    console.log(`# ${count} PAUSE/RESUME cycles`);
    assertPgbenchClean(bench, 10);
  });

  test('RECONNECT storm: no transaction lost', async () => {
    const { bench, count } = await underPgbench(async (stop) => {
      let n = 0;
      while (!stop()) {
        await expectTag(admin, rng.next() < 0.5 ? 'RECONNECT bench' : 'RECONNECT', 'RECONNECT');
        n++;
        await sleep(rng.int(150, 400));
      }
      return n;
    });
    console.log(`# ${count} RECONNECTs`);
    assertPgbenchClean(bench, 10);
  });

  test('KILL storm on another database: its clients get FATAL "database removed", pgbench on bench loses nothing', async () => {
    const outcomes = { queries: 0, removed: 0, other: [] as string[] };
    let stopVictims = false;
    const victim = async (): Promise<void> => {
      while (!stopVictims) {
        let c: WireClient;
        try {
          c = (await login(B, 'trust_user', 'victim')).client; // waits while the database is killed (paused)
        } catch (e) {
          // PgBouncer 1.18 refuses logins to a killed database instead of holding them
          if (e instanceof PgServerError && e.error.S === 'FATAL' && e.error.M === 'database removed') outcomes.removed++;
          else outcomes.other.push(`login: ${(e as Error).message}`);
          await sleep(100);
          continue;
        }
        try {
          // read message by message: the FATAL must come before the close
          conn: while (!stopVictims) {
            await c.write(query('SELECT pg_sleep(0.01)'));
            let err: PgError | null = null;
            for (;;) {
              let m;
              try {
                m = await c.readMessageOrClose(20_000);
              } catch (e) {
                outcomes.other.push(`${(e as Error).message} after ${JSON.stringify(err)}`);
                break conn;
              }
              if (m === null) {
                if (err?.S === 'FATAL' && err.C === '08P01' && err.M === 'database removed') outcomes.removed++;
                else outcomes.other.push(`closed after ${JSON.stringify(err)}`);
                break conn;
              }
              if (m.type === 'E') err = parseErrorFields(m.body);
              if (m.type === 'Z') {
                if (err) outcomes.other.push(`error ${JSON.stringify(err)}`);
                else outcomes.queries++;
                break;
              }
            }
          }
        } finally {
          c.destroy();
        }
      }
    };
    const victims = Array.from({ length: 4 }, victim);
    const { bench, count } = await underPgbench(async (stop) => {
      let n = 0;
      await sleep(500);
      while (!stop()) {
        await expectTag(admin, 'KILL victim', 'KILL');
        await sleep(rng.int(50, 200));
        await expectTag(admin, 'RESUME victim', 'RESUME');
        n++;
        await sleep(rng.int(200, 500));
      }
      return n;
    });
    stopVictims = true;
    await Promise.all(victims);
    console.log(`# ${count} KILLs; victims: ${outcomes.queries} queries, ${outcomes.removed} "database removed"`);
    assertPgbenchClean(bench, 10);
    assert.deepEqual(outcomes.other, [], 'victims end only with FATAL "database removed"');
    assert.ok(outcomes.removed > 0, 'the KILLs did cut victims off');
    assert.ok(outcomes.queries > 0, 'victims worked between KILLs');
  });
});
