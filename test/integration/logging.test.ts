// Logging: PgBouncer's text lines by default, pino's JSON records with
// log_format = json, and `verbose` raising the detail at runtime (SET verbose / RELOAD).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { login, roleUserlist } from '../lib/pool-helpers.js';
import { adminLogin, expectTag } from './admin-lib.js';

const pg = await sharedPostgres();
const USERS: Array<[string, string]> = [...roleUserlist(), ['admin', '']];
const ini = (extra: Record<string, string | number>) => ({
  databases: { [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB }) },
  pgbouncer: { auth_type: 'trust', admin_users: 'admin', pool_mode: 'transaction', ...extra },
});

describe('log_format = json', () => {
  let b: TestPgbun;
  before(async () => {
    b = await startPgbun({ ini: ini({ log_format: 'json' }), userlist: USERS });
  });
  after(async () => {
    await b?.stop();
  });

  test('every line of the log file is a JSON record with level, time, pid, msg and the connection', async () => {
    const { client } = await login(b, 'trust_user', TEST_DB);
    await client.query('SELECT 1');
    await client.terminate();
    await b.waitForLog(/closing because: client close request/);
    const records = b.log().trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const up = records.find((r) => typeof r.msg === 'string' && (r.msg as string).startsWith('process up: PgBouncer 1.25.2 (pgbun '));
    assert.ok(up, 'process up record');
    assert.equal(up.level, 30);
    assert.equal(up.pid, b.proc.pid);
    assert.equal(typeof up.time, 'number');
    const attempt = records.find((r) => r.msg === `login attempt: db=${TEST_DB} user=trust_user tls=no replication=no`);
    assert.ok(attempt, 'login attempt record');
    assert.match(String(attempt.conn), new RegExp(`^C-0x[0-9a-f]+: ${TEST_DB}/trust_user@127\\.0\\.0\\.1:\\d+$`));
  });
});

describe('verbose at runtime', () => {
  let b: TestPgbun;
  before(async () => {
    b = await startPgbun({ ini: ini({}), userlist: USERS });
  });
  after(async () => {
    await b?.stop();
  });

  test('text lines by default; SET verbose = 1 adds DEBUG lines, SET verbose = 0 removes them', async () => {
    const admin = await adminLogin(b);
    const run = async (): Promise<string> => {
      const from = b.logOffset();
      const { client } = await login(b, 'trust_user', TEST_DB);
      await client.query('SELECT 1');
      await client.terminate();
      await b.waitForLog(/closing because: client close request/, 5000, from);
      return b.log().slice(from);
    };
    const quiet = await run();
    assert.match(quiet, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \S+ \[\d+\] LOG C-0x[0-9a-f]+: /m);
    assert.doesNotMatch(quiet, / DEBUG /);
    await expectTag(admin, 'SET verbose = 1', 'SET verbose=1');
    const loud = await run();
    assert.match(loud, / DEBUG C-0x[0-9a-f]+: \S+ linked to S-0x[0-9a-f]+$/m);
    assert.match(loud, / DEBUG S-0x[0-9a-f]+: \S+ released by C-0x[0-9a-f]+$/m);
    await expectTag(admin, 'SET verbose = 0', 'SET verbose=0');
    assert.doesNotMatch(await run(), / DEBUG /);
    admin.destroy();
  });
});
