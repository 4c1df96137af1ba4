// Connection floods beyond max_client_conn (100 here): raw TCP connections that send nothing,
// and clients that log in. Meanwhile the admin console answers SHOW POOLS quickly (an existing
// session and a new one: the console is exempt from max_client_conn), a client connected before
// the flood keeps working without stalling (its query latency is measured), and clients beyond
// the limit get PgBouncer's FATAL `no more connections allowed (max_client_conn)` (08P01).
// Afterwards, new clients get in again.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { percentile } from '../lib/faults.js';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres } from '../lib/postgres.js';
import { sleep } from '../lib/procs.js';
import { attemptLogin, type WireClient } from '../lib/wire.js';
import { ensureDatabase, login, waitUntil } from '../lib/pool-helpers.js';
import { adminLogin, show, USERLIST } from '../integration/admin-lib.js';

const pg = await sharedPostgres();
const DB = 'fault_floods';
const MAX_CLIENTS = 100;
let B: TestPgbun;

before(async () => {
  await ensureDatabase(pg, DB);
  B = await startPgbun({
    ini: {
      pgbouncer: { auth_type: 'trust', admin_users: 'admin', pool_mode: 'transaction', max_client_conn: MAX_CLIENTS, client_login_timeout: 60, query_wait_timeout: 60 },
      databases: { db: pgConnstr(pg, { dbname: DB, pool_size: 5 }) },
    },
    userlist: USERLIST,
  });
});

after(async () => {
  await B?.stop();
});

/** A client that logged in before the flood runs SELECT 1 in a loop; latencies in ms. */
function latencyProbe(c: WireClient): { stop(): Promise<number[]> } {
  const lat: number[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const t0 = performance.now();
      const r = await c.query('SELECT 1', 30_000);
      assert.equal(r.error, null, JSON.stringify(r.error));
      lat.push(performance.now() - t0);
      await sleep(20);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return lat;
    },
  };
}

/** SHOW POOLS on the console within `boundMs`; returns how long it took. */
async function timedShowPools(admin: WireClient, boundMs = 2000): Promise<number> {
  const t0 = performance.now();
  const rows = await show(admin, 'SHOW POOLS');
  const ms = performance.now() - t0;
  assert.ok(rows.some((r) => r.database === 'db'), JSON.stringify(rows));
  assert.ok(ms < boundMs, `SHOW POOLS took ${ms.toFixed(0)} ms`);
  return ms;
}

function assertLatency(lat: number[], what: string): void {
  const p99 = percentile(lat, 99);
  const max = Math.max(...lat);
  console.log(`# ${what}: ${lat.length} queries, p50 ${percentile(lat, 50).toFixed(1)} ms, p99 ${p99.toFixed(1)} ms, max ${max.toFixed(1)} ms`);
  assert.ok(lat.length >= 3, `${what}: the normal client kept querying (${lat.length} queries)`);
  assert.ok(p99 < 1000, `${what}: p99 ${p99.toFixed(0)} ms must stay under 1 s`);
}

async function rawConnect(): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(B.port, B.host);
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

async function newClientGetsIn(): Promise<void> {
  await waitUntil('a new client logs in and queries again', async () => {
    try {
      const { client } = await login(B, 'trust_user', 'db');
      const r = await client.query('SELECT 1');
      client.destroy();
      return r.error === null;
    } catch {
      return false;
    }
  }, (ok) => ok, 15_000, 200);
}

/**
 * Run a flood with a client connected before it (its query latency measured: p99 < 1 s) and a
 * console session; afterwards new clients must get in again.
 */
async function duringFlood(what: string, flood: (admin: WireClient) => Promise<void>, cleanup = (): void => {}): Promise<void> {
  const { client: normal } = await login(B, 'trust_user', 'db');
  const admin = await adminLogin(B);
  const probe = latencyProbe(normal);
  try {
    await flood(admin);
    assertLatency(await probe.stop(), what);
  } finally {
    await probe.stop().catch(() => {});
    normal.destroy();
    await admin.terminate();
    cleanup();
  }
  await newClientGetsIn();
}

describe(`connection floods beyond max_client_conn = ${MAX_CLIENTS}`, () => {
  test('300 raw TCP connections that send nothing: console and existing client unaffected, newcomers refused', async () => {
    const socks: net.Socket[] = [];
    await duringFlood('during the silent flood', async (admin) => {
      for (let i = 0; i < 300; i += 50) {
        socks.push(...(await Promise.all(Array.from({ length: 50 }, () => rawConnect().catch(() => null)))).filter((s): s is net.Socket => s !== null));
        await timedShowPools(admin);
      }
      for (const s of socks) s.on('error', () => {});
      await sleep(500);
      // a newcomer beyond the limit: PgBouncer's FATAL (the silent connections count as clients)
      const t0 = Date.now();
      const a = await attemptLogin({ host: B.host, port: B.port }, { user: 'trust_user', database: 'db', timeoutMs: 10_000 });
      a.client.destroy();
      assert.ok(a.error, `a client beyond max_client_conn is refused (took ${Date.now() - t0} ms)`);
      assert.deepEqual([a.error.S, a.error.C, a.error.M], ['FATAL', '08P01', 'no more connections allowed (max_client_conn)'], JSON.stringify(a.error));
      // a new console session gets in regardless, and answers quickly
      const admin2 = await adminLogin(B);
      await timedShowPools(admin2);
      await admin2.terminate();
    }, () => socks.forEach((s) => s.destroy()));
  });

  test('250 clients logging in at once: at most max_client_conn get in, the rest get the max_client_conn FATAL', async () => {
    const opened: WireClient[] = [];
    await duringFlood('during the login flood', async (admin) => {
      const showTimes: number[] = [];
      let flooding = true;
      const consoleLoop = (async () => {
        while (flooding) {
          showTimes.push(await timedShowPools(admin));
          await sleep(100);
        }
      })();
      const attempts = await Promise.all(Array.from({ length: 250 }, () =>
        attemptLogin({ host: B.host, port: B.port }, { user: 'trust_user', database: 'db', timeoutMs: 30_000 })
          .then((a) => (opened.push(a.client), a), (e: Error) => e)));
      const failures = attempts.filter((a): a is Error => a instanceof Error);
      assert.deepEqual(failures.map((e) => e.message), [], 'every attempt ends in a login or an ErrorResponse (no hang, no bare close)');
      const ok = attempts.filter((a) => !(a instanceof Error) && a.login !== null);
      const refused = attempts.filter((a) => !(a instanceof Error) && a.error !== null).map((a) => (a as { error: { S: string; C: string; M: string } }).error);
      console.log(`# ${ok.length} logged in, ${refused.length} refused`);
      for (const e of refused) assert.deepEqual([e.S, e.C, e.M], ['FATAL', '08P01', 'no more connections allowed (max_client_conn)']);
      assert.ok(ok.length <= MAX_CLIENTS, `${ok.length} logged in, more than max_client_conn`);
      assert.ok(ok.length >= MAX_CLIENTS - 5, `${ok.length} logged in: the limit is ${MAX_CLIENTS} (normal client and console count too)`);
      // the ones that got in work (5 servers for all of them)
      const results = await Promise.all(ok.map((a) => (a as { client: WireClient }).client.query('SELECT 7', 30_000)));
      assert.ok(results.every((r) => r.error === null && r.rows[0]?.[0] === '7'));
      flooding = false;
      await consoleLoop;
      console.log(`# SHOW POOLS during the flood: ${showTimes.length} times, max ${Math.max(...showTimes).toFixed(0)} ms`);
    }, () => opened.forEach((c) => c.destroy()));
  });

  test('8 s of login churn by 150 clients against a limit of 100: no stall, every refusal is the max_client_conn FATAL', async () => {
    await duringFlood('during the login churn', async (admin) => {
      const until = Date.now() + 8000;
      let logins = 0;
      let refusals = 0;
      const odd: string[] = [];
      const worker = async (): Promise<void> => {
        while (Date.now() < until) {
          let a;
          try {
            a = await attemptLogin({ host: B.host, port: B.port }, { user: 'trust_user', database: 'db', timeoutMs: 30_000 });
          } catch (e) {
            odd.push((e as Error).message);
            continue;
          }
          if (a.login) {
            logins++;
            const r = await a.client.query('SELECT 1', 30_000);
            if (r.error) odd.push(JSON.stringify(r.error));
            await a.client.terminate();
          } else {
            refusals++;
            if (a.error?.M !== 'no more connections allowed (max_client_conn)' || a.error.C !== '08P01') odd.push(JSON.stringify(a.error));
            a.client.destroy();
          }
        }
      };
      const showTimes: number[] = [];
      const consoleLoop = (async () => {
        while (Date.now() < until) {
          showTimes.push(await timedShowPools(admin));
          await sleep(200);
        }
      })();
      await Promise.all([...Array.from({ length: 150 }, worker), consoleLoop]);
      console.log(`# churn: ${logins} logins, ${refusals} refusals, SHOW POOLS max ${Math.max(...showTimes).toFixed(0)} ms`);
      assert.deepEqual(odd, [], 'only logins and max_client_conn refusals');
      assert.ok(logins > 100, `clients kept getting in (${logins})`);
    });
  });
});
