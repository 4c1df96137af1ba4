// workers = N: the console is the whole pooler's, whichever event loop the admin's connection
// landed on. SHOW merges every loop's rows (CLIENTS lists every client, POOLS and STATS_TOTALS sum),
// the control commands and SET/RELOAD act on every loop (PAUSE answers when every loop has
// released its servers), KILL_CLIENT reaches the loop that has the client, signals reach every
// loop, SHUTDOWN ends the process once, and /metrics covers all loops.
//
// Which loop has a connection: SHOW CLIENTS `id % N` (ids are seq * N + loop). The kernel spreads
// TCP connections over the loops by a hash of the addresses, so the tests open connections until
// every loop has one.
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { freePort } from '../lib/procs.js';
import { query, type WireClient } from '../lib/wire.js';
import {
  adminLogin, adminQuery, eventually, expectAdminError, expectTag, pendingAfter, show, startAdminBouncer, userLogin,
} from './admin-lib.js';

const pg = await sharedPostgres();
const N = 3;

type Row = Record<string, string | null>;

/** The SHOW CLIENTS row of a connection of ours (matched by its local port). */
async function clientRow(admin: WireClient, c: WireClient): Promise<Row> {
  const port = String(c.socket.localPort);
  const row = (await show(admin, 'SHOW CLIENTS')).find((r) => r.port === port && r.addr === '127.0.0.1');
  assert.ok(row, `no SHOW CLIENTS row for local port ${port}`);
  return row;
}

async function loopOf(admin: WireClient, c: WireClient): Promise<number> {
  return Number((await clientRow(admin, c)).id) % N;
}

/**
 * Connections opened by `open` until every loop has one; returns one per loop, by loop, and the
 * rest (still open, for the caller to close).
 */
async function onEveryLoop(admin: WireClient, open: () => Promise<WireClient>): Promise<{ byLoop: WireClient[]; all: WireClient[] }> {
  const byLoop: Array<WireClient | undefined> = new Array(N).fill(undefined);
  const all: WireClient[] = [];
  for (let k = 0; k < 100 && byLoop.some((c) => c === undefined); k++) {
    const c = await open();
    all.push(c);
    const loop = await loopOf(admin, c);
    byLoop[loop] ??= c;
  }
  assert.ok(byLoop.every((c) => c !== undefined), 'connections reached every loop');
  return { byLoop: byLoop as WireClient[], all };
}

function pool(rows: Row[], db = TEST_DB): Row | undefined {
  return rows.find((r) => r.database === db && r.user === 'trust_user');
}

function httpGet(host: string, port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http.get({ host, port, path, agent: false, timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });
}

function metric(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m === null || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/([a-zA-Z_]+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return undefined;
}

describe('workers: one console for every loop', () => {
  let b: TestPgbun;
  let metricsPort: number;
  /** an admin connection on each loop */
  let admins: WireClient[];
  let allAdmins: WireClient[];
  /** a client connection on each loop */
  let users: WireClient[];
  let allUsers: WireClient[];

  before(async () => {
    metricsPort = await freePort();
    b = await startAdminBouncer(pg, { workers: N, metrics_listen_port: metricsPort, stats_period: 1 });
    const first = await adminLogin(b);
    const a = await onEveryLoop(first, () => adminLogin(b));
    admins = a.byLoop;
    allAdmins = [first, ...a.all];
    const u = await onEveryLoop(first, () => userLogin(b));
    users = u.byLoop;
    allUsers = u.all;
  });

  after(async () => {
    for (const c of [...(allUsers ?? []), ...(allAdmins ?? [])]) c.destroy();
    await b?.stop();
  });

  test('SHOW CLIENTS lists the clients of every loop, from an admin on any loop', async () => {
    const want = new Set(allUsers.map((c) => String(c.socket.localPort)));
    for (const admin of admins) {
      const rows = (await show(admin, 'SHOW CLIENTS')).filter((r) => r.database === TEST_DB);
      assert.deepEqual(new Set(rows.map((r) => r.port)), want);
      assert.deepEqual(new Set(rows.map((r) => Number(r.id) % N)), new Set([0, 1, 2]));
      // ids stay unique over the pooler
      assert.equal(new Set(rows.map((r) => r.id)).size, rows.length);
      // and the admins of every loop are in the `pgbouncer` pool's rows
      assert.equal((await show(admin, 'SHOW CLIENTS')).filter((r) => r.database === 'pgbouncer').length, allAdmins.length);
    }
  });

  test('SHOW POOLS, DATABASES, USERS and LISTS sum the loops; SHOW SERVERS lists every server', async () => {
    // every user client runs a transaction and holds its server: one server per client
    for (const c of allUsers) await c.query('BEGIN');
    for (const c of allUsers) await c.query('SELECT 1');
    try {
      for (const admin of admins) {
        const p = pool(await show(admin, 'SHOW POOLS'))!;
        assert.equal(p.cl_active, String(allUsers.length));
        assert.equal(p.sv_active, String(allUsers.length));
        assert.equal((await show(admin, 'SHOW POOLS')).filter((r) => r.database === TEST_DB).length, 1, 'one row per pool');
        const servers = (await show(admin, 'SHOW SERVERS')).filter((r) => r.database === TEST_DB && r.state === 'active');
        assert.equal(servers.length, allUsers.length);
        assert.deepEqual(new Set(servers.map((r) => Number(r.id) % N)), new Set([0, 1, 2]));
        const db = (await show(admin, 'SHOW DATABASES')).find((r) => r.name === TEST_DB)!;
        assert.equal(db.current_connections, String(allUsers.length));
        assert.equal(db.current_client_connections, String(allUsers.length));
        assert.equal((await show(admin, 'SHOW DATABASES')).filter((r) => r.name === TEST_DB).length, 1);
        const user = (await show(admin, 'SHOW USERS')).find((r) => r.name === 'trust_user')!;
        assert.equal(user.current_connections, String(allUsers.length));
        const lists = new Map((await show(admin, 'SHOW LISTS')).map((r) => [r.list, Number(r.items)]));
        assert.equal(lists.get('used_servers'), allUsers.length);
        assert.equal(lists.get('used_clients'), allUsers.length + allAdmins.length);
        // every loop has the same databases and users: counted once
        assert.equal(lists.get('databases'), (await show(admin, 'SHOW DATABASES')).length);
        assert.equal(lists.get('users'), (await show(admin, 'SHOW USERS')).length);
        assert.equal(lists.get('pools'), (await show(admin, 'SHOW POOLS')).length);
        const sockets = (await show(admin, 'SHOW SOCKETS')).filter((r) => r.database === TEST_DB);
        assert.equal(sockets.length, 2 * allUsers.length);
        const mem = new Map((await show(admin, 'SHOW MEM')).map((r) => [r.name, Number(r.used)]));
        assert.equal(mem.get('server_cache'), allUsers.length);
      }
    } finally {
      for (const c of allUsers) await c.query('COMMIT');
    }
  });

  test('every SHOW answers with the columns of one loop; FDS lists each listening socket once', async () => {
    const names = ['CLIENTS', 'CONFIG', 'DATABASES', 'FDS', 'LISTS', 'PEERS', 'PEER_POOLS', 'POOLS', 'SERVERS',
      'SOCKETS', 'ACTIVE_SOCKETS', 'STATS', 'STATS_TOTALS', 'STATS_AVERAGES', 'USERS', 'VERSION', 'TOTALS', 'MEM',
      'DNS_HOSTS', 'DNS_ZONES', 'STATE'];
    for (const name of names) {
      const r = await adminQuery(admins[1]!, `SHOW ${name}`);
      assert.equal(r.error, null, name);
      assert.ok(r.cols.length > 0, name);
    }
    const fds = await show(admins[2]!, 'SHOW FDS');
    const listeners = fds.filter((r) => r.task === 'pooler');
    assert.equal(new Set(listeners.map((r) => r.fd)).size, listeners.length, 'each listening fd once');
    // each loop has TCP listeners of its own and the Unix socket is shared
    assert.equal(listeners.filter((r) => r.addr === 'unix').length, 1);
    assert.ok(listeners.filter((r) => r.addr !== 'unix').length >= N);
    assert.equal(fds.filter((r) => r.task === 'client' && r.database === TEST_DB).length, allUsers.length);
  });

  test('SUSPEND answers when every loop has flushed; RESUME lets every loop read again', async () => {
    const [a0, a1] = admins;
    await expectTag(a1!, 'SUSPEND', 'SUSPEND', 20_000);
    for (const admin of admins) {
      assert.deepEqual((await show(admin, 'SHOW STATE')).map((r) => r.value), ['no', 'no', 'yes']);
    }
    // no loop reads its clients
    const queries = users.map((c) => c.query('SELECT 5', 20_000));
    assert.ok(await pendingAfter(Promise.race(queries), 500), 'no query is answered while suspended');
    await expectTag(a0!, 'RESUME', 'RESUME');
    for (const q of queries) assert.deepEqual((await q).rows, [['5']]);
  });

  test('SHOW STATS_TOTALS, STATS and TOTALS count the queries of every loop', async () => {
    const count = async (admin: WireClient): Promise<number> =>
      Number((await show(admin, 'SHOW STATS_TOTALS')).find((r) => r.database === TEST_DB)!.query_count);
    const before = await count(admins[0]!);
    for (const c of users) for (let k = 0; k < 5; k++) await c.query('SELECT 1');
    for (const admin of admins) {
      assert.equal(await count(admin) - before, 5 * N);
      const stats = (await show(admin, 'SHOW STATS')).find((r) => r.database === TEST_DB)!;
      assert.equal(Number(stats.total_query_count) - before, 5 * N);
      const totals = new Map((await show(admin, 'SHOW TOTALS')).map((r) => [r.name, Number(r.value)]));
      assert.ok(totals.get('total_query_count')! >= 5 * N + before);
    }
  });

  test('SET and RELOAD apply in every loop; SHOW CONFIG on another loop shows the value', async () => {
    const from = b.logOffset();
    await expectTag(admins[1]!, 'SET default_pool_size = 7', 'SET default_pool_size=7');
    for (const admin of admins) {
      const cfg = new Map((await show(admin, 'SHOW CONFIG')).map((r) => [r.key, r.value]));
      assert.equal(cfg.get('default_pool_size'), '7');
      assert.equal((await show(admin, 'SHOW DATABASES')).find((r) => r.name === TEST_DB)!.pool_size, '7');
    }
    // RELOAD re-reads the ini everywhere (default_pool_size is reset to the file's), logged once
    await expectTag(admins[2]!, 'RELOAD', 'RELOAD');
    for (const admin of admins) {
      const cfg = new Map((await show(admin, 'SHOW CONFIG')).map((r) => [r.key, r.value]));
      assert.equal(cfg.get('default_pool_size'), '20');
    }
    // a failing SET answers once, with one set of log lines
    await expectAdminError(admins[2]!, 'SET default_pool_size = bogus', 'SET failed');
    const lines = b.log().slice(from).split('\n');
    assert.equal(lines.filter((l) => /LOG RELOAD command issued/.test(l)).length, 1);
    assert.equal(lines.filter((l) => /ERROR SET failed/.test(l)).length, 1);
  });

  test('PAUSE answers when every loop has released its servers; RESUME releases all', async () => {
    const [a0, a1] = admins;
    // a transaction open on loop 1 holds its server; the PAUSE comes from loop 0
    const holder = users[1]!;
    await holder.query('BEGIN');
    await holder.query('SELECT 1');
    const from = b.logOffset();
    await a0!.write(query('PAUSE'));
    const paused = a0!.collect(20_000);
    assert.ok(await pendingAfter(paused, 500), 'PAUSE waits for the server still in a transaction on another loop');
    await b.waitForLog(/LOG PAUSE command issued/, 2000, from);
    // (the PAUSE's own admin waits for its answer)
    for (const admin of admins.slice(1)) {
      assert.deepEqual((await show(admin, 'SHOW STATE')).map((r) => r.value), ['no', 'yes', 'no']);
    }
    // a query on every other loop waits
    const waiting = users.filter((c) => c !== holder).map((c) => c.query('SELECT 2', 20_000));
    await eventually('clients waiting on every other loop', async () =>
      pool(await show(a1!, 'SHOW POOLS'))?.cl_waiting === String(N - 1));
    await expectAdminError(a1!, 'PAUSE', 'already suspended/paused');
    await holder.query('COMMIT');
    const r = await paused;
    assert.deepEqual(r.tags, ['PAUSE']);
    assert.equal((await show(a1!, 'SHOW SERVERS')).filter((s) => s.database === TEST_DB).length, 0);
    // RESUME from another loop's admin releases the waiting queries of every loop
    await expectTag(a1!, 'RESUME', 'RESUME');
    for (const q of waiting) assert.deepEqual((await q).rows, [['2']]);
    for (const admin of admins) {
      assert.deepEqual((await show(admin, 'SHOW STATE')).map((r) => r.value), ['yes', 'no', 'no']);
    }
    assert.equal(b.log().slice(from).match(/LOG PAUSE command issued/g)?.length, 1);
  });

  test('PAUSE db, DISABLE, KILL db and RECONNECT act on every loop', async () => {
    const a = admins[2]!;
    await expectTag(a, 'DISABLE small', 'DISABLE');
    for (const admin of admins) {
      assert.equal((await show(admin, 'SHOW DATABASES')).find((r) => r.name === 'small')!.disabled, '1');
    }
    await expectTag(a, 'ENABLE small', 'ENABLE');
    for (const admin of admins) {
      assert.equal((await show(admin, 'SHOW DATABASES')).find((r) => r.name === 'small')!.disabled, '0');
    }
    for (const c of users) await c.query('SELECT 1');
    await expectTag(a, `RECONNECT ${TEST_DB}`, 'RECONNECT');
    await expectTag(a, `WAIT_CLOSE ${TEST_DB}`, 'WAIT_CLOSE', 20_000);
    await expectTag(a, `PAUSE ${TEST_DB}`, 'PAUSE', 20_000);
    for (const admin of admins) {
      assert.equal((await show(admin, 'SHOW DATABASES')).find((r) => r.name === TEST_DB)!.paused, '1');
    }
    await expectTag(a, `RESUME ${TEST_DB}`, 'RESUME');
    for (const admin of admins) {
      assert.equal((await show(admin, 'SHOW DATABASES')).find((r) => r.name === TEST_DB)!.paused, '0');
    }
    for (const c of users) assert.deepEqual((await c.query('SELECT 3')).rows, [['3']]);
  });

  test('KILL_CLIENT closes a client of another loop', async () => {
    const admin = admins[0]!;
    const victims = await onEveryLoop(admin, () => userLogin(b));
    try {
      for (let loop = 1; loop < N; loop++) {
        const victim = victims.byLoop[loop]!;
        const id = (await clientRow(admin, victim)).id!;
        assert.equal(Number(id) % N, loop);
        const from = b.logOffset();
        await expectTag(admin, `KILL_CLIENT ${id}`, 'KILL_CLIENT');
        await victim.expectError({ severity: 'FATAL', code: '08P01', message: 'admin forced disconnect', onlySCM: true });
        await b.waitForLog(/closing because: admin forced disconnect/, 2000, from);
        assert.equal((await show(admins[1]!, 'SHOW CLIENTS')).some((r) => r.id === id), false);
      }
      await expectAdminError(admin, `KILL_CLIENT ${N * 1000000 + 1}`, 'client not found');
    } finally {
      for (const c of victims.all) c.destroy();
    }
  });

  test('/metrics sums the loops', async () => {
    const text = await httpGet('127.0.0.1', metricsPort, '/metrics');
    const totals = (await show(admins[0]!, 'SHOW STATS_TOTALS')).find((r) => r.database === TEST_DB)!;
    const queries = metric(text, 'pgbouncer_stats_queries_pooled_total', { database: TEST_DB })!;
    assert.ok(queries >= 5 * N && queries <= Number(totals.query_count), `${queries} vs ${totals.query_count}`);
    const clients = metric(text, 'pgbouncer_pools_client_active_connections', { database: TEST_DB, user: 'trust_user' });
    assert.equal(clients, allUsers.length);
    assert.equal(metric(text, 'pgbouncer_used_clients'), allUsers.length + allAdmins.length);
    // the latency histograms count every loop's queries too
    const histogramCount = metric(text, 'pgbun_query_duration_seconds_count', { database: TEST_DB, user: 'trust_user' })!;
    assert.ok(histogramCount >= 5 * N, String(histogramCount));
  });
});

describe('workers: signals and SHUTDOWN', () => {
  interface Pooler {
    b: TestPgbun;
    /** a client on each loop, by loop, each with a server used once */
    users: WireClient[];
    /** an admin on each loop, by loop */
    admins: WireClient[];
    /** every connection opened, users and admins */
    all: WireClient[];
  }

  /** Run `fn` with a fresh pgbun that has a client and an admin on every loop; stop it after. */
  async function withPooler(fn: (p: Pooler) => Promise<void>): Promise<void> {
    const b = await startAdminBouncer(pg, { workers: N });
    const all: WireClient[] = [];
    try {
      const first = await adminLogin(b);
      all.push(first);
      const u = await onEveryLoop(first, () => userLogin(b));
      all.push(...u.all);
      for (const c of u.all) await c.query('SELECT 1');
      const a = await onEveryLoop(first, () => adminLogin(b));
      all.push(...a.all);
      await fn({ b, users: u.byLoop, admins: a.byLoop, all });
    } finally {
      for (const c of all) c.destroy();
      await b.stop();
    }
  }

  test('SIGUSR1 pauses and SIGUSR2 resumes every loop; SIGHUP reloads every loop', () => withPooler(async ({ b, users, admins }) => {
    b.signal('SIGUSR1');
    await b.waitForLog(/LOG got SIGUSR1, pausing all activity/);
    for (const a of admins) {
      await eventually('paused on every loop', async () =>
        (await show(a, 'SHOW STATE')).map((r) => r.value).join(',') === 'no,yes,no');
    }
    const waiting = users.map((c) => c.query('SELECT 2', 20_000));
    await eventually('a client waiting on every loop', async () =>
      pool(await show(admins[0]!, 'SHOW POOLS'))?.cl_waiting === String(N));
    b.signal('SIGUSR2');
    await b.waitForLog(/LOG got SIGUSR2, continuing from PAUSE/);
    for (const q of waiting) assert.deepEqual((await q).rows, [['2']]);

    b.writeFiles({
      ini: {
        databases: { [TEST_DB]: `host=${pg.host} port=${pg.port} dbname=${TEST_DB}` },
        pgbouncer: { auth_type: 'trust', admin_users: 'admin', stats_users: 'stats', pool_mode: 'session', workers: N },
      },
    });
    const from = b.logOffset();
    b.signal('SIGHUP');
    await b.waitForLog(/LOG got SIGHUP, re-reading config/, 5000, from);
    for (const a of admins) {
      await eventually('session mode on every loop', async () =>
        (await show(a, 'SHOW CONFIG')).find((r) => r.key === 'pool_mode')?.value === 'session');
      await eventually('database small dropped on every loop', async () =>
        !(await show(a, 'SHOW DATABASES')).some((r) => r.name === 'small'));
    }
    // the drop is logged once, by the main thread
    await b.waitForLog(/dropping database 'small'/, 2000, from);
    assert.equal(b.log().slice(from).match(/dropping database 'small'/g)?.length, 1);
  }));

  test('SHUTDOWN WAIT_FOR_CLIENTS from a worker loop waits for the clients of every loop, then the process exits once', () =>
    withPooler(async ({ b, users, admins, all }) => {
      await expectTag(admins[2]!, 'SHUTDOWN WAIT_FOR_CLIENTS', 'SHUTDOWN');
      await b.waitForLog(/LOG SHUTDOWN WAIT_FOR_CLIENTS command issued/);
      for (const c of all) if (!users.includes(c)) await c.terminate();
      // the process stays up while any loop has a client
      for (let loop = 0; loop < N; loop++) {
        assert.equal(await b.waitExit(300), null, `still running with clients on loops ${loop}..${N - 1}`);
        assert.deepEqual((await users[loop]!.query('SELECT 4')).rows, [['4']]);
        await users[loop]!.terminate();
      }
      assert.deepEqual(await b.waitExit(10_000), { code: 0, signal: null });
      assert.equal(b.log().match(/LOG client connections dropped, exiting/g)?.length, 1);
      assert.doesNotMatch(b.log(), /worker \d+ exited/);
    }));

  test('SUSPEND resumes once no loop has an admin left', () => withPooler(async ({ b, users, admins, all }) => {
    const suspender = admins[1]!;
    await expectTag(suspender, 'SUSPEND', 'SUSPEND', 20_000);
    await suspender.terminate();
    // admins on the other loops keep the pooler suspended
    const q = users[0]!.query('SELECT 6', 20_000);
    assert.ok(await pendingAfter(q, 1000));
    assert.deepEqual((await show(admins[2]!, 'SHOW STATE')).map((r) => r.value), ['no', 'no', 'yes']);
    const from = b.logOffset();
    for (const c of all) if (!users.includes(c) && c !== suspender) await c.terminate();
    assert.deepEqual((await q).rows, [['6']]);
    await b.waitForLog(/LOG admin disappeared when suspended, doing RESUME/, 5000, from);
    for (const c of users) assert.deepEqual((await c.query('SELECT 7')).rows, [['7']]);
    assert.equal(b.log().slice(from).match(/admin disappeared when suspended/g)?.length, 1);
  }));

  test('SHUTDOWN from a worker loop ends the process', () => withPooler(async ({ b, admins }) => {
    await admins[1]!.write(query('SHUTDOWN'));
    assert.deepEqual(await b.waitExit(10_000), { code: 0, signal: null });
    assert.equal(b.log().match(/LOG SHUTDOWN command issued/g)?.length, 1);
    assert.doesNotMatch(b.log(), /worker \d+ exited/);
  }));

  test('SIGINT waits for the servers of every loop', () => withPooler(async ({ b, users }) => {
    for (const c of users) await c.query('BEGIN');
    for (const c of users) await c.query('SELECT 1');
    b.signal('SIGINT');
    await b.waitForLog(/LOG got SIGINT, shutting down/);
    for (let loop = 0; loop < N; loop++) {
      assert.equal(await b.waitExit(300), null, `servers still in use on loops ${loop}..${N - 1}`);
      await users[loop]!.query('COMMIT');
    }
    assert.deepEqual(await b.waitExit(10_000), { code: 0, signal: null });
    assert.equal(b.log().match(/LOG server connections dropped, exiting/g)?.length, 1);
  }));
});
