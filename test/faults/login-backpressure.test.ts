// A client whose bytes cannot be processed yet must not be read without limit. While a login
// waits (for the pool's first server login, or for auth_query's server) pgbun stops reading the
// client's socket, as PgBouncer does: what the client sends stays in the kernel and in the
// client's own buffers, pgbun's memory does not grow, and once the login can go on everything
// the client sent is processed in order.
//
// A gate (test/lib/tcp-gate.ts) stands between pgbun and PostgreSQL: it accepts pgbun's server
// connection and holds it without a word until the test releases it, so the login waits exactly as
// long as the test wants.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { sleep } from '../lib/procs.js';
import { TcpGate } from '../lib/tcp-gate.js';
import { rssKb } from '../lib/faults.js';
import { query, startupMessage, WireClient } from '../lib/wire.js';
import { login, roleUserlist } from '../lib/pool-helpers.js';

const pg = await sharedPostgres();

function rssMb(pid: number): number {
  return rssKb(pid) / 1024;
}

/** One Query message of about `mb` megabytes (a long comment), answering 1. */
function bigQuery(mb: number): Buffer {
  return query(`SELECT 1 AS one -- ${'x'.repeat(mb * 1024 * 1024)}`);
}

const SENT_MB = 64;

describe('a login that waits stops reading its client', () => {
  let gate: TcpGate;
  let gate2: TcpGate;
  let B: TestPgbun;

  before(async () => {
    gate = await new TcpGate(pg, { hold: true }).start();
    gate2 = await new TcpGate(pg, { hold: true }).start();
    B = await startPgbun({
      ini: {
        pgbouncer: {
          auth_type: 'trust',
          pool_mode: 'transaction',
          server_connect_timeout: 60,
          server_login_retry: 1,
          query_wait_timeout: 60,
        },
        databases: {
          gated: `host=127.0.0.1 port=${gate.port} dbname=${TEST_DB}`,
          gated2: `host=127.0.0.1 port=${gate2.port} dbname=${TEST_DB}`,
          direct: pgConnstr(pg, { dbname: TEST_DB }),
        },
      },
      userlist: roleUserlist(),
    });
  });

  after(async () => {
    await B?.stop();
    gate?.close();
    gate2?.close();
  });

  test(`waiting for the pool's first server login: ${SENT_MB} MB sent stay with the client; all of it is answered once the server is up`, async () => {
    const pid = B.proc.pid!;
    const rssBefore = rssMb(pid);
    const c = await WireClient.connect({ host: B.host, port: B.port });
    // startup and, without waiting for the welcome, a 64 MB query
    void c.write([startupMessage({ user: 'trust_user', database: 'gated' }), bigQuery(SENT_MB)]).catch(() => {});
    await sleep(1500);
    // pgbun read at most what fits in its socket buffers: most of it is still in ours
    const unsent = c.socket.writableLength / (1024 * 1024);
    assert.ok(unsent > SENT_MB / 2, `only ${unsent.toFixed(1)} MB left unsent: pgbun kept reading`);
    const grown = rssMb(pid) - rssBefore;
    assert.ok(grown < 40, `pgbun grew by ${grown.toFixed(1)} MB while the login waited`);
    // the console and other databases keep answering meanwhile
    const { client: other } = await login(B, 'trust_user', 'direct');
    assert.equal((await other.query('SELECT 1', 5000)).error, null);
    other.destroy();
    // the server comes up: the welcome, then the query's answer
    gate.release();
    const msgs = await c.readUntil('Z', 30_000); // the welcome ends with ReadyForQuery
    assert.ok(msgs.some((m) => m.type === 'R' && m.body.readInt32BE(0) === 0), 'AuthenticationOk');
    const r = await c.collect(60_000);
    assert.equal(r.error, null, JSON.stringify(r.error));
    assert.deepEqual(r.rows, [['1']]);
    c.destroy();
  });

  test('several clients flooding while their login waits do not grow pgbun', async () => {
    const pid = B.proc.pid!;
    const rssBefore = rssMb(pid);
    const clients: WireClient[] = [];
    for (let i = 0; i < 4; i++) {
      const c = await WireClient.connect({ host: B.host, port: B.port });
      void c.write([startupMessage({ user: 'trust_user', database: 'gated2' }), Buffer.alloc(32 * 1024 * 1024, 0x51)]).catch(() => {});
      clients.push(c);
    }
    await sleep(1500);
    const grown = rssMb(pid) - rssBefore;
    assert.ok(grown < 60, `pgbun grew by ${grown.toFixed(1)} MB for 4 x 32 MB of unread input`);
    for (const c of clients) {
      assert.ok(c.socket.writableLength > 16 * 1024 * 1024, 'most of the flood is still with the client');
      c.destroy();
    }
    // pgbun goes on
    const { client: other } = await login(B, 'trust_user', 'direct');
    assert.equal((await other.query('SELECT 1', 5000)).error, null);
    other.destroy();
  });
});
