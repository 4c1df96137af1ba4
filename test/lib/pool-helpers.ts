// Helpers for the pooling tests (transaction and statement mode, limits, timeouts, COPY, ...):
// private databases (so that server connections can be counted in pg_stat_activity while other
// test files share the same PostgreSQL), polling, exact PgBouncer FATAL checks, log matching.

import assert from 'node:assert/strict';
import { ROLES, type TestPostgres } from './postgres.js';
import type { TestPgbun } from './pgbun.js';
import { sleep } from './procs.js';
import { WireClient, wireLogin, type LoginResult, type PgError } from './wire.js';

/** Create database `name` (if missing) that every role may use. Safe when run concurrently. */
export async function ensureDatabase(pg: TestPostgres, name: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const rows = await pg.query('SELECT 1 FROM pg_database WHERE datname = $1', 'postgres', [name]);
    if (rows.length > 0) break;
    try {
      await pg.query(`CREATE DATABASE ${name}`);
      break;
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === '42P04') break; // created meanwhile
      if (attempt >= 5) throw e;
      await sleep(200 + attempt * 200); // e.g. "source database template1 is being accessed"
    }
  }
  await pg.query(`GRANT ALL ON DATABASE ${name} TO PUBLIC`);
  await pg.query('GRANT ALL ON SCHEMA public TO PUBLIC', name);
}

/** Backend pids of client connections to `db` (optionally only of `user`), oldest first. */
export async function serverPids(pg: TestPostgres, db: string, user?: string): Promise<number[]> {
  const rows = await pg.query<{ pid: number }>(
    `SELECT pid FROM pg_stat_activity
      WHERE datname = $1 AND backend_type = 'client backend' AND pid <> pg_backend_pid()
        AND ($2::text IS NULL OR usename = $2)
      ORDER BY backend_start, pid`,
    'postgres',
    [db, user ?? null],
  );
  return rows.map((r) => Number(r.pid));
}

export async function serverCount(pg: TestPostgres, db: string, user?: string): Promise<number> {
  return (await serverPids(pg, db, user)).length;
}

/** Poll fn() until ok(value), at most timeoutMs; returns the last value (fails the test on timeout). */
export async function waitUntil<T>(
  what: string,
  fn: () => Promise<T> | T,
  ok: (v: T) => boolean,
  timeoutMs = 5000,
  intervalMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (ok(v)) return v;
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs}ms waiting for ${what}; last value: ${JSON.stringify(v)}`);
    await sleep(intervalMs);
  }
}

/**
 * Sample fn() every intervalMs while `during` runs; returns every sample. Used to see the
 * number of server connections while clients work.
 */
export async function sampleWhile<T>(during: Promise<unknown>, fn: () => Promise<T>, intervalMs = 100): Promise<T[]> {
  let done = false;
  const out: T[] = [];
  const finished = during.finally(() => {
    done = true;
  });
  while (!done) {
    out.push(await fn());
    await Promise.race([sleep(intervalMs), finished.catch(() => {})]);
  }
  await finished;
  return out;
}

/** userlist.txt for auth_type=trust/any tests: the test roles with their plain passwords (pgbun logs in to PostgreSQL with them). */
export function roleUserlist(): Array<[string, string]> {
  return Object.entries(ROLES).map(([name, r]) => [name, r.password]);
}

/** Log in to pgbun with the raw protocol client (trust auth: no password needed). */
export async function login(
  b: TestPgbun,
  user: string,
  database: string,
  params: Record<string, string> = {},
): Promise<{ client: WireClient; login: LoginResult }> {
  return wireLogin({ host: b.host, port: b.port }, { user, database, params, password: (ROLES as Record<string, { password: string }>)[user]?.password });
}

/**
 * The next ErrorResponse must be PgBouncer's own FATAL: exactly `message`, SQLSTATE 08P01,
 * only the fields S, C, M, and the connection closed afterwards.
 */
export async function expectFatal(c: WireClient, message: string, timeoutMs = 5000, sqlstate = '08P01'): Promise<PgError> {
  return c.expectError({ severity: 'FATAL', code: sqlstate, message, onlySCM: true, closed: true, timeoutMs });
}

/** Log lines (from offset `from`) matching re. */
export function logLines(b: TestPgbun, re: RegExp, from = 0): string[] {
  return b
    .log()
    .slice(from)
    .split('\n')
    .filter((l) => re.test(l));
}

/** Escape a string for use inside a RegExp. */
export function reEscape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * The `closing because: <reason> (age=Ns)` line PgBouncer writes for a client (`C-`) or server
 * (`S-`) connection of db/user.
 */
export function closingRe(kind: 'C' | 'S', db: string, user: string, reason: string): RegExp {
  return new RegExp(`^\\S+ \\S+ \\S+ \\[\\d+\\] LOG ${kind}-0x[0-9a-f]+: ${reEscape(db)}/${reEscape(user)}@\\S+ closing because: ${reEscape(reason)} \\(age=\\d+s\\)$`);
}

/** Whether `p` settles within ms (without consuming its result). */
export async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let settled = false;
  p.then(
    () => (settled = true),
    () => (settled = true),
  );
  const deadline = Date.now() + ms;
  while (!settled && Date.now() < deadline) await sleep(10);
  return settled;
}
