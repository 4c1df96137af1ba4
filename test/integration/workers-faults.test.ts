// workers = N: one event loop fails as a bug would (an uncaught exception or an unhandled
// rejection, made on purpose through the test-only PGBUN_TEST_FAULT_DIR, src/process/faults.ts)
// while clients of every loop are inside transactions. Its clients get a FATAL and are closed,
// its server backends end, the clients of the other loops go on in their transactions, a new
// loop takes its place and serves new clients, and what it held no longer counts against the
// pool's limits. The main thread (loop 0) failing ends the process, as with workers = 1. It lives
// with the integration tests, not the fault suite, because that suite also runs against PgBouncer,
// which has no workers.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { drainUntilClose, isPoolerFatal } from '../lib/faults.js';
import { clientsOnEveryLoop, loopOfLine, type LoopClient } from '../lib/loops.js';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { ensureDatabase, logLines, waitUntil } from '../lib/pool-helpers.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { isRoot, makeTempDir, serverOsUser } from '../lib/procs.js';
import { cancelRequest, WireClient, wireLogin } from '../lib/wire.js';

const pg = await sharedPostgres();
const W = 3;
const USER = 'trust_user';
const SMALL = 'fault_workers_small';
const REASON = 'worker thread crashed';
// pgbun (as root: run as PostgreSQL's OS user) removes the files it acts on
const faultDir = makeTempDir('pgbun-faults-', isRoot() ? serverOsUser() : null);
const open: WireClient[] = [];
let B: TestPgbun;

before(async () => {
  await ensureDatabase(pg, SMALL);
  B = await startPgbun({
    ini: {
      pgbouncer: { auth_type: 'trust', admin_users: 'admin', pool_mode: 'transaction', workers: W, query_wait_timeout: 20 },
      databases: {
        tx: pgConnstr(pg, { dbname: TEST_DB, pool_size: 20 }),
        small: pgConnstr(pg, { dbname: SMALL, pool_size: 2 }),
      },
    },
    userlist: [[USER, ''], ['admin', '']],
    env: { PGBUN_TEST_FAULT_DIR: faultDir },
  });
});

after(async () => {
  for (const c of open) c.destroy();
  await B?.stop();
});

/** Make loop `loop` fail on its next janitor tick. */
function failLoop(loop: number, kind: 'exception' | 'rejection' | 'hang'): void {
  fs.writeFileSync(path.join(faultDir, `crash-${loop}`), kind);
}

async function backendOf(c: WireClient): Promise<number> {
  const r = await c.query('SELECT pg_backend_pid()');
  assert.equal(r.error, null, JSON.stringify(r.error));
  return Number(r.rows[0]![0]);
}

/** Clients of every loop of `database`, each inside a transaction; their backends' pids. */
async function inTransactionOnEveryLoop(database: string, perLoop: number): Promise<Array<Array<LoopClient & { pid: number }>>> {
  const byLoop = await clientsOnEveryLoop(B, W, { user: USER, database }, perLoop);
  const out: Array<Array<LoopClient & { pid: number }>> = [];
  for (const l of byLoop) {
    const row: Array<LoopClient & { pid: number }> = [];
    for (const c of l) {
      open.push(c.client);
      assert.equal((await c.client.query('BEGIN')).error, null);
      row.push({ ...c, pid: await backendOf(c.client) });
    }
    out.push(row);
  }
  return out;
}

async function alive(pids: number[]): Promise<number[]> {
  const rows = await pg.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE pid = ANY($1)', 'postgres', [pids]);
  return rows.map((r) => Number(r.pid));
}

/** The other loops' clients are still in their transactions, on the same backends. */
async function othersGoOn(byLoop: Array<Array<LoopClient & { pid: number }>>, dead: number): Promise<void> {
  for (const l of byLoop) {
    for (const c of l) {
      if (c.loop === dead) continue;
      const r = await c.client.query('SELECT pg_backend_pid(), current_setting(\'transaction_isolation\')');
      assert.equal(r.error, null, `loop ${c.loop}: ${JSON.stringify(r.error)}`);
      assert.equal(Number(r.rows[0]![0]), c.pid, `loop ${c.loop}: the same server, the same transaction`);
      assert.equal(r.status, 'T', `loop ${c.loop}: still inside its transaction`);
      assert.deepEqual((await c.client.query('COMMIT')).tags, ['COMMIT']);
    }
  }
}

describe('workers: a loop that fails', () => {
  for (const [dead, kind] of [[1, 'exception'], [2, 'rejection']] as const) {
    test(`loop ${dead}, an ${kind === 'exception' ? 'uncaught exception' : 'unhandled rejection'}: its clients get a FATAL, the others go on, a new loop takes over`, async () => {
      const off = B.logOffset();
      const tx = await inTransactionOnEveryLoop('tx', 2);
      // the dead loop holds both servers pool_size allows for `small`
      const small = await clientsOnEveryLoop(B, W, { user: USER, database: 'small' }, 2);
      open.push(...small.flat().map((c) => c.client));
      const victimsSmall: Array<LoopClient & { pid: number }> = [];
      for (const c of small[dead]!) {
        assert.equal((await c.client.query('BEGIN')).error, null);
        victimsSmall.push({ ...c, pid: await backendOf(c.client) });
      }
      for (const l of small) for (const c of l) if (c.loop !== dead) await c.client.terminate();
      const victims = [...tx[dead]!, ...victimsSmall];
      const victimPids = victims.map((c) => c.pid);
      assert.deepEqual((await alive(victimPids)).sort(), [...victimPids].sort());

      failLoop(dead, kind);
      for (const v of victims) {
        const seen = await drainUntilClose(v.client, 15_000);
        assert.equal(seen.closed, true, `a client of loop ${dead} is closed`);
        assert.ok(isPoolerFatal(seen.errors.at(-1), REASON), `FATAL 08P01 "${REASON}": ${JSON.stringify(seen)}`);
      }
      const crashLine = await B.waitForLog(/ERROR worker \d+ crashed: Error: test fault in worker \d+/, 10_000, off);
      assert.match(crashLine, new RegExp(`worker ${dead} crashed: Error: test fault in worker ${dead}`));
      await B.waitForLog(new RegExp(`ERROR worker ${dead} exited with code 1; starting a new one`), 10_000, off);
      // the servers were told Terminate: their backends end (rolling back)
      await waitUntil('the dead loop\'s backends gone', () => alive(victimPids), (a) => a.length === 0, 15_000);
      // the log says why, per connection, from the dead loop
      const closing = logLines(B, new RegExp(`closing because: ${REASON} \\(age=\\d+s\\)$`), off);
      assert.ok(closing.length >= victims.length * 2, closing.join('\n'));
      for (const line of closing) assert.equal(loopOfLine(line, W), dead, line);

      await othersGoOn(tx, dead);

      // a new loop in its place serves new clients, as every loop does
      await B.waitForLog(new RegExp(`LOG worker ${dead} replaced`), 15_000, off);
      const fresh = await clientsOnEveryLoop(B, W, { user: USER, database: 'tx' });
      for (const l of fresh) {
        for (const c of l) {
          open.push(c.client);
          assert.deepEqual((await c.client.query('SELECT 1')).rows, [['1']], `loop ${c.loop}`);
        }
      }
      // the Unix socket (the main thread's) still takes clients
      const { client: viaUnix } = await wireLogin({ path: B.socketPath }, { user: USER, database: 'tx' });
      open.push(viaUnix);
      assert.deepEqual((await viaUnix.query('SELECT 2')).rows, [['2']]);

      // the dead loop's two `small` servers no longer count against pool_size = 2 (the shared
      // counters): two transactions at once get two servers, not query_wait_timeout
      const two = (await clientsOnEveryLoop(B, W, { user: USER, database: 'small' })).flat().slice(0, 2);
      open.push(...two.map((c) => c.client));
      for (const c of two) assert.equal((await c.client.query('BEGIN')).error, null);
      const pids = await Promise.all(two.map((c) => backendOf(c.client)));
      assert.notEqual(pids[0], pids[1], 'two servers at once');
      for (const c of two) assert.deepEqual((await c.client.query('COMMIT')).tags, ['COMMIT']);

      // a key the dead loop issued names nobody now
      const key = victims[0]!.login.backendKey!;
      const req = await WireClient.connect({ path: B.socketPath }, 5000);
      open.push(req);
      const offCancel = B.logOffset();
      await req.write(cancelRequest(key.pid, key.secret));
      await req.waitClose(10_000);
      await B.waitForLog(/LOG C-0x[0-9a-f]+: \(nodb\)\/\(nouser\)@unix\(\d+\):\d+ closing because: failed cancel request/, 5000, offCancel);

      for (const l of [...tx, ...fresh]) for (const c of l) if (!c.client.closed) await c.client.terminate();
      assert.equal(B.proc.exitCode, null, B.stderr());
    });
  }

  test('loop 1 stops answering (an endless loop): the main thread stops it, a new loop takes over, the console answers', async () => {
    const off = B.logOffset();
    const tx = await inTransactionOnEveryLoop('tx', 1);
    failLoop(1, 'hang');
    await B.waitForLog(/ERROR worker 1 has not answered for \d+ s: stopping it/, 40_000, off);
    // the thread's sockets close with it: its client is disconnected, its backend ends
    const stuck = tx[1]![0]!;
    assert.equal((await drainUntilClose(stuck.client, 15_000)).closed, true, 'the stuck loop\'s client is closed');
    await waitUntil('the stuck loop\'s backend gone', () => alive([stuck.pid]), (a) => a.length === 0, 15_000);
    await othersGoOn(tx, 1);
    await B.waitForLog(/LOG worker 1 replaced/, 15_000, off);
    // the console, which asks every loop, answers from every loop again
    const admins = await clientsOnEveryLoop(B, W, { user: 'admin', database: 'pgbouncer' });
    for (const l of admins) {
      for (const a of l) {
        open.push(a.client);
        const r = await a.client.query('SHOW POOLS');
        assert.equal(r.error, null, `loop ${a.loop}: ${JSON.stringify(r.error)}`);
        await a.client.terminate();
      }
    }
    assert.equal(B.proc.exitCode, null, B.stderr());
  });

  test('loop 0, the main thread: the process ends, as with one loop', async () => {
    const { client } = await wireLogin({ host: '127.0.0.1', port: B.port }, { user: USER, database: 'tx' });
    open.push(client);
    failLoop(0, 'exception');
    const exit = await B.waitExit(15_000);
    assert.notEqual(exit, null, 'pgbun exited');
    assert.equal(exit!.code, 1, JSON.stringify(exit));
    assert.match(B.stderr(), /test fault in worker 0/);
    assert.equal((await drainUntilClose(client, 10_000)).closed, true);
  });
});
