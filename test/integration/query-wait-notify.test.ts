// query_wait_notify: a client queued for a server longer than the setting gets PgBouncer's
// NOTICE, once for every wait (not once per connection), and then its answer as usual.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { sleep } from '../lib/procs.js';
import { parseErrorFields, query } from '../lib/wire.js';
import { login, roleUserlist } from '../lib/pool-helpers.js';

const pg = await sharedPostgres();
let B: TestPgbun;

before(async () => {
  B = await startPgbun({
    ini: {
      pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', query_wait_notify: 1 },
      databases: { [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB, pool_size: 1 }) },
    },
    userlist: roleUserlist(),
  });
});

after(async () => {
  await B?.stop();
});

const NOTICE = 'No server connection available in postgres backend, client being queued';

test('query_wait_notify: a NOTICE on every wait longer than the setting', async () => {
  const { client: holder } = await login(B, 'trust_user', TEST_DB);
  const { client: waiter } = await login(B, 'trust_user', TEST_DB);
  try {
    for (let round = 0; round < 2; round++) {
      // the pool's only server is held in a transaction for ~2.5 s
      assert.equal((await holder.query('BEGIN')).error, null);
      await waiter.write(query('SELECT 1'));
      await sleep(2500);
      assert.equal((await holder.query('COMMIT')).error, null);
      const msgs = await waiter.readUntil('Z', 10_000);
      const notices = msgs.filter((m) => m.type === 'N').map((m) => parseErrorFields(m.body).fields.M);
      assert.deepEqual(notices, [NOTICE], `round ${round + 1}`);
      assert.ok(msgs.some((m) => m.type === 'D'), 'the answer follows');
    }
    // a wait shorter than the setting gets none
    await waiter.write(query('SELECT 2'));
    const quick = await waiter.readUntil('Z', 10_000);
    assert.equal(quick.filter((m) => m.type === 'N').length, 0);
  } finally {
    holder.destroy();
    waiter.destroy();
  }
});
