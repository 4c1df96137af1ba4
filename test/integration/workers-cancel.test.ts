// workers = N: a CancelRequest is a new connection, which the kernel hands to any loop; the loop
// that issued the key (its index is in the key, src/pool/cancel-key.ts) runs the cancel, and the
// requester is closed when it is done, with the log lines of a local cancel. Whether a request
// landed on another loop is read from the log (the connection pointer names the loop,
// test/lib/loops.ts): the test sends cancels until one does.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { freePort, isRoot, makeTempDir, serverOsUser } from '../lib/procs.js';
import { logLines, reEscape, waitUntil } from '../lib/pool-helpers.js';
import { cancelRequest, WireClient, wireLogin, type QueryResult, type WireTarget } from '../lib/wire.js';
import { clientsOnEveryLoop, loopOfClient, loopOfLine, type LoopClient } from '../lib/loops.js';

const pg = await sharedPostgres();
const W = 3;
const USER = 'trust_user';
const LOGIN = { user: USER, database: TEST_DB };
const open: WireClient[] = [];
const started: TestPgbun[] = [];

after(async () => {
  for (const c of open) c.destroy();
  for (const b of started) await b.stop();
});

async function start(pgbouncer: Record<string, string | number>, peers?: Record<string, string>): Promise<TestPgbun> {
  const b = await startPgbun({
    ini: {
      databases: { [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB }) },
      pgbouncer: { auth_type: 'trust', admin_users: 'admin', pool_mode: 'transaction', ...pgbouncer },
      ...(peers !== undefined ? { peers } : {}),
    },
    userlist: [[USER, ''], ['admin', '']],
  });
  started.push(b);
  return b;
}

let queries = 0;

/** Start a long query and wait until PostgreSQL runs it (a cancel before that finds nothing). */
async function longQuery(c: WireClient): Promise<{ running: Promise<QueryResult> }> {
  const marker = `workers_cancel_${process.pid}_${++queries}`;
  const running = c.query(`SELECT pg_sleep(30) AS ${marker}`, 40_000);
  running.catch(() => {});
  await waitUntil(`${marker} running`, () => pg.query(
    "SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1 AND pid <> pg_backend_pid()",
    'postgres', [`%${marker}%`]), (rows) => rows.length === 1, 10_000);
  return { running };
}

/**
 * Send a CancelRequest on a new connection and wait until pgbun closes it; the requester's
 * `closing because` line (found by its TCP source port, or as the one Unix requester).
 */
async function cancelVia(b: TestPgbun, target: WireTarget, key: { pid: number; secret: number }, reason: string): Promise<string> {
  const off = b.logOffset();
  const c = await WireClient.connect(target, 5000);
  open.push(c);
  const from = target.path !== undefined ? 'unix\\(\\d+\\):\\d+' : `127\\.0\\.0\\.1:${c.socket.localPort}`;
  await c.write(cancelRequest(key.pid, key.secret));
  await c.waitClose(15_000);
  return b.waitForLog(new RegExp(`LOG C-0x[0-9a-f]+: \\S+@${from} closing because: ${reEscape(reason)} \\(age=\\d+s\\)$`), 5000, off);
}

const tcp = (b: TestPgbun): WireTarget => ({ host: '127.0.0.1', port: b.port });
const unix = (b: TestPgbun): WireTarget => ({ path: b.socketPath });

describe('workers: cancel requests', () => {
  let b: TestPgbun;
  let byLoop: LoopClient[][];

  before(async () => {
    b = await start({ workers: W });
    byLoop = await clientsOnEveryLoop(b, W, LOGIN);
    for (const l of byLoop) for (const c of l) open.push(c.client);
  });

  test('each loop puts its index into the low 6 bits of byte 3 of the keys it hands out', async () => {
    const more = await clientsOnEveryLoop(b, W, LOGIN, 2);
    for (const l of more) {
      for (const { client, login, loop } of l) {
        const key = login.backendKey!;
        assert.equal(key.pid & 0x3f, loop, `key ${key.pid.toString(16)} of a client of loop ${loop}`);
        assert.ok(key.pid > 0, 'the pid half is positive');
        await client.terminate();
      }
    }
  });

  for (const via of ['TCP', 'the Unix socket'] as const) {
    test(`a cancel that reaches another loop over ${via} cancels the query; the requester closes when it is done`, async () => {
      for (const owner of [1, 2]) {
        const { client, login, loop } = byLoop[owner]![0]!;
        assert.equal(loop, owner);
        let elsewhere = 0;
        for (let attempt = 0; elsewhere === 0; attempt++) {
          assert.ok(attempt < 30, 'no cancel request reached another loop in 30 tries');
          const off = b.logOffset();
          const { running } = await longQuery(client);
          const line = await cancelVia(b, via === 'TCP' ? tcp(b) : unix(b), login.backendKey!, 'successfully sent cancel request');
          const r = await running;
          assert.equal(r.error?.C, '57014', JSON.stringify(r.error));
          assert.equal(r.error?.M, 'canceling statement due to user request');
          assert.ok(line.includes(`: ${TEST_DB}/${USER}@`), line);
          // the cancel connection to PostgreSQL was the owner's
          const sv = await b.waitForLog(new RegExp(`LOG S-0x[0-9a-f]+: ${TEST_DB}/${USER}@\\S+ closing because: successfully sent cancel request`), 5000, off);
          assert.equal(loopOfLine(sv, W), owner, sv);
          assert.deepEqual(logLines(b, /failed cancel request/, off), []);
          if (loopOfLine(line, W) !== owner) elsewhere++;
        }
        assert.deepEqual((await client.query('SELECT 1')).rows, [['1']]);
      }
    });
  }

  test('a cancel for an idle client of another loop is logged as for a local one', async () => {
    const { login } = byLoop[2]![0]!;
    for (let attempt = 0; ; attempt++) {
      assert.ok(attempt < 30, 'no cancel request reached another loop in 30 tries');
      const line = await cancelVia(b, tcp(b), login.backendKey!, 'cancel request for idle client');
      assert.ok(line.includes(`: ${TEST_DB}/${USER}@127.0.0.1:`), line);
      if (loopOfLine(line, W) !== 2) break;
    }
  });

  test('a key nobody issued, naming another loop or a loop beyond the last, is a failed cancel request', async () => {
    for (const loop of [1, 5, 63]) {
      const key = { pid: 0x2a5b7c00 | loop, secret: 0x1b2c3d4e };
      for (let attempt = 0; ; attempt++) {
        assert.ok(attempt < 30, 'no cancel request reached another loop in 30 tries');
        const line = await cancelVia(b, tcp(b), key, 'failed cancel request');
        assert.ok(line.includes(': (nodb)/(nouser)@127.0.0.1:'), line);
        if (loopOfLine(line, W) !== loop) break;
      }
    }
    assert.equal(b.proc.exitCode, null, b.stderr());
  });
});

// Two processes with [peers] sharing one port (so_reuseport), each with two loops: a key carries
// peer_id and loop; a request reaching the other process goes to the owner process (peering),
// and there to the owner loop (the bus).
describe('workers and peering together', () => {
  const runAs = isRoot() ? serverOsUser() : null;
  let A: TestPgbun;
  let B: TestPgbun;

  before(async () => {
    const port = await freePort();
    const dir1 = makeTempDir('pgbun-wpeer1-', runAs);
    const dir2 = makeTempDir('pgbun-wpeer2-', runAs);
    const peers = { 1: `host=${dir1} port=${port}`, 2: `host=${dir2} port=${port}` };
    const common = { listen_port: port, so_reuseport: 1, workers: 2 };
    A = await start({ ...common, peer_id: 1, unix_socket_dir: dir1 }, peers);
    B = await start({ ...common, peer_id: 2, unix_socket_dir: dir2 }, peers);
  });

  test('a cancel sent to the other process reaches the owner loop of the owner process', async () => {
    // a client of A's second loop: TCP logins spread over both processes and their loops
    let target: { client: WireClient; key: { pid: number; secret: number } } | null = null;
    for (let tries = 0; target === null; tries++) {
      assert.ok(tries < 300, 'no TCP client reached loop 1 of process A');
      const { client, login } = await wireLogin(tcp(A), LOGIN);
      open.push(client);
      const loop = await waitUntil('its login line', () => loopOfClient(A, client, 2) ?? loopOfClient(B, client, 2),
        (l) => l !== null);
      if (loopOfClient(A, client, 2) === 1 && loop === 1) target = { client, key: login.backendKey! };
      else await client.terminate();
    }
    const { key } = target;
    assert.equal((key.pid >>> 16) & 0xff, 1, 'peer_id 1 in byte 1');
    assert.equal(key.pid & 0x3f, 1, 'loop 1 in byte 3');
    assert.equal(key.secret & 3, 3, 'TTL 3');

    const offA = A.logOffset();
    const { running } = await longQuery(target.client);
    // B's Unix socket: B forwards to peer 1 (A's Unix socket), whose loop 0 passes it to loop 1
    await cancelVia(B, unix(B), key, 'successfully sent cancel request');
    const r = await running;
    assert.equal(r.error?.C, '57014', JSON.stringify(r.error));
    const sv = await A.waitForLog(new RegExp(`LOG S-0x[0-9a-f]+: ${TEST_DB}/${USER}@\\S+ closing because: successfully sent cancel request`), 5000, offA);
    assert.equal(loopOfLine(sv, 2), 1, sv);
    // the forwarded request came in on A's Unix socket, which A's main thread alone accepts on
    const req = await A.waitForLog(new RegExp(`LOG C-0x[0-9a-f]+: ${TEST_DB}/${USER}@unix\\(\\d+\\):\\d+ closing because: successfully sent cancel request`), 5000, offA);
    assert.equal(loopOfLine(req, 2), 0, req);
    assert.deepEqual(logLines(A, /failed cancel request/, offA), []);
    assert.deepEqual((await target.client.query('SELECT 1')).rows, [['1']]);
  });
});
