// workers = N: N event loops (the main thread and N-1 worker threads) accept on the same TCP
// listen addresses, the main thread alone on the Unix socket, and behave as one pooler.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { wireLogin, type WireClient } from '../lib/wire.js';
import { logLines } from '../lib/pool-helpers.js';
import { loopOfLine } from '../lib/loops.js';

const pg = await sharedPostgres();
const databases = { [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB }) };
const started: TestPgbun[] = [];

after(async () => {
  for (const b of started) await b.stop();
});

async function start(pgbouncer: Record<string, string | number>): Promise<TestPgbun> {
  const b = await startPgbun({
    ini: { databases, pgbouncer: { auth_type: 'trust', admin_users: 'admin', pool_mode: 'transaction', ...pgbouncer } },
    userlist: [['trust_user', ''], ['admin', '']],
  });
  started.push(b);
  return b;
}

describe('workers', () => {
  test('clients over TCP and the Unix socket are served; the Unix socket by the main thread', async () => {
    const b = await start({ workers: 3 });
    const clients: WireClient[] = [];
    for (let i = 0; i < 30; i++) {
      const target = i % 2 === 0 ? { host: '127.0.0.1', port: b.port } : { path: b.socketPath };
      const { client } = await wireLogin(target, { user: 'trust_user', database: TEST_DB });
      assert.deepEqual((await client.query('SELECT 1')).rows, [['1']]);
      clients.push(client);
    }
    for (const c of clients) await c.terminate();
    // a worker thread that ends closes its handles: one on the main thread's descriptor would
    // close the Unix socket for every loop
    const unixLogins = logLines(b, / C-0x[0-9a-f]+: \S+@unix\(\d+\):\d+ login attempt: /);
    assert.equal(unixLogins.length, 15);
    for (const line of unixLogins) assert.equal(loopOfLine(line, 3), 0, line);
    assert.equal(b.proc.exitCode, null, b.stderr());
  });
});
