// A private PostgreSQL 15 for tests: initdb in a temp dir, run as the `postgres` OS user when we
// are root (PostgreSQL refuses root), on a free port outside the ephemeral range, configured for
// speed (no fsync) and for many connections (pgbench -c 100 through several poolers).
//
// Roles (see ROLES): postgres (superuser, trust), trust_user (trust), md5_user (password stored
// as md5, md5 auth), scram_user (SCRAM secret, scram-sha-256 auth); any other role gets
// scram-sha-256. Databases: testdb (everyone may connect and create objects) and, on demand,
// pgbench databases (ensurePgbench).

import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import pg from 'pg';
import {
  asUser,
  chownTo,
  freePort,
  isAlive,
  keepTempFiles,
  makeTempDir,
  readTail,
  removeTempDir,
  serverOsUser,
  sleep,
  trackChild,
  untrackPid,
  withTimeout,
} from './procs.js';

/** Where PostgreSQL 15's binaries live (override with PGBUN_PG_BINDIR). */
export const PG_BINDIR: string = process.env.PGBUN_PG_BINDIR || '/usr/lib/postgresql/15/bin';

/** Path of a PostgreSQL program: PG_BINDIR/<name> when present, else <name> from PATH. */
export function pgBin(name: string): string {
  const p = path.join(PG_BINDIR, name);
  return fs.existsSync(p) ? p : name;
}

export type AuthMethod = 'trust' | 'md5' | 'scram-sha-256';

/** The roles every test PostgreSQL has, with their password and pg_hba method. */
export const ROLES = {
  postgres: { password: 'postgres_pass', method: 'trust' as AuthMethod, stored: 'scram-sha-256' },
  trust_user: { password: 'trust_pass', method: 'trust' as AuthMethod, stored: 'scram-sha-256' },
  md5_user: { password: 'md5_pass', method: 'md5' as AuthMethod, stored: 'md5' },
  scram_user: { password: 'scram_pass', method: 'scram-sha-256' as AuthMethod, stored: 'scram-sha-256' },
} as const;
export type RoleName = keyof typeof ROLES;

export const TEST_DB = 'testdb';

/** What test/run.ts hands to test files in $PGBUN_TEST_PG. */
export interface PostgresInfo {
  host: string;
  port: number;
  socketDir: string;
  dataDir: string;
  logFile: string;
  pid: number;
}

export interface TestPostgres extends PostgresInfo {
  host: '127.0.0.1';
  /** Run SQL as the superuser `postgres` (a fresh pg connection each call); returns the rows. */
  query<R = Record<string, unknown>>(sql: string, db?: string, params?: unknown[]): Promise<R[]>;
  /** rolpassword from pg_authid (the exact md5/SCRAM secret), '' when none. */
  secretOf(role: string): Promise<string>;
  /** Create (or re-create) a login role with a password stored as md5 or SCRAM. */
  createRole(name: string, password: string | null, opts?: { stored?: 'md5' | 'scram-sha-256'; superuser?: boolean }): Promise<void>;
  /**
   * Make sure a pgbench database of `scale` exists (scale 1 → `benchdb`, else `benchdb_s<scale>`),
   * readable and writable by every role, owned by the role `pgbench_owner` which the test roles
   * are members of (so pgbench's VACUUM step works); safe to call concurrently from several test
   * processes.
   */
  ensurePgbench(scale?: number): Promise<string>;
  /** The PostgreSQL server log so far. */
  log(): string;
  /** The JSON-able description (what sharedPostgres() rebuilds from). */
  info(): PostgresInfo;
  /** Fast shutdown, then remove the data dir. No-op for an instance shared from test/run.ts. */
  stop(): Promise<void>;
}

export interface StartPostgresOptions {
  /** default: a free port in 20000–32000 */
  port?: number;
  /** extra postgresql.conf settings (applied last) */
  conf?: Record<string, string | number>;
  /** extra pg_hba.conf lines, placed before the defaults (first match wins) */
  hba?: string;
  /** startup timeout, default 60 s */
  timeoutMs?: number;
}

const HBA_DEFAULT = `# written by pgbun's test harness
local all postgres trust
host  all postgres 127.0.0.1/32 trust
host  all postgres ::1/128 trust
local all trust_user trust
host  all trust_user 127.0.0.1/32 trust
host  all trust_user ::1/128 trust
local all md5_user md5
host  all md5_user 127.0.0.1/32 md5
host  all md5_user ::1/128 md5
local all all scram-sha-256
host  all all 127.0.0.1/32 scram-sha-256
host  all all ::1/128 scram-sha-256
`;

function confValue(v: string | number): string {
  return typeof v === 'number' ? String(v) : `'${v.replace(/'/g, "''")}'`;
}

function runSync(cmd: string, args: string[], what: string, opts: Parameters<typeof spawnSync>[2] = {}): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 120_000, ...opts });
  if (r.error || r.status !== 0) {
    throw new Error(
      `${what} failed (${r.error ? r.error.message : `exit ${r.status}${r.signal ? ' ' + r.signal : ''}`}): ` +
        `${cmd} ${args.join(' ')}\n--- stdout ---\n${r.stdout ?? ''}\n--- stderr ---\n${r.stderr ?? ''}`,
    );
  }
}

function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^PG/.test(k)) env[k] = v;
  env.LC_ALL = 'C';
  env.LANG = 'C';
  return env;
}

async function connectPg(info: PostgresInfo, db = 'postgres', user = 'postgres', password?: string): Promise<pg.Client> {
  const c = new pg.Client({ host: info.host, port: info.port, user, password, database: db, connectionTimeoutMillis: 10_000 });
  c.on('error', () => {}); // a server-side disconnect must not crash the test process
  await c.connect();
  return c;
}

function makeHandle(info: PostgresInfo, owned: { stop(): Promise<void> } | null): TestPostgres {
  const query = async <R,>(sql: string, db = 'postgres', params?: unknown[]): Promise<R[]> => {
    const c = await connectPg(info, db);
    try {
      const r = await c.query(sql, params as unknown[] | undefined);
      // a multi-statement string yields an array of results: return the last one's rows
      const last = Array.isArray(r) ? r[r.length - 1] : r;
      return (last?.rows ?? []) as R[];
    } finally {
      await c.end().catch(() => {});
    }
  };
  const h: TestPostgres = {
    ...info,
    host: '127.0.0.1',
    query,
    async secretOf(role) {
      const rows = await query<{ rolpassword: string | null }>('SELECT rolpassword FROM pg_authid WHERE rolname = $1', 'postgres', [role]);
      if (rows.length === 0) throw new Error(`secretOf: no role ${role}`);
      return rows[0].rolpassword ?? '';
    },
    async createRole(name, password, opts = {}) {
      const c = await connectPg(info);
      try {
        await c.query(`SET password_encryption = '${opts.stored ?? 'scram-sha-256'}'`);
        const ident = c.escapeIdentifier(name);
        await c.query(`DROP ROLE IF EXISTS ${ident}`);
        const pw = password === null ? 'NULL' : c.escapeLiteral(password);
        await c.query(`CREATE ROLE ${ident} LOGIN ${opts.superuser ? 'SUPERUSER' : ''} PASSWORD ${pw}`);
      } finally {
        await c.end().catch(() => {});
      }
    },
    ensurePgbench: (scale = 1) => ensurePgbench(info, scale),
    log: () => readTail(info.logFile, 256 * 1024),
    info: () => ({ ...info }),
    stop: () => (owned ? owned.stop() : Promise.resolve()),
  };
  return h;
}

async function ensurePgbench(info: PostgresInfo, scale: number): Promise<string> {
  if (!Number.isInteger(scale) || scale < 1) throw new Error(`ensurePgbench: bad scale ${scale}`);
  const db = scale === 1 ? 'benchdb' : `benchdb_s${scale}`;
  const marker = `pgbench scale=${scale} ready`;
  const c = await connectPg(info);
  try {
    // One initialiser at a time across all test processes sharing this server.
    await c.query('SELECT pg_advisory_lock(4242, $1)', [scale]);
    const r = await c.query(
      `SELECT shobj_description(oid, 'pg_database') AS d FROM pg_database WHERE datname = $1`,
      [db],
    );
    if (r.rows.length === 1 && r.rows[0].d === marker) return db;
    await c.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
    await c.query(`CREATE DATABASE ${db}`);
    await new Promise<void>((resolve, reject) => {
      const p = spawn(pgBin('pgbench'), ['-i', '-q', '-s', String(scale), '-h', info.host, '-p', String(info.port), '-U', 'postgres', db], {
        env: cleanEnv(),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      p.stdout!.on('data', (d) => (out += d));
      p.stderr!.on('data', (d) => (out += d));
      p.on('error', reject);
      p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`pgbench -i ${db} failed (exit ${code}):\n${out}`))));
    });
    // Tables owned by a role the test roles belong to, so that pgbench's own VACUUM step runs
    // without "only table or database owner can vacuum it" warnings; everyone else may use them.
    const roles = Object.keys(ROLES).filter((r) => r !== 'postgres');
    await c.query(`DO $$ BEGIN CREATE ROLE pgbench_owner NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
    await c.query(`GRANT pgbench_owner TO ${roles.join(', ')}`);
    const b = await connectPg(info, db);
    try {
      for (const t of ['pgbench_accounts', 'pgbench_branches', 'pgbench_tellers', 'pgbench_history']) {
        await b.query(`ALTER TABLE ${t} OWNER TO pgbench_owner`);
      }
      await b.query(`GRANT ALL ON SCHEMA public TO PUBLIC;
        GRANT ALL ON ALL TABLES IN SCHEMA public TO PUBLIC;
        GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO PUBLIC`);
    } finally {
      await b.end().catch(() => {});
    }
    await c.query(`GRANT ALL ON DATABASE ${db} TO PUBLIC`);
    await c.query(`COMMENT ON DATABASE ${db} IS '${marker}'`);
    return db;
  } finally {
    await c.query('SELECT pg_advisory_unlock_all()').catch(() => {});
    await c.end().catch(() => {});
  }
}

/** Start a private PostgreSQL (see the file comment). Errors include the server log. */
export async function startPostgres(opts: StartPostgresOptions = {}): Promise<TestPostgres> {
  const osUser = serverOsUser();
  for (const b of ['initdb', 'postgres']) {
    if (!fs.existsSync(path.join(PG_BINDIR, b))) {
      throw new Error(`${path.join(PG_BINDIR, b)} not found: install postgresql-15 (apt-get install postgresql-15) or set PGBUN_PG_BINDIR`);
    }
  }
  const dir = makeTempDir('pgbun-pg-', osUser);
  const dataDir = path.join(dir, 'data');
  const logFile = path.join(dir, 'postgresql.log');
  const env = cleanEnv();
  runSync(
    path.join(PG_BINDIR, 'initdb'),
    ['-D', dataDir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--locale=C', '--no-sync', '--no-instructions'],
    'initdb',
    { env, cwd: dir, ...asUser(osUser) },
  );
  fs.writeFileSync(path.join(dataDir, 'pg_hba.conf'), (opts.hba ? opts.hba.trimEnd() + '\n' : '') + HBA_DEFAULT);

  let lastError: Error | null = null;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = opts.port ?? (await freePort());
    const conf: Record<string, string | number> = {
      listen_addresses: '127.0.0.1',
      port,
      unix_socket_directories: dir,
      max_connections: 400,
      superuser_reserved_connections: 3,
      shared_buffers: '32MB',
      fsync: 'off',
      synchronous_commit: 'off',
      full_page_writes: 'off',
      autovacuum: 'off',
      password_encryption: 'scram-sha-256',
      max_wal_size: '1GB',
      log_line_prefix: '%m [%p] %q%u@%d ',
      log_min_messages: 'warning',
      logging_collector: 'off',
      huge_pages: 'off',
      ...(opts.conf ?? {}),
    };
    fs.writeFileSync(
      path.join(dataDir, 'postgresql.auto.conf'),
      '# written by pgbun\'s test harness\n' + Object.entries(conf).map(([k, v]) => `${k} = ${confValue(v)}`).join('\n') + '\n',
    );
    chownTo(path.join(dataDir, 'postgresql.auto.conf'), osUser);
    fs.writeFileSync(logFile, '');
    chownTo(logFile, osUser);

    const logFd = fs.openSync(logFile, 'a');
    const proc = spawn(path.join(PG_BINDIR, 'postgres'), ['-D', dataDir], {
      env,
      cwd: dir,
      detached: true, // a terminal's Ctrl-C reaches us, not the server: we stop it in order
      stdio: ['ignore', logFd, logFd],
      ...asUser(osUser),
    });
    fs.closeSync(logFd);
    trackChild(proc, 'postgres', 'SIGQUIT'); // SIGQUIT = immediate shutdown, also of the backends
    let exited: { code: number | null; signal: NodeJS.Signals | null } | null = null;
    let spawnError: Error | null = null;
    const exitPromise = new Promise<void>((resolve) =>
      proc.once('exit', (code, signal) => {
        exited = { code, signal };
        resolve();
      }),
    );
    proc.once('error', (e) => (spawnError = e));
    const info: PostgresInfo = { host: '127.0.0.1', port, socketDir: dir, dataDir, logFile, pid: proc.pid ?? -1 };

    const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
    let ready = false;
    let lastConnErr = '';
    while (!ready && !exited && !spawnError && Date.now() < deadline) {
      try {
        const c = await connectPg(info);
        await c.query('SELECT 1');
        await c.end();
        ready = true;
      } catch (e) {
        lastConnErr = (e as Error).message;
        await sleep(100);
      }
    }
    if (ready) {
      const handle = makeHandle(info, {
        async stop() {
          if (proc.exitCode === null && proc.signalCode === null) {
            proc.ref(); // keep the loop alive until the server is gone
            const steps: Array<[NodeJS.Signals, number]> = [['SIGINT', 15_000], ['SIGQUIT', 5_000], ['SIGKILL', 5_000]];
            for (const [sig, wait] of steps) {
              try {
                process.kill(proc.pid!, sig);
              } catch {
                break;
              }
              if (await withTimeout(exitPromise, wait)) break;
            }
          }
          untrackPid(proc.pid!);
          removeTempDir(dir);
        },
      });
      await setupRoles(handle);
      return handle;
    }
    // failed: collect why, then maybe retry on another port
    if (!exited && isAlive(proc.pid ?? -1)) {
      try {
        process.kill(proc.pid!, 'SIGQUIT');
      } catch {
        /* gone */
      }
      proc.ref();
      await withTimeout(exitPromise, 5000);
    }
    const log = readTail(logFile);
    const why = spawnError
      ? `could not spawn postgres: ${(spawnError as Error).message}`
      : exited
        ? `postgres exited (code ${(exited as { code: number | null }).code}, signal ${(exited as { signal: string | null }).signal}) during startup`
        : `postgres did not accept connections within ${(opts.timeoutMs ?? 60_000) / 1000}s (last error: ${lastConnErr})`;
    lastError = new Error(`${why}; port ${port}, data dir ${dataDir}\n--- PostgreSQL log (${logFile}) ---\n${log}`);
    if (opts.port !== undefined || !/could not bind|Address already in use|could not create any TCP\/IP sockets/.test(log)) break;
  }
  if (!keepTempFiles()) removeTempDir(dir);
  throw lastError!;
}

async function setupRoles(h: TestPostgres): Promise<void> {
  const c = await connectPg(h);
  try {
    await c.query(`SET password_encryption = 'scram-sha-256'`);
    await c.query(`ALTER ROLE postgres PASSWORD '${ROLES.postgres.password}'`);
    for (const [name, r] of Object.entries(ROLES)) {
      if (name === 'postgres') continue;
      await c.query(`SET password_encryption = '${r.stored}'`);
      await c.query(`CREATE ROLE ${name} LOGIN PASSWORD '${r.password}'`);
    }
    await c.query(`CREATE DATABASE ${TEST_DB}`);
    await c.query(`GRANT ALL ON DATABASE ${TEST_DB} TO PUBLIC`);
  } finally {
    await c.end().catch(() => {});
  }
  await h.query('GRANT ALL ON SCHEMA public TO PUBLIC', TEST_DB);
}

let shared: Promise<TestPostgres> | null = null;

/**
 * The PostgreSQL of this test run: the one test/run.ts started (described by $PGBUN_TEST_PG),
 * or, when a test file runs on its own (`node --test dist/test/...`), a private one started now
 * and stopped when the process exits. Its stop() is a no-op: the owner stops it.
 */
export function sharedPostgres(): Promise<TestPostgres> {
  if (shared) return shared;
  const env = process.env.PGBUN_TEST_PG;
  if (env) {
    const info = JSON.parse(env) as PostgresInfo;
    shared = Promise.resolve(makeHandle(info, null));
  } else {
    // stop() stays a no-op: the exit hook of procs.ts stops the server and removes its dir
    shared = startPostgres().then((h) => makeHandle(h.info(), null));
  }
  return shared;
}
