// The contestants: pgbun and Debian's PgBouncer, started by the test harness (startPgbun) from the
// same ini, so that only the program differs. Both drop root to the `postgres` OS user (the
// harness adds `user = postgres` when we are root), and both run with the open-files limit raised.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pgConnstr, pgbunCommand, startPgbun, type IniSpec, type TestPgbun } from '../test/lib/pgbun.js';
import type { TestPostgres } from '../test/lib/postgres.js';
import { isRoot, REPO_ROOT } from '../test/lib/procs.js';
import { withNofile } from './sysinfo.js';

export type PoolerName = 'pgbun' | 'pgbouncer';
export const POOLERS: PoolerName[] = ['pgbun', 'pgbouncer'];
export const LABEL: Record<PoolerName | 'direct', string> = { pgbun: 'pgbun', pgbouncer: 'PgBouncer', direct: 'PostgreSQL' };

/** Databases the throughput runs connect to: one per pool mode, both pointing at the pgbench db. */
export const DB_FOR_MODE = { tx: 'bench_tx', session: 'bench_session' } as const;

/** Pool sizes (the same for both poolers). Session mode needs a server per client, so -c 100 fits. */
export const POOL = { txPoolSize: 20, sessionPoolSize: 110, maxClientConn: 1000 };

/** Make sure PgBouncer is there: install Debian's package when it is missing. */
export function ensurePgbouncer(bin: string): void {
  if (fs.existsSync(bin)) return;
  if (bin !== '/usr/sbin/pgbouncer') throw new Error(`${bin} not found`);
  if (!isRoot()) throw new Error('/usr/sbin/pgbouncer not found, and installing it needs root: apt-get install pgbouncer');
  process.stderr.write('bench: PgBouncer is missing; installing Debian\'s pgbouncer package with apt-get\n');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = (): boolean =>
    spawnSync('apt-get', ['install', '-y', '--no-install-recommends', 'pgbouncer'], { stdio: 'inherit', env }).status === 0;
  if (!install()) {
    spawnSync('apt-get', ['update'], { stdio: 'inherit', env });
    if (!install()) throw new Error('apt-get install pgbouncer failed');
  }
  if (!fs.existsSync(bin)) throw new Error(`apt-get installed pgbouncer, but ${bin} is still missing`);
}

/** "PgBouncer 1.18.0" → [1, 18] */
export function pgbouncerVersion(bin: string): [number, number] {
  const out = spawnSync(bin, ['--version'], { encoding: 'utf8' }).stdout ?? '';
  const m = /PgBouncer (\d+)\.(\d+)/.exec(out);
  return m ? [Number(m[1]), Number(m[2])] : [0, 0];
}

let pgbunRuntime: string | null = null;

/** Run pgbun's compiled CLI with another JavaScript runtime (Bun) instead of node; null = node. */
export function setPgbunRuntime(runtime: string | null): void {
  pgbunRuntime = runtime === null ? null : path.resolve(runtime);
}

/** What pgbun runs on, for the report: `Node.js v20…` or `<runtime> <its --version>`. */
export function pgbunRuntimeName(): string {
  if (pgbunRuntime === null) return `Node.js ${process.version}`;
  const v = (spawnSync(pgbunRuntime, ['--version'], { encoding: 'utf8' }).stdout ?? '').trim();
  return `${path.basename(pgbunRuntime).replace(/\.exe$/, '')} ${v}`;
}

/** The program to start; node flags go in front of pgbun's script when it runs under node. */
export function commandFor(name: PoolerName, pgbouncerBin: string, nodeArgs: string[] = []): string[] {
  if (name === 'pgbouncer') return [pgbouncerBin];
  if (pgbunRuntime !== null) return [pgbunRuntime, path.join(REPO_ROOT, 'dist', 'src', 'cli.js')];
  const cmd = pgbunCommand();
  return cmd[0] === process.execPath ? [cmd[0], ...nodeArgs, ...cmd.slice(1)] : cmd;
}

/**
 * The throughput config: scram-sha-256 clients checked against a userlist holding the role's
 * SCRAM secret (copied from pg_authid, as operators do), which both poolers also use to log in
 * to PostgreSQL (SCRAM pass-through). Everything else is PgBouncer's defaults, spelled out where
 * a default could differ.
 */
export function throughputIni(pg: TestPostgres, db: string, opts: { maxPreparedStatements?: number }): IniSpec {
  return {
    databases: {
      [DB_FOR_MODE.tx]: pgConnstr(pg, { dbname: db, pool_mode: 'transaction', pool_size: POOL.txPoolSize }),
      [DB_FOR_MODE.session]: pgConnstr(pg, { dbname: db, pool_mode: 'session', pool_size: POOL.sessionPoolSize }),
    },
    pgbouncer: {
      auth_type: 'scram-sha-256',
      pool_mode: 'transaction',
      default_pool_size: POOL.txPoolSize,
      max_client_conn: POOL.maxClientConn,
      max_db_connections: 0,
      server_reset_query: 'DISCARD ALL',
      server_round_robin: 0,
      log_connections: 1,
      log_disconnections: 1,
      stats_period: 60,
      ...(opts.maxPreparedStatements ? { max_prepared_statements: opts.maxPreparedStatements } : {}),
    },
  };
}

/**
 * The idle-client memory config: a cheap md5 login against a plaintext userlist entry, and no
 * per-connection log lines (what is measured is the state kept per client, not log buffering).
 */
export function memoryIni(pg: TestPostgres, database: string, maxClients: number): IniSpec {
  return {
    databases: { [database]: pgConnstr(pg, { dbname: database }) },
    pgbouncer: {
      auth_type: 'md5',
      pool_mode: 'transaction',
      default_pool_size: POOL.txPoolSize,
      max_client_conn: maxClients + 100,
      log_connections: 0,
      log_disconnections: 0,
      stats_period: 60,
    },
  };
}

export interface Started {
  name: PoolerName;
  handle: TestPgbun;
  pid: number;
  nofile: number;
  /** /proc/PID/comm: proves the pid measured is the pooler, not the shell that exec'd it */
  comm: string;
}

/** Start one pooler with this config, with the fd limit raised to `nofile` (capped at the hard limit). */
export async function startPooler(
  name: PoolerName,
  pgbouncerBin: string,
  ini: IniSpec,
  userlist: Array<[string, string]>,
  nofile: number,
  nodeArgs: string[] = [],
): Promise<Started> {
  const { command, limit } = withNofile(nofile, commandFor(name, pgbouncerBin, nodeArgs));
  const handle = await startPgbun({ command, ini, userlist, timeoutMs: 30_000 });
  const pid = handle.proc.pid!;
  let comm = '';
  try {
    comm = fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    /* gone: the caller notices */
  }
  if (comm === 'sh') throw new Error(`pid ${pid} is still the shell, not ${name}: exec did not happen`);
  return { name, handle, pid, nofile: limit, comm };
}
