// A server that received only part of a client's message must never reach another client:
// PostgreSQL would read the next client's bytes as the rest of that message, and that client
// would hang or be cut off. Each case runs with pool_size = 1 so that the next client gets the
// very server the first one left behind.
//   - the client leaves mid-message (after a query, after CopyInResponse, in session mode):
//     the server is closed;
//   - the server answers ReadyForQuery while the client is still streaming a message (late
//     CopyData after a COPY failed): the server is released only once that message is whole;
//   - COPY FROM STDIN with a bad first row while psql still streams a big file, many times over,
//     with other clients queueing for the same server.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { psqlRaw } from '../lib/clients.js';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres } from '../lib/postgres.js';
import { makeTempDir, sleep } from '../lib/procs.js';
import { message, query, type WireClient } from '../lib/wire.js';
import { ensureDatabase, login, logLines, roleUserlist, serverPids, settlesWithin, waitUntil } from '../lib/pool-helpers.js';

const pg = await sharedPostgres();
const DB = 'fault_partial';
let B: TestPgbun;

before(async () => {
  await ensureDatabase(pg, DB);
  await pg.query('CREATE TABLE IF NOT EXISTS cp (id int, v text)', DB);
  await pg.query('GRANT ALL ON cp TO PUBLIC', DB);
  B = await startPgbun({
    ini: {
      pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', query_wait_timeout: 30 },
      databases: {
        tx: pgConnstr(pg, { dbname: DB, pool_size: 1 }),
        sess: pgConnstr(pg, { dbname: DB, pool_size: 1, pool_mode: 'session' }),
      },
    },
    userlist: roleUserlist(),
  });
});

after(async () => {
  await B?.stop();
});

/** The header and the first `have` bytes of a CopyData message whose body is `bodyLen` long. */
function copyDataHead(bodyLen: number, have: number): Buffer {
  const h = Buffer.alloc(5 + have, 0x41);
  h[0] = 0x64; // 'd'
  h.writeInt32BE(bodyLen + 4, 1);
  return h;
}

/** A second client's simple query must answer within the time (it would hang on a cut server). */
async function nextClientWorks(db: string, sql = 'SELECT 4242 AS x'): Promise<void> {
  const { client } = await login(B, 'trust_user', db);
  try {
    const r = await client.query(sql, 10_000);
    assert.equal(r.error, null, JSON.stringify(r.error));
    assert.equal(r.rows[0]?.[0], '4242');
  } finally {
    client.destroy();
  }
}

async function tx(): Promise<WireClient> {
  return (await login(B, 'trust_user', 'tx')).client;
}

describe('a server left mid-message is not reused', () => {
  test('transaction mode: a Query answered, then half a CopyData and the client leaves: the server is closed', async () => {
    const from = B.logOffset();
    const before = await serverPids(pg, DB);
    const a = await tx();
    await a.write([query('SELECT 1'), copyDataHead(1000, 10)]);
    const r = await a.collect();
    assert.equal(r.error, null);
    // the server answered; the client's second message is only partly forwarded
    a.destroy();
    await nextClientWorks('tx');
    await B.waitForLog(/S-0x[0-9a-f]+: tx\/trust_user@\S+ closing because: client disconnect while server was not ready/, 5000, from);
    const afterPids = await serverPids(pg, DB);
    assert.ok(afterPids.every((p) => !before.includes(p)) || before.length === 0 || afterPids.length <= before.length);
  });

  test('transaction mode: Query + half a CopyData and silence: the next client waits, then the rest releases the server', async () => {
    const a = await tx();
    await a.write([query('SELECT 1'), copyDataHead(1000, 10)]);
    assert.equal((await a.collect()).error, null);
    const pidsBefore = await serverPids(pg, DB);
    const { client: b } = await login(B, 'trust_user', 'tx');
    const rb = b.query('SELECT 4242', 10_000);
    assert.equal(await settlesWithin(rb, 500), false, 'b waits: the only server is mid-message');
    // the rest of the CopyData: PostgreSQL ignores it (no COPY running); now the server is clean
    await a.write(Buffer.alloc(990, 0x42));
    const res = await rb;
    assert.equal(res.error, null, JSON.stringify(res.error));
    assert.equal(res.rows[0]?.[0], '4242');
    // the same server went on: released at the boundary, not closed
    assert.deepEqual(await serverPids(pg, DB), pidsBefore);
    // and a can go on too
    const ra = await a.query('SELECT 7', 10_000);
    assert.equal(ra.error, null);
    a.destroy();
    b.destroy();
  });

  test('transaction mode: COPY started, half a CopyData and the client leaves: the server is closed', async () => {
    const a = await tx();
    await a.write(query('COPY cp FROM STDIN'));
    assert.equal((await a.readMessage()).type, 'G');
    await a.write(copyDataHead(5000, 100));
    await sleep(50);
    a.destroy();
    await nextClientWorks('tx');
  });

  test('session mode: half a message and the client leaves: the server is closed', async () => {
    const from = B.logOffset();
    const { client: a } = await login(B, 'trust_user', 'sess');
    assert.equal((await a.query('SELECT 1')).error, null);
    await a.write(copyDataHead(1000, 10));
    await sleep(50);
    a.destroy();
    await nextClientWorks('sess');
    await B.waitForLog(/S-0x[0-9a-f]+: sess\/trust_user@\S+ closing because: client disconnect while server was not ready/, 5000, from);
  });

  test('a header split over writes and a client that leaves before the body: nothing of it reaches the next client', async () => {
    const a = await tx();
    assert.equal((await a.query('SELECT 1')).error, null);
    const q = query('SELECT 99');
    await a.write(q.subarray(0, 3));
    await sleep(30);
    await a.write(q.subarray(3, 8));
    await sleep(30);
    a.destroy();
    await nextClientWorks('tx');
  });

  test('COPY whose first row is bad while the client still streams: the server is released at the message boundary', async () => {
    const a = await tx();
    await a.write(query('COPY cp FROM STDIN'));
    assert.equal((await a.readMessage()).type, 'G');
    const { client: b } = await login(B, 'trust_user', 'tx');
    const rb = b.query('SELECT 4242', 15_000);
    // a bad row, then the start of a long CopyData; PostgreSQL fails the COPY at the bad row
    await a.write([message('d', 'not-a-number\tx\n'), copyDataHead(200_000, 1000)]);
    const msgs = await a.readUntil('Z', 10_000);
    assert.ok(msgs.some((m) => m.type === 'E'), 'the COPY failed');
    // b still waits: the server is in the middle of a's CopyData
    assert.equal(await settlesWithin(rb, 300), false);
    // the rest of the message and more late COPY traffic
    for (let sent = 1000; sent < 200_000; sent += 50_000) {
      await a.write(Buffer.alloc(Math.min(50_000, 200_000 - sent), 0x43));
      await sleep(5);
    }
    await a.write([message('d', '1\tlate\n'), message('c')]);
    const res = await rb;
    assert.equal(res.error, null, JSON.stringify(res.error));
    assert.equal(res.rows[0]?.[0], '4242');
    // a is fine too: its late COPY messages were dropped, its next query works
    const ra = await a.query('SELECT 5', 10_000);
    assert.equal(ra.error, null, JSON.stringify(ra.error));
    assert.equal(ra.rows[0]?.[0], '5');
    a.destroy();
    b.destroy();
  });

  test('psql \\copy of a big file whose first row is bad, 12 times, with other clients queueing: nobody hangs', async () => {
    const dir = makeTempDir('pgbun-copyfile-', null);
    const file = path.join(dir, 'rows.tsv');
    const lines = ['bad\trow'];
    for (let i = 0; i < 60_000; i++) lines.push(`${i}\tpadding-padding-padding-padding-${i}`);
    fs.writeFileSync(file, lines.join('\n') + '\n');
    fs.chmodSync(dir, 0o755);
    fs.chmodSync(file, 0o644);
    const from = B.logOffset();
    try {
      for (let i = 0; i < 12; i++) {
        const copy = psqlRaw(B.conn('trust_user', undefined, 'tx'), ['-c', `\\copy cp from '${file}'`], { timeoutMs: 30_000 });
        const others = [0, 1, 2].map(async (k) => {
          await sleep(k * 3);
          await nextClientWorks('tx');
        });
        const r = await copy;
        assert.match(r.stderr, /invalid input syntax for type integer/, r.stderr);
        await Promise.all(others);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    assert.deepEqual(logLines(B, /server conn crashed|bad packet/, from), []);
    await waitUntil('pool settles to at most one server', () => serverPids(pg, DB), (p) => p.length <= 2);
  });
});
