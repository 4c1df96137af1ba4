// The packages: `node packaging/build.mjs --fast` (what `npm run package` runs, with
// quick compression; a fresh build in packaging/out of either kind is reused), then
//  - the single executable: version, help, runs without any Node.js on the system's PATH;
//  - the .deb: control fields, conffiles, maintainer scripts, file list and modes, lintian
//    (clean but for the overrides documented in packaging/README.md), extracted into a temp
//    root: `pgbun --version`, `pgbun --check` of the shipped pgbun.ini, a proxy session against
//    the test PostgreSQL, and -d (the daemon re-executes the single executable);
//  - the .rpm: rpm -qpl, --scripts, config flags, `rpm -i --root` whose binary runs the same
//    proxy session;
//  - as root: both packages installed for real into a throwaway overlay of this machine's
//    root filesystem, in private mount and network namespaces (nothing reaches the host):
//    user creation, ownership, conffile kept on reinstall and upgrade, systemd-analyze
//    verify, pgbun started as the unit starts it with the shipped pgbun.ini, the admin
//    console over /run/pgbun, logrotate with the shipped config (SIGHUP reopens the log),
//    SIGINT shutdown, purge/erase.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { psql } from './lib/clients.js';
import { pgConnstr, startPgbun } from './lib/pgbun.js';
import { ROLES, TEST_DB, sharedPostgres } from './lib/postgres.js';
import { REPO_ROOT, isAlive, isRoot, sleep } from './lib/procs.js';

const VERSION: string = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')).version;
const VERSION_LINE = `PgBouncer 1.25.2 (pgbun ${VERSION})`;
const PACKAGING = path.join(REPO_ROOT, 'packaging');

const have = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;

/** Install the Debian packages of missing commands (root only); returns why not, or null. */
function ensureTools(tools: Record<string, string>): string | null {
  const missing = Object.entries(tools).filter(([cmd]) => !have(cmd));
  if (missing.length === 0) return null;
  const pkgs = [...new Set(missing.map(([, p]) => p))];
  if (!isRoot() || !have('apt-get')) return `missing ${missing.map(([c]) => c).join(', ')} (Debian packages ${pkgs.join(' ')}), and not root`;
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = () => spawnSync('apt-get', ['-o', 'DPkg::Lock::Timeout=300', 'install', '-y', '-qq', '--no-install-recommends', ...pkgs], { env, encoding: 'utf8' });
  let r = install();
  if (r.status !== 0) {
    spawnSync('apt-get', ['update', '-qq'], { env });
    r = install();
  }
  if (r.status !== 0) return `apt-get install ${pkgs.join(' ')} failed: ${r.stdout}${r.stderr}`;
  return null;
}

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
  out: string;
}

function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; cwd?: string } = {}): Run {
  const r = spawnSync(cmd, args, {
    encoding: 'utf8',
    maxBuffer: 256 << 20,
    timeout: opts.timeoutMs ?? 60_000,
    env: opts.env ?? process.env,
    cwd: opts.cwd,
  });
  if (r.error) throw new Error(`${cmd} ${args.join(' ')}: ${r.error.message}\n${r.stdout ?? ''}${r.stderr ?? ''}`);
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, out: `${r.stdout}${r.stderr}` };
}

function ok(cmd: string, args: string[], opts: Parameters<typeof run>[2] = {}): string {
  const r = run(cmd, args, opts);
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} failed:\n${r.out}`);
  return r.stdout;
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'pgbun-packaging-'));
after(() => fs.rmSync(work, { recursive: true, force: true }));

// --- build -------------------------------------------------------------------------------------

const toolProblem = ensureTools({ 'dpkg-deb': 'dpkg', rpmbuild: 'rpm', lintian: 'lintian', logrotate: 'logrotate' });
if (toolProblem) throw new Error(`cannot test the packages: ${toolProblem}`);

interface Built {
  deb: string;
  rpm: string;
  bin: string;
  version: string;
  cached: boolean;
  fast: boolean;
}

function build(): { built: Built; seconds: number; log: string } {
  const t0 = Date.now();
  const r = run(process.execPath, [path.join(PACKAGING, 'build.mjs'), '--fast', '--json'], { timeoutMs: 240_000 });
  assert.equal(r.status, 0, `packaging/build.mjs failed:\n${r.out}`);
  const last = r.stdout.trim().split('\n').pop() ?? '';
  return { built: JSON.parse(last) as Built, seconds: (Date.now() - t0) / 1000, log: r.stderr };
}

const first = build();
// private copies: another test run in the same checkout may rebuild packaging/out meanwhile
const built: Built = { ...first.built };
for (const k of ['deb', 'rpm', 'bin'] as const) {
  const copy = path.join(work, path.basename(first.built[k]));
  fs.copyFileSync(first.built[k], copy);
  fs.chmodSync(copy, fs.statSync(first.built[k]).mode & 0o777);
  built[k] = copy;
}
console.log(`# packages ${first.built.cached ? 'reused' : 'built'} in ${first.seconds.toFixed(1)} s (${built.fast ? 'fast' : 'release'} compression)`);

describe('npm run package', () => {
  test('produces the executable, the .deb and the .rpm named after package.json', () => {
    assert.equal(built.version, VERSION);
    assert.match(path.basename(first.built.deb), new RegExp(`^pgbun_${VERSION.replace(/\./g, '\\.')}_(amd64|arm64)\\.deb$`));
    assert.match(path.basename(first.built.rpm), new RegExp(`^pgbun-${VERSION.replace(/\./g, '\\.')}-1\\.(x86_64|aarch64)\\.rpm$`));
    for (const f of [built.deb, built.rpm, built.bin]) assert.ok(fs.statSync(f).size > 1 << 20, `${f} exists`);
    assert.equal(path.dirname(first.built.deb), path.join(PACKAGING, 'out'));
  });

  test('a second run with the same inputs reuses the packages', () => {
    const again = build();
    assert.equal(again.built.cached, true, again.log);
    assert.deepEqual({ ...again.built, cached: true }, { ...first.built, cached: true });
  });
});

// --- the executable ----------------------------------------------------------------------------

describe('the single executable', () => {
  test('reports the version like PgBouncer, with no Node.js on PATH and an empty environment', () => {
    const r = run(built.bin, ['--version'], { env: { PATH: '/nonexistent' } });
    assert.equal(r.status, 0, r.out);
    const lines = r.stdout.split('\n');
    assert.equal(lines[0], VERSION_LINE);
    assert.match(r.stdout, /^runtime: Node\.js v\d+\.\d+\.\d+$/m);
    assert.equal(r.stderr, '', 'no experimental-feature warning');
  });

  test('--help and a bad option answer like the CLI', () => {
    const h = run(built.bin, ['--help']);
    assert.equal(h.status, 0);
    assert.match(h.stdout, /Usage:\n\s+pgbun \[OPTION\]\.\.\. CONFIG_FILE/);
    const bad = run(built.bin, ['--no-such-option']);
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /Try "pgbun --help" for more information\./);
  });
});

// --- a proxy session through a packaged binary ------------------------------------------------------

const pgbouncerIni = (extra: Record<string, string> = {}) => ({
  pgbouncer: { auth_type: 'md5', pool_mode: 'transaction', admin_users: 'md5_user', ...extra },
});

async function proxySession(bin: string, workers = 1): Promise<void> {
  const pg = await sharedPostgres();
  const pw = ROLES.md5_user.password;
  const p = await startPgbun({
    command: [bin],
    ini: { databases: { [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB }) }, ...pgbouncerIni({ workers: String(workers) }) },
    userlist: [['md5_user', pw]],
  });
  try {
    assert.equal(fs.readlinkSync(`/proc/${p.proc.pid}/exe`), bin, 'the packaged binary runs');
    const q = await psql(p.conn('md5_user', pw, TEST_DB), 'SELECT current_user, 40 + 2');
    assert.equal(q.code, 0, q.stderr);
    assert.deepEqual(q.rows, [['md5_user', '42']]);
    const tx = await psql(p.conn('md5_user', pw, TEST_DB), 'BEGIN; CREATE TEMP TABLE t (x int); INSERT INTO t VALUES (1), (2); SELECT sum(x) FROM t; COMMIT;');
    assert.equal(tx.code, 0, tx.stderr);
    assert.deepEqual(tx.rows, [['3']]);
    const v = await psql(p.conn('md5_user', pw, 'pgbouncer'), 'SHOW VERSION');
    assert.equal(v.code, 0, v.stderr);
    assert.deepEqual(v.rows, [[VERSION_LINE]]);
    await p.waitForLog(/process up: PgBouncer 1\.25\.2 \(pgbun /);
    if (workers > 1) {
      // worker threads run the executable's own code: connections land on several loops (a
      // connection's id modulo the worker count is its loop; the console's own row is the only one)
      const loops = new Set<number>();
      for (let i = 0; i < 12; i++) {
        const c = await psql(p.conn('md5_user', pw, 'pgbouncer'), 'SHOW CLIENTS');
        assert.equal(c.code, 0, c.stderr);
        loops.add(Number(c.rows[0]!.at(-1)) % workers);
      }
      assert.ok(loops.size > 1, `every connection on loop ${[...loops].join()}`);
    }
  } finally {
    assert.equal(await p.stop(), 0);
  }
}

// --- the Bun single executable ------------------------------------------------------------------

describe('npm run package -- --bun', () => {
  test('compiles a Bun single executable that reports Bun and proxies a session', async () => {
    const r = run(process.execPath, [path.join(PACKAGING, 'build.mjs'), '--bun', '--json'], { timeoutMs: 240_000 });
    assert.equal(r.status, 0, `packaging/build.mjs --bun failed:\n${r.out}`);
    const out = (JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as { bunBin: string }).bunBin;
    const bin = path.join(work, 'pgbun-bun');
    fs.copyFileSync(out, bin);
    fs.chmodSync(bin, 0o755);
    const v = run(bin, ['--version'], { env: { PATH: '/nonexistent' } });
    assert.equal(v.status, 0, v.out);
    assert.equal(v.stdout.split('\n')[0], VERSION_LINE);
    assert.match(v.stdout, /^runtime: Bun \d+\.\d+\.\d+$/m);
    assert.match(v.stdout, /^tls: BoringSSL$/m);
    await proxySession(bin);
    await proxySession(bin, 3);
  });
});

// --- .deb ----------------------------------------------------------------------------------------

interface Entry {
  mode: string;
  owner: string;
}

/** `dpkg-deb -c` as path → mode/owner (paths without the leading ./). */
function debContents(deb: string): Map<string, Entry> {
  const out = new Map<string, Entry>();
  for (const line of ok('dpkg-deb', ['-c', deb]).split('\n').filter(Boolean)) {
    const m = /^(\S+)\s+(\S+)\s+\d+\s+\S+\s+\S+\s+\.\/(.*?)(?: -> .*)?$/.exec(line);
    assert.ok(m, `dpkg-deb -c line: ${line}`);
    out.set(m[3].replace(/\/$/, ''), { mode: m[1], owner: m[2] });
  }
  return out;
}

const debRoot = path.join(work, 'deb-root');
const debBin = path.join(debRoot, 'usr', 'bin', 'pgbun');

describe('.deb', () => {
  test('control fields', () => {
    const f = ok('dpkg-deb', ['-f', built.deb, 'Package', 'Version', 'Architecture', 'Depends', 'Maintainer', 'Section', 'Description']);
    assert.match(f, /^Package: pgbun$/m);
    assert.match(f, new RegExp(`^Version: ${VERSION.replace(/\./g, '\\.')}$`, 'm'));
    assert.match(f, /^Architecture: (amd64|arm64)$/m);
    assert.match(f, /^Depends: adduser, libc6 \(>= [\d.]+\)/m);
    assert.match(f, /^Maintainer: .+ <[^>]+@[^>]+>$/m);
    assert.match(f, /^Section: database$/m);
    assert.match(f, /^Description: .*connection pooler for PostgreSQL/m);
  });

  test('conffiles: pgbun.ini, userlist.txt and the logrotate config', () => {
    const conffiles = ok('dpkg-deb', ['-I', built.deb, 'conffiles']).split('\n').filter(Boolean).sort();
    assert.deepEqual(conffiles, ['/etc/logrotate.d/pgbun', '/etc/pgbun/pgbun.ini', '/etc/pgbun/userlist.txt']);
  });

  test('maintainer scripts: executable, valid sh, user creation and systemd handling', () => {
    const ctl = path.join(work, 'deb-control');
    ok('dpkg-deb', ['-e', built.deb, ctl]);
    for (const s of ['postinst', 'prerm', 'postrm']) {
      const f = path.join(ctl, s);
      assert.equal(fs.statSync(f).mode & 0o777, 0o755, `${s} mode`);
      assert.match(fs.readFileSync(f, 'utf8'), /^#!\/bin\/sh\n/);
      ok('sh', ['-n', f]);
    }
    const postinst = fs.readFileSync(path.join(ctl, 'postinst'), 'utf8');
    assert.match(postinst, /adduser --system .*--ingroup pgbun/s);
    assert.match(postinst, /systemd-tmpfiles .*--create pgbun\.conf/);
    assert.match(postinst, /deb-systemd-helper enable 'pgbun\.service'/);
    assert.match(postinst, /chmod 0640 "\$f"/);
    assert.match(fs.readFileSync(path.join(ctl, 'prerm'), 'utf8'), /deb-systemd-invoke stop 'pgbun\.socket' 'pgbun\.service'/);
    assert.match(fs.readFileSync(path.join(ctl, 'postrm'), 'utf8'), /purge[\s\S]*rm -rf \/var\/log\/pgbun/);
    const md5 = fs.readFileSync(path.join(ctl, 'md5sums'), 'utf8');
    assert.match(md5, / {2}usr\/bin\/pgbun$/m);
    assert.doesNotMatch(md5, /etc\/pgbun/, 'conffiles are not in md5sums');
  });

  test('files, modes and owners', () => {
    const c = debContents(built.deb);
    const want: Record<string, string> = {
      'usr/bin/pgbun': '-rwxr-xr-x',
      'etc/pgbun/pgbun.ini': '-rw-r-----',
      'etc/pgbun/userlist.txt': '-rw-r-----',
      'etc/logrotate.d/pgbun': '-rw-r--r--',
      'lib/systemd/system/pgbun.service': '-rw-r--r--',
      'lib/systemd/system/pgbun.socket': '-rw-r--r--',
      'usr/lib/tmpfiles.d/pgbun.conf': '-rw-r--r--',
      'usr/lib/sysusers.d/pgbun.conf': '-rw-r--r--',
      'var/log/pgbun': 'drwxr-xr-x',
      'usr/share/man/man1/pgbun.1.gz': '-rw-r--r--',
      'usr/share/man/man5/pgbun.5.gz': '-rw-r--r--',
      'usr/share/doc/pgbun/copyright': '-rw-r--r--',
      'usr/share/doc/pgbun/changelog.gz': '-rw-r--r--',
      'usr/share/doc/pgbun/THIRD-PARTY-NOTICES.gz': '-rw-r--r--',
      'usr/share/doc/pgbun/examples/pgbun.ini': '-rw-r--r--',
      'usr/share/doc/pgbun/examples/userlist.txt': '-rw-r--r--',
      'usr/share/doc/pgbun/examples/pgbun_hba.conf': '-rw-r--r--',
      'usr/share/lintian/overrides/pgbun': '-rw-r--r--',
    };
    for (const [f, mode] of Object.entries(want)) {
      assert.equal(c.get(f)?.mode, mode, `${f}`);
      assert.equal(c.get(f)?.owner, 'root/root', `${f} owner`);
    }
    assert.ok(c.has('usr/share/doc/pgbun/README.md') || c.has('usr/share/doc/pgbun/README.md.gz'), 'README in the doc dir');
    assert.ok(c.has('usr/share/doc/pgbun/README.packaging.md.gz'), 'packaging README in the doc dir');
    assert.ok(![...c.keys()].some((f) => f.startsWith('run/') || f.startsWith('var/run/')), '/run comes from tmpfiles.d');
  });

  test('lintian: clean apart from the documented overrides', () => {
    const r = run('lintian', ['--fail-on', 'error,warning', '--display-info', '--no-tag-display-limit', built.deb], { timeoutMs: 180_000 });
    const tags = r.stdout.split('\n').filter((l) => /^[EWIXP]: /.test(l));
    assert.deepEqual(tags, [], r.out);
    assert.equal(r.status, 0, r.out);
    // the overrides shipped are the documented ones
    const readme = fs.readFileSync(path.join(PACKAGING, 'README.md'), 'utf8');
    const overrides = fs.readFileSync(path.join(PACKAGING, 'deb', 'lintian-overrides'), 'utf8')
      .split('\n').filter((l) => l.startsWith('pgbun: ')).map((l) => l.split(' ')[1]);
    for (const tag of overrides) assert.ok(readme.includes(tag), `override ${tag} is explained in packaging/README.md`);
  });

  test('extracted: the binary runs, and pgbun --check accepts the shipped pgbun.ini', () => {
    ok('dpkg-deb', ['-x', built.deb, debRoot]);
    const v = ok(debBin, ['--version']);
    assert.equal(v.split('\n')[0], VERSION_LINE);
    // the shipped ini with its absolute paths moved into the extraction root
    const ini = fs.readFileSync(path.join(debRoot, 'etc/pgbun/pgbun.ini'), 'utf8').replace(/\/etc\/pgbun\//g, `${debRoot}/etc/pgbun/`);
    const iniFile = path.join(work, 'check.ini');
    fs.writeFileSync(iniFile, ini);
    const c = run(debBin, ['--check', iniFile]);
    assert.equal(c.status, 0, c.out);
    assert.match(c.stdout, /: OK/);
  });

  test('extracted: the unit, the sample ini, tmpfiles.d and logrotate agree', () => {
    const unit = fs.readFileSync(path.join(debRoot, 'lib/systemd/system/pgbun.service'), 'utf8');
    const key = (k: string): string[] => [...unit.matchAll(new RegExp(`^${k}=(.*)$`, 'gm'))].map((m) => m[1]);
    assert.deepEqual(key('Type'), ['notify']);
    assert.deepEqual(key('NotifyAccess'), ['all'], 'systemd-notify sends from its own pid');
    assert.deepEqual(key('User'), ['pgbun']);
    assert.deepEqual(key('ExecStart'), ['/usr/bin/pgbun /etc/pgbun/pgbun.ini']);
    assert.deepEqual(key('ExecReload'), ['/bin/kill -HUP $MAINPID']);
    assert.deepEqual(key('KillSignal'), ['SIGINT']);
    assert.ok(Number(key('LimitNOFILE')[0]) >= 65536, 'LimitNOFILE raised');
    assert.deepEqual(key('NoNewPrivileges'), ['yes']);
    assert.ok(key('ProtectSystem').length === 1, 'ProtectSystem');
    assert.deepEqual(key('PrivateTmp'), [], 'no PrivateTmp: it would hide a Unix socket in /tmp');
    assert.deepEqual(key('MemoryDenyWriteExecute'), [], 'no MemoryDenyWriteExecute: the JIT needs it');
    assert.match(key('ReadWritePaths')[0] ?? '', /\/run\/pgbun.*\/var\/log\/pgbun/);

    const ini = fs.readFileSync(path.join(debRoot, 'etc/pgbun/pgbun.ini'), 'utf8');
    const setting = (k: string): string | undefined => new RegExp(`^${k} = (.*)$`, 'm').exec(ini)?.[1];
    // pgbun.socket listens where the sample ini does, so that pgbun opens nothing of its own
    const socket = fs.readFileSync(path.join(debRoot, 'lib/systemd/system/pgbun.socket'), 'utf8');
    assert.deepEqual([...socket.matchAll(/^ListenStream=(.*)$/gm)].map((m) => m[1]),
      [`${setting('listen_addr')}:${setting('listen_port')}`, `${setting('unix_socket_dir')}/.s.PGSQL.${setting('listen_port')}`]);
    assert.match(socket, /^WantedBy=sockets\.target$/m);
    const tmpfiles = fs.readFileSync(path.join(debRoot, 'usr/lib/tmpfiles.d/pgbun.conf'), 'utf8');
    assert.match(tmpfiles, new RegExp(`^d ${setting('unix_socket_dir')} 0755 pgbun pgbun -$`, 'm'));
    assert.equal(path.dirname(setting('pidfile') ?? ''), setting('unix_socket_dir'));
    const logrotate = fs.readFileSync(path.join(debRoot, 'etc/logrotate.d/pgbun'), 'utf8');
    assert.ok(logrotate.startsWith(`#`) && logrotate.includes(`${setting('logfile')} {`), 'logrotate rotates the logfile');
    assert.ok(logrotate.includes(`kill -HUP "$(cat ${setting('pidfile')})"`), 'logrotate sends SIGHUP to the pidfile');
    assert.doesNotMatch(logrotate, /^\s*copytruncate\s*$/m);
  });

  test('extracted: a proxy session against the test PostgreSQL', async () => {
    await proxySession(debBin);
  });

  test('extracted: with workers = 3 the worker threads run the bundle kept in the executable', async () => {
    await proxySession(debBin, 3);
  });

  test('extracted: an integration test file passes against it (PGBUN_BIN)', () => {
    // the smoke subset: session pooling, cancel, parameters, pool limits (about 6 s)
    const file = path.join(REPO_ROOT, 'dist', 'test', 'integration', 'session-pooling.test.js');
    assert.ok(fs.existsSync(file), `${file} exists`);
    // NODE_TEST_CONTEXT would make the nested runner report to our runner instead of stdout
    const { NODE_TEST_CONTEXT: _ctx, ...env } = process.env;
    const r = run(process.execPath, ['--test', '--test-reporter=spec', '--test-force-exit', file], {
      env: { ...env, PGBUN_BIN: debBin },
      timeoutMs: 120_000,
    });
    assert.equal(r.status, 0, `PGBUN_BIN=${debBin} node --test ${file}:\n${r.out.slice(-6000)}`);
    assert.match(r.stdout, /ℹ pass [1-9]/);
    assert.match(r.stdout, /ℹ fail 0/);
  });

  test('extracted: -d starts a daemon by re-executing the single executable', async () => {
    const pg = await sharedPostgres();
    const pw = ROLES.md5_user.password;
    const p = await startPgbun({
      command: [debBin],
      args: ['-d'],
      ini: { databases: { [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB }) }, ...pgbouncerIni() },
      userlist: [['md5_user', pw]],
      waitReady: false,
    });
    try {
      const exit = await p.waitExit(20_000);
      assert.deepEqual(exit, { code: 0, signal: null }, p.stderr());
      const pid = Number(fs.readFileSync(p.pidfile, 'utf8').trim());
      assert.ok(pid > 0 && pid !== p.proc.pid && isAlive(pid), 'the daemon runs under the pid in its pidfile');
      assert.equal(fs.readlinkSync(`/proc/${pid}/exe`), debBin);
      const q = await psql(p.conn('md5_user', pw, TEST_DB), 'SELECT 7 * 6');
      assert.equal(q.code, 0, q.stderr);
      assert.deepEqual(q.rows, [['42']]);
      process.kill(pid, 'SIGINT');
      for (let i = 0; i < 100 && isAlive(pid); i++) await sleep(100);
      assert.ok(!isAlive(pid), 'the daemon stops on SIGINT');
      assert.ok(!fs.existsSync(p.pidfile), 'and removes its pidfile');
    } finally {
      await p.stop();
    }
  });
});

// --- .rpm ----------------------------------------------------------------------------------------

const rpmRoot = path.join(work, 'rpm-root');

describe('.rpm', () => {
  test('rpm -qpl: the same layout as the .deb', () => {
    const files = ok('rpm', ['-qpl', built.rpm]).split('\n').filter(Boolean).sort();
    const want = [
      '/etc/logrotate.d/pgbun', '/etc/pgbun', '/etc/pgbun/pgbun.ini', '/etc/pgbun/userlist.txt', '/run/pgbun',
      '/usr/bin/pgbun', '/usr/lib/systemd/system/pgbun.service', '/usr/lib/systemd/system/pgbun.socket',
      '/usr/lib/sysusers.d/pgbun.conf',
      '/usr/lib/tmpfiles.d/pgbun.conf', '/usr/share/doc/pgbun', '/usr/share/doc/pgbun/README.md',
      '/usr/share/doc/pgbun/README.packaging.md', '/usr/share/doc/pgbun/examples', '/usr/share/doc/pgbun/examples/pgbun.ini',
      '/usr/share/doc/pgbun/examples/pgbun_hba.conf', '/usr/share/doc/pgbun/examples/userlist.txt',
      '/usr/share/licenses/pgbun', '/usr/share/licenses/pgbun/LICENSE', '/usr/share/licenses/pgbun/THIRD-PARTY-NOTICES',
      '/usr/share/man/man1/pgbun.1.gz', '/usr/share/man/man5/pgbun.5.gz', '/var/log/pgbun',
    ].sort();
    assert.deepEqual(files, want);
  });

  test('version, config files (noreplace), modes and owners', () => {
    assert.equal(ok('rpm', ['-qp', '--qf', '%{NAME} %{VERSION} %{RELEASE}', built.rpm]), `pgbun ${VERSION} 1`);
    const rows = ok('rpm', ['-qp', '--qf', '[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILEFLAGS:fflags} %{FILENAMES}\n]', built.rpm]);
    const line = (f: string): string => rows.split('\n').find((l) => l.endsWith(` ${f}`)) ?? `(no ${f})`;
    assert.equal(line('/etc/pgbun/pgbun.ini'), '-rw-r----- root:pgbun cn /etc/pgbun/pgbun.ini');
    assert.equal(line('/etc/pgbun/userlist.txt'), '-rw-r----- root:pgbun cn /etc/pgbun/userlist.txt');
    assert.equal(line('/etc/logrotate.d/pgbun'), '-rw-r--r-- root:root cn /etc/logrotate.d/pgbun');
    assert.equal(line('/usr/bin/pgbun'), '-rwxr-xr-x root:root  /usr/bin/pgbun');
    assert.equal(line('/var/log/pgbun'), 'drwxr-x--- pgbun:pgbun  /var/log/pgbun');
    assert.equal(line('/run/pgbun'), 'drwxr-xr-x pgbun:pgbun g /run/pgbun');
  });

  test('rpm -qp --scripts: the user in %pre, systemd and tmpfiles in %post/%preun/%postun', () => {
    const s = ok('rpm', ['-qp', '--scripts', built.rpm]);
    assert.match(s, /preinstall scriptlet[\s\S]*groupadd -r pgbun[\s\S]*useradd -r -g pgbun/);
    assert.match(s, /postinstall scriptlet[\s\S]*systemctl --no-reload preset pgbun\.service[\s\S]*systemd-tmpfiles --create pgbun\.conf/);
    assert.match(s, /preuninstall scriptlet[\s\S]*if \[ \$1 -eq 0 \][\s\S]*disable --now pgbun\.socket pgbun\.service/);
    assert.match(s, /postuninstall scriptlet[\s\S]*try-restart pgbun\.service/);
  });

  test('rpm -i --root into an empty root: the installed binary runs a proxy session', async (t) => {
    if (!isRoot()) {
      console.log('# skipping rpm -i --root: needs root (file owners)');
      t.skip('needs root');
      return;
    }
    // an empty root has no /bin/sh for the scriptlets: they are tested in the overlay install
    const r = run('rpm', ['-i', '--root', rpmRoot, '--nodeps', '--noscripts', built.rpm], { timeoutMs: 120_000 });
    assert.equal(r.status, 0, r.out);
    assert.match(ok('rpm', ['--root', rpmRoot, '-q', 'pgbun']), new RegExp(`^pgbun-${VERSION.replace(/\./g, '\\.')}-1\\.`));
    const bin = path.join(rpmRoot, 'usr/bin/pgbun');
    assert.equal(ok(bin, ['--version']).split('\n')[0], VERSION_LINE);
    await proxySession(bin);
  });
});

// --- installed for real, in a throwaway overlay of this machine ----------------------------------

/** The script runs inside `unshare -m -n`: overlay of /, chroot, and the package manager. */
function overlayScript(inChroot: string): string {
  return `set -eu
B=$OVL
mkdir -p $B/upper $B/work $B/merged
mount -t overlay overlay -o lowerdir=/,upperdir=$B/upper,workdir=$B/work $B/merged
mount --rbind /dev $B/merged/dev
mount -t proc proc $B/merged/proc
mount -t tmpfs tmpfs $B/merged/run
mount -t tmpfs tmpfs $B/merged/tmp
mkdir $B/merged/tmp/pkgs
mount --bind $PKGS $B/merged/tmp/pkgs
ip link set lo up
exec chroot $B/merged /bin/bash -c ${shq(`set -eu
fail() { echo "FAILED: $*"; exit 1; }
PSQL=/usr/lib/postgresql/15/bin/psql
# the man-db trigger would rebuild the whole man index at each dpkg run: not what is tested here
rm -f /var/lib/man-db/auto-update
${inChroot}`)}
`;
}

function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function overlayProblem(): string | null {
  if (process.platform !== 'linux') return 'not Linux';
  if (!isRoot()) return 'needs root (mount namespaces, overlayfs, dpkg)';
  if (!have('unshare') || !have('ip')) return 'needs unshare (util-linux) and ip (iproute2)';
  return null;
}

function runInOverlay(name: string, inChroot: string, pkgs: string): string {
  const ovl = fs.mkdtempSync(path.join(work, `ovl-${name}-`));
  try {
    const r = run('unshare', ['-m', '-n', '--propagation', 'private', 'bash', '-c', overlayScript(inChroot)], {
      env: { ...process.env, OVL: ovl, PKGS: pkgs, DEBIAN_FRONTEND: 'noninteractive' },
      timeoutMs: 150_000,
    });
    assert.equal(r.status, 0, `install test in the overlay failed (status ${r.status}):\n${r.out}`);
    assert.doesNotMatch(r.stdout, /FAILED:/);
    return r.stdout;
  } finally {
    fs.rmSync(ovl, { recursive: true, force: true });
  }
}

// pgbun started exactly as pgbun.service starts it (User=, ExecStart= from the installed unit),
// with the shipped configuration, then the admin console, logrotate + SIGHUP, SIGINT.
const SERVICE_CHECKS = `
user=$(sed -n 's/^User=//p' "$UNIT"); exec_start=$(sed -n 's/^ExecStart=//p' "$UNIT")
[ "$user" = pgbun ] || fail "unit user $user"
# setpriv executes pgbun itself (runuser would fork): $! is pgbun's pid, as systemd's MAINPID
setpriv --reuid="$user" --regid="$user" --init-groups -- $exec_start 2>/dev/null &
for i in $(seq 100); do [ -S /run/pgbun/.s.PGSQL.6432 ] && break; sleep 0.1; done
[ -S /run/pgbun/.s.PGSQL.6432 ] || fail "no Unix socket in /run/pgbun: $(cat /var/log/pgbun/pgbun.log 2>&1)"
[ "$(cat /run/pgbun/pgbun.pid)" = "$!" ] || fail "pidfile"
v=$(runuser -u pgbun -- $PSQL -X -h /run/pgbun -p 6432 -U pgbouncer -d pgbouncer -At -c 'SHOW VERSION')
[ "$v" = "$VERSION_LINE" ] || fail "SHOW VERSION over /run/pgbun: $v"
grep -q 'process up: PgBouncer' /var/log/pgbun/pgbun.log || fail "no 'process up' in /var/log/pgbun/pgbun.log"
logrotate -f /etc/logrotate.d/pgbun || fail "logrotate"
[ -s /var/log/pgbun/pgbun.log.1 ] || fail "logrotate did not rotate"
for i in $(seq 50); do [ -e /var/log/pgbun/pgbun.log ] && break; sleep 0.1; done
runuser -u pgbun -- $PSQL -X -h /run/pgbun -p 6432 -U pgbouncer -d pgbouncer -At -c 'SHOW VERSION' >/dev/null
for i in $(seq 50); do grep -q 'login attempt' /var/log/pgbun/pgbun.log 2>/dev/null && break; sleep 0.1; done
grep -q 'login attempt' /var/log/pgbun/pgbun.log || fail "after SIGHUP pgbun does not write the new log file"
[ "$(stat -c '%U:%G %a' /var/log/pgbun/pgbun.log)" = "pgbun:pgbun 640" ] || fail "new log file: $(stat -c '%U:%G %a' /var/log/pgbun/pgbun.log)"
kill -INT "$(cat /run/pgbun/pgbun.pid)"
wait $! || fail "exit status $? after SIGINT"
[ ! -e /run/pgbun/pgbun.pid ] || fail "pidfile left behind"
echo SERVICE-OK
`;

describe('installed for real (overlay of this machine, private namespaces)', () => {
  const why = overlayProblem();

  test('.deb: install, service start as the unit does, conffiles kept on reinstall and upgrade, purge', (t) => {
    if (why) {
      console.log(`# skipping the overlay install of the .deb: ${why}`);
      t.skip(why);
      return;
    }
    // an "upgrade": the same package as version X+test1 with a changed pgbun.ini
    const re = path.join(work, 'deb-upgrade');
    ok('dpkg-deb', ['-R', built.deb, re]);
    const ctl = path.join(re, 'DEBIAN', 'control');
    fs.writeFileSync(ctl, fs.readFileSync(ctl, 'utf8').replace(/^Version: .*$/m, `Version: ${VERSION}+test1`));
    fs.appendFileSync(path.join(re, 'etc/pgbun/pgbun.ini'), ';; changed by the upgrade test\n');
    const pkgs = path.join(work, 'deb-pkgs');
    fs.mkdirSync(pkgs);
    fs.copyFileSync(built.deb, path.join(pkgs, 'v1.deb'));
    ok('dpkg-deb', ['--root-owner-group', '-Znone', '-b', re, path.join(pkgs, 'v2.deb')]);
    fs.rmSync(re, { recursive: true, force: true });

    const out = runInOverlay('deb', `
VERSION_LINE=${shq(VERSION_LINE)}
UNIT=/lib/systemd/system/pgbun.service
! getent passwd pgbun >/dev/null || fail "user pgbun exists before the install"
dpkg -i --force-unsafe-io /tmp/pkgs/v1.deb >/dev/null || fail "dpkg -i"
getent passwd pgbun | grep -q ':/nonexistent:/usr/sbin/nologin$' || fail "user: $(getent passwd pgbun)"
[ "$(stat -c '%U:%G %a' /etc/pgbun/pgbun.ini)" = "root:pgbun 640" ] || fail "pgbun.ini $(stat -c '%U:%G %a' /etc/pgbun/pgbun.ini)"
[ "$(stat -c '%U:%G %a' /etc/pgbun/userlist.txt)" = "root:pgbun 640" ] || fail "userlist.txt"
[ "$(stat -c '%U:%G %a' /var/log/pgbun)" = "pgbun:pgbun 750" ] || fail "/var/log/pgbun $(stat -c '%U:%G %a' /var/log/pgbun)"
[ "$(stat -c '%U:%G %a' /run/pgbun)" = "pgbun:pgbun 755" ] || fail "/run/pgbun from tmpfiles.d"
[ -L /etc/systemd/system/multi-user.target.wants/pgbun.service ] || fail "unit not enabled"
man -w pgbun >/dev/null && man -w 5 pgbun >/dev/null || fail "man pages"
if command -v systemd-analyze >/dev/null; then
  # it exits 0 on unknown keys and bad values, printing them: any output is a failure
  v=$(systemd-analyze verify "$UNIT" "\${UNIT%.service}.socket" 2>&1) || fail "systemd-analyze verify: $v"
  [ -z "$v" ] || fail "systemd-analyze verify: $v"
  echo VERIFY-OK
else
  echo "VERIFY-SKIPPED: systemd-analyze is not installed (Debian package systemd)"
fi
${SERVICE_CHECKS}
echo '; edited by the administrator' >> /etc/pgbun/pgbun.ini
dpkg -i --force-unsafe-io /tmp/pkgs/v1.deb >/dev/null || fail "reinstall"
grep -q 'edited by the administrator' /etc/pgbun/pgbun.ini || fail "reinstall replaced pgbun.ini"
dpkg -i --force-unsafe-io --force-confold /tmp/pkgs/v2.deb >/dev/null </dev/null || fail "upgrade"
dpkg-query -W -f='\${Version}' pgbun | grep -q '+test1' || fail "upgrade did not happen"
grep -q 'edited by the administrator' /etc/pgbun/pgbun.ini || fail "upgrade replaced the edited pgbun.ini"
grep -q 'changed by the upgrade test' /etc/pgbun/pgbun.ini.dpkg-dist || fail "no pgbun.ini.dpkg-dist"
[ "$(stat -c '%U:%G %a' /etc/pgbun/pgbun.ini)" = "root:pgbun 640" ] || fail "pgbun.ini after upgrade"
dpkg --purge pgbun >/dev/null || fail "purge"
[ ! -e /usr/bin/pgbun ] && [ ! -e /etc/pgbun/pgbun.ini ] && [ ! -e /var/log/pgbun ] || fail "purge left files: $(ls -d /usr/bin/pgbun /etc/pgbun/* /var/log/pgbun 2>&1)"
echo DEB-OK
`, pkgs);
    const skipped = /VERIFY-SKIPPED: (.*)/.exec(out);
    if (skipped) console.log(`# systemd-analyze verify not run: ${skipped[1]}`);
    else assert.match(out, /VERIFY-OK/);
    assert.match(out, /SERVICE-OK/);
    assert.match(out, /DEB-OK/);
  });

  test('.rpm: install with its scriptlets, service start as the unit does, erase', (t) => {
    if (why) {
      console.log(`# skipping the overlay install of the .rpm: ${why}`);
      t.skip(why);
      return;
    }
    const pkgs = path.join(work, 'rpm-pkgs');
    fs.mkdirSync(pkgs);
    fs.copyFileSync(built.rpm, path.join(pkgs, 'pgbun.rpm'));
    const out = runInOverlay('rpm', `
VERSION_LINE=${shq(VERSION_LINE)}
UNIT=/usr/lib/systemd/system/pgbun.service
! getent passwd pgbun >/dev/null || fail "user pgbun exists before the install"
rpm -i --nodeps /tmp/pkgs/pgbun.rpm 2>/dev/null || fail "rpm -i"
getent passwd pgbun | grep -q ':/nonexistent:/sbin/nologin$' || fail "user: $(getent passwd pgbun)"
[ "$(stat -c '%U:%G %a' /etc/pgbun/pgbun.ini)" = "root:pgbun 640" ] || fail "pgbun.ini"
[ "$(stat -c '%U:%G %a' /var/log/pgbun)" = "pgbun:pgbun 750" ] || fail "/var/log/pgbun"
[ "$(stat -c '%U:%G %a' /run/pgbun)" = "pgbun:pgbun 755" ] || fail "/run/pgbun"
rpm -V --nodeps pgbun || fail "rpm -V"
${SERVICE_CHECKS}
echo '; edited by the administrator' >> /etc/pgbun/pgbun.ini
rpm -e --nodeps pgbun 2>/dev/null || fail "rpm -e"
[ ! -e /usr/bin/pgbun ] || fail "erase left /usr/bin/pgbun"
grep -q 'edited by the administrator' /etc/pgbun/pgbun.ini.rpmsave || fail "edited pgbun.ini not saved as .rpmsave"
echo RPM-OK
`, pkgs);
    assert.match(out, /SERVICE-OK/);
    assert.match(out, /RPM-OK/);
  });
});
