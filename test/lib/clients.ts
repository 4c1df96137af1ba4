// Real clients for integration tests: psql and pgbench as child processes (with timeouts, so a
// hung pooler fails a test instead of hanging CI), and the `pg` / `postgres` npm drivers.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import pg from 'pg';
import postgres from 'postgres';
import { pgBin } from './postgres.js';
import { trackChild } from './procs.js';

/** Where and as whom a client connects. host may be a Unix socket directory. */
export interface ConnOpts {
  host: string;
  port: number;
  user: string;
  password?: string;
  database?: string;
  /** libpq sslmode (psql/pgbench); default: libpq's own (prefer) */
  sslmode?: string;
  application_name?: string;
  /** seconds, default 10 */
  connectTimeout?: number;
}

export interface RunResult {
  cmd: string;
  args: string[];
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  durationMs: number;
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  /** written to stdin, then stdin is closed */
  input?: string;
  /** default 60 s; the process is killed (SIGKILL) then */
  timeoutMs?: number;
  cwd?: string;
}

/** Run a program to completion, capturing its output. Never rejects for a non-zero exit. */
export function runCommand(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    trackChild(p, `${cmd.split('/').pop()}`, 'SIGKILL', false); // stays ref'd: we wait for it
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    p.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    p.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      p.kill('SIGKILL');
    }, opts.timeoutMs ?? 60_000);
    p.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${cmd}: ${e.message}`));
    });
    p.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ cmd, args, code, signal, stdout, stderr, timedOut, durationMs: Date.now() - started });
    });
    p.stdin!.on('error', () => {}); // the program may exit without reading its input
    p.stdin!.end(opts.input ?? '');
  });
}

/** The environment for a libpq program: inherited PG* variables removed, ours set. */
export function libpqEnv(c: ConnOpts, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^PG/.test(k)) env[k] = v;
  env.PGHOST = c.host;
  env.PGPORT = String(c.port);
  env.PGUSER = c.user;
  env.PGDATABASE = c.database ?? c.user;
  if (c.password !== undefined) env.PGPASSWORD = c.password;
  if (c.sslmode) env.PGSSLMODE = c.sslmode;
  if (c.application_name) env.PGAPPNAME = c.application_name;
  env.PGCONNECT_TIMEOUT = String(c.connectTimeout ?? 10);
  env.PGTZ = 'UTC';
  return { ...env, ...extra };
}

export interface PsqlResult extends RunResult {
  /** stdout split into rows and fields (unaligned, tuples only, field separator 0x1f) */
  rows: string[][];
}

const FIELD_SEP = '\x1f';

/**
 * Run SQL with psql (-X, ON_ERROR_STOP, unaligned tuples-only output) and parse the rows.
 * `sql` may hold several statements. Use psqlRaw for other output modes.
 */
export async function psql(c: ConnOpts, sql: string, opts: RunOptions = {}): Promise<PsqlResult> {
  const r = await runCommand(pgBin('psql'), ['-X', '-q', '-A', '-t', '-F', FIELD_SEP, '-v', 'ON_ERROR_STOP=1', '-c', sql], {
    ...opts,
    env: libpqEnv(c, opts.env),
  });
  const rows = r.stdout
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => l.split(FIELD_SEP));
  return { ...r, rows };
}

/** psql with exactly these arguments (connection from the environment). */
export function psqlRaw(c: ConnOpts, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return runCommand(pgBin('psql'), ['-X', ...args], { ...opts, env: libpqEnv(c, opts.env) });
}

export interface PgbenchSummary {
  /** "tps = N (...)" */
  tps: number | null;
  /** "number of transactions actually processed: N" (the part before any "/N") */
  transactions: number | null;
  /** "number of failed transactions: N (x%)" (pgbench ≥ 15); 0 when absent but processed is present */
  failed: number | null;
  /** "latency average = N ms" */
  latencyAvgMs: number | null;
  clients: number | null;
  threads: number | null;
  queryMode: string | null;
  transactionType: string | null;
  /** "pgbench: error: Run was aborted" or a client aborted */
  aborted: boolean;
  /** lines starting with "pgbench: error:" */
  errors: string[];
}

function num(re: RegExp, text: string): number | null {
  const m = re.exec(text);
  return m ? Number(m[1]) : null;
}

/** Parse pgbench's (14/15/16) end-of-run summary from its combined output. */
export function parsePgbenchSummary(text: string): PgbenchSummary {
  const transactions = num(/^number of transactions actually processed:\s*(\d+)/m, text);
  let failed = num(/^number of failed transactions:\s*(\d+)/m, text);
  if (failed === null && transactions !== null) failed = 0; // pgbench < 15 does not print it
  const errors = text.split('\n').filter((l) => /^pgbench: (error|fatal):/.test(l));
  return {
    tps: num(/^tps = ([\d.]+)/m, text),
    transactions,
    failed,
    latencyAvgMs: num(/^latency average = ([\d.]+) ms/m, text),
    clients: num(/^number of clients:\s*(\d+)/m, text),
    threads: num(/^number of threads:\s*(\d+)/m, text),
    queryMode: /^query mode:\s*(\S+)/m.exec(text)?.[1] ?? null,
    transactionType: /^transaction type:\s*(.+)$/m.exec(text)?.[1] ?? null,
    aborted: /Run was aborted|client \d+ aborted/.test(text),
    errors,
  };
}

export interface PgbenchResult extends RunResult {
  summary: PgbenchSummary;
}

/**
 * Run pgbench against c (database default: benchdb) with the given arguments, e.g.
 * ['-n', '-S', '-c', '10', '-j', '2', '-T', '5', '-M', 'extended']. Default timeout: 5 min.
 */
export async function pgbench(c: ConnOpts, args: string[], opts: RunOptions = {}): Promise<PgbenchResult> {
  const conn: ConnOpts = { ...c, database: c.database ?? 'benchdb' };
  const r = await runCommand(pgBin('pgbench'), args, { timeoutMs: 300_000, ...opts, env: libpqEnv(conn, opts.env) });
  return { ...r, summary: parsePgbenchSummary(r.stdout + '\n' + r.stderr) };
}

/**
 * pgbench ended normally: in time, exit 0, no client aborted, no error line, no failed
 * transaction, at least `minTransactions` done. Returns the run's text for further assertions.
 */
export function assertPgbenchClean(r: PgbenchResult, minTransactions = 1): string {
  const ctx = `pgbench ${r.args.join(' ')}\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr.slice(-4000)}`;
  assert.equal(r.timedOut, false, ctx);
  assert.equal(r.code, 0, ctx);
  assert.equal(r.summary.aborted, false, ctx);
  assert.deepEqual(r.summary.errors, [], ctx);
  assert.equal(r.summary.failed, 0, ctx);
  assert.ok((r.summary.transactions ?? 0) >= minTransactions, ctx);
  return ctx;
}

/** The `pg` driver settings for a connection. */
function pgConfig(c: ConnOpts): pg.ClientConfig {
  return {
    host: c.host,
    port: c.port,
    user: c.user,
    password: c.password,
    database: c.database ?? c.user,
    application_name: c.application_name,
    connectionTimeoutMillis: (c.connectTimeout ?? 10) * 1000,
    ssl: false,
  };
}

/** A connected `pg.Client` (errors after connect are swallowed: check your queries instead). */
export async function pgClient(c: ConnOpts, extra: pg.ClientConfig = {}): Promise<pg.Client> {
  const client = new pg.Client({ ...pgConfig(c), ...extra });
  client.on('error', () => {}); // a dropped connection must not crash the test process
  await client.connect();
  return client;
}

/** A `pg.Pool` (end it when done). */
export function pgPool(c: ConnOpts, extra: pg.PoolConfig = {}): pg.Pool {
  const pool = new pg.Pool({ ...pgConfig(c), ...extra });
  pool.on('error', () => {});
  return pool;
}

/** A `postgres` (postgres.js) instance; call `await sql.end()` when done. */
export function postgresJs(c: ConnOpts, extra: postgres.Options<Record<string, postgres.PostgresType>> = {}): postgres.Sql {
  return postgres({
    host: c.host,
    port: c.port,
    user: c.user,
    password: c.password,
    database: c.database ?? c.user,
    ssl: false,
    max: 1,
    connect_timeout: c.connectTimeout ?? 10,
    onnotice: () => {},
    ...(c.application_name ? { connection: { application_name: c.application_name } } : {}),
    ...extra,
  });
}
