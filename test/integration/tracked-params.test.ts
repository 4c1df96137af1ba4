// Tracked parameters take the server's spelling: a client's DateStyle = ISO is ISO, MDY on
// PostgreSQL, which reports no change when it already had that value. pgbun sends the SET once
// and then knows the values agree, instead of sending the same SET before every transaction.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { login, logLines, roleUserlist } from '../lib/pool-helpers.js';

const pg = await sharedPostgres();
let B: TestPgbun;

before(async () => {
  B = await startPgbun({
    args: ['-v'],
    ini: {
      pgbouncer: { auth_type: 'trust', pool_mode: 'transaction' },
      databases: { [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB, pool_size: 1 }) },
    },
    userlist: roleUserlist(),
  });
});

after(async () => {
  await B?.stop();
});

test('DateStyle = ISO from the startup packet: one SET, then the server\'s ISO, MDY is the client\'s too', async () => {
  const from = B.logOffset();
  const { client, login: welcome } = await login(B, 'trust_user', TEST_DB, { DateStyle: 'ISO' });
  assert.equal(welcome.params.DateStyle, 'ISO', 'welcomed with its own value');
  for (let i = 0; i < 4; i++) {
    const r = await client.query('SHOW DateStyle');
    assert.deepEqual(r.rows, [['ISO, MDY']]);
  }
  client.destroy();
  const sets = logLines(B, /internal query: SET DateStyle/, from);
  assert.equal(sets.length, 1, sets.join('\n'));
});
