// Passwords up to 65531 bytes (PgBouncer's MAX_PASSWORD after 1.25.2), in auth_file and in a
// client's PasswordMessage: the longest logs in, a longer wrong one is refused as a wrong
// password (not as a malformed packet).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { attemptLogin } from '../lib/wire.js';
import { roleUserlist } from '../lib/pool-helpers.js';

const pg = await sharedPostgres();
const LONG = 'p'.repeat(65530);
let B: TestPgbun;

before(async () => {
  B = await startPgbun({
    ini: {
      pgbouncer: { auth_type: 'plain' },
      databases: { [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB, user: 'trust_user' }) },
    },
    userlist: [...roleUserlist(), ['longpass', LONG]],
  });
});

after(async () => {
  await B?.stop();
});

test('a 65530-byte password from auth_file logs in through a cleartext PasswordMessage', async () => {
  const r = await attemptLogin({ host: B.host, port: B.port }, { user: 'longpass', database: TEST_DB, password: LONG });
  assert.equal(r.error, null, JSON.stringify(r.error));
  const q = await r.client.query('SELECT 1');
  assert.deepEqual(q.rows, [['1']]);
  r.client.destroy();
});

test('one byte longer: "password authentication failed", not a bad packet', async () => {
  const r = await attemptLogin({ host: B.host, port: B.port }, { user: 'longpass', database: TEST_DB, password: 'X' + LONG });
  assert.equal(r.error?.fields.M, 'password authentication failed');
  r.client.destroy();
});
