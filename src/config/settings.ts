// Every `[pgbouncer]` key: one table that the loader, admin SET and SHOW CONFIG all read, so a
// key's type, default and reload rule are stated exactly once. Semantics are PgBouncer 1.25's
// (https://www.pgbouncer.org/config.html); value parsing follows libusual's cf_set_*.
import { isIP } from 'node:net';
import { formatG, parseCDouble, parseCInt, parseCUint, secondsToUsec } from './cvalues.js';

export type AuthType = 'any' | 'trust' | 'plain' | 'md5' | 'cert' | 'hba' | 'scram-sha-256';
export type SslMode = 'disable' | 'allow' | 'prefer' | 'require' | 'verify-ca' | 'verify-full';

/**
 * int = CF_INT (strtol base 0, C int), uint = CF_UINT (strtoul, C unsigned),
 * time = CF_TIME_USEC (seconds, fractions allowed, whole microseconds kept),
 * enum = CF_LOOKUP, string = CF_STR, list = CF_STR holding a comma/blank separated list.
 */
export type SettingKind = 'int' | 'uint' | 'time' | 'string' | 'list' | 'enum';

export interface SettingDef {
  readonly name: string;
  readonly kind: SettingKind;
  /** what SHOW CONFIG prints in `default`; null = NULL (never reset on reload) */
  readonly default: string | null;
  /** SHOW CONFIG `changeable`: may change on RELOAD/SET; otherwise only at startup */
  readonly reloadable: boolean;
  readonly values?: readonly string[];
  /** service_name is job_name's Windows-only alias: same variable, unknown key elsewhere */
  readonly aliasOf?: string;
  readonly platforms?: readonly NodeJS.Platform[];
}

const POOL_MODES = ['session', 'transaction', 'statement'] as const;
// pgbun is a build without PAM and LDAP: like such a PgBouncer build it rejects `pam`/`ldap`
const AUTH_TYPES = ['any', 'trust', 'plain', 'md5', 'cert', 'hba', 'scram-sha-256'] as const;
const SSL_MODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'] as const;

const AUTH_QUERY_DEFAULT =
  'SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END ' +
  'FROM pg_authid WHERE rolname=$1 AND rolcanlogin';

const R = true; // reloadable
const N = false; // startup only

/** One key of the table; the literal types of name, kind, default and values give `Settings`. */
function d<const Name extends string, const Kind extends SettingKind, const Dflt extends string | null,
  const Extra extends Partial<SettingDef> = Record<never, never>>(
  name: Name, kind: Kind, dflt: Dflt, reloadable: boolean, extra: Extra = {} as Extra,
): { name: Name; kind: Kind; default: Dflt; reloadable: boolean } & Extra {
  return { name, kind, default: dflt, reloadable, ...extra };
}

/** Every key, alphabetically (SHOW CONFIG order), including ones not present on this platform. */
const SETTING_TABLE = [
  d('admin_users', 'list', '', R),
  d('application_name_add_host', 'int', '0', R),
  d('auth_dbname', 'string', null, R),
  d('auth_file', 'string', null, R),
  d('auth_hba_file', 'string', '', R),
  d('auth_ident_file', 'string', null, R),
  d('auth_ldap_options', 'string', null, R),
  d('auth_query', 'string', AUTH_QUERY_DEFAULT, R),
  d('auth_type', 'enum', 'md5', R, { values: AUTH_TYPES }),
  d('auth_user', 'string', null, R),
  d('autodb_idle_timeout', 'time', '3600', R),
  d('cancel_wait_timeout', 'time', '10', R),
  d('client_idle_timeout', 'time', '0', R),
  d('client_login_timeout', 'time', '60', R),
  d('client_tls13_ciphers', 'string', null, R),
  d('client_tls_ca_file', 'string', '', R),
  d('client_tls_cert_file', 'string', '', R),
  d('client_tls_ciphers', 'string', 'default', R),
  d('client_tls_dheparams', 'string', 'auto', R),
  d('client_tls_ecdhcurve', 'string', 'auto', R),
  d('client_tls_key_file', 'string', '', R),
  d('client_tls_protocols', 'string', 'secure', R),
  d('client_tls_sslmode', 'enum', 'disable', R, { values: SSL_MODES }),
  d('conffile', 'string', null, R),
  d('default_pool_size', 'int', '20', R),
  d('disable_pqexec', 'int', '0', N),
  d('dns_max_ttl', 'time', '15', R),
  d('dns_nxdomain_ttl', 'time', '15', R),
  d('dns_zone_check_period', 'time', '0', R),
  d('idle_transaction_timeout', 'time', '0', R),
  d('ignore_startup_parameters', 'list', '', R),
  d('job_name', 'string', 'pgbouncer', N),
  d('listen_addr', 'list', '', N),
  d('listen_backlog', 'int', '128', N),
  d('listen_port', 'int', '6432', N),
  d('log_connections', 'int', '1', R),
  d('log_disconnections', 'int', '1', R),
  // pgbun extension: `json` writes pino's JSON records instead of PgBouncer's text lines
  d('log_format', 'enum', 'text', R, { values: ['text', 'json'] }),
  d('log_pooler_errors', 'int', '1', R),
  d('log_stats', 'int', '1', R),
  d('logfile', 'string', '', R),
  d('login_notify_message', 'string', '', R),
  d('max_client_conn', 'int', '100', R),
  d('max_db_client_connections', 'int', '0', R),
  d('max_db_connections', 'int', '0', R),
  d('max_packet_size', 'uint', '2147483647', R),
  d('max_prepared_statements', 'int', '200', R),
  d('max_user_client_connections', 'int', '0', R),
  d('max_user_connections', 'int', '0', R),
  // pgbun extension: the Prometheus endpoint (GET /metrics); port 0 = off. An IP address, or a
  // Unix socket path starting with `/`
  d('metrics_listen_addr', 'string', '', R),
  d('metrics_listen_port', 'int', '0', R),
  d('min_pool_size', 'int', '0', R),
  d('peer_id', 'int', '0', R),
  d('pidfile', 'string', '', N),
  d('pkt_buf', 'int', '4096', N),
  d('pool_idle_timeout', 'time', '0', R),
  d('pool_mode', 'enum', 'session', R, { values: POOL_MODES }),
  d('query_timeout', 'time', '0', R),
  d('query_wait_notify', 'time', '5', R),
  d('query_wait_timeout', 'time', '120', R),
  d('reserve_pool_size', 'int', '0', R),
  d('reserve_pool_timeout', 'time', '5', R),
  d('resolv_conf', 'string', '', N),
  d('sbuf_loopcnt', 'int', '5', R),
  d('scram_iterations', 'int', '4096', R),
  d('server_check_delay', 'time', '30', R),
  d('server_check_query', 'string', '<empty>', R),
  d('server_connect_timeout', 'time', '15', R),
  d('server_fast_close', 'int', '0', R),
  d('server_idle_timeout', 'time', '600', R),
  d('server_lifetime', 'time', '3600', R),
  d('server_login_retry', 'time', '15', R),
  d('server_reset_query', 'string', 'DISCARD ALL', R),
  d('server_reset_query_always', 'int', '0', R),
  d('server_round_robin', 'int', '0', R),
  d('server_tls13_ciphers', 'string', null, R),
  d('server_tls_ca_file', 'string', '', R),
  d('server_tls_cert_file', 'string', '', R),
  d('server_tls_ciphers', 'string', 'default', R),
  d('server_tls_key_file', 'string', '', R),
  d('server_tls_protocols', 'string', 'secure', R),
  d('server_tls_sslmode', 'enum', 'prefer', R, { values: SSL_MODES }),
  d('service_name', 'string', 'pgbouncer', N, { aliasOf: 'job_name', platforms: ['win32'] }),
  d('so_reuseport', 'int', '0', N),
  d('stats_period', 'int', '60', R),
  d('stats_users', 'list', '', R),
  d('suspend_timeout', 'time', '10', R),
  d('syslog', 'int', '0', R),
  d('syslog_facility', 'string', 'daemon', R),
  d('syslog_ident', 'string', 'pgbouncer', R),
  // TCP_DEFER_ACCEPT exists on Linux only; PgBouncer's default follows the platform
  d('tcp_defer_accept', 'int', process.platform === 'linux' ? '1' : '0', R),
  d('tcp_keepalive', 'int', '1', R),
  d('tcp_keepcnt', 'int', '0', R),
  d('tcp_keepidle', 'int', '0', R),
  d('tcp_keepintvl', 'int', '0', R),
  d('tcp_socket_buffer', 'int', '0', R),
  d('tcp_user_timeout', 'int', '0', R),
  d('track_extra_parameters', 'list', 'IntervalStyle', N),
  d('transaction_timeout', 'time', '0', R),
  d('unix_socket_dir', 'string', '/tmp', N),
  d('unix_socket_group', 'string', '', N),
  d('unix_socket_mode', 'int', '0777', N),
  d('user', 'string', null, N),
  d('verbose', 'int', null, R),
  // pgbun's own: event loops (threads) that share the listeners and the limits; `auto` = the CPUs
  // available to the process
  d('workers', 'string', '1', N),
] as const;

export const ALL_SETTING_DEFS: readonly SettingDef[] = SETTING_TABLE;

/** The keys this platform knows, alphabetically: the rows of SHOW CONFIG. */
export const SETTING_DEFS: readonly SettingDef[] = ALL_SETTING_DEFS.filter(
  (def) => !def.platforms || def.platforms.includes(process.platform));

const DEF_BY_NAME = new Map(SETTING_DEFS.map((def) => [def.name, def]));

export function settingDef(key: string): SettingDef | undefined {
  return DEF_BY_NAME.get(key);
}

/** The value type of one key: numbers for int/uint/time, the listed words for an enum, else text (null when that is the default). */
type ValueOf<D> = D extends { kind: 'int' | 'uint' | 'time' } ? number
  : D extends { kind: 'enum'; values: readonly (infer V)[] } ? V
  : D extends { default: null } ? string | null
  : string;

type Def = (typeof SETTING_TABLE)[number];
/** service_name is job_name under another name, not a key of its own */
type DerivedSettings = { -readonly [D in Def as D extends { aliasOf: string } ? never : D['name']]: ValueOf<D> };

/**
 * The settings in force, one property per key of the table above, typed from it: numbers for
 * int, uint and time (seconds, fractions allowed), the listed words for an enum, text for the
 * rest (lists stay strings), null where the default is NULL.
 */
export type Settings = DerivedSettings;

type SettingsRecord = Record<string, string | number | null>;

/** Thrown by setSetting with PgBouncer's message (the caller adds the location). */
export class SettingError extends Error {
  /**
   * `reason`: what PgBouncer logs before the `invalid value` line when the key's own check
   * says why (e.g. the reserved auth_dbname), else null.
   */
  constructor(readonly kind: 'unknown' | 'invalid', message: string, readonly reason: string | null = null) {
    super(message);
    this.name = 'SettingError';
  }
}

export const RESERVED_AUTH_DBNAME = 'cannot use the reserved "pgbouncer" database as an auth_dbname';

/** The most event loops `workers` may ask for (the shared counters have a column per worker). */
export const MAX_WORKERS = 64;

/**
 * Key-specific checks PgBouncer makes beyond the value type: true = accepted, false = refused,
 * a string = refused with that reason logged first.
 */
const VALIDATORS: Record<string, (v: number | string) => boolean | string> = {
  // cancel keys carry the peer id in 14 bits
  peer_id: (v) => typeof v === 'number' && v >= 0 && v <= 16383,
  // an IP address (not a host name: the endpoint is meant for one known interface), `*`, or a
  // Unix socket path
  metrics_listen_addr: (v) => typeof v === 'string' && (v === '' || v === '*' || v.startsWith('/') || isIP(v) !== 0),
  metrics_listen_port: (v) => typeof v === 'number' && v >= 0 && v <= 65535,
  // refused when set (config line or console SET), so never stored: auth_dbname has no default,
  // a later [pgbouncer] header would not reset it, and every RELOAD after would fail
  auth_dbname: (v) => v !== 'pgbouncer' || RESERVED_AUTH_DBNAME,
  workers: (v) => typeof v === 'string' && (v === 'auto' || /^[0-9]+$/.test(v) && Number(v) >= 1 && Number(v) <= MAX_WORKERS) ||
    `workers must be auto or a number from 1 to ${MAX_WORKERS}`,
};

/** Parses `value` as `def` requires; undefined = invalid. */
function parseValue(def: SettingDef, value: string): string | number | undefined {
  switch (def.kind) {
    case 'int':
      return parseCInt(value) ?? undefined;
    case 'uint':
      return parseCUint(value) ?? undefined;
    case 'time': {
      const v = parseCDouble(value);
      if (v === null || v < 0) return undefined;
      return secondsToUsec(v) / 1000000;
    }
    case 'enum': {
      // libusual's cf_set_lookup uses strcasecmp (1.18 accepts `pool_mode = Session`);
      // the canonical lowercase name is what is stored and shown
      const lower = value.toLowerCase();
      return def.values?.find((name) => name === lower);
    }
    case 'string':
    case 'list':
      return value;
  }
}

function initialValue(def: SettingDef): string | number | null {
  if (def.default === null) {
    // NULL-default ints (verbose) still hold 0; NULL-default strings hold null
    return def.kind === 'string' || def.kind === 'list' ? null : 0;
  }
  const v = parseValue(def, def.default);
  if (v === undefined) throw new Error(`bad default for ${def.name}`);
  return v;
}

/** Settings as PgBouncer starts with them; conffile = the config file named on the command line. */
export function defaultSettings(conffile?: string): Settings {
  const s: SettingsRecord = {};
  for (const def of SETTING_DEFS) {
    if (def.aliasOf) continue;
    s[def.name] = initialValue(def);
  }
  if (conffile !== undefined) s.conffile = conffile;
  return s as unknown as Settings;
}

/**
 * Sets one key as a config line or admin SET does. Returns 'ignored' for a non-reloadable key
 * after startup: PgBouncer accepts and drops it silently, without even checking the value.
 * Throws SettingError: `unknown parameter: pgbouncer/KEY` or `invalid value "V" for parameter K`.
 */
export function setSetting(s: Settings, key: string, value: string,
  opts: { startup: boolean }): 'set' | 'ignored' {
  const def = DEF_BY_NAME.get(key);
  if (!def) throw new SettingError('unknown', `unknown parameter: pgbouncer/${key}`);
  if (!opts.startup && !def.reloadable) return 'ignored';
  const v = parseValue(def, value);
  const verdict = v === undefined ? false : VALIDATORS[def.name]?.(v) ?? true;
  if (v === undefined || verdict !== true) {
    throw new SettingError('invalid', `invalid value "${value}" for parameter ${key}`,
      typeof verdict === 'string' ? verdict : null);
  }
  (s as unknown as SettingsRecord)[def.aliasOf ?? def.name] = v;
  return 'set';
}

/**
 * What a `[pgbouncer]` section header does: every key with a non-NULL default goes back to it
 * (at startup all of them; on reload only reloadable ones, the rest cannot change). This is why
 * deleting a line reverts it on RELOAD while NULL-default keys (auth_user, verbose...) keep
 * their old value.
 */
export function resetDefaults(s: Settings, opts: { startup: boolean }): void {
  const rec = s as unknown as SettingsRecord;
  for (const def of SETTING_DEFS) {
    if (def.default === null || def.aliasOf) continue;
    if (!opts.startup && !def.reloadable) continue;
    rec[def.name] = initialValue(def);
  }
}

/** Reload, as PgBouncer: reset every reloadable key with a non-NULL default before reading. */
export function resetReloadableDefaults(s: Settings): void {
  resetDefaults(s, { startup: false });
}

/** SHOW CONFIG `value`: times as %g seconds, ints in decimal (unix_socket_mode 511), NULL = null. */
export function formatSettingValue(key: string, s: Settings): string | null {
  const def = DEF_BY_NAME.get(key);
  if (!def) throw new SettingError('unknown', `unknown parameter: pgbouncer/${key}`);
  const v = (s as unknown as SettingsRecord)[def.aliasOf ?? def.name];
  if (v === null || v === undefined) return null;
  if (def.kind === 'time') return formatG(v as number);
  return String(v);
}

/** SHOW CONFIG `default`: the default as written in PgBouncer's table (`0777`), or null. */
export function settingDefaultText(key: string): string | null {
  const def = DEF_BY_NAME.get(key);
  if (!def) throw new SettingError('unknown', `unknown parameter: pgbouncer/${key}`);
  return def.default;
}

/** SHOW CONFIG rows: key, value, default, changeable. */
export function showConfigRows(s: Settings): Array<[string, string | null, string | null, string]> {
  return SETTING_DEFS.map((def) => [def.name, formatSettingValue(def.name, s), def.default,
    def.reloadable ? 'yes' : 'no']);
}

/** `admin_users = a, b c` → ['a', 'b', 'c']: comma and/or whitespace separated, empties dropped. */
export function splitList(v: string | null): string[] {
  if (!v) return [];
  return v.split(/[\s,]+/).filter((item) => item !== '');
}

