// The [pgbouncer] settings table against PgBouncer 1.25's documented settings
// (https://www.pgbouncer.org/config.html): every key, its default, its reload flag, the value
// types and the defaults restored on reload. Values marked "1.18" were observed on that binary.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ALL_SETTING_DEFS, SETTING_DEFS, SettingError, defaultSettings, formatSettingValue,
  resetDefaults, resetReloadableDefaults, setSetting, settingDef, settingDefaultText,
  showConfigRows, splitList, type Settings,
} from '../../src/config/settings.js';
import { cAtoi, formatG, parseCDouble, parseCInt, parseCUint } from '../../src/config/cvalues.js';

const start = { startup: true };
const reload = { startup: false };

function set(key: string, value: string, s: Settings = defaultSettings()): Settings {
  setSetting(s, key, value, start);
  return s;
}
function shown(key: string, value: string): string | null {
  return formatSettingValue(key, set(key, value));
}
function rejects(key: string, value: string): void {
  assert.throws(() => set(key, value), (err: unknown) =>
    err instanceof SettingError && err.kind === 'invalid' &&
    err.message === `invalid value "${value}" for parameter ${key}`, `${key}=${value}`);
}

// PgBouncer 1.25's keys: key → [SHOW CONFIG default, reloadable]
const SPEC: Record<string, [string | null, boolean]> = {
  logfile: ['', true], pidfile: ['', false], listen_addr: ['', false], listen_port: ['6432', false],
  listen_backlog: ['128', false], unix_socket_dir: ['/tmp', false], unix_socket_mode: ['0777', false],
  unix_socket_group: ['', false], user: [null, false], pool_mode: ['session', true],
  max_client_conn: ['100', true], default_pool_size: ['20', true], min_pool_size: ['0', true],
  reserve_pool_size: ['0', true], reserve_pool_timeout: ['5', true], max_db_connections: ['0', true],
  max_db_client_connections: ['0', true], max_user_connections: ['0', true],
  max_user_client_connections: ['0', true], server_round_robin: ['0', true],
  track_extra_parameters: ['IntervalStyle', false], ignore_startup_parameters: ['', true],
  peer_id: ['0', true], disable_pqexec: ['0', false], application_name_add_host: ['0', true],
  conffile: [null, true], job_name: ['pgbouncer', false], stats_period: ['60', true],
  max_prepared_statements: ['200', true], scram_iterations: ['4096', true],
  pool_idle_timeout: ['0', true], login_notify_message: ['', true], query_wait_notify: ['5', true],
  auth_type: ['md5', true], auth_file: [null, true], auth_hba_file: ['', true],
  auth_ident_file: [null, true], auth_user: [null, true],
  auth_query: ['SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END ' +
    'FROM pg_authid WHERE rolname=$1 AND rolcanlogin', true],
  auth_dbname: [null, true], auth_ldap_options: [null, true],
  admin_users: ['', true], stats_users: ['', true],
  syslog: ['0', true], syslog_ident: ['pgbouncer', true], syslog_facility: ['daemon', true],
  log_connections: ['1', true], log_disconnections: ['1', true], log_pooler_errors: ['1', true],
  log_stats: ['1', true], verbose: [null, true],
  server_reset_query: ['DISCARD ALL', true], server_reset_query_always: ['0', true],
  server_check_delay: ['30', true], server_check_query: ['<empty>', true],
  server_fast_close: ['0', true], server_lifetime: ['3600', true], server_idle_timeout: ['600', true],
  server_connect_timeout: ['15', true], server_login_retry: ['15', true],
  client_login_timeout: ['60', true], autodb_idle_timeout: ['3600', true], dns_max_ttl: ['15', true],
  dns_nxdomain_ttl: ['15', true], dns_zone_check_period: ['0', true], resolv_conf: ['', false],
  client_tls_sslmode: ['disable', true], client_tls_key_file: ['', true],
  client_tls_cert_file: ['', true], client_tls_ca_file: ['', true],
  client_tls_protocols: ['secure', true], client_tls_ciphers: ['default', true],
  client_tls13_ciphers: [null, true], client_tls_ecdhcurve: ['auto', true],
  client_tls_dheparams: ['auto', true],
  server_tls_sslmode: ['prefer', true], server_tls_ca_file: ['', true],
  server_tls_key_file: ['', true], server_tls_cert_file: ['', true],
  server_tls_protocols: ['secure', true], server_tls_ciphers: ['default', true],
  server_tls13_ciphers: [null, true],
  query_timeout: ['0', true], query_wait_timeout: ['120', true], cancel_wait_timeout: ['10', true],
  client_idle_timeout: ['0', true], idle_transaction_timeout: ['0', true],
  transaction_timeout: ['0', true], suspend_timeout: ['10', true],
  pkt_buf: ['4096', false], max_packet_size: ['2147483647', true], sbuf_loopcnt: ['5', true],
  so_reuseport: ['0', false], tcp_defer_accept: [process.platform === 'linux' ? '1' : '0', true],
  tcp_socket_buffer: ['0', true], tcp_keepalive: ['1', true], tcp_keepcnt: ['0', true],
  tcp_keepidle: ['0', true], tcp_keepintvl: ['0', true], tcp_user_timeout: ['0', true],
  // pgbun's own extensions (not in PgBouncer), listed here on purpose
  log_format: ['text', true],
  metrics_listen_addr: ['', true], metrics_listen_port: ['0', true], workers: ['1', false],
};

test('the table has exactly PgBouncer\'s keys (plus pgbun extensions), each with its default and reload flag', () => {
  assert.deepEqual(SETTING_DEFS.map((d) => d.name).sort(), Object.keys(SPEC).sort());
  for (const def of SETTING_DEFS) {
    const [dflt, reloadable] = SPEC[def.name]!;
    assert.equal(def.default, dflt, `default of ${def.name}`);
    assert.equal(def.reloadable, reloadable, `reloadable of ${def.name}`);
  }
});

test('the keys that only apply at startup (changeable=no) are exactly PgBouncer\'s startup-only keys and pgbun\'s workers', () => {
  assert.deepEqual(SETTING_DEFS.filter((d) => !d.reloadable).map((d) => d.name), [
    'disable_pqexec', 'job_name', 'listen_addr', 'listen_backlog', 'listen_port', 'pidfile',
    'pkt_buf', 'resolv_conf', 'so_reuseport', 'track_extra_parameters', 'unix_socket_dir',
    'unix_socket_group', 'unix_socket_mode', 'user', 'workers',
  ]);
});

test('workers: auto or 1..64', () => {
  const s = defaultSettings();
  assert.equal(s.workers, '1');
  for (const v of ['auto', '1', '2', '64']) {
    setSetting(s, 'workers', v, { startup: true });
    assert.equal(s.workers, v);
  }
  for (const v of ['0', '65', '-1', 'two', '1.5', '']) {
    assert.throws(() => setSetting(s, 'workers', v, { startup: true }), /invalid value/, v);
  }
});

test('NULL defaults are exactly the keys PgBouncer leaves unset', () => {
  assert.deepEqual(SETTING_DEFS.filter((d) => d.default === null).map((d) => d.name), [
    'auth_dbname', 'auth_file', 'auth_ident_file', 'auth_ldap_options', 'auth_user',
    'client_tls13_ciphers', 'conffile', 'server_tls13_ciphers', 'user', 'verbose',
  ]);
});

test('SETTING_DEFS is sorted alphabetically with unique names (SHOW CONFIG order)', () => {
  const names = SETTING_DEFS.map((d) => d.name);
  assert.deepEqual(names, [...names].sort());
  assert.equal(new Set(names).size, names.length);
  const all = ALL_SETTING_DEFS.map((d) => d.name);
  assert.deepEqual(all, [...all].sort());
});

test('value kinds: times, ints, enums, lists as PgBouncer parses them', () => {
  const kind = (k: string): string | undefined => settingDef(k)?.kind;
  for (const k of ['server_lifetime', 'query_timeout', 'query_wait_timeout', 'client_login_timeout',
    'autodb_idle_timeout', 'dns_max_ttl', 'suspend_timeout', 'reserve_pool_timeout',
    'transaction_timeout', 'cancel_wait_timeout', 'pool_idle_timeout', 'query_wait_notify',
    'server_check_delay', 'dns_zone_check_period']) assert.equal(kind(k), 'time', k);
  for (const k of ['listen_port', 'pkt_buf', 'stats_period', 'tcp_keepidle', 'tcp_user_timeout',
    'verbose', 'unix_socket_mode', 'peer_id', 'syslog']) assert.equal(kind(k), 'int', k);
  assert.equal(kind('max_packet_size'), 'uint');
  for (const k of ['admin_users', 'stats_users', 'ignore_startup_parameters',
    'track_extra_parameters', 'listen_addr']) assert.equal(kind(k), 'list', k);
  assert.deepEqual(settingDef('pool_mode')?.values, ['session', 'transaction', 'statement']);
  assert.deepEqual(settingDef('server_tls_sslmode')?.values,
    ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full']);
  assert.deepEqual(settingDef('client_tls_sslmode')?.values, settingDef('server_tls_sslmode')?.values);
});

test('defaultSettings: one field per key, typed values, conffile from the command line', () => {
  const s = defaultSettings('/etc/pgbouncer/pgbouncer.ini');
  assert.deepEqual(Object.keys(s).sort(), SETTING_DEFS.map((d) => d.name).sort());
  assert.equal(s.conffile, '/etc/pgbouncer/pgbouncer.ini');
  assert.equal(defaultSettings().conffile, null);
  assert.equal(s.listen_port, 6432);
  assert.equal(s.unix_socket_mode, 0o777);
  assert.equal(s.server_lifetime, 3600);
  assert.equal(s.pool_mode, 'session');
  assert.equal(s.server_tls_sslmode, 'prefer');
  assert.equal(s.auth_file, null);
  assert.equal(s.verbose, 0);
  assert.equal(s.max_packet_size, 2147483647);
  assert.equal(s.track_extra_parameters, 'IntervalStyle');
  assert.equal(s.logfile, '');
});

test('service_name is job_name\'s Windows-only alias: unknown on other platforms', () => {
  const def = ALL_SETTING_DEFS.find((d) => d.name === 'service_name');
  assert.equal(def?.aliasOf, 'job_name');
  assert.equal(def?.reloadable, false);
  if (process.platform !== 'win32') {
    assert.throws(() => set('service_name', 'x'), { message: 'unknown parameter: pgbouncer/service_name' });
  }
});

test('unknown key: `unknown parameter: pgbouncer/KEY`, keys are case-sensitive', () => {
  for (const key of ['bogus', 'LISTEN_PORT', 'server_drop_on_cached_plan_error', '']) {
    assert.throws(() => set(key, '1'), (err: unknown) => err instanceof SettingError &&
      err.kind === 'unknown' && err.message === `unknown parameter: pgbouncer/${key}`);
  }
});

test('int: strtol base 0, whole string; hex and octal accepted, booleans words rejected', () => {
  assert.equal(set('listen_port', '0x10').listen_port, 16);
  assert.equal(set('listen_port', '0X1f').listen_port, 31);
  assert.equal(set('listen_port', '010').listen_port, 8);
  assert.equal(set('listen_port', '0').listen_port, 0);
  assert.equal(set('max_client_conn', '+7').max_client_conn, 7);
  assert.equal(set('default_pool_size', '-3').default_pool_size, -3); // 1.18
  assert.equal(set('listen_backlog', '-0x10').listen_backlog, -16);
  for (const bad of ['on', 'true', 'yes', '1.5', '', '08', '0x', '1 2', '12abc', '1_000']) {
    rejects('listen_port', bad);
  }
});

test('int: out-of-range values wrap to a C int as PgBouncer stores them (1.18)', () => {
  assert.equal(set('max_client_conn', '4294967297').max_client_conn, 1);
  assert.equal(set('max_client_conn', '9999999999999999999999').max_client_conn, -1);
  assert.equal(set('stats_period', '2147483648').stats_period, -2147483648);
});

test('max_packet_size is unsigned: -1 is 4294967295, overflow keeps the low 32 bits (1.18)', () => {
  assert.equal(set('max_packet_size', '-1').max_packet_size, 4294967295);
  assert.equal(set('max_packet_size', '4295067296').max_packet_size, 100000);
  assert.equal(shown('max_packet_size', '-1'), '4294967295');
  rejects('max_packet_size', 'big');
});

test('unix_socket_mode: octal via base 0, shown as decimal with default text 0777', () => {
  assert.equal(set('unix_socket_mode', '0700').unix_socket_mode, 0o700);
  assert.equal(formatSettingValue('unix_socket_mode', defaultSettings()), '511');
  assert.equal(settingDefaultText('unix_socket_mode'), '0777');
  assert.equal(shown('unix_socket_mode', '0700'), '448');
  assert.equal(shown('unix_socket_mode', '777'), '777');
});

test('time: non-negative decimal seconds with fraction, no unit', () => {
  assert.equal(set('server_lifetime', '0.5').server_lifetime, 0.5);
  assert.equal(set('server_lifetime', '.5').server_lifetime, 0.5);
  assert.equal(set('server_lifetime', '5.').server_lifetime, 5);
  assert.equal(set('server_lifetime', '-0').server_lifetime, 0);
  for (const bad of ['-1', '-0.5', '1s', '10m', '', 'abc', '1e', '0x', '1_000', '-inf', '1e999', '1e-999']) {
    rejects('server_lifetime', bad);
  }
});

test('time: whatever strtod accepts is accepted, as in 1.18 (1e3, hex, inf, nan)', () => {
  assert.equal(set('server_idle_timeout', '1e3').server_idle_timeout, 1000);
  assert.equal(set('client_login_timeout', '1E2').client_login_timeout, 100);
  assert.equal(set('server_lifetime', '0x10').server_lifetime, 16);
  assert.equal(set('server_login_retry', '0x1p4').server_login_retry, 16);
  assert.equal(set('server_login_retry', '0x1.8').server_login_retry, 1.5);
  // the conversion to microseconds makes these 0 and 2^63 us in PgBouncer (SHOW CONFIG, 1.18)
  assert.equal(shown('client_idle_timeout', 'inf'), '0');
  assert.equal(shown('client_idle_timeout', 'infinity'), '0');
  assert.equal(shown('server_lifetime', 'nan'), '9.22337e+12');
  assert.equal(shown('autodb_idle_timeout', '99999999999999999'), '0');
});

test('time: kept in whole microseconds, shown as %g of seconds (1.18)', () => {
  assert.equal(shown('query_wait_timeout', '0.0000015'), '1e-06');
  assert.equal(shown('query_timeout', '0.0000019'), '1e-06');
  assert.equal(shown('server_connect_timeout', '1e-7'), '0');
  assert.equal(shown('suspend_timeout', '123456789'), '1.23457e+08');
  assert.equal(shown('dns_nxdomain_ttl', '0.1'), '0.1');
  assert.equal(shown('reserve_pool_timeout', '0.3'), '0.3');
  assert.equal(formatSettingValue('server_lifetime', defaultSettings()), '3600');
  assert.equal(set('query_timeout', '0.0000019').query_timeout, 0.000001);
});

test('enum: names matched case-insensitively (1.18), stored and shown lowercase', () => {
  assert.equal(set('pool_mode', 'transaction').pool_mode, 'transaction');
  assert.equal(set('pool_mode', 'Session').pool_mode, 'session');
  assert.equal(set('auth_type', 'SCRAM-SHA-256').auth_type, 'scram-sha-256');
  assert.equal(shown('pool_mode', 'STATEMENT'), 'statement');
  for (const v of ['any', 'trust', 'plain', 'md5', 'cert', 'hba', 'scram-sha-256']) {
    assert.equal(set('auth_type', v).auth_type, v);
  }
  for (const v of ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full']) {
    assert.equal(set('client_tls_sslmode', v).client_tls_sslmode, v);
    assert.equal(set('server_tls_sslmode', v).server_tls_sslmode, v);
  }
  rejects('pool_mode', 'bogus');
  rejects('pool_mode', '');
  rejects('pool_mode', ' session');
  rejects('server_tls_sslmode', 'verify_full');
  // pgbun is built without PAM and LDAP support
  rejects('auth_type', 'pam');
  rejects('auth_type', 'ldap');
});

test('strings are verbatim; NULL-default strings become "" when set empty', () => {
  assert.equal(set('server_reset_query', "DISCARD ALL; -- # 'x'").server_reset_query, "DISCARD ALL; -- # 'x'");
  assert.equal(set('auth_user', '').auth_user, '');
  assert.equal(shown('auth_user', ''), '');
  assert.equal(set('logfile', '/var/log/x.log').logfile, '/var/log/x.log');
  assert.equal(set('admin_users', 'a, b c').admin_users, 'a, b c');
});

test('peer_id must be 0..16383', () => {
  assert.equal(set('peer_id', '16383').peer_id, 16383);
  assert.equal(set('peer_id', '0').peer_id, 0);
  rejects('peer_id', '16384');
  rejects('peer_id', '-1');
});

test('after startup a non-reloadable key is ignored silently, its value not even checked', () => {
  const s = defaultSettings();
  assert.equal(setSetting(s, 'listen_port', '7000', reload), 'ignored');
  assert.equal(setSetting(s, 'listen_port', 'abc', reload), 'ignored'); // 1.18: SET OK
  assert.equal(setSetting(s, 'unix_socket_dir', '/run', reload), 'ignored');
  assert.equal(s.listen_port, 6432);
  assert.equal(s.unix_socket_dir, '/tmp');
  assert.equal(setSetting(s, 'pool_mode', 'transaction', reload), 'set');
  assert.equal(s.pool_mode, 'transaction');
  assert.throws(() => setSetting(s, 'server_lifetime', 'x', reload), { message: 'invalid value "x" for parameter server_lifetime' });
  assert.throws(() => setSetting(s, 'nope', '1', reload), { message: 'unknown parameter: pgbouncer/nope' });
  assert.equal(setSetting(s, 'listen_port', '7000', start), 'set');
  assert.equal(s.listen_port, 7000);
});

test('resetReloadableDefaults resets reloadable non-NULL-default keys only', () => {
  const s = defaultSettings('/a.ini');
  set('pool_mode', 'transaction', s);
  set('server_lifetime', '10', s);
  set('admin_users', 'me', s);
  set('auth_user', 'authuser', s);
  set('verbose', '2', s);
  set('auth_file', '/x', s);
  set('listen_port', '7000', s);
  set('conffile', '/b.ini', s);
  resetReloadableDefaults(s);
  assert.equal(s.pool_mode, 'session');
  assert.equal(s.server_lifetime, 3600);
  assert.equal(s.admin_users, '');
  assert.equal(s.auth_user, 'authuser');
  assert.equal(s.verbose, 2);
  assert.equal(s.auth_file, '/x');
  assert.equal(s.conffile, '/b.ini');
  assert.equal(s.listen_port, 7000);
});

test('resetDefaults at startup also resets non-reloadable keys (1.18: second [pgbouncer])', () => {
  const s = defaultSettings();
  set('listen_port', '7000', s);
  set('unix_socket_dir', '/run', s);
  set('user', 'postgres', s);
  resetDefaults(s, { startup: true });
  assert.equal(s.listen_port, 6432);
  assert.equal(s.unix_socket_dir, '/tmp');
  assert.equal(s.user, 'postgres');
});

test('SHOW CONFIG rows: key, value, default, changeable; NULL values and defaults', () => {
  const s = defaultSettings('/etc/p.ini');
  const rows = showConfigRows(s);
  assert.equal(rows.length, SETTING_DEFS.length);
  const row = (k: string) => rows.find((r) => r[0] === k);
  assert.deepEqual(row('auth_file'), ['auth_file', null, null, 'yes']);
  assert.deepEqual(row('conffile'), ['conffile', '/etc/p.ini', null, 'yes']);
  assert.deepEqual(row('verbose'), ['verbose', '0', null, 'yes']);
  assert.deepEqual(row('listen_port'), ['listen_port', '6432', '6432', 'no']);
  assert.deepEqual(row('unix_socket_mode'), ['unix_socket_mode', '511', '0777', 'no']);
  assert.deepEqual(row('server_check_query'), ['server_check_query', '<empty>', '<empty>', 'yes']);
  assert.deepEqual(row('user'), ['user', null, null, 'no']);
  assert.equal(settingDefaultText('auth_file'), null);
  assert.equal(settingDefaultText('server_lifetime'), '3600');
  assert.throws(() => settingDefaultText('nope'), SettingError);
});

test('splitList: comma and/or whitespace separated', () => {
  assert.deepEqual(splitList('a, b  c,,d\te'), ['a', 'b', 'c', 'd', 'e']);
  assert.deepEqual(splitList(' postgres '), ['postgres']);
  assert.deepEqual(splitList(''), []);
  assert.deepEqual(splitList(null), []);
  assert.deepEqual(splitList(defaultSettings().track_extra_parameters), ['IntervalStyle']);
});

test('C helpers: printf %g, strtol/strtoul/atoi/strtod edge cases', () => {
  assert.equal(formatG(0), '0');
  assert.equal(formatG(100000), '100000');
  assert.equal(formatG(1000000), '1e+06');
  assert.equal(formatG(999999.5), '1e+06');
  assert.equal(formatG(0.0001), '0.0001');
  assert.equal(formatG(0.00001), '1e-05');
  assert.equal(formatG(4.349999), '4.35');
  assert.equal(formatG(1.5e300), '1.5e+300');
  assert.equal(parseCInt(' 12'), 12);
  assert.equal(parseCInt('0x'), null);
  assert.equal(parseCUint('0x10'), 16);
  assert.equal(cAtoi('12abc'), 12);
  assert.equal(cAtoi('abc'), 0);
  assert.equal(cAtoi('-5'), -5);
  assert.equal(cAtoi(''), 0);
  assert.equal(parseCDouble('nan(123)'), NaN);
  assert.equal(parseCDouble('1e-310'), null);
  assert.equal(parseCDouble('.'), null);
});
