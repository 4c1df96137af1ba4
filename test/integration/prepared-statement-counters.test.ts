// SHOW STATS parse and bind counters count what PgBouncer counts: named statements that pgbun
// manages (transaction mode with max_prepared_statements > 0). A Parse a client sends counts
// once (client_parse_count), a Parse pgbun sends to a server that lacks the statement counts
// there (server_parse_count), a Bind of a named statement counts once (bind_count). Unnamed
// statements, and anything with max_prepared_statements = 0, count nothing.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { TEST_DB } from '../lib/postgres.js';
import { sharedPostgres } from '../lib/postgres.js';
import type { TestPgbun } from '../lib/pgbun.js';
import { bindMessage, executeMessage, parseMessage, sync, type WireClient } from '../lib/wire.js';
import { adminLogin, expectTag, show, startAdminBouncer, userLogin } from './admin-lib.js';

const pg = await sharedPostgres();
let b: TestPgbun;
let admin: WireClient;

before(async () => {
  b = await startAdminBouncer(pg, { max_prepared_statements: 0 });
  admin = await adminLogin(b);
});

after(async () => {
  admin?.destroy();
  await b?.stop();
});

async function counters(db: string): Promise<[string, string, string]> {
  const r = (await show(admin, 'SHOW STATS_TOTALS')).find((x) => x.database === db);
  return [r?.client_parse_count ?? '0', r?.server_parse_count ?? '0', r?.bind_count ?? '0'];
}

/** An unnamed statement twice and a named statement prepared once and bound `binds` times. */
async function workload(c: WireClient, name: string, binds: number): Promise<void> {
  for (let i = 0; i < 2; i++) {
    await c.write([parseMessage('', 'SELECT $1::int', [0]), bindMessage('', '', [String(i)]), executeMessage(), sync()]);
    assert.equal((await c.collect()).error, null);
  }
  await c.write([parseMessage(name, 'SELECT $1::int + 1', [0]), sync()]);
  assert.equal((await c.collect()).error, null);
  for (let i = 0; i < binds; i++) {
    await c.write([bindMessage('', name, [String(i)]), executeMessage(), sync()]);
    assert.deepEqual((await c.collect()).rows, [[String(i + 1)]]);
  }
}

test('max_prepared_statements = 0: no parse or bind is counted', async () => {
  const c = await userLogin(b, 'small');
  await workload(c, 'off_stmt', 3);
  c.destroy();
  assert.deepEqual(await counters('small'), ['0', '0', '0']);
});

test('max_prepared_statements > 0: named statements only, the server Parse once per server', async () => {
  await expectTag(admin, 'SET max_prepared_statements = 10', 'SET max_prepared_statements=10');
  const c1 = await userLogin(b, TEST_DB);
  const c2 = await userLogin(b, TEST_DB);
  await workload(c1, 's1', 3);
  // the same text from another client: one more client parse, no new server parse on the
  // same server; a second server, taken while c1 holds the first in a transaction, needs it
  await c1.query('BEGIN');
  await workload(c2, 's2', 2);
  await c1.query('COMMIT');
  c1.destroy();
  c2.destroy();
  const [clientParse, serverParse, bind] = await counters(TEST_DB);
  assert.equal(clientParse, '2');
  assert.equal(bind, '5');
  // the workloads use two texts; c2 ran on a server that had neither: 1 + 1 (+0 for shared text)
  assert.ok(serverParse === '2', `server_parse_count ${serverParse}`);
});
