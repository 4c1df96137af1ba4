// Helpers for the fault suite (test/faults): a pgbench database of one's own (so that server
// connections can be counted and killed without touching other test files' pools), process
// resources of the pooler (fds, RSS), a seeded PRNG, latency percentiles, and restarting a
// private PostgreSQL with pg_ctl.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { runCommand } from './clients.js';
import { pgBin, type TestPostgres } from './postgres.js';
import { asUser, serverOsUser, sleep, trackPid, untrackPid } from './procs.js';
import { ensureDatabase } from './pool-helpers.js';
import { parseErrorFields, WireClosedError, WireTimeoutError, type PgError, type WireClient } from './wire.js';

/**
 * Make `db` a pgbench database (scale 1) usable by every role. Run pgbench with -n (no vacuum:
 * the tables belong to postgres).
 */
export async function ensureBenchDatabase(pg: TestPostgres, db: string): Promise<void> {
  await ensureDatabase(pg, db);
  const have = await pg.query(`SELECT to_regclass('public.pgbench_branches') IS NOT NULL AS ok`, db);
  if (have[0]?.ok === true) return;
  const r = await runCommand(pgBin('pgbench'), ['-i', '-q', '-s', '1', '-h', pg.host, '-p', String(pg.port), '-U', 'postgres', db], {
    timeoutMs: 120_000,
    env: { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PG'))), LC_ALL: 'C' },
  });
  if (r.code !== 0) throw new Error(`pgbench -i ${db} failed:\n${r.stdout}\n${r.stderr}`);
  await pg.query(`GRANT ALL ON ALL TABLES IN SCHEMA public TO PUBLIC`, db);
}

/** Open file descriptors of a process (from /proc). */
export function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/** Resident memory of a process in kB (VmRSS from /proc/<pid>/status). */
export function rssKb(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]);
}

/** A small seeded PRNG (mulberry32): the same seed gives the same fault sequence. */
export class Rng {
  private s: number;
  constructor(readonly seed: number) {
    this.s = seed >>> 0;
  }
  /** uniform in [0, 1) */
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** integer in [lo, hi] */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  pick<T>(a: readonly T[]): T {
    return a[Math.floor(this.next() * a.length)];
  }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = Math.floor(this.next() * 256);
    return b;
  }
}

/** The seed of this run: $PGBUN_FAULTS_SEED when set (to replay a failure), else random. */
export function faultSeed(): number {
  const env = process.env.PGBUN_FAULTS_SEED;
  return env ? Number(env) >>> 0 : Math.floor(Math.random() * 2 ** 32) >>> 0;
}

/** The p-th percentile (0..100) of some numbers. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
}

/** Run `fn` every `everyMs` (after the previous call finished) until `stop()` says so. */
export async function repeatUntil(stop: () => boolean, everyMs: () => number, fn: () => Promise<void> | void): Promise<number> {
  let n = 0;
  while (!stop()) {
    await fn();
    n++;
    await sleep(everyMs());
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// pg_ctl on a private PostgreSQL (never the shared one: other test files use it)

function pgCtl(pg: TestPostgres, args: string[]): void {
  const r = spawnSync(pgBin('pg_ctl'), ['-D', pg.dataDir, ...args], {
    encoding: 'utf8',
    timeout: 120_000,
    cwd: path.dirname(pg.dataDir),
    env: { PATH: process.env.PATH, LC_ALL: 'C' },
    ...asUser(serverOsUser()),
  });
  if (r.error || r.status !== 0) throw new Error(`pg_ctl ${args.join(' ')} failed: ${r.error?.message ?? r.status}\n${r.stdout}\n${r.stderr}`);
}

function postmasterPid(pg: TestPostgres): number | null {
  try {
    return Number(fs.readFileSync(path.join(pg.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]) || null;
  } catch {
    return null;
  }
}

/** pg_ctl stop -m MODE (waits until the server is gone). */
export function stopPostgres(pg: TestPostgres, mode: 'fast' | 'immediate'): void {
  const pid = postmasterPid(pg);
  pgCtl(pg, ['-m', mode, '-w', 'stop']);
  if (pid) untrackPid(pid);
}

/** pg_ctl start (waits until it accepts connections); the new postmaster is stopped at exit. */
export function startStoppedPostgres(pg: TestPostgres): void {
  pgCtl(pg, ['-l', pg.logFile, '-w', '-t', '60', 'start']);
  const pid = postmasterPid(pg);
  if (pid) trackPid(pid, 'postgres', 'SIGQUIT');
}

/** pg_ctl restart -m MODE, run in the background (resolves when PostgreSQL is back). */
export async function restartPostgres(pg: TestPostgres, mode: 'fast' | 'immediate'): Promise<void> {
  const old = postmasterPid(pg);
  const args = ['-D', pg.dataDir, '-l', pg.logFile, '-m', mode, '-w', '-t', '60', 'restart'];
  const osUser = serverOsUser(); // PostgreSQL refuses root: run pg_ctl as its owner
  const r = osUser
    ? await runCommand('runuser', ['-u', osUser.name, '--', pgBin('pg_ctl'), ...args], { timeoutMs: 120_000, cwd: path.dirname(pg.dataDir) })
    : await runCommand(pgBin('pg_ctl'), args, { timeoutMs: 120_000, cwd: path.dirname(pg.dataDir) });
  if (r.code !== 0) throw new Error(`pg_ctl restart -m ${mode} failed:\n${r.stdout}\n${r.stderr}`);
  if (old) untrackPid(old);
  const pid = postmasterPid(pg);
  if (pid) trackPid(pid, 'postgres', 'SIGQUIT');
}

/** Stop whatever postmaster runs on pg's data dir now (pg_ctl may have started a new one). */
export function stopPostgresNow(pg: TestPostgres): void {
  const pid = postmasterPid(pg);
  if (!pid) return;
  try {
    pgCtl(pg, ['-m', 'immediate', '-w', 'stop']);
  } catch {
    /* already gone */
  }
  untrackPid(pid);
}

// ---------------------------------------------------------------------------------------------
// What a client saw before its connection closed

/**
 * Read until the connection closes (or timeoutMs passes: then `closed` is false); returns every
 * ErrorResponse seen and the types of the other messages.
 */
export async function drainUntilClose(c: WireClient, timeoutMs = 10_000): Promise<{ errors: PgError[]; others: string[]; closed: boolean }> {
  const errors: PgError[] = [];
  const others: string[] = [];
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let m;
    try {
      m = await c.readMessageOrClose(Math.max(1, deadline - Date.now()));
    } catch (e) {
      if (e instanceof WireTimeoutError) return { errors, others, closed: false };
      if (e instanceof WireClosedError) return { errors, others, closed: true }; // reset with unread bytes
      throw e;
    }
    if (m === null) return { errors, others, closed: true };
    if (m.type === 'E') errors.push(parseErrorFields(m.body));
    else others.push(m.type);
  }
}

/** PgBouncer's own FATAL: severity, SQLSTATE, exact text, and only the fields S, C, M. */
export function isPoolerFatal(e: PgError | undefined, message: string | RegExp, sqlstate = '08P01'): boolean {
  if (!e) return false;
  const textOk = typeof message === 'string' ? e.M === message : message.test(e.M);
  return e.S === 'FATAL' && e.C === sqlstate && textOk && Object.keys(e.fields).every((k) => 'SCM'.includes(k));
}
