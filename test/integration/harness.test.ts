// Proves the test harness itself: the test PostgreSQL authenticates each role with the intended
// method, the raw protocol client and the real clients work against it, pgbench data exists,
// startPgbun can drive a PgBouncer-compatible binary, and nothing outlives a test process.

import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { parsePgbenchSummary, pgbench, pgClient, psql, postgresJs, type ConnOpts } from '../lib/clients.js';
import { formatUserlist, pgConnstr, startPgbun } from '../lib/pgbun.js';
import { ROLES, sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { asUser, freePort, isAlive, isRoot, makeTempDir, serverOsUser, sleep, type OsUser } from '../lib/procs.js';
import {
  AUTH,
  bindMessage,
  cancelRequest,
  describeMessage,
  executeMessage,
  parseMessage,
  passwordMessage,
  sendCancel,
  sync,
  md5Secret,
  parseErrorFields,
  PgServerError,
  sslRequest,
  startupMessage,
  WireClient,
  wireLogin,
} from '../lib/wire.js';

const pg = await sharedPostgres();
const libDir = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'lib');
const PGBOUNCER = process.env.PGBOUNCER_BIN || '/usr/sbin/pgbouncer';

const direct = (user: string, password?: string, database = TEST_DB): ConnOpts => ({ host: pg.host, port: pg.port, user, password, database });

const expectedAuthCodes: Record<string, number[]> = {
  trust: [AUTH.OK],
  md5: [AUTH.MD5, AUTH.OK],
  'scram-sha-256': [AUTH.SASL, AUTH.SASL_CONTINUE, AUTH.SASL_FINAL, AUTH.OK],
};

describe('test PostgreSQL', () => {
  test('runs on a port below the ephemeral range, configured for tests', async () => {
    assert.ok(pg.port >= 20000 && pg.port < 32768, `port ${pg.port}`);
    const [row] = await pg.query<Record<string, string>>(
      `SELECT current_setting('max_connections') AS mc, current_setting('fsync') AS fsync,
              current_setting('listen_addresses') AS la, current_setting('server_version_num') AS v`,
    );
    assert.ok(Number(row.mc) >= 400);
    assert.equal(row.fsync, 'off');
    assert.equal(row.la, '127.0.0.1');
    assert.match(row.v, /^15/);
    assert.ok(fs.existsSync(path.join(pg.socketDir, `.s.PGSQL.${pg.port}`)), 'Unix socket in socketDir');
  });

  for (const [role, spec] of Object.entries(ROLES)) {
    test(`${role} authenticates with ${spec.method} (raw protocol, TCP and Unix socket)`, async () => {
      for (const target of [{ host: pg.host, port: pg.port }, { path: path.join(pg.socketDir, `.s.PGSQL.${pg.port}`) }]) {
        const { client, login } = await wireLogin(target, { user: role, database: TEST_DB, password: spec.password });
        try {
          assert.deepEqual(login.authCodes, expectedAuthCodes[spec.method]);
          if (spec.method === 'scram-sha-256') assert.ok(login.mechanisms.includes('SCRAM-SHA-256'));
          assert.equal(login.status, 'I');
          assert.ok(login.backendKey && login.backendKey.pid > 0);
          assert.equal(login.params.server_encoding, 'UTF8');
          const r = await client.query('SELECT current_user, 1 + 1 AS two');
          assert.deepEqual(r.columns, ['current_user', 'two']);
          assert.deepEqual(r.rows, [[role, '2']]);
          assert.deepEqual(r.tags, ['SELECT 1']);
          assert.equal(r.status, 'I');
        } finally {
          await client.terminate();
        }
      }
    });
  }

  test('raw extended protocol and CancelRequest work against PostgreSQL', async () => {
    const { client, login } = await wireLogin({ host: pg.host, port: pg.port }, { user: 'trust_user', database: TEST_DB });
    try {
      await client.write([
        parseMessage('s1', 'SELECT $1::int + 1 AS n, $2::text AS t', [0, 0]),
        bindMessage('', 's1', ['41', null]),
        describeMessage('P', ''),
        executeMessage('', 0),
        sync(),
      ]);
      const r = await client.collect();
      assert.deepEqual(r.messages.map((m) => m.type), ['1', '2', 'T', 'D', 'C', 'Z']);
      assert.deepEqual(r.columns, ['n', 't']);
      assert.deepEqual(r.rows, [['42', null]]);
      // a CancelRequest with the BackendKeyData stops a running query
      const started = Date.now();
      const running = client.query('SELECT pg_sleep(30)', 10_000);
      await sleep(200);
      await sendCancel({ host: pg.host, port: pg.port }, login.backendKey!);
      const res = await running;
      assert.equal(res.error?.C, '57014');
      assert.ok(Date.now() - started < 5000);
    } finally {
      await client.terminate();
    }
  });

  test('wrong passwords fail with 28P01 (raw protocol, pg driver, psql)', async () => {
    for (const role of ['md5_user', 'scram_user']) {
      const c = await WireClient.connect({ host: pg.host, port: pg.port });
      await c.startup({ user: role, database: TEST_DB });
      const m = await c.readMessage();
      assert.equal(m.type, 'R');
      if (role === 'md5_user') {
        await c.write(passwordMessage('md5' + '0'.repeat(32)));
        const err = await c.expectError({ code: '28P01', severity: 'FATAL', message: `password authentication failed for user "${role}"` });
        assert.equal(err.fields.V, 'FATAL');
      } else {
        c.destroy();
        await assert.rejects(
          wireLogin({ host: pg.host, port: pg.port }, { user: role, database: TEST_DB, password: 'wrong' }),
          (e: unknown) => e instanceof PgServerError && e.error.C === '28P01',
        );
      }
      await assert.rejects(pgClient(direct(role, 'wrong')), (e: { code?: string }) => e.code === '28P01');
      const r = await psql(direct(role, 'wrong'), 'SELECT 1');
      assert.equal(r.code, 2);
      assert.match(r.stderr, new RegExp(`password authentication failed for user "${role}"`));
    }
  });

  test('every role logs in with the pg driver and psql, and can create objects in testdb', async () => {
    for (const [role, spec] of Object.entries(ROLES)) {
      const c = await pgClient(direct(role, spec.password));
      try {
        const table = `harness_${role}_${process.pid}`;
        await c.query(`CREATE TABLE ${table} (id int)`);
        await c.query(`INSERT INTO ${table} VALUES (1), (2)`);
        const r = await c.query(`SELECT current_user AS u, count(*)::int AS n FROM ${table}`);
        assert.deepEqual(r.rows, [{ u: role, n: 2 }]);
        await c.query(`DROP TABLE ${table}`);
      } finally {
        await c.end();
      }
      const p = await psql(direct(role, spec.password), 'SELECT current_user, current_database()');
      assert.equal(p.code, 0, p.stderr);
      assert.deepEqual(p.rows, [[role, TEST_DB]]);
    }
  });

  test('the postgres npm driver logs in with SCRAM', async () => {
    const sql = postgresJs(direct('scram_user', 'scram_pass'));
    try {
      const rows = await sql`SELECT current_user AS u, ${41}::int + 1 AS n`;
      assert.deepEqual([...rows], [{ u: 'scram_user', n: 42 }]);
    } finally {
      await sql.end();
    }
  });

  test('secretOf returns the stored secrets', async () => {
    const scram = await pg.secretOf('scram_user');
    assert.match(scram, /^SCRAM-SHA-256\$4096:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$/);
    assert.equal(await pg.secretOf('md5_user'), md5Secret('md5_pass', 'md5_user'));
    await pg.createRole(`harness_md5_${process.pid}`, 'pw', { stored: 'md5' });
    assert.equal(await pg.secretOf(`harness_md5_${process.pid}`), md5Secret('pw', `harness_md5_${process.pid}`));
    await pg.query(`DROP ROLE harness_md5_${process.pid}`);
    await assert.rejects(pg.secretOf('no_such_role'));
  });

  test('pgbench database: initialised once, usable by the test roles', async () => {
    const [a, b] = await Promise.all([pg.ensurePgbench(), pg.ensurePgbench(1)]);
    assert.equal(a, 'benchdb');
    assert.equal(b, 'benchdb');
    const [row] = await pg.query<{ n: string }>('SELECT count(*) AS n FROM pgbench_accounts', 'benchdb');
    assert.equal(row.n, '100000');
    // without -n: pgbench's VACUUM step must work for the test roles, silently
    const sel = await pgbench(direct('scram_user', 'scram_pass', 'benchdb'), ['-S', '-c', '2', '-j', '2', '-t', '50']);
    assert.equal(sel.code, 0, sel.stderr);
    assert.doesNotMatch(sel.stderr, /WARNING|ERROR/);
    assert.equal(sel.summary.transactions, 100);
    assert.equal(sel.summary.failed, 0);
    assert.equal(sel.summary.transactionType, '<builtin: select only>');
    const tpcb = await pgbench(direct('md5_user', 'md5_pass', 'benchdb'), ['-n', '-c', '2', '-j', '1', '-t', '20', '-M', 'extended']);
    assert.equal(tpcb.code, 0, tpcb.stderr);
    assert.equal(tpcb.summary.transactions, 40);
    assert.equal(tpcb.summary.failed, 0);
    assert.equal(tpcb.summary.queryMode, 'extended');
    assert.ok(tpcb.summary.tps! > 0 && tpcb.summary.latencyAvgMs! > 0);
  });
});

describe('harness helpers', () => {
  test('wire builders produce the exact bytes of the protocol', () => {
    assert.deepEqual(
      startupMessage({ user: 'u', database: 'd' }),
      Buffer.from('0000001b' + '00030000' + Buffer.from('user\0u\0database\0d\0\0').toString('hex'), 'hex'),
    );
    assert.deepEqual(sslRequest(), Buffer.from('0000000804d2162f', 'hex'));
    assert.deepEqual(cancelRequest(1, 2), Buffer.from('0000001004d2162e0000000100000002', 'hex'));
    const e = parseErrorFields(Buffer.from('SFATAL\0C08P01\0Mno such user\0\0'));
    assert.deepEqual(e, { S: 'FATAL', C: '08P01', M: 'no such user', fields: { S: 'FATAL', C: '08P01', M: 'no such user' } });
  });

  test('parsePgbenchSummary reads pgbench 15 output', () => {
    const s = parsePgbenchSummary(`pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: <builtin: TPC-B (sort of)>
scaling factor: 1
query mode: simple
number of clients: 50
number of threads: 2
maximum number of tries: 1
duration: 30 s
number of transactions actually processed: 12345
number of failed transactions: 3 (0.024%)
latency average = 121.550 ms
initial connection time = 55.321 ms
tps = 411.345678 (without initial connection time)
`);
    assert.deepEqual(s, {
      tps: 411.345678,
      transactions: 12345,
      failed: 3,
      latencyAvgMs: 121.55,
      clients: 50,
      threads: 2,
      queryMode: 'simple',
      transactionType: '<builtin: TPC-B (sort of)>',
      aborted: false,
      errors: [],
    });
    const aborted = parsePgbenchSummary('pgbench: error: client 0 aborted in command 4 (SQL) of script 0; ERROR\npgbench: error: Run was aborted; the above results are incomplete.\n');
    assert.equal(aborted.aborted, true);
    assert.equal(aborted.errors.length, 2);
  });

  test('freePort hands out distinct ports below the ephemeral range', async () => {
    const ports = await Promise.all([freePort(), freePort(), freePort()]);
    assert.equal(new Set(ports).size, 3);
    for (const p of ports) assert.ok(p >= 20000 && p <= 32000, String(p));
  });

  // `npm run demo` as a user other than the one whose run made the folder: freePort in a child
  // process as `postgres`, with its own TMPDIR (the state of the machine's /tmp is left alone)
  describe('port reservations across users', () => {
    // the other user is postgres when the tests run as root, else this user itself
    const other = (): OsUser | null => (isRoot() ? serverOsUser()! : null);
    const procsUrl = new URL('../lib/procs.js', import.meta.url).href;
    const freePortIn = (tmp: string, user: OsUser | null, umask = 0o022): { port: number; dir: string } => {
      const script = `process.umask(${umask}); const m = await import(${JSON.stringify(procsUrl)}); ` +
        'const port = await m.freePort(); console.log(JSON.stringify({ port, dir: m.portReservationDir() }));';
      const env: NodeJS.ProcessEnv = { ...process.env, TMPDIR: tmp };
      delete env.PGBUN_TEST_PIDDIR;
      const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { env, encoding: 'utf8', ...asUser(user) });
      return JSON.parse(out.trim().split('\n').pop()!);
    };
    const tmpFor = (): string => {
      const tmp = makeTempDir('pgbun-ports-', null);
      fs.chmodSync(tmp, 0o1777);
      return tmp;
    };
    const mode = (p: string): number => fs.lstatSync(p).mode & 0o7777;

    // two different users are the point here: only root can be both
    test('a folder that root made 1755 (umask 022): another user reserves in its own folder; root sets it to 1777', { skip: isRoot() ? false : 'needs root, to run as a second user' }, () => {
      const pgUser = serverOsUser()!;
      const tmp = tmpFor();
      const shared = path.join(tmp, 'pgbun-test-ports');
      fs.mkdirSync(shared);
      fs.chmodSync(shared, 0o1755);
      const asPostgres = freePortIn(tmp, pgUser);
      assert.equal(asPostgres.dir, `${shared}-${pgUser.uid}`);
      assert.equal(mode(asPostgres.dir), 0o700);
      assert.equal(fs.lstatSync(asPostgres.dir).uid, pgUser.uid);
      // root's next run repairs the shared folder, and then both users share it
      assert.equal(freePortIn(tmp, null).dir, shared);
      assert.equal(mode(shared), 0o1777);
      assert.equal(freePortIn(tmp, pgUser).dir, shared);
    });

    test('on a fresh machine the first user makes the shared folder 1777 whatever its umask, and root uses it too', () => {
      const tmp = tmpFor();
      const shared = path.join(tmp, 'pgbun-test-ports');
      const first = freePortIn(tmp, other(), 0o077);
      assert.equal(first.dir, shared);
      assert.equal(mode(shared), 0o1777);
      assert.ok(first.port >= 20000 && first.port <= 32000, String(first.port));
      assert.equal(freePortIn(tmp, null, 0o077).dir, shared);
    });

    test('a symlink in place of the shared folder is not followed', () => {
      const tmp = tmpFor();
      fs.symlinkSync(tmp, path.join(tmp, 'pgbun-test-ports'));
      const uid = other()?.uid ?? process.getuid!();
      assert.equal(freePortIn(tmp, other()).dir, path.join(tmp, `pgbun-test-ports-${uid}`));
    });
  });

  test('formatUserlist quotes and escapes', () => {
    assert.equal(formatUserlist([['a"b', 'md5x'], ['c', '']]), '"a""b" "md5x"\n"c" ""\n');
  });
});

// startPgbun's mechanics (defaults, readiness, log, reload, stop, failures) checked against
// Debian's PgBouncer, which .ci/run installs: it does not depend on pgbun being finished.
describe('startPgbun driving PgBouncer', { skip: fs.existsSync(PGBOUNCER) ? false : `${PGBOUNCER} not installed (apt-get install pgbouncer)` }, () => {
  const started: Array<{ stop(): Promise<number | null> }> = [];
  after(async () => {
    for (const s of started) await s.stop();
  });

  test('starts, proxies psql/pg/raw SCRAM logins, logs, reloads, stops', async () => {
    const secret = await pg.secretOf('scram_user');
    const b = await startPgbun({
      command: [PGBOUNCER],
      ini: {
        databases: { [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB }) },
        pgbouncer: { auth_type: 'scram-sha-256', pool_mode: 'session', admin_users: 'scram_user' },
      },
      userlist: [['scram_user', secret]],
    });
    started.push(b);
    assert.ok(b.port >= 20000 && b.port <= 32000);
    assert.equal(b.host, '127.0.0.1');
    const ini = fs.readFileSync(b.iniPath, 'utf8');
    assert.match(ini, new RegExp(`^listen_port = ${b.port}$`, 'm'));
    assert.match(ini, new RegExp(`^logfile = ${b.dir}/pgbun.log$`, 'm'));
    if (process.getuid?.() === 0) assert.match(ini, /^user = postgres$/m);

    const { client, login } = await wireLogin({ host: b.host, port: b.port }, { user: 'scram_user', database: TEST_DB, password: 'scram_pass' });
    assert.deepEqual(login.authCodes, expectedAuthCodes['scram-sha-256']);
    assert.deepEqual((await client.query('SELECT current_user')).rows, [['scram_user']]);
    await client.terminate();
    // also over its Unix socket in the temp dir
    const viaSocket = await wireLogin({ path: b.socketPath }, { user: 'scram_user', database: TEST_DB, password: 'scram_pass' });
    await viaSocket.client.terminate();

    const p = await psql(b.conn('scram_user', 'scram_pass', TEST_DB), 'SELECT current_user');
    assert.deepEqual(p.rows, [['scram_user']], p.stderr);
    const c = await pgClient(b.conn('scram_user', 'scram_pass', TEST_DB));
    assert.equal((await c.query('SELECT 42 AS x')).rows[0].x, 42);
    await c.end();
    await b.waitForLog(/login attempt: db=testdb user=scram_user/);

    const off = b.logOffset();
    b.reload({ ini: { databases: { [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB }) }, pgbouncer: { auth_type: 'scram-sha-256', pool_mode: 'transaction' } } });
    await b.waitForLog(/got SIGHUP, re-reading config/, 5000, off);
    assert.ok(b.logOffset() > off);
    // admin_users was dropped from the ini: scram_user may no longer use the admin console
    const show = await psql(b.conn('scram_user', 'scram_pass', 'pgbouncer'), 'SHOW CONFIG');
    assert.notEqual(show.code, 0);

    await b.stop();
    const exit = await b.exited;
    assert.ok(exit.code !== null || exit.signal !== null);
    assert.equal(isAlive(b.proc.pid!), false);
  });

  test('waits for a Unix-socket-only listener (listen_addr empty)', async () => {
    const b = await startPgbun({
      command: [PGBOUNCER],
      ini: `[databases]\n${TEST_DB} = ${pgConnstr(pg, { dbname: TEST_DB })}\n[pgbouncer]\nlisten_addr =\nauth_type = trust\n`,
      userlist: '"trust_user" ""\n', // PgBouncer's trust still wants the user in auth_file
    });
    started.push(b);
    assert.equal(b.socketPath, path.join(b.dir, `.s.PGSQL.${b.port}`));
    const { client } = await wireLogin({ path: b.socketPath }, { user: 'trust_user', database: TEST_DB });
    assert.deepEqual((await client.query('SELECT current_user')).rows, [['trust_user']]);
    await client.terminate();
    await assert.rejects(WireClient.connect({ host: '127.0.0.1', port: b.port }, 1000));
  });

  test('a startup failure rejects with the reason and the log', async () => {
    await assert.rejects(
      startPgbun({ command: [PGBOUNCER], ini: '[pgbouncer]\nno_such_key = 1\n[databases]\n' }),
      (e: Error) => /exited \(code 1/.test(e.message) && /unknown parameter: pgbouncer\/no_such_key/.test(e.message) && /FATAL cannot load config file/.test(e.message),
    );
    // waitReady: false hands back the process to inspect its exit
    const b = await startPgbun({ command: [PGBOUNCER], ini: '[pgbouncer]\nlisten_port = {{port}}\n[nosuch]\n', waitReady: false });
    const exit = await b.exited;
    assert.equal(exit.code, 1);
    assert.match(b.stderr(), /invalid section "nosuch" in configuration \(.*pgbun\.ini:\d+\)/);
  });
});

describe('cleanup', () => {
  test('a test process that ends without stopping anything leaves nothing running', async () => {
    // A child test process starts PostgreSQL (and pgbouncer when installed), prints their pids
    // and dirs, then simply ends: the harness' exit hook must stop both and remove the dirs.
    const script = `
      import { startPostgres } from ${JSON.stringify(path.join(libDir, 'postgres.js'))};
      import { startPgbun, pgConnstr } from ${JSON.stringify(path.join(libDir, 'pgbun.js'))};
      const pg = await startPostgres();
      const out = { pids: [pg.pid], dirs: [pg.socketDir] };
      if (${JSON.stringify(fs.existsSync(PGBOUNCER))}) {
        const b = await startPgbun({ command: [${JSON.stringify(PGBOUNCER)}], ini: { databases: { x: pgConnstr(pg) }, pgbouncer: { auth_type: 'trust' } } });
        out.pids.push(b.proc.pid); out.dirs.push(b.dir);
      }
      console.log(JSON.stringify(out));
    `;
    const env = { ...process.env };
    delete env.PGBUN_TEST_PIDDIR;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'], env });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    assert.equal(code, 0, err);
    const { pids, dirs } = JSON.parse(out) as { pids: number[]; dirs: string[] };
    assert.equal(pids.length, fs.existsSync(PGBOUNCER) ? 2 : 1);
    for (let i = 0; i < 50 && pids.some(isAlive); i++) await sleep(100);
    for (const pid of pids) assert.equal(isAlive(pid), false, `pid ${pid} still running`);
    for (const d of dirs) assert.equal(fs.existsSync(d), false, `${d} not removed`);
  });
});
