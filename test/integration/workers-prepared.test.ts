// workers = N and prepared statements (max_prepared_statements): a client without a server
// whose Parse names a statement some server has accepted gets ParseComplete (and ReadyForQuery
// for its Sync) from pgbun itself, without a server. pgbench -M prepared relies on it: it
// prepares with PQprepare, which waits, while its thread's other clients hold every server in
// an open transaction. With several loops the statement may have been accepted in another loop,
// and this loop may hold no server of the pool at all, so the loops tell each other.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { clientsOnEveryLoop } from '../lib/loops.js';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { ensureDatabase, roleUserlist, serverCount, settlesWithin } from '../lib/pool-helpers.js';
import { sharedPostgres } from '../lib/postgres.js';
import { bindMessage, executeMessage, parseMessage, sync, toResult, type WireClient, type WireMessage } from '../lib/wire.js';

const pg = await sharedPostgres();
const DB = 'wk_prep';
let b: TestPgbun;
const open: WireClient[] = [];

before(async () => {
  await ensureDatabase(pg, DB);
  b = await startPgbun({
    ini: {
      pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', workers: 2, max_client_conn: 100 },
      databases: { wkp: pgConnstr(pg, { dbname: DB, pool_size: 1 }) },
    },
    userlist: roleUserlist(),
  });
  await b.waitForLog(/ process up: /, 20_000);
});

after(async () => {
  for (const c of open) c.destroy();
  await b?.stop();
});

/** The messages up to ReadyForQuery, read within `ms`. */
async function response(c: WireClient, ms = 10_000): Promise<WireMessage[]> {
  const seen: WireMessage[] = [];
  for (;;) {
    const m = await c.readMessage(ms);
    seen.push(m);
    if (m.type === 'Z') return seen;
  }
}
const types = (ms: WireMessage[]): string => ms.map((m) => m.type).join('');

test('pool_size = 1 over 2 loops: a statement accepted on loop 0 is prepared on loop 1 without a server, while loop 0 holds the only one in a transaction', async () => {
  const [[a], [c]] = await clientsOnEveryLoop(b, 2, { user: 'trust_user', database: 'wkp' });
  open.push(a!.client, c!.client);
  const text = 'SELECT $1::int * 3 AS loops_probe';
  await a!.client.write([parseMessage('a_s', text), sync()]);
  assert.equal(types(await response(a!.client)), '1Z', 'loop 0: the statement goes to a server');
  assert.equal((await a!.client.query('BEGIN')).status, 'T');
  try {
    assert.equal(await serverCount(pg, DB), 1, 'one server in all');
    await c!.client.write([parseMessage('c_s', text), sync()]);
    const r = await response(c!.client, 5000);
    assert.equal(types(r), '1Z', 'loop 1: ParseComplete and ReadyForQuery, no server needed');
    assert.equal(toResult(r).status, 'I');
    // a statement no server has accepted still needs one, and waits for the transaction
    await c!.client.write([parseMessage('c_new', 'SELECT 4 AS unseen_loops_probe'), sync()]);
    const unseen = response(c!.client);
    assert.equal(await settlesWithin(unseen, 300), false, 'an unknown statement waits for a server');
    await a!.client.query('COMMIT');
    assert.equal(types(await unseen), '1Z');
    await c!.client.write([bindMessage('', 'c_s', ['14']), executeMessage(), sync()]);
    assert.deepEqual(toResult(await response(c!.client)).rows, [['42']], 'the statement runs on loop 1\'s server');
  } finally {
    await a!.client.query('ROLLBACK').catch(() => {});
  }
});
