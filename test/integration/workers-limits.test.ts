// workers = N: the pooler's limits hold for the sum over every event loop, never N times over
// (src/pool/limits.ts): max_client_conn, max_db_client_connections and
// max_user_client_connections refuse the client one too many on whichever loop it lands;
// pool_size, max_db_connections and max_user_connections never let PostgreSQL see more server
// connections than configured, while every client's query completes, since a loop whose
// clients wait gets a server another loop gives up (moving quotas); min_pool_size keeps that
// many servers over all loops together.
//
// Which loop serves a client: the kernel spreads TCP connections over the loops' sockets
// (SO_REUSEPORT), and a connection id is `seq * N + loop` (pool/ids.ts), which the log prefix
// C-0x… encodes, so the client's port in its log line tells the loop. Server connections are
// counted in pg_stat_activity, in databases only this file uses (wk_lim*).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres } from '../lib/postgres.js';
import { sleep } from '../lib/procs.js';
import { WireClient } from '../lib/wire.js';
import { ensureDatabase, expectFatal, login, reEscape, roleUserlist, sampleWhile, serverCount, waitUntil } from '../lib/pool-helpers.js';

const pg = await sharedPostgres();
const DBS = ['wk_lim', 'wk_limtx', 'wk_limst', 'wk_limdb', 'wk_limu1', 'wk_limu2', 'wk_limmin', 'wk_limcl'];
const c = (dbname: string, extra: Record<string, string | number> = {}): string => pgConnstr(pg, { dbname, ...extra });

const started: TestPgbun[] = [];
const open: WireClient[] = [];

before(async () => {
  for (const d of DBS) await ensureDatabase(pg, d);
});

after(async () => {
  for (const cl of open) cl.destroy();
  await Promise.all(started.map((b) => b.stop()));
});

async function start(workers: number, pgbouncer: Record<string, string | number>, databases: Record<string, string>,
  users: Record<string, string> = {}): Promise<TestPgbun> {
  const b = await startPgbun({
    ini: {
      pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', workers, ...pgbouncer },
      databases,
      users,
    },
    userlist: roleUserlist(),
  });
  started.push(b);
  // it listens before the worker threads do: until they are up every client lands on loop 0
  await b.waitForLog(/ process up: /, 20_000);
  return b;
}

const PTR_BASE = 0x7f0000000000;

/** The loop of the client connection from local `port`, from its first log line after `from`. */
async function loopOfPort(b: TestPgbun, port: number, workers: number, from: number): Promise<number> {
  const line = await b.waitForLog(new RegExp(` C-0x([0-9a-f]+): \\S+@127\\.0\\.0\\.1:${port} `), 5000, from);
  const ptr = parseInt(/ C-0x([0-9a-f]+):/.exec(line)![1]!, 16);
  return ((ptr - PTR_BASE) / 16) % workers;
}

interface Placed {
  client: WireClient;
  loop: number;
}

/** Log in (trust) and tell the loop that serves the client. */
async function loginOn(b: TestPgbun, workers: number, user: string, database: string): Promise<Placed> {
  const from = b.logOffset();
  const { client } = await login(b, user, database);
  open.push(client);
  return { client, loop: await loopOfPort(b, client.socket.localPort!, workers, from) };
}

async function close(cl: WireClient): Promise<void> {
  await cl.terminate();
  await cl.closedPromise;
}

/**
 * `perLoop` clients of user/database on every loop: clients that land on a loop that has its
 * share already are closed again (and are gone from pgbun's counts when this returns).
 */
async function clientsOnEveryLoop(b: TestPgbun, workers: number, perLoop: number, user: string, database: string): Promise<Placed[]> {
  const placed: Placed[] = [];
  for (let attempt = 0; placed.length < workers * perLoop; attempt++) {
    assert.ok(attempt < 40 * workers * perLoop, `clients did not spread over ${workers} loops: ${placed.map((p) => p.loop).join(',')}`);
    const p = await loginOn(b, workers, user, database);
    if (placed.filter((x) => x.loop === p.loop).length < perLoop) placed.push(p);
    else await close(p.client);
  }
  return placed;
}

/**
 * Log in attempts that pgbun must refuse with `fatal`, until refusals were seen on every loop;
 * returns how many were made.
 */
async function refusedOnEveryLoop(b: TestPgbun, workers: number, user: string, database: string, fatal: string): Promise<number> {
  const seen = new Set<number>();
  let n = 0;
  while (seen.size < workers) {
    assert.ok(n < 30 * workers, `refusals seen only on loops ${[...seen].join(',')}`);
    n++;
    const from = b.logOffset();
    const cl = await WireClient.connect({ host: b.host, port: b.port });
    open.push(cl);
    const port = cl.socket.localPort!;
    await cl.startup({ user, database });
    await expectFatal(cl, fatal);
    seen.add(await loopOfPort(b, port, workers, from));
  }
  return n;
}

/** Run `sql` on every client at once; the most server connections PostgreSQL had meanwhile. */
async function busy(clients: WireClient[], sql: string, count: () => Promise<number>): Promise<number> {
  const work = Promise.all(clients.map(async (cl) => {
    const r = await cl.query(sql, 60_000);
    assert.equal(r.error, null, JSON.stringify(r.error));
    return r.rows;
  }));
  const samples = await sampleWhile(work, count, 30);
  for (const rows of await work) assert.equal(rows.length, 1);
  return Math.max(...samples, await count());
}

describe('workers: client limits over all loops', () => {
  test('max_client_conn = 4 with 2 loops: the fifth client is refused on either loop; a client closed on one loop makes room on the other', async () => {
    const b = await start(2, { max_client_conn: 4 }, { wk: c('wk_limcl') });
    const mine = await clientsOnEveryLoop(b, 2, 2, 'trust_user', 'wk');
    await refusedOnEveryLoop(b, 2, 'trust_user', 'wk', 'no more connections allowed (max_client_conn)');
    // one client of loop 0 leaves: a client landing on loop 1 (which has 2 already) gets its place
    await close(mine.find((p) => p.loop === 0)!.client);
    let other: Placed | null = null;
    for (let i = 0; other === null; i++) {
      assert.ok(i < 40, 'no client landed on loop 1');
      const p = await loginOn(b, 2, 'trust_user', 'wk');
      if (p.loop === 1) other = p;
      else await close(p.client);
    }
    assert.deepEqual((await other.client.query('SELECT 1')).rows, [['1']]);
    // and the limit holds again
    const cl = await WireClient.connect({ host: b.host, port: b.port });
    open.push(cl);
    await cl.startup({ user: 'trust_user', database: 'wk' });
    await expectFatal(cl, 'no more connections allowed (max_client_conn)');
  });

  test('max_db_client_connections and max_user_client_connections count the clients of every loop', async () => {
    const b = await start(2, { max_client_conn: 100 }, {
      wk_db3: c('wk_limcl', { max_db_client_connections: 3 }),
      wk_a: c('wk_limcl'),
      wk_b: c('wk_limcl'),
    }, { md5_user: 'max_user_client_connections=3' });
    const dbClients = await clientsOnEveryLoop(b, 2, 1, 'trust_user', 'wk_db3');
    const third = await loginOn(b, 2, 'trust_user', 'wk_db3');
    assert.deepEqual((await third.client.query('SELECT 1')).rows, [['1']]);
    await refusedOnEveryLoop(b, 2, 'trust_user', 'wk_db3', 'client connections exceeded (max_db_client_connections)');
    // other databases do not count
    assert.deepEqual((await (await loginOn(b, 2, 'trust_user', 'wk_a')).client.query('SELECT 1')).rows, [['1']]);
    for (const p of [...dbClients, third]) await close(p.client);

    // md5_user: 3 clients over two databases and both loops
    const userClients = [
      ...(await clientsOnEveryLoop(b, 2, 1, 'md5_user', 'wk_a')),
      await loginOn(b, 2, 'md5_user', 'wk_b'),
    ];
    assert.equal(userClients.length, 3);
    await refusedOnEveryLoop(b, 2, 'md5_user', 'wk_b', 'client connections exceeded (max_user_client_connections)');
    await close(userClients[0]!.client);
    const again = await loginOn(b, 2, 'md5_user', 'wk_b');
    assert.deepEqual((await again.client.query('SELECT current_user')).rows, [['md5_user']]);
  });
});

describe('workers: server limits over all loops', () => {
  test('pool_size = 2 with 3 loops: 2 clients on every loop, never more than 2 servers, every query completes', async () => {
    const b = await start(3, { default_pool_size: 2, max_client_conn: 100 }, { wk: c('wk_lim') });
    const placed = await clientsOnEveryLoop(b, 3, 2, 'trust_user', 'wk');
    assert.ok(await serverCount(pg, 'wk_lim') <= 2);
    const clients = placed.map((p) => p.client);
    for (let round = 0; round < 2; round++) {
      const most = await busy(clients, 'SELECT pg_sleep(0.2)', () => serverCount(pg, 'wk_lim'));
      assert.ok(most <= 2, `PostgreSQL had ${most} server connections for pool_size = 2`);
    }
    // the loops passed the two servers around: some were given up to another loop
    assert.match(b.log(), new RegExp(`S-0x[0-9a-f]+: wk/trust_user@\\S+ closing because: ${reEscape('evicted')} `));
  });

  test('max_db_connections = 2 with 3 loops: two pools of the database, clients on every loop, never more than 2 servers', async () => {
    const b = await start(3, { default_pool_size: 5, max_client_conn: 100 }, { wk_maxdb: c('wk_limdb', { max_db_connections: 2 }) });
    const clients = [
      ...(await clientsOnEveryLoop(b, 3, 1, 'trust_user', 'wk_maxdb')),
      ...(await clientsOnEveryLoop(b, 3, 1, 'md5_user', 'wk_maxdb')),
    ].map((p) => p.client);
    for (let round = 0; round < 2; round++) {
      const most = await busy(clients, 'SELECT pg_sleep(0.2)', () => serverCount(pg, 'wk_limdb'));
      assert.ok(most <= 2, `PostgreSQL had ${most} server connections for max_db_connections = 2`);
    }
  });

  test('max_user_connections = 2 with 2 loops: the user\'s clients of two databases on both loops, never more than 2 servers', async () => {
    const b = await start(2, { default_pool_size: 5, max_client_conn: 100 },
      { wk_u1: c('wk_limu1'), wk_u2: c('wk_limu2') }, { scram_user: 'max_user_connections=2' });
    const clients = [
      ...(await clientsOnEveryLoop(b, 2, 2, 'scram_user', 'wk_u1')),
      ...(await clientsOnEveryLoop(b, 2, 2, 'scram_user', 'wk_u2')),
    ].map((p) => p.client);
    // one query for both databases: a server moving from one to the other is never counted twice
    const count = async (): Promise<number> => Number((await pg.query<{ n: string }>(
      `SELECT count(*) AS n FROM pg_stat_activity
        WHERE datname IN ('wk_limu1', 'wk_limu2') AND usename = 'scram_user' AND backend_type = 'client backend'`))[0]!.n);
    for (let round = 0; round < 2; round++) {
      const most = await busy(clients, 'SELECT pg_sleep(0.2)', count);
      assert.ok(most <= 2, `PostgreSQL had ${most} server connections for max_user_connections = 2`);
    }
  });

  test('a loop holding the only server in a transaction: the other loop\'s client waits, and gets it once the transaction ends', async () => {
    const b = await start(2, { default_pool_size: 1, max_client_conn: 100 }, { wk: c('wk_limtx') });
    const [p0, p1] = await clientsOnEveryLoop(b, 2, 1, 'trust_user', 'wk').then((ps) => ps.sort((x, y) => x.loop - y.loop));
    assert.equal((await p0!.client.query('BEGIN')).status, 'T');
    const pid0 = (await p0!.client.query('SELECT pg_backend_pid()')).rows[0]![0];
    const waiting = p1!.client.query('SELECT pg_backend_pid()', 30_000);
    await sleep(700);
    assert.equal(await serverCount(pg, 'wk_limtx'), 1, 'no second server while the first is in a transaction');
    await p0!.client.query('COMMIT');
    const r = await waiting;
    assert.equal(r.error, null);
    assert.notEqual(r.rows[0]![0], pid0, 'loop 1 runs its own server, opened once loop 0 gave its one up');
    assert.equal(await serverCount(pg, 'wk_limtx'), 1);
  });
});

describe('workers: no loop\'s clients wait for ever', () => {
  test('pool_size = 1 with 2 loops: one loop\'s clients keep its server busy; the other loop\'s client still gets it', async () => {
    const b = await start(2, { default_pool_size: 1, max_client_conn: 100 }, { wk: c('wk_limst') });
    const placed = await clientsOnEveryLoop(b, 2, 4, 'trust_user', 'wk');
    const busyLoop = placed.filter((p) => p.loop === 0).map((p) => p.client);
    const other = placed.find((p) => p.loop === 1)!.client;
    // loop 0 always has clients of its own waiting when its server is released: the one
    // released had 3 queries' time to send its next
    let stop = false;
    let rounds = 0;
    const load = Promise.all(busyLoop.map(async (cl) => {
      while (!stop) {
        const r = await cl.query('SELECT pg_sleep(0.1)', 30_000);
        assert.equal(r.error, null, JSON.stringify(r.error));
        rounds++;
      }
    }));
    await waitUntil('loop 0 to be busy', () => rounds, (n) => n >= 8, 10_000, 10);
    const deadline = setTimeout(() => { stop = true; }, 20_000);
    const r = await other.query('SELECT 1', 30_000);
    const stillBusy = !stop;
    stop = true;
    clearTimeout(deadline);
    await load;
    assert.deepEqual(r.rows, [['1']]);
    assert.ok(stillBusy, 'loop 1\'s client was served only once loop 0 stopped');
    assert.ok(await serverCount(pg, 'wk_limst') <= 1);
  });
});

describe('workers: min_pool_size over all loops', () => {
  test('min_pool_size = 3 with a forced user and 3 loops: exactly 3 servers in total, kept there', async () => {
    const b = await start(3, { default_pool_size: 5 }, { wk_min: c('wk_limmin', { user: 'trust_user', min_pool_size: 3 }) });
    await waitUntil('3 servers', () => serverCount(pg, 'wk_limmin'), (n) => n >= 3, 10_000);
    for (let i = 0; i < 8; i++) {
      await sleep(250);
      assert.equal(await serverCount(pg, 'wk_limmin'), 3, 'min_pool_size is for all loops together');
    }
    assert.equal(b.proc.exitCode, null);
  });
});
