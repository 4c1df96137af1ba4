// loadConfig: the whole of pgbouncer.ini at startup and on reload, with PgBouncer's rules.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, type LoadOptions } from '../../src/config/load.js';
import { defaultSettings, setSetting } from '../../src/config/settings.js';

const dir = mkdtempSync(join(tmpdir(), 'pgbun-config-load-'));
let n = 0;
function ini(...lines: string[]): string {
  const path = join(dir, `c${++n}.ini`);
  writeFileSync(path, lines.join('\n') + '\n');
  return path;
}
const startup: LoadOptions = { startup: true };
function messages(path: string, opts: LoadOptions = startup): string[] {
  return loadConfig(path, opts).problems.map((p) => p.message);
}
function loaded(path: string, opts: LoadOptions = startup) {
  const r = loadConfig(path, opts);
  assert.deepEqual(r.problems, []);
  assert.ok(r.config);
  return r.config;
}

test('a complete file: settings, databases in file order (incl. *), users, peers', () => {
  const f = ini('[pgbouncer]', 'listen_port = 7000', 'pool_mode = transaction', 'auth_type = scram-sha-256',
    'admin_users = admin, ops', '[databases]', 'zdb = host=10.0.0.1 dbname=z', "'my db' = dbname='a b'",
    'foodb =', '* = host=fallback port=5433', '[users]', 'bob = pool_mode=session pool_size=3', 'eve =',
    '[peers]', '1 = host=/tmp', '2 = host=peer2 port=6433 pool_size=5');
  const c = loaded(f);
  assert.equal(c.file, f);
  assert.equal(c.settings.listen_port, 7000);
  assert.equal(c.settings.pool_mode, 'transaction');
  assert.equal(c.settings.auth_type, 'scram-sha-256');
  assert.equal(c.settings.admin_users, 'admin, ops');
  assert.equal(c.settings.conffile, f);
  assert.equal(c.settings.server_lifetime, 3600);
  assert.deepEqual([...c.databases.keys()], ['zdb', 'my db', 'foodb', '*']);
  assert.equal(c.databases.get('zdb')?.host, '10.0.0.1');
  assert.equal(c.databases.get('zdb')?.line, 7);
  assert.equal(c.databases.get('my db')?.dbname, 'a b');
  assert.equal(c.databases.get('foodb')?.port, 5432);
  assert.equal(c.databases.get('*')?.port, 5433);
  assert.deepEqual([...c.users.keys()], ['bob', 'eve']);
  assert.equal(c.users.get('bob')?.pool_size, 3);
  assert.deepEqual([...c.peers.keys()], [1, 2]);
  assert.equal(c.peers.get(1)?.port, 6432);
  assert.equal(c.peers.get(2)?.pool_size, 5);
});

test('[pgbouncer] is mandatory', () => {
  const f = ini('[databases]', 'foo =');
  const r = loadConfig(f, startup);
  assert.equal(r.config, null);
  assert.deepEqual(r.problems, [{ file: f, line: 0, message: `load_init_file: main section missing from config file (${f})`,
    log: ['load_init_file: main section missing from config file'] }]);
  const empty = ini('');
  assert.deepEqual(messages(empty), [`load_init_file: main section missing from config file (${empty})`]);
});

test('unknown key: `unknown parameter: pgbouncer/KEY` with file:line', () => {
  const f = ini('[pgbouncer]', 'bogus = 1');
  const r = loadConfig(f, startup);
  assert.equal(r.config, null);
  assert.deepEqual(r.problems, [{ file: f, line: 2, message: `unknown parameter: pgbouncer/bogus (${f}:2)`,
    log: ['unknown parameter: pgbouncer/bogus', `invalid value "1" for parameter bogus in configuration (${f}:2)`] }]);
});

test('invalid value: `invalid value "V" for parameter K in configuration (file:line)`', () => {
  const f = ini('[pgbouncer]', 'listen_port = on');
  assert.deepEqual(messages(f), [`invalid value "on" for parameter listen_port in configuration (${f}:2)`]);
  const g = ini('[pgbouncer]', 'server_lifetime = 10s');
  assert.deepEqual(messages(g), [`invalid value "10s" for parameter server_lifetime in configuration (${g}:2)`]);
});

test('unknown section', () => {
  const f = ini('[pgbouncer]', '[database]', 'foo =');
  assert.deepEqual(messages(f), [`invalid section "database" in configuration (${f}:2)`]);
});

test('duplicate keys: the last one wins, in [pgbouncer] and [databases]', () => {
  const c = loaded(ini('[pgbouncer]', 'pool_mode = session', '[databases]', 'a = dbname=x', 'a = dbname=y',
    '[pgbouncer]', 'max_client_conn = 5', 'max_client_conn = 6'));
  assert.equal(c.settings.max_client_conn, 6);
  assert.equal(c.databases.get('a')?.dbname, 'y');
});

test('database name "pgbouncer" is reserved', () => {
  const f = ini('[pgbouncer]', '[databases]', 'pgbouncer = host=x');
  const r = loadConfig(f, startup);
  assert.deepEqual(r.problems.map((p) => [p.line, p.message, p.log]), [[3, `database name "pgbouncer" is reserved (${f}:3)`,
    ['database name "pgbouncer" is reserved', `invalid value "host=x" for parameter pgbouncer in configuration (${f}:3)`]]]);
});

test('database names are at most 63 bytes', () => {
  const ok = loaded(ini('[pgbouncer]', '[databases]', `${'a'.repeat(63)} =`));
  assert.equal(ok.databases.size, 1);
  const long = 'a'.repeat(64);
  const f = ini('[pgbouncer]', '[databases]', `${long} =`);
  assert.deepEqual(messages(f), [`too long db name: ${long} (${f}:3)`]);
  const wide = 'é'.repeat(32); // 64 bytes
  const g = ini('[pgbouncer]', '[databases]', `'${wide}' =`);
  assert.deepEqual(messages(g), [`too long db name: ${wide} (${g}:3)`]);
});

test('connection string errors name file and line', () => {
  const f = ini('[pgbouncer]', '[databases]', 'ok = host=x', 'p0 = host=x dbname=p0 ; c');
  const r = loadConfig(f, startup);
  assert.deepEqual(r.problems.map((p) => [p.line, p.message, p.log]), [[4, `syntax error in connection string (${f}:4)`,
    ['syntax error in connection string', `invalid value "host=x dbname=p0 ; c" for parameter p0 in configuration (${f}:4)`]]]);
  const g = ini('[pgbouncer]', '[databases]', 'd = bogus=1');
  assert.deepEqual(messages(g), [`unrecognized connection parameter: bogus (${g}:3)`]);
  const h = ini('[pgbouncer]', '[databases]', 'd = port=0');
  assert.deepEqual(messages(h), [`invalid port: 0 (${h}:3)`]);
});

test('[users] errors name file and line', () => {
  const f = ini('[pgbouncer]', '[users]', 'u = bogus=1');
  assert.deepEqual(messages(f), [`unrecognized user parameter: bogus (${f}:3)`]);
  const g = ini('[pgbouncer]', '[users]', 'u = x');
  assert.deepEqual(messages(g), [`syntax error in user settings (${g}:3)`]);
});

test('[peers]: id range, host required, errors with file and line', () => {
  for (const id of ['0', '65536', 'x']) {
    const f = ini('[pgbouncer]', '[peers]', `${id} = host=a`);
    assert.deepEqual(messages(f), [`ids of peers must be a number larger than 0 and smaller than 65536 (${f}:3)`], id);
  }
  const g = ini('[pgbouncer]', '[peers]', '3 = port=1');
  assert.deepEqual(messages(g), [`host is required for peer 3 (${g}:3)`]);
});

test('auth_dbname = pgbouncer is refused in [pgbouncer] (and never stored), accepted per database', () => {
  const f = ini('[pgbouncer]', 'listen_port = 7000', 'auth_dbname = pgbouncer', 'listen_backlog = 7');
  const r = loadConfig(f, startup);
  assert.equal(r.config, null);
  assert.deepEqual(r.problems.map((p) => [p.file, p.line, p.message, p.log]), [[f, 3,
    `cannot use the reserved "pgbouncer" database as an auth_dbname (${f}:3)`,
    ['cannot use the reserved "pgbouncer" database as an auth_dbname',
      `invalid value "pgbouncer" for parameter auth_dbname in configuration (${f}:3)`]]]);
  // loading stopped at that line; what came before is applied, the value itself is not
  assert.equal(r.partial.settings.listen_port, 7000);
  assert.equal(r.partial.settings.listen_backlog, 128);
  assert.equal(r.partial.settings.auth_dbname, null);
  // a reload keeps the value in force
  const current = { ...defaultSettings(f), auth_dbname: 'authdb' };
  assert.equal(loadConfig(f, { startup: false, current }).partial.settings.auth_dbname, 'authdb');
  assert.throws(() => setSetting(current, 'auth_dbname', 'pgbouncer', { startup: false }),
    { message: 'invalid value "pgbouncer" for parameter auth_dbname' });
  assert.equal(current.auth_dbname, 'authdb');
  const g = ini('[pgbouncer]', '[databases]', 'd = auth_dbname=pgbouncer');
  assert.equal(loaded(g).databases.get('d')?.auth_dbname, 'pgbouncer');
  assert.equal(loaded(ini('[pgbouncer]', 'auth_dbname = authdb')).settings.auth_dbname, 'authdb');
});

test('startup: a second [pgbouncer] header resets every non-NULL-default key (1.18)', () => {
  const c = loaded(ini('[pgbouncer]', 'pool_mode = transaction', 'listen_backlog = 77', 'auth_user = bob',
    'unix_socket_dir = /run/x', '[databases]', '[pgbouncer]', 'listen_port = 7000'));
  assert.equal(c.settings.pool_mode, 'session');
  assert.equal(c.settings.listen_backlog, 128);
  assert.equal(c.settings.unix_socket_dir, '/tmp');
  assert.equal(c.settings.auth_user, 'bob');
  assert.equal(c.settings.listen_port, 7000);
});

function running(lines: string[]) {
  const c = loaded(ini(...lines));
  return c.settings;
}

test('reload: removed reloadable keys revert to their default; SET values are lost', () => {
  const current = running(['[pgbouncer]', 'pool_mode = transaction', 'server_lifetime = 10', 'listen_port = 7000']);
  setSetting(current, 'max_client_conn', '500', { startup: false }); // admin SET
  const next = loaded(ini('[pgbouncer]', 'listen_port = 7000'), { startup: false, current });
  assert.equal(next.settings.pool_mode, 'session');
  assert.equal(next.settings.server_lifetime, 3600);
  assert.equal(next.settings.max_client_conn, 100);
  assert.equal(current.pool_mode, 'transaction'); // the running settings are not touched
});

test('reload: NULL-default keys keep their value (auth_user, verbose, conffile)', () => {
  const current = running(['[pgbouncer]', 'auth_user = pgb_auth', 'auth_file = /etc/u.txt']);
  setSetting(current, 'verbose', '2', { startup: false });
  const before = current.conffile;
  const next = loaded(ini('[pgbouncer]'), { startup: false, current });
  assert.equal(next.settings.auth_user, 'pgb_auth');
  assert.equal(next.settings.auth_file, '/etc/u.txt');
  assert.equal(next.settings.verbose, 2);
  assert.equal(next.settings.conffile, before);
});

test('reload: non-reloadable keys are ignored silently, even invalid values', () => {
  const current = running(['[pgbouncer]', 'listen_port = 7000', 'unix_socket_dir = /run/a']);
  const r = loadConfig(ini('[pgbouncer]', 'listen_port = abc', 'unix_socket_dir = /run/b', 'pool_mode = statement'),
    { startup: false, current });
  assert.deepEqual(r.problems, []);
  assert.equal(r.config?.settings.listen_port, 7000);
  assert.equal(r.config?.settings.unix_socket_dir, '/run/a');
  assert.equal(r.config?.settings.pool_mode, 'statement');
});

test('reload: a second [pgbouncer] header resets reloadable keys again', () => {
  const current = running(['[pgbouncer]']);
  const next = loaded(ini('[pgbouncer]', 'pool_mode = transaction', '[pgbouncer]', 'max_client_conn = 9'),
    { startup: false, current });
  assert.equal(next.settings.pool_mode, 'session');
  assert.equal(next.settings.max_client_conn, 9);
});

test('a failed load returns no config; `partial` holds what was applied before the bad line', () => {
  const current = running(['[pgbouncer]', 'pool_mode = transaction']);
  const f = ini('[pgbouncer]', 'max_client_conn = 42', 'server_lifetime = bad', 'min_pool_size = 3',
    '[databases]', 'd =');
  const r = loadConfig(f, { startup: false, current });
  assert.equal(r.config, null);
  assert.deepEqual(r.problems.map((p) => p.line), [3]);
  assert.equal(r.partial.settings.max_client_conn, 42);
  assert.equal(r.partial.settings.pool_mode, 'session'); // reset by the header before the error
  assert.equal(r.partial.settings.min_pool_size, 0);
  assert.equal(r.partial.databases.size, 0);
});

test('collect mode (pgbun --check) reports every problem of a broken file with file:line', () => {
  const f = ini(
    '[pgbouncer]',
    'listen_port = abc',
    'bogus = 1',
    'pool_mode = sessions',
    'broken line',
    '[databases]',
    'pgbouncer = host=x',
    'p0 = host=x ; c',
    'good = host=y',
    '[users]',
    'u = nope=1',
    '[peers]',
    '0 = host=z',
    '[extra]',
    'k = v');
  const r = loadConfig(f, { startup: true, collectAll: true });
  assert.equal(r.config, null);
  assert.deepEqual(r.problems.map((p) => [p.file, p.line]), [2, 3, 4, 5, 7, 8, 11, 13, 14].map((l) => [f, l]));
  assert.deepEqual(r.problems.map((p) => p.message), [
    `invalid value "abc" for parameter listen_port in configuration (${f}:2)`,
    `unknown parameter: pgbouncer/bogus (${f}:3)`,
    `invalid value "sessions" for parameter pool_mode in configuration (${f}:4)`,
    `syntax error in configuration (${f}:5), stopping loading`,
    `database name "pgbouncer" is reserved (${f}:7)`,
    `syntax error in connection string (${f}:8)`,
    `unrecognized user parameter: nope (${f}:11)`,
    `ids of peers must be a number larger than 0 and smaller than 65536 (${f}:13)`,
    `invalid section "extra" in configuration (${f}:14)`,
  ]);
  assert.deepEqual([...r.partial.databases.keys()], ['good']);
});

test('collect mode also reports a missing [pgbouncer] and a reserved global auth_dbname', () => {
  // a per-database auth_dbname=pgbouncer is no load problem (pgbun --check warns about it)
  const f = ini('[databases]', 'd = auth_dbname=pgbouncer', 'e = port=0');
  assert.deepEqual(messages(f, { startup: true, collectAll: true }), [
    `invalid port: 0 (${f}:3)`,
    `load_init_file: main section missing from config file (${f})`,
  ]);
  const g = ini('[pgbouncer]', 'auth_dbname = pgbouncer', 'listen_port = x');
  assert.deepEqual(messages(g, { startup: true, collectAll: true }), [
    `cannot use the reserved "pgbouncer" database as an auth_dbname (${g}:2)`,
    `invalid value "x" for parameter listen_port in configuration (${g}:3)`,
  ]);
});

test('PgBouncer mode stops at the first problem', () => {
  const f = ini('[pgbouncer]', 'listen_port = abc', 'bogus = 1', '[nope]');
  assert.deepEqual(messages(f).length, 1);
});

test('%include: relative to the working directory; included sections count', () => {
  const base = join(dir, 'inc-case');
  mkdirSync(join(base, 'etc'), { recursive: true });
  writeFileSync(join(base, 'etc', 'main.ini'), '[databases]\nfrommain = host=m\n%include etc/pgb.ini\n');
  writeFileSync(join(base, 'etc', 'pgb.ini'), '[pgbouncer]\nlisten_port = 7100\n[databases]\nfrominc = host=i\n');
  const old = process.cwd();
  process.chdir(base);
  try {
    const c = loaded(join(base, 'etc', 'main.ini'));
    assert.equal(c.settings.listen_port, 7100);
    assert.deepEqual([...c.databases.keys()], ['frommain', 'frominc']);
    assert.equal(c.databases.get('frominc')?.file, 'etc/pgb.ini');
    assert.equal(c.databases.get('frominc')?.line, 4);
  } finally {
    process.chdir(old);
  }
});

test('a missing config file', () => {
  const f = join(dir, 'missing.ini');
  assert.deepEqual(messages(f), [`could not load file "${f}": No such file or directory`]);
});

test('defaults are PgBouncer\'s when the file sets nothing', () => {
  const c = loaded(ini('[pgbouncer]'));
  const d = defaultSettings(c.file);
  assert.deepEqual(c.settings, d);
});
