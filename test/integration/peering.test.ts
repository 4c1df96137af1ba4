// Peering (peer_id, [peers]): two pgbun processes share one port with so_reuseport. The cancel
// keys each hands out carry its peer_id; a CancelRequest that reaches the process that did not
// issue the key is forwarded, as a CancelRequest, to the owner's [peers] host/port (here its
// Unix socket, so the test decides which process gets what), and the owner cancels the query.
// A third "peer" is a fake that records what it is sent and closes when told, to see the
// forwarded bytes and SHOW PEER_POOLS / SHOW CLIENTS while a request is in flight.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { freePort, isRoot, makeTempDir, serverOsUser } from '../lib/procs.js';
import { logLines, reEscape, waitUntil } from '../lib/pool-helpers.js';
import { cancelRequest, sendCancel, WireClient, wireLogin, type QueryResult, type WireTarget } from '../lib/wire.js';
import { show } from './admin-lib.js';

const pg = await sharedPostgres();
const runAs = isRoot() ? serverOsUser() : null;
const port = await freePort();
const dir1 = makeTempDir('pgbun-peer1-', runAs);
const dir2 = makeTempDir('pgbun-peer2-', runAs);
const fakeDir = makeTempDir('pgbun-peer3-', null);
const goneDir = path.join(fakeDir, 'nothing-here');

const peers = {
  1: `host=${dir1} port=${port}`,
  2: `host=${dir2} port=${port}`,
  3: `host=${fakeDir} port=${port} pool_size=1`,
  4: `host=${goneDir} port=${port}`,
};

let A: TestPgbun;
let B: TestPgbun;
const open: WireClient[] = [];

/** What the fake peer 3 got: one entry per connection, closed when the test says so. */
const fakeConns: Array<{ sock: net.Socket; data: Buffer }> = [];
const fake = net.createServer((sock) => {
  const conn = { sock, data: Buffer.alloc(0) };
  fakeConns.push(conn);
  sock.on('data', (d: Buffer) => (conn.data = Buffer.concat([conn.data, d])));
  sock.on('error', () => {});
});

function start(peerId: number, socketDir: string): Promise<TestPgbun> {
  return startPgbun({
    ini: {
      pgbouncer: {
        auth_type: 'trust', admin_users: 'admin', listen_port: port, so_reuseport: 1, peer_id: peerId,
        unix_socket_dir: socketDir,
      },
      databases: { [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB }) },
      peers,
    },
    userlist: [['trust_user', ''], ['admin', '']],
  });
}

before(async () => {
  const fakePath = path.join(fakeDir, `.s.PGSQL.${port}`);
  await new Promise<void>((resolve) => fake.listen(fakePath, resolve));
  fs.chmodSync(fakePath, 0o777);
  A = await start(1, dir1);
  B = await start(2, dir2);
});

after(async () => {
  for (const c of open) c.destroy();
  for (const c of fakeConns) c.sock.destroy();
  fake.close();
  await A?.stop();
  await B?.stop();
});

const unix = (b: TestPgbun): WireTarget => ({ path: b.socketPath });

async function userOn(target: WireTarget): Promise<{ c: WireClient; key: { pid: number; secret: number } }> {
  const { client, login } = await wireLogin(target, { user: 'trust_user', database: TEST_DB });
  open.push(client);
  return { c: client, key: login.backendKey! };
}

async function adminOn(b: TestPgbun): Promise<WireClient> {
  const { client } = await wireLogin(unix(b), { user: 'admin', database: 'pgbouncer' });
  open.push(client);
  return client;
}

/** The peer_id and TTL a key carries (bytes 1-2 little-endian, low 2 bits of byte 7). */
function decode(key: { pid: number; secret: number }): { peerId: number; ttl: number } {
  return { peerId: ((key.pid >>> 16) & 0xff) | (((key.pid >>> 8) & 0xff) << 8), ttl: key.secret & 3 };
}

/** A key as a peer would issue it, for no client anywhere. */
function keyOf(peerId: number, ttl: number): { pid: number; secret: number } {
  return { pid: 0x2a000000 | ((peerId & 0xff) << 16) | ((peerId >> 8) << 8) | 0x5c, secret: 0x1b2c3d40 | ttl };
}

/** Send a CancelRequest and leave the connection open: closed by pgbun when the cancel is done. */
async function cancelConn(target: WireTarget, key: { pid: number; secret: number }): Promise<WireClient> {
  const c = await WireClient.connect(target, 5000);
  open.push(c);
  await c.write(cancelRequest(key.pid, key.secret));
  return c;
}

let queries = 0;

/**
 * Start a long query and wait until PostgreSQL runs it (a cancel before that would find
 * nothing); its result is `running` (wrapped: an async function would wait for it).
 */
async function longQuery(c: WireClient): Promise<{ running: Promise<QueryResult> }> {
  const marker = `peering_${process.pid}_${++queries}`;
  const running = c.query(`SELECT pg_sleep(30) AS ${marker}`, 40_000);
  running.catch(() => {}); // awaited by the caller; not unhandled if the wait below fails
  await waitUntil(`${marker} running`, () => pg.query(
    "SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1 AND pid <> pg_backend_pid()",
    'postgres', [`%${marker}%`]), (rows) => rows.length === 1, 10_000);
  return { running };
}

const peerClosing = (id: number, reason: string): RegExp =>
  new RegExp(`LOG S-0x[0-9a-f]+: peer-${id}@unix:${port} closing because: ${reEscape(reason)} \\(age=\\d+s\\)$`);

describe('peering', () => {
  test('each process puts its peer_id and TTL 3 into the keys it hands out', async () => {
    for (const [b, id] of [[A, 1], [B, 2]] as const) {
      for (let k = 0; k < 3; k++) {
        const { c, key } = await userOn(unix(b));
        assert.deepEqual(decode(key), { peerId: id, ttl: 3 });
        assert.ok(key.pid > 0, 'the pid half is positive');
        await c.terminate();
      }
    }
  });

  test('a cancel sent to the other process is forwarded to the owner, which cancels the query', async () => {
    const offA = A.logOffset();
    const offB = B.logOffset();
    const { c, key } = await userOn(unix(A));
    const t0 = Date.now();
    const { running } = await longQuery(c);
    await sendCancel(unix(B), key, 10_000);
    const r = await running;
    assert.equal(r.error?.C, '57014', JSON.stringify(r.error));
    assert.equal(r.error?.M, 'canceling statement due to user request');
    assert.ok(Date.now() - t0 < 20_000, 'cancelled, not run to the end');
    assert.deepEqual((await c.query('SELECT 1')).rows, [['1']]);
    // B sent it on to peer 1 over peer 1's Unix socket; A cancelled on PostgreSQL
    await B.waitForLog(peerClosing(1, 'successfully sent cancel request'), 5000, offB);
    await A.waitForLog(/LOG C-0x[0-9a-f]+: \S+@unix\(\d+\):\d+ closing because: successfully sent cancel request/, 5000, offA);
    assert.deepEqual(logLines(A, /failed cancel request/, offA), []);
    assert.deepEqual(logLines(B, /failed cancel request/, offB), []);
  });

  test('SHOW PEERS lists [peers]; SHOW PEER_POOLS and SHOW LISTS count the peers forwarded to', async () => {
    const admin = await adminOn(B);
    assert.deepEqual(await show(admin, 'SHOW PEERS'), [
      { peer_id: '1', host: dir1, port: String(port), pool_size: '20' },
      { peer_id: '2', host: dir2, port: String(port), pool_size: '20' },
      { peer_id: '3', host: fakeDir, port: String(port), pool_size: '1' },
      { peer_id: '4', host: goneDir, port: String(port), pool_size: '20' },
    ]);
    // the previous test forwarded one request to peer 1; it is done
    const pools = await show(admin, 'SHOW PEER_POOLS');
    assert.deepEqual(pools.find((p) => p.peer_id === '1'),
      { peer_id: '1', cl_active_cancel_req: '0', cl_waiting_cancel_req: '0', sv_active_cancel: '0', sv_login: '0' });
    const lists = Object.fromEntries((await show(admin, 'SHOW LISTS')).map((r) => [r.list, r.items]));
    assert.equal(lists.peers, '4');
    assert.equal(lists.peer_pools, String(pools.length));
    // A has forwarded nothing
    assert.deepEqual(await show(await adminOn(A), 'SHOW PEER_POOLS'), []);
  });

  test('the forwarded request is a CancelRequest with the same key and one hop less; SHOW shows it in flight', async () => {
    const admin = await adminOn(B);
    const before = fakeConns.length;
    const key = keyOf(3, 3);
    const first = await cancelConn(unix(B), key);
    await waitUntil('peer 3 reached', () => fakeConns.length, (n) => n === before + 1, 5000);
    const conn = fakeConns[before]!;
    await waitUntil('16 bytes', () => conn.data.length, (n) => n >= 16, 5000);
    const expected = Buffer.concat([cancelRequest(key.pid, key.secret).subarray(0, 15), Buffer.from([(key.secret & 0xfc) | 2])]);
    assert.deepEqual(conn.data, expected);

    // pool_size=1 for peer 3: a second request waits for the first connection to finish
    const second = await cancelConn(unix(B), keyOf(3, 2));
    await waitUntil('second request queued', async () => (await show(admin, 'SHOW PEER_POOLS')).find((p) => p.peer_id === '3'),
      (p) => p?.cl_waiting_cancel_req === '1', 5000);
    assert.deepEqual((await show(admin, 'SHOW PEER_POOLS')).find((p) => p.peer_id === '3'),
      { peer_id: '3', cl_active_cancel_req: '1', cl_waiting_cancel_req: '1', sv_active_cancel: '1', sv_login: '0' });
    const rows = (await show(admin, 'SHOW CLIENTS')).filter((r) => r.database === '3');
    assert.deepEqual(rows.map((r) => r.state), ['active_cancel_req', 'waiting_cancel_req']);
    assert.equal(fakeConns.length, before + 1, 'no second connection beyond pool_size');
    assert.equal(first.closed, false, 'the requester waits until the peer is done');

    // the peer closes: the first requester is closed, the second request goes out
    conn.sock.end();
    await first.waitClose(5000);
    await waitUntil('second request forwarded', () => fakeConns[before + 1]?.data.length ?? 0, (n) => n >= 16, 5000);
    assert.equal(fakeConns[before + 1]!.data[15], (key.secret & 0xfc) | 1);
    assert.equal(second.closed, false);
    fakeConns[before + 1]!.sock.end();
    await second.waitClose(5000);
    await waitUntil('peer pool idle', async () => (await show(admin, 'SHOW PEER_POOLS')).find((p) => p.peer_id === '3'),
      (p) => p?.cl_active_cancel_req === '0' && p.sv_active_cancel === '0' && p.cl_waiting_cancel_req === '0', 5000);
  });

  test('not forwarded: TTL used up, an unknown peer, a key of our own; the request is dropped', async () => {
    const off = B.logOffset();
    const before = fakeConns.length;
    for (const key of [keyOf(3, 0), keyOf(9, 3), keyOf(2, 3)]) {
      const c = await cancelConn(unix(B), key);
      await c.waitClose(5000);
    }
    await waitUntil('three failed cancel requests', () => logLines(B, /closing because: failed cancel request/, off).length,
      (n) => n === 3, 5000);
    assert.equal(logLines(B, /cancel request for peer 3 has been forwarded too often/, off).length, 1);
    assert.equal(fakeConns.length, before, 'nothing sent to peer 3');
    assert.deepEqual(logLines(B, /peer-\d+@/, off), []);
  });

  test('the owner does not forward again a key it cannot find (its own peer_id)', async () => {
    const offA = A.logOffset();
    const offB = B.logOffset();
    await sendCancel(unix(B), keyOf(1, 3), 10_000);
    await B.waitForLog(peerClosing(1, 'successfully sent cancel request'), 5000, offB);
    await A.waitForLog(/closing because: failed cancel request/, 5000, offA);
    assert.deepEqual(logLines(A, /peer-\d+@/, offA), []);
  });

  test('an unreachable peer: the request fails at once instead of waiting', async () => {
    const off = B.logOffset();
    const c = await cancelConn(unix(B), keyOf(4, 3));
    await c.waitClose(5000);
    await B.waitForLog(new RegExp(`WARNING S-0x[0-9a-f]+: peer-4@unix:${port} connect failed: `), 5000, off);
    await B.waitForLog(/C-0x[0-9a-f]+: .* closing because: cancel connection failed/, 5000, off);
  });

  test('through the shared TCP port, wherever the kernel sends login and cancel, the query is cancelled', async () => {
    for (let k = 0; k < 8; k++) {
      const { c, key } = await userOn({ host: '127.0.0.1', port });
      const { running } = await longQuery(c);
      await sendCancel({ host: '127.0.0.1', port }, key, 10_000);
      const r = await running;
      assert.equal(r.error?.C, '57014', `round ${k}: ${JSON.stringify(r.error)}`);
      await c.terminate();
    }
  });
});
