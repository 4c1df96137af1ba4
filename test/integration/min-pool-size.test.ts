// min_pool_size for a database with a forced user is kept before any client comes (the pool's
// user is known without a client), as in PgBouncer; a database without a forced user opens no
// server until a client of it does.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres } from '../lib/postgres.js';
import { sleep } from '../lib/procs.js';
import { ensureDatabase, roleUserlist, serverPids, waitUntil } from '../lib/pool-helpers.js';

const pg = await sharedPostgres();
const FORCED = 'minpool_forced';
const PLAIN = 'minpool_plain';
let B: TestPgbun;

before(async () => {
  await ensureDatabase(pg, FORCED);
  await ensureDatabase(pg, PLAIN);
  B = await startPgbun({
    ini: {
      pgbouncer: { auth_type: 'trust' },
      databases: {
        forced: pgConnstr(pg, { dbname: FORCED, user: 'trust_user', min_pool_size: 3 }),
        plain: pgConnstr(pg, { dbname: PLAIN, min_pool_size: 3 }),
      },
    },
    userlist: roleUserlist(),
  });
});

after(async () => {
  await B?.stop();
});

test('a forced-user database gets its min_pool_size servers with no client; one without a forced user gets none', async () => {
  await waitUntil('3 servers for the forced-user database', () => serverPids(pg, FORCED, 'trust_user'), (p) => p.length === 3, 10_000);
  await sleep(1000);
  assert.equal((await serverPids(pg, FORCED)).length, 3, 'no more than min_pool_size');
  assert.deepEqual(await serverPids(pg, PLAIN), []);
});
