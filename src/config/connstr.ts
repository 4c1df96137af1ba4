// PgBouncer's own `key=value ...` syntax of [databases], [users] and [peers] values
// (https://www.pgbouncer.org/config.html#section-databases), not libpq's. Ported from loader.c's
// cstr_get_pair, including its quirks (checked against 1.18): only a space separates (a tab is an
// ordinary character: `host=y<TAB>port=5` is one host value), the one character after a closing
// quote is swallowed, integers are atoi (`12x` = 12).
import type { DatabaseDef, LoadBalanceHosts, PeerDef, PoolMode, UserDef } from './types.js';
import { cAtoi } from './cvalues.js';

/** A rejected value; `message` is PgBouncer's text (e.g. `invalid port: 0`). */
export class ConnstrError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConnstrError';
  }
}

export interface ConnstrPair {
  key: string;
  value: string;
}

/**
 * Splits `key=value key2='quoted '' value'` into pairs. Spaces are allowed around `=`; a
 * quoted value may hold spaces and `=`, `''` is a quote; an unquoted value runs to the next
 * space. Empty key, missing `=`, empty value or an unterminated quote throw `syntaxError`.
 */
export function splitConnstr(s: string, syntaxError: string): ConnstrPair[] {
  const pairs: ConnstrPair[] = [];
  let p = 0;
  for (;;) {
    while (s[p] === ' ') p++;
    if (p >= s.length) return pairs;
    const keyStart = p;
    while (p < s.length && s[p] !== '=' && s[p] !== ' ') p++;
    const key = s.slice(keyStart, p);
    while (s[p] === ' ') p++;
    if (s[p] !== '=' || key === '') throw new ConnstrError(syntaxError);
    p++;
    while (s[p] === ' ') p++;
    let value = '';
    if (s[p] === "'") {
      p++;
      for (;;) {
        if (p >= s.length) throw new ConnstrError(syntaxError);
        if (s[p] === "'") {
          if (s[p + 1] !== "'") break;
          p++;
        }
        value += s[p++];
      }
      p++; // closing quote
    } else {
      const start = p;
      while (p < s.length && s[p] !== ' ') p++;
      value = s.slice(start, p);
    }
    // C terminates the value by overwriting the next char, whatever it is: `'ab'c` = ab
    if (p < s.length) p++;
    if (value === '') throw new ConnstrError(syntaxError);
    pairs.push({ key, value });
  }
}

const POOL_MODES: readonly PoolMode[] = ['session', 'transaction', 'statement'];
const LOAD_BALANCE: readonly LoadBalanceHosts[] = ['round-robin', 'disable'];

/** CF_LOOKUP: case-insensitive match, canonical name stored */
function lookup<T extends string>(names: readonly T[], value: string): T | undefined {
  const lower = value.toLowerCase();
  return names.find((n) => n === lower);
}

/** atoi, negative = "not set" (PgBouncer's -1 sentinel: writing -1 equals leaving it out) */
function optInt(value: string): number | null {
  const v = cAtoi(value);
  return v < 0 ? null : v;
}

function poolMode(value: string): PoolMode {
  const m = lookup(POOL_MODES, value);
  if (!m) throw new ConnstrError(`invalid pool mode: ${value}`);
  return m;
}

function port(value: string): number {
  const v = cAtoi(value);
  if (v === 0) throw new ConnstrError(`invalid port: ${value}`);
  return v;
}

/** A `[databases]` entry. Throws ConnstrError with PgBouncer's message. */
export function parseDatabase(name: string, connstr: string, file: string, line: number): DatabaseDef {
  const db: DatabaseDef = {
    name, connstr, dbname: null, host: null, port: 5432, user: null, password: null,
    auth_user: null, auth_query: null, auth_dbname: null, pool_size: null, min_pool_size: null,
    reserve_pool_size: null, connect_query: null, pool_mode: null, max_db_connections: null,
    max_db_client_connections: null, server_lifetime: null, load_balance_hosts: null,
    query_wait_timeout: null, client_encoding: null, datestyle: null, timezone: null,
    application_name: null, file, line,
  };
  for (const { key, value } of splitConnstr(connstr, 'syntax error in connection string')) {
    switch (key) {
      case 'dbname': db.dbname = value; break;
      case 'host': db.host = value; break;
      case 'port': db.port = port(value); break;
      case 'user': db.user = value; break;
      case 'password': db.password = value; break;
      case 'auth_user': db.auth_user = value; break;
      case 'auth_query': db.auth_query = value; break;
      // `pgbouncer` is accepted here and refused at login, as PgBouncer does (auth-query.ts)
      case 'auth_dbname': db.auth_dbname = value; break;
      case 'pool_size': db.pool_size = optInt(value); break;
      case 'min_pool_size': db.min_pool_size = optInt(value); break;
      case 'reserve_pool': // the pre-1.24 name, still accepted
      case 'reserve_pool_size': db.reserve_pool_size = optInt(value); break;
      case 'connect_query': db.connect_query = value; break;
      case 'pool_mode': db.pool_mode = poolMode(value); break;
      case 'max_db_connections': db.max_db_connections = optInt(value); break;
      case 'max_db_client_connections': db.max_db_client_connections = optInt(value); break;
      case 'server_lifetime': db.server_lifetime = optInt(value); break;
      case 'load_balance_hosts': {
        const v = lookup(LOAD_BALANCE, value);
        if (!v) throw new ConnstrError(`invalid load_balance_hosts: ${value}`);
        db.load_balance_hosts = v;
        break;
      }
      case 'query_wait_timeout': db.query_wait_timeout = optInt(value); break;
      case 'client_encoding': db.client_encoding = value; break;
      case 'datestyle': db.datestyle = value; break;
      case 'timezone': db.timezone = value; break;
      case 'application_name': db.application_name = value; break;
      default: throw new ConnstrError(`unrecognized connection parameter: ${key}`);
    }
  }
  return db;
}

/** A `[users]` entry (an empty value is allowed). Throws ConnstrError. */
export function parseUser(name: string, settings: string, file: string, line: number): UserDef {
  const u: UserDef = {
    name, pool_mode: null, pool_size: null, reserve_pool_size: null, max_user_connections: null,
    max_user_client_connections: null, query_timeout: null, idle_transaction_timeout: null,
    client_idle_timeout: null, transaction_timeout: null, query_wait_timeout: null, file, line,
  };
  for (const { key, value } of splitConnstr(settings, 'syntax error in user settings')) {
    switch (key) {
      case 'pool_mode': u.pool_mode = poolMode(value); break;
      case 'pool_size': u.pool_size = optInt(value); break;
      case 'reserve_pool_size': u.reserve_pool_size = optInt(value); break;
      case 'max_user_connections': u.max_user_connections = optInt(value); break;
      case 'max_user_client_connections': u.max_user_client_connections = optInt(value); break;
      case 'query_timeout': u.query_timeout = optInt(value); break;
      case 'idle_transaction_timeout': u.idle_transaction_timeout = optInt(value); break;
      case 'client_idle_timeout': u.client_idle_timeout = optInt(value); break;
      case 'transaction_timeout': u.transaction_timeout = optInt(value); break;
      case 'query_wait_timeout': u.query_wait_timeout = optInt(value); break;
      default: throw new ConnstrError(`unrecognized user parameter: ${key}`);
    }
  }
  return u;
}

export const PEER_ID_MESSAGE = 'ids of peers must be a number larger than 0 and smaller than 65536';

/** A `[peers]` entry: `id = host=... port=... pool_size=...`. Throws ConnstrError. */
export function parsePeer(id: string, connstr: string, file: string, line: number): PeerDef {
  const peerId = /^[0-9]+$/.test(id) ? Number(id) : 0;
  if (peerId < 1 || peerId > 65535) throw new ConnstrError(PEER_ID_MESSAGE);
  let host: string | null = null;
  let peerPort = 6432;
  let poolSize: number | null = null;
  for (const { key, value } of splitConnstr(connstr, 'syntax error in connection string')) {
    switch (key) {
      case 'host': host = value; break;
      case 'port': peerPort = port(value); break;
      case 'pool_size': poolSize = optInt(value); break;
      default: throw new ConnstrError(`unrecognized peering parameter: ${key}`);
    }
  }
  if (host === null) throw new ConnstrError(`host is required for peer ${peerId}`);
  return { peer_id: peerId, host, port: peerPort, pool_size: poolSize, file, line };
}
