// Shapes shared by the config loader and the rest of pgbun. The loader fills them from
// pgbouncer.ini; pool/, auth/ and admin/ read them. Field names are PgBouncer's key names so
// that a setting can be found by grepping for it.

export type PoolMode = 'session' | 'transaction' | 'statement';
export type LoadBalanceHosts = 'round-robin' | 'disable';

/** A problem found while reading a config, auth or HBA file. line 0 = not tied to a line. */
export interface ConfigProblem {
  file: string;
  line: number;
  message: string;
  /** warnings do not stop loading (e.g. an unparseable HBA line) */
  warning?: boolean;
  /**
   * The exact lines PgBouncer logs (at ERROR) for this problem, in order; absent = `message`.
   * They can differ from `message`, which always names file:line: e.g. `syntax error in
   * connection string` then `invalid value "..." for parameter foo in configuration (f:3)`.
   * Startup/reload logging prints these so log watchers see PgBouncer's lines.
   */
  log?: string[];
}

/** One `[databases]` entry, as written. null = not set (inherit the global value). */
export interface DatabaseDef {
  name: string;
  /** the connection string exactly as in the file (reload compares definitions) */
  connstr: string;
  dbname: string | null;
  /** host list as written (comma separated), null = Unix socket in unix_socket_dir */
  host: string | null;
  port: number;
  user: string | null;
  password: string | null;
  auth_user: string | null;
  auth_query: string | null;
  auth_dbname: string | null;
  pool_size: number | null;
  min_pool_size: number | null;
  reserve_pool_size: number | null;
  connect_query: string | null;
  pool_mode: PoolMode | null;
  max_db_connections: number | null;
  max_db_client_connections: number | null;
  server_lifetime: number | null;
  load_balance_hosts: LoadBalanceHosts | null;
  query_wait_timeout: number | null;
  client_encoding: string | null;
  datestyle: string | null;
  timezone: string | null;
  application_name: string | null;
  file: string;
  line: number;
}

/** One `[users]` entry. null = not set. */
export interface UserDef {
  name: string;
  pool_mode: PoolMode | null;
  pool_size: number | null;
  reserve_pool_size: number | null;
  max_user_connections: number | null;
  max_user_client_connections: number | null;
  query_timeout: number | null;
  idle_transaction_timeout: number | null;
  client_idle_timeout: number | null;
  transaction_timeout: number | null;
  query_wait_timeout: number | null;
  file: string;
  line: number;
}

/** One `[peers]` entry. */
export interface PeerDef {
  peer_id: number;
  host: string;
  port: number;
  pool_size: number | null;
  file: string;
  line: number;
}
