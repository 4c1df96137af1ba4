// Server hosts of a [databases] entry: multi-host `host=a,b` with load_balance_hosts round-robin
// and disable (the second host used after a connect to the first fails), a host name resolved
// through DNS (`localhost`, and a name that does not resolve: `server DNS lookup failed`), `*`
// auto-databases (`registered new auto-database: X`) and autodb_idle_timeout.
//
// To tell the hosts apart, 127.0.0.2:<PostgreSQL's port> is a TCP forwarder to the test
// PostgreSQL (all of 127/8 is loopback on Linux) that counts the connections it carries;
// 127.0.0.3:<port> has nothing listening (a closed port).

import { TcpGate } from '../lib/tcp-gate.js';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres } from '../lib/postgres.js';
import { sleep } from '../lib/procs.js';
import { WireClient } from '../lib/wire.js';
import { closingRe, ensureDatabase, expectFatal, login, roleUserlist } from '../lib/pool-helpers.js';

const pg = await sharedPostgres();
const DB = 'txp_hosts';
const AUTO = 'txp_hosts_auto';


/** 127.0.0.2:port → the test PostgreSQL; counts the connections it forwarded. */
let fwd: TcpGate;
const started: TestPgbun[] = [];
const open: WireClient[] = [];

async function bouncer(settings: Record<string, string | number>, databases: Record<string, string>): Promise<TestPgbun> {
  const b = await startPgbun({
    ini: { pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', ...settings }, databases },
    userlist: roleUserlist(),
  });
  started.push(b);
  return b;
}

async function cl(b: TestPgbun, db: string): Promise<WireClient> {
  const { client } = await login(b, 'trust_user', db);
  open.push(client);
  return client;
}

const conn = (host: string, extra = ''): string => `host=${host} port=${pg.port} dbname=${DB} ${extra}`.trim();

before(async () => {
  await ensureDatabase(pg, DB);
  await ensureDatabase(pg, AUTO);
  fwd = await new TcpGate(pg, { host: '127.0.0.2', port: pg.port }).start();
});

after(async () => {
  for (const c of open) c.destroy();
  await Promise.all(started.map((b) => b.stop()));
  fwd?.close();
});

/** n clients at once each holding a server for a moment: n new server connections. */
async function busy(b: TestPgbun, db: string, n: number): Promise<void> {
  const cs = await Promise.all(Array.from({ length: n }, () => cl(b, db)));
  // long enough that every client needs a server of its own (logins are one at a time)
  const rs = await Promise.all(cs.map((c) => c.query('SELECT pg_sleep(1), current_database()', 15_000)));
  for (const r of rs) {
    assert.equal(r.error, null, JSON.stringify(r.error));
    assert.equal(r.rows[0][1], DB);
  }
  await Promise.all(cs.map((c) => c.terminate()));
}

function newConnAddrs(b: TestPgbun, db: string, from: number): string[] {
  const re = new RegExp(`S-0x[0-9a-f]+: ${db}/trust_user@([0-9.]+):${pg.port} new connection to server`);
  return b
    .log()
    .slice(from)
    .split('\n')
    .map((l) => re.exec(l)?.[1])
    .filter((x): x is string => x !== undefined);
}

describe('multiple hosts', () => {
  test('load_balance_hosts = round-robin (default), host=localhost,127.0.0.2: new connections alternate between the hosts', async () => {
    const b = await bouncer({}, { rr: conn('localhost,127.0.0.2', 'pool_size=6') });
    const before = fwd.accepted;
    const off = b.logOffset();
    await busy(b, 'rr', 6);
    const addrs = newConnAddrs(b, 'rr', off);
    assert.equal(addrs.length, 6, addrs.join(','));
    assert.deepEqual(addrs.slice().sort(), ['127.0.0.1', '127.0.0.1', '127.0.0.1', '127.0.0.2', '127.0.0.2', '127.0.0.2']);
    // strictly alternating
    for (let i = 1; i < addrs.length; i++) assert.notEqual(addrs[i], addrs[i - 1], addrs.join(','));
    assert.equal(fwd.accepted - before, 3, 'the second host carried every other connection');
  });

  test('host=127.0.0.1,localhost works (an IP and a name in one list)', async () => {
    const b = await bouncer({}, { mix: conn('127.0.0.1,localhost', 'pool_size=4') });
    const off = b.logOffset();
    await busy(b, 'mix', 4);
    assert.deepEqual(newConnAddrs(b, 'mix', off), ['127.0.0.1', '127.0.0.1', '127.0.0.1', '127.0.0.1']);
  });

  test('load_balance_hosts = disable: every connection goes to the first host while it works', async () => {
    const b = await bouncer({}, { dis: conn('127.0.0.2,127.0.0.1', 'pool_size=4 load_balance_hosts=disable') });
    const before = fwd.accepted;
    const off = b.logOffset();
    await busy(b, 'dis', 4);
    assert.deepEqual(newConnAddrs(b, 'dis', off), ['127.0.0.2', '127.0.0.2', '127.0.0.2', '127.0.0.2']);
    assert.equal(fwd.accepted - before, 4);
  });

  test('load_balance_hosts = disable, first host\'s port closed: the second host is used after the connect fails, and kept', async () => {
    const b = await bouncer({ server_login_retry: 0.3 }, { dead1: conn('127.0.0.3,127.0.0.2', 'pool_size=4 load_balance_hosts=disable') });
    const before = fwd.accepted;
    const off = b.logOffset();
    const c = await cl(b, 'dead1');
    const r = await c.query('SELECT current_database()', 10_000);
    assert.equal(r.error, null, JSON.stringify(r.error));
    assert.deepEqual(r.rows, [[DB]]);
    await b.waitForLog(closingRe('S', 'dead1', 'trust_user', 'connect failed'), 1000, off);
    assert.match(b.log().slice(off), /S-0x[0-9a-f]+: dead1\/trust_user@127\.0\.0\.3:\d+ closing because: connect failed/);
    const off2 = b.logOffset();
    await c.terminate();
    await busy(b, 'dead1', 4);
    // the pool had one server; three more, all on the working host, no new attempt on the dead one
    const addrs = newConnAddrs(b, 'dead1', off2);
    assert.ok(addrs.length >= 3 && addrs.every((a) => a === '127.0.0.2'), addrs.join(','));
    assert.doesNotMatch(b.log().slice(off2), /connect failed/);
    assert.equal(fwd.accepted - before, 1 + addrs.length);
  });
});

describe('host names (DNS)', () => {
  test('load_balance_hosts = disable, first host name does not resolve: the second host is used after the lookup fails, and kept', async () => {
    const b = await bouncer({ server_login_retry: 0.3 }, { nodns1: conn('no-such-host.invalid,127.0.0.2', 'pool_size=2 load_balance_hosts=disable') });
    const off = b.logOffset();
    const c = await cl(b, 'nodns1');
    const r = await c.query('SELECT current_database()', 10_000);
    assert.equal(r.error, null, JSON.stringify(r.error));
    assert.deepEqual(r.rows, [[DB]]);
    await b.waitForLog(/S-0x[0-9a-f]+: nodns1\/trust_user@\S+ closing because: server DNS lookup failed/, 1000, off);
    const off2 = b.logOffset();
    await c.terminate();
    await busy(b, 'nodns1', 2);
    assert.ok(newConnAddrs(b, 'nodns1', off2).every((a) => a === '127.0.0.2'));
    assert.doesNotMatch(b.log().slice(off2), /DNS lookup failed/);
  });

  test('host=localhost is resolved: the server connection goes to its address', async () => {
    const b = await bouncer({}, { dns: conn('localhost') });
    const off = b.logOffset();
    const c = await cl(b, 'dns');
    assert.deepEqual((await c.query('SELECT current_database()')).rows, [[DB]]);
    assert.deepEqual(newConnAddrs(b, 'dns', off), ['127.0.0.1']);
  });

  test('a name that does not resolve: server closed with "server DNS lookup failed", the client waits and gets query_wait_timeout', async () => {
    const b = await bouncer({ query_wait_timeout: 2 }, { nodns: conn('no-such-host.invalid') });
    const off = b.logOffset();
    const c = await WireClient.connect({ host: b.host, port: b.port });
    open.push(c);
    await c.startup({ user: 'trust_user', database: 'nodns' });
    await expectFatal(c, 'query_wait_timeout', 6000);
    await b.waitForLog(/closing because: server DNS lookup failed \(age=\d+s\)/, 1000, off);
  });
});

describe('auto-databases (`*`)', () => {
  test('an unknown database name is built from `*` (logged), dropped after autodb_idle_timeout, and registered again', async () => {
    const b = await bouncer(
      { autodb_idle_timeout: 1, server_idle_timeout: 0.5, server_lifetime: 3600 },
      { '*': `host=127.0.0.1 port=${pg.port}`, txp_conf: conn('127.0.0.1') },
    );
    const off = b.logOffset();
    const c = await cl(b, AUTO);
    assert.deepEqual((await c.query('SELECT current_database()')).rows, [[AUTO]], 'dbname defaults to the requested name');
    await b.waitForLog(new RegExp(`LOG registered new auto-database: ${AUTO}$`), 1000, off);
    // a configured name is not an auto-database
    const d = await cl(b, 'txp_conf');
    assert.deepEqual((await d.query('SELECT current_database()')).rows, [[DB]]);
    assert.doesNotMatch(b.log().slice(off), /registered new auto-database: txp_conf/);
    // still in use: not dropped
    await sleep(1500);
    assert.doesNotMatch(b.log().slice(off), /dropping database/);
    await c.terminate();
    await b.waitForLog(
      new RegExp(`LOG dropping database '${AUTO}' as it does not exist anymore or inactive auto-database$`),
      6000,
      off,
    );
    const off2 = b.logOffset();
    const e = await cl(b, AUTO);
    assert.deepEqual((await e.query('SELECT 1')).rows, [['1']]);
    await b.waitForLog(new RegExp(`registered new auto-database: ${AUTO}$`), 1000, off2);
    assert.doesNotMatch(b.log().slice(off), /dropping database 'txp_conf'/, 'configured databases are never dropped');
  });
});
