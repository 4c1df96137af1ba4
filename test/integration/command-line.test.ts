// The command line (PgBouncer's options, https://www.pgbouncer.org/usage.html) and the listeners,
// on the real program: --version / --help / bad options, refusing root, -d and the pidfile rules,
// the Unix socket (in use, mode, group, psql -h <dir>), listen_addr `*` and lists, and `pgbun
// --check`.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { psql, runCommand } from '../lib/clients.js';
import { pgbunCommand, pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { canConnect, freePort, isAlive, isRoot, makeTempDir, REPO_ROOT, serverOsUser, tcpListening } from '../lib/procs.js';
import { waitUntil } from '../lib/pool-helpers.js';
import { wireLogin } from '../lib/wire.js';

const pg = await sharedPostgres();
const pkg = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
const md5 = await pg.secretOf('md5_user');
const started: TestPgbun[] = [];
const daemons: number[] = [];

after(async () => {
  for (const b of started) await b.stop();
  for (const pid of daemons) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
});

const DATABASES = { [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB }) };

function cli(args: string[], cwd?: string) {
  const [cmd, ...pre] = pgbunCommand();
  return runCommand(cmd, [...pre, ...args], { timeoutMs: 20_000, cwd });
}

async function start(opts: Parameters<typeof startPgbun>[0]): Promise<TestPgbun> {
  const b = await startPgbun(opts);
  started.push(b);
  return b;
}

/** Log in as md5_user through `b` (TCP, or a Unix socket path) and run a query. */
async function assertServes(where: { host?: string; port?: number; path?: string }): Promise<void> {
  const { client } = await wireLogin(where, { user: 'md5_user', password: 'md5_pass', database: TEST_DB });
  assert.deepEqual((await client.query('SELECT current_user')).rows, [['md5_user']]);
  await client.terminate();
}

/** true once cond() holds, false if it does not within timeoutMs (waitUntil, without failing). */
async function waitFor(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  return waitUntil('a condition', cond, (ok) => ok, timeoutMs, 25).then(() => true, () => cond());
}

/** A pid that is certainly not running now. */
function deadPid(): number {
  const r = spawnSync('true');
  assert.ok(r.pid && r.pid > 0);
  assert.equal(isAlive(r.pid!), false);
  return r.pid!;
}

describe('command line', () => {
  test('--version and -V: first line "PgBouncer 1.25.2 (pgbun <version>)", exit 0', async () => {
    for (const flag of ['--version', '-V']) {
      const r = await cli([flag]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.split('\n')[0], `PgBouncer 1.25.2 (pgbun ${pkg.version})`);
      assert.equal(r.stderr, '');
    }
  });

  test('--help and -h: usage on stdout, exit 0', async () => {
    for (const flag of ['--help', '-h']) {
      const r = await cli([flag]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^Usage:\n {2}pgbun \[OPTION\]\.\.\. CONFIG_FILE$/m);
      for (const opt of ['-d, --daemon', '-q, --quiet', '-R, --reboot', '-u, --user=USERNAME', '-v, --verbose', '-V, --version', '-h, --help']) {
        assert.ok(r.stdout.includes(`  ${opt} `), `help lists ${opt}`);
      }
    }
  });

  test('a bad option: "Try "pgbun --help" for more information.", exit 1', async () => {
    for (const args of [['--no-such-option', 'x.ini'], ['-Z', 'x.ini']]) {
      const r = await cli(args);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /^Try "pgbun --help" for more information\.$/m);
      assert.equal(r.stdout, '');
    }
    const long = await cli(['--no-such-option', 'x.ini']);
    assert.match(long.stderr, /^pgbun: unrecognized option '--no-such-option'$/m);
  });

  test('no configuration file: "no configuration file specified", exit 1', async () => {
    const r = await cli([]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^pgbun: no configuration file specified$/m);
    assert.match(r.stderr, /^Try "pgbun --help" for more information\.$/m);
  });

  test('a configuration file that does not exist: exit 1, nothing listens', async () => {
    const r = await cli(['/nonexistent/pgbun-it.ini']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /FATAL cannot load config file/);
  });

  test('-d: what stops the start before the daemon detaches is printed on stderr (not with -q)', async () => {
    const dir = makeTempDir('pgbun-daemon-', null);
    // no logfile: stderr is the only place the reason can go
    const nopid = path.join(dir, 'nopid.ini');
    fs.writeFileSync(nopid, `[databases]\n[pgbouncer]\nlisten_port = ${await freePort()}\nunix_socket_dir =\nauth_type = trust\n`);
    for (const [args, reason] of [[['-d', '/nonexistent/pgbun-it.ini'], 'cannot load config file'],
      [['-d', nopid], 'daemon needs pidfile configured']] as const) {
      const r = await cli([...args]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, new RegExp(` FATAL ${reason}$`, 'm'), args.join(' '));
      const quiet = await cli(['-q', ...args]);
      assert.equal(quiet.code, 1);
      assert.equal(quiet.stderr, '');
    }
  });

  test('running as root without user= or -u: "PgBouncer should not run as root"; -u starts it', { skip: isRoot() ? false : 'needs root' }, async () => {
    const port = await freePort();
    const ini = `[databases]\n${TEST_DB} = ${DATABASES[TEST_DB]}\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = ${port}\nunix_socket_dir = {{dir}}\nlogfile = {{dir}}/pgbun.log\npidfile = {{dir}}/pgbun.pid\nauth_file = {{dir}}/userlist.txt\nauth_type = md5\n`;
    const b = await start({ ini, noDefaults: true, waitReady: false, userlist: [['md5_user', md5]] });
    const exit = await b.waitExit(10_000);
    assert.deepEqual(exit, { code: 1, signal: null }, b.stderr());
    assert.match(b.stderr(), / FATAL PgBouncer should not run as root$/m);
    assert.equal(tcpListening(port), false);
    // the same config with -u postgres runs, as postgres
    const ok = await start({ ini, noDefaults: true, args: ['-u', serverOsUser()!.name], userlist: [['md5_user', md5]] });
    await assertServes({ host: '127.0.0.1', port });
    const uid = Number(/^Uid:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${ok.proc.pid}/status`, 'utf8'))![1]);
    assert.equal(uid, serverOsUser()!.uid);
    await ok.stop();
  });

  test('-d without pidfile: "daemon needs pidfile configured", exit 1', async () => {
    const b = await start({ ini: { databases: DATABASES, pgbouncer: { pidfile: '', auth_type: 'md5' } }, args: ['-d'], waitReady: false, userlist: [['md5_user', md5]] });
    const exit = await b.waitExit(10_000);
    assert.deepEqual(exit, { code: 1, signal: null });
    // PgBouncer writes it to the log file (-d implies quiet); accept stderr as well
    assert.match(b.stderr() + '\n' + b.log(), / FATAL daemon needs pidfile configured$/m);
    assert.equal(tcpListening(b.port), false);
  });

  test('-d with a pidfile: daemonizes, serves, writes the pidfile; SIGTERM and SIGQUIT stop it and remove pidfile and socket', async () => {
    for (const sig of ['SIGTERM', 'SIGQUIT'] as const) {
      const b = await start({ ini: { databases: DATABASES, pgbouncer: { auth_type: 'md5' } }, args: ['-d'], waitReady: false, userlist: [['md5_user', md5]] });
      const exit = await b.waitExit(10_000);
      assert.deepEqual(exit, { code: 0, signal: null }, `launcher: ${b.stderr()}`);
      assert.equal(b.stdout(), '');
      assert.equal(b.stderr(), '', 'a daemon prints nothing');
      assert.ok(await waitFor(() => fs.existsSync(b.pidfile) && tcpListening(b.port) === true, 10_000), `no pidfile/listener\n${b.log()}`);
      const text = fs.readFileSync(b.pidfile, 'utf8');
      assert.match(text, /^\d+\n$/);
      const pid = Number(text);
      daemons.push(pid);
      assert.notEqual(pid, b.proc.pid);
      assert.ok(isAlive(pid));
      await assertServes({ host: b.host, port: b.port });
      await assertServes({ path: b.socketPath });
      assert.match(b.log(), /LOG process up: PgBouncer 1\.25\.2 \(pgbun /);
      process.kill(pid, sig);
      assert.ok(await waitFor(() => !isAlive(pid), 10_000), `daemon still running after ${sig}`);
      assert.equal(fs.existsSync(b.pidfile), false, 'pidfile removed');
      assert.equal(fs.existsSync(b.socketPath), false, 'Unix socket removed');
    }
  });

  test('a pidfile naming a live process: "pidfile \'...\' exists, another instance running?", exit 1, pidfile kept (also with -d)', async () => {
    for (const args of [[], ['-d']]) {
      const b = await start({
        ini: { databases: DATABASES, pgbouncer: { auth_type: 'md5' } },
        extraFiles: { 'pgbun.pid': `${pg.pid}\n` }, // the PostgreSQL postmaster: alive
        args,
        waitReady: false,
        userlist: [['md5_user', md5]],
      });
      const exit = await b.waitExit(10_000);
      assert.deepEqual(exit, { code: 1, signal: null }, b.stderr());
      assert.match(
        b.stderr() + '\n' + b.log(),
        new RegExp(` FATAL pidfile '${b.pidfile.replace(/[.]/g, '\\.')}' exists, another instance running\\?$`, 'm'),
        `pgbun ${args.join(' ')}: the reason must reach stderr or the log file`,
      );
      assert.equal(fs.readFileSync(b.pidfile, 'utf8'), `${pg.pid}\n`);
      assert.equal(tcpListening(b.port), false);
    }
  });

  test('a stale pidfile is removed ("stale pidfile, removing") and replaced', async () => {
    const b = await start({
      ini: { databases: DATABASES, pgbouncer: { auth_type: 'md5' } },
      extraFiles: { 'pgbun.pid': `${deadPid()}\n` },
      userlist: [['md5_user', md5]],
    });
    await b.waitForLog(/ LOG stale pidfile, removing$/, 5000);
    assert.ok(await waitFor(() => fs.existsSync(b.pidfile) && fs.readFileSync(b.pidfile, 'utf8') === `${b.proc.pid}\n`, 5000));
    await assertServes({ host: b.host, port: b.port });
    await b.stop();
    assert.equal(fs.existsSync(b.pidfile), false);
  });

  test('the Unix socket answers already: "unix socket is in use, cannot continue"; the first instance is untouched', async () => {
    const first = await start({ ini: { databases: DATABASES, pgbouncer: { auth_type: 'md5' } }, userlist: [['md5_user', md5]] });
    const second = await start({
      ini: { databases: DATABASES, pgbouncer: { auth_type: 'md5', listen_port: first.port, unix_socket_dir: first.dir } },
      waitReady: false,
      userlist: [['md5_user', md5]],
    });
    const exit = await second.waitExit(10_000);
    assert.deepEqual(exit, { code: 1, signal: null });
    assert.match(second.stderr(), / FATAL unix socket is in use, cannot continue$/m);
    assert.ok(fs.existsSync(first.socketPath));
    await assertServes({ path: first.socketPath });
    await assertServes({ host: first.host, port: first.port });
    await first.stop();
  });
});

describe('listeners', () => {
  test('listen_addr = * listens on all addresses (IPv4 and, when present, IPv6)', async () => {
    const b = await start({ ini: { databases: DATABASES, pgbouncer: { auth_type: 'md5', listen_addr: '*' } }, userlist: [['md5_user', md5]] });
    const tcp = fs.readFileSync('/proc/net/tcp', 'utf8');
    const hexPort = b.port.toString(16).toUpperCase().padStart(4, '0');
    const tcp6 = fs.existsSync('/proc/net/tcp6') ? fs.readFileSync('/proc/net/tcp6', 'utf8') : '';
    const wildcard4 = tcp.includes(` 00000000:${hexPort} 00000000:0000 0A `);
    const wildcard6 = tcp6.includes(` 00000000000000000000000000000000:${hexPort} 00000000000000000000000000000000:0000 0A `);
    assert.ok(wildcard4 || wildcard6, 'a wildcard listener');
    await assertServes({ host: '127.0.0.1', port: b.port });
    const v6 = await new Promise<boolean>((resolve) => {
      const s = net.createServer().once('error', () => resolve(false));
      s.listen(0, '::1', () => s.close(() => resolve(true)));
    });
    if (v6) await assertServes({ host: '::1', port: b.port });
  });

  test('listen_addr with a list listens on each address and no other', async () => {
    const b = await start({ ini: { databases: DATABASES, pgbouncer: { auth_type: 'md5', listen_addr: '127.0.0.1,127.0.0.2' } }, userlist: [['md5_user', md5]] });
    await assertServes({ host: '127.0.0.1', port: b.port });
    await assertServes({ host: '127.0.0.2', port: b.port });
    assert.equal(await canConnect({ host: '127.0.0.3', port: b.port }), false);
  });

  test('Unix socket: unix_socket_mode and unix_socket_group applied; psql -h <dir> connects over it', async () => {
    const group: Record<string, string> = isRoot() ? { unix_socket_group: 'postgres' } : {};
    const b = await start({
      ini: { databases: DATABASES, pgbouncer: { auth_type: 'md5', unix_socket_mode: '0700', ...group } },
      userlist: [['md5_user', md5]],
    });
    const st = fs.statSync(b.socketPath);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o700);
    if (isRoot()) assert.equal(st.gid, serverOsUser()!.gid);
    const off = b.logOffset();
    const r = await psql({ host: b.socketDir, port: b.port, user: 'md5_user', password: 'md5_pass', database: TEST_DB }, 'SELECT current_user, inet_client_addr() IS NULL');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.rows, [['md5_user', 'f']]); // pgbun -> PostgreSQL is TCP here
    await b.waitForLog(new RegExp(`C-0x[0-9a-f]+: ${TEST_DB}/md5_user@unix\\(\\d+\\):${b.port} login attempt: db=${TEST_DB} user=md5_user tls=no replication=no$`), 3000, off);
  });

  test('default unix_socket_mode is 0777; the socket is removed on exit', async () => {
    const b = await start({ ini: { databases: DATABASES, pgbouncer: { auth_type: 'md5' } }, userlist: [['md5_user', md5]] });
    assert.equal(fs.statSync(b.socketPath).mode & 0o777, 0o777);
    await b.stop();
    assert.equal(fs.existsSync(b.socketPath), false);
  });

  test('listen_addr empty: Unix socket only', async () => {
    const b = await start({ ini: { databases: DATABASES, pgbouncer: { auth_type: 'md5', listen_addr: '' } }, userlist: [['md5_user', md5]] });
    await assertServes({ path: b.socketPath });
    assert.equal(tcpListening(b.port), false);
    assert.equal(await canConnect({ host: '127.0.0.1', port: b.port }), false);
  });
});

describe('pgbun --check', () => {
  test('a deliberately broken ini: every error with file:line, exit 1, nothing started', async () => {
    const dir = makeTempDir('pgbun-check-', null);
    const port = await freePort();
    const ini = path.join(dir, 'broken.ini');
    const userlist = path.join(dir, 'userlist.txt');
    fs.writeFileSync(userlist, '"a" "b"\n# not a comment in userlist.txt\n"c" "d"\n');
    const lines = [
      '[databases]', // 1
      `db1 = host=127.0.0.1 port=${pg.port} bogus_key=1`, // 2
      'db2 = host=127.0.0.1 port=notanumber', // 3
      `good = host=127.0.0.1 port=${pg.port}`, // 4
      '', // 5
      '[pgbouncer]', // 6
      `listen_port = ${port}`, // 7
      `unix_socket_dir = ${dir}`, // 8
      'no_such_key = 1', // 9
      'pool_mode = nonsense', // 10
      'max_client_conn = abc', // 11
      'auth_type = md5', // 12
      `auth_file = ${userlist}`, // 13
      '', // 14
      '[nosuch]', // 15
      'x = 1', // 16
    ];
    fs.writeFileSync(ini, lines.join('\n') + '\n');
    const r = await cli(['--check', ini]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const out = r.stdout + r.stderr;
    const expected: Array<[string, RegExp]> = [
      [`${ini}:2`, /bogus_key/],
      [`${ini}:3`, /notanumber/],
      [`${ini}:9`, /unknown parameter: pgbouncer\/no_such_key/],
      [`${ini}:10`, /invalid value "nonsense" for parameter pool_mode/],
      [`${ini}:11`, /invalid value "abc" for parameter max_client_conn/],
      [`${ini}:15`, /invalid section "nosuch"/],
      [`${userlist}:2`, /broken auth file/],
    ];
    for (const [where, what] of expected) {
      assert.ok(
        out.split('\n').some((l) => l.includes(where) && what.test(l)),
        `no line with ${where} and ${what} in:\n${out}`,
      );
    }
    // no error for the good lines
    for (const n of [4, 7, 8, 12, 13]) assert.ok(!out.includes(`${ini}:${n})`), `line ${n} reported:\n${out}`);
    assert.equal(tcpListening(port), false);
    assert.equal(fs.existsSync(path.join(dir, `.s.PGSQL.${port}`)), false);
  });

  test('a good ini: exit 0', async () => {
    const dir = makeTempDir('pgbun-check-', null);
    const ini = path.join(dir, 'good.ini');
    fs.writeFileSync(path.join(dir, 'userlist.txt'), `"md5_user" "${md5}"\n`);
    fs.writeFileSync(
      ini,
      `[databases]\n${TEST_DB} = ${DATABASES[TEST_DB]}\n\n[pgbouncer]\nlisten_port = ${await freePort()}\nauth_type = md5\nauth_file = ${path.join(dir, 'userlist.txt')}\npool_mode = session\n`,
    );
    const r = await cli(['--check', ini]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.doesNotMatch(r.stdout + r.stderr, /ERROR/);
  });
});
