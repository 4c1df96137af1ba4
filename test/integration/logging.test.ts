// Logging: PgBouncer's text lines by default, pino's JSON records with
// log_format = json, `verbose` raising the detail at runtime (SET verbose / RELOAD), and a
// Unix-socket client named by its process id, `unix(<pid>)`, as PgBouncer names it.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { pgBin, sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { login, reEscape, roleUserlist } from '../lib/pool-helpers.js';
import { isRoot, peerPidLookupWorks } from '../lib/procs.js';
import { wireLogin } from '../lib/wire.js';
import { adminLogin, expectTag, show } from './admin-lib.js';

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

describe('Unix-socket clients: unix(<pid>)', () => {
  let b: TestPgbun;
  before(async () => {
    // as systemd starts it (User=): a pgbun started by root that switched to `user` cannot
    // have the pid looked up (see the next group)
    b = await startPgbun({ ini: ini({ log_connections: 1, log_disconnections: 1 }), userlist: USERS, spawnAsUser: true });
  });
  after(async () => {
    await b?.stop();
  });

  test('log lines and SHOW CLIENTS remote_pid name the connecting process', async () => {
    const from = b.logOffset();
    const { client } = await wireLogin({ path: b.socketPath }, { user: 'trust_user', database: TEST_DB });
    const pid = peerPidLookupWorks() ? String(process.pid) : '0';
    const me = `${TEST_DB}/trust_user@unix(${pid}):${b.port}`;
    await b.waitForLog(new RegExp(`LOG C-0x[0-9a-f]+: ${reEscape(me)} login attempt: db=${TEST_DB} user=trust_user tls=no replication=no$`), 5000, from);
    const admin = await adminLogin(b);
    const rows = (await show(admin, 'SHOW CLIENTS')).filter((r) => r.user === 'trust_user');
    assert.deepEqual(rows.map((r) => [r.addr, r.remote_pid]), [['unix', pid]]);
    admin.destroy();
    if (pid === '0') assert.match(b.log(), / LOG Unix-socket peer lookup helper unavailable \(pidfd_getfd: E(PERM|NOSYS)\)/);
    await client.terminate();
    await b.waitForLog(new RegExp(`LOG C-0x[0-9a-f]+: ${reEscape(me)} closing because: client close request \\(age=\\d+s\\)$`), 5000, from);
  });

  test('psql: its own pid', () => {
    const from = b.logOffset();
    // the shell prints its pid, then becomes psql
    const r = spawnSync('sh', ['-c', 'echo $$; exec "$0" -X -q -A -t -h "$1" -p "$2" -U trust_user -d "$3" -c "SELECT 7"',
      pgBin('psql'), b.socketDir, String(b.port), TEST_DB], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 0, r.stderr);
    const [psqlPid, out] = r.stdout.trim().split('\n');
    assert.equal(out, '7');
    const pid = peerPidLookupWorks() ? psqlPid : '0';
    const line = b.log().slice(from).split('\n').find((l) => l.includes(' login attempt: '));
    assert.match(line ?? '', new RegExp(`: ${TEST_DB}/trust_user@unix\\(${pid}\\):${b.port} login attempt: `));
  });
});

describe('where the peer lookup helper cannot work', () => {
  // no perl on the PATH: wherever the tests run; started by root and switched to `user` (a
  // process that changed its uids is not dumpable, so pidfd_getfd is refused): when they run as
  // root, as CI does
  const cases: Array<[string, () => Promise<TestPgbun>, string]> = [
    ['no perl', () => startPgbun({ ini: ini({}), userlist: USERS, env: { PATH: '/nonexistent' }, spawnAsUser: true }), 'cannot start perl: ENOENT'],
  ];
  if (isRoot()) cases.push(['started by root, switched to `user`', () => startPgbun({ ini: ini({}), userlist: USERS }), 'pidfd_getfd: EPERM']);
  for (const [name, start, why] of cases) {
    test(`${name}: said once, clients show as unix(0), logins still work`, async () => {
      const b = await start();
      try {
        for (let i = 0; i < 2; i++) {
          const { client } = await wireLogin({ path: b.socketPath }, { user: 'trust_user', database: TEST_DB });
          assert.deepEqual((await client.query('SELECT 1')).rows, [['1']]);
          await client.terminate();
        }
        const lines = b.log().split('\n');
        assert.equal(lines.filter((l) => l.endsWith(` LOG Unix-socket peer lookup helper unavailable (${why}): clients show as unix(0); peer authentication uses one process per login`)).length, 1, b.log());
        assert.equal(lines.filter((l) => l.includes(`${TEST_DB}/trust_user@unix(0):${b.port} login attempt: `)).length, 2);
      } finally {
        await b.stop();
      }
    });
  }
});
