// One measured pgbench run: reset the tables TPC-B writes (directly, not through the pooler), run
// pgbench with a per-transaction log, and read the pooler's CPU time around it.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { pgbench, type ConnOpts } from '../test/lib/clients.js';
import type { TestPostgres } from '../test/lib/postgres.js';
import { makeTempDir, removeTempDir } from '../test/lib/procs.js';
import type { BenchCase } from './options.js';
import { cpuByThread, cpuTimes, diffThreads } from './sysinfo.js';

export interface RunResult {
  target: string;
  caseId: string;
  round: number;
  ok: boolean;
  tps: number | null;
  transactions: number | null;
  failed: number | null;
  /** from the per-transaction log (µs precision), milliseconds */
  latencyAvgMs: number | null;
  latencyP99Ms: number | null;
  /** pgbench's "average connection time" (interesting with -C) */
  connTimeMs: number | null;
  /** the pooler's utime + stime during the run (null for direct) */
  cpuSec: number | null;
  /** the kernel's part of cpuSec (stime): mostly the socket syscalls */
  cpuSysSec: number | null;
  cpuSecPer1000Tx: number | null;
  /** the pooler's CPU seconds during the run by thread name ("main" = the event loop thread) */
  cpuByThread: Record<string, number> | null;
  durationSec: number;
  /** pgbench errors, failed transactions, a pooler that died, ... */
  problems: string[];
  /** pooler log lines at WARNING or worse written during the run (first few) */
  poolerLogIssues: string[];
  output?: string;
}

export function pgbenchArgs(c: BenchCase, durationSec: number, logPrefix: string): string[] {
  const args = ['-n', '-T', String(durationSec), '-c', String(c.clients), '-j', String(Math.min(2, c.clients)), '-M', c.proto];
  if (c.script === 'select') args.push('-S');
  if (c.connect) args.push('-C');
  args.push('--log', `--log-prefix=${logPrefix}`);
  return args;
}

/**
 * What pgbench does before a run without -n, done here on a direct connection so the pooler does
 * not pay for it: vacuum the small hot tables and empty the history (autovacuum is off).
 */
export async function resetTables(pg: TestPostgres, db: string): Promise<void> {
  await pg.query('VACUUM pgbench_branches', db);
  await pg.query('VACUUM pgbench_tellers', db);
  await pg.query('TRUNCATE pgbench_history', db);
}

/** Mean and 99th percentile (nearest rank) of the latencies in pgbench --log files, in ms. */
export function latencyFromLogs(dir: string): { avgMs: number | null; p99Ms: number | null; count: number } {
  const values: number[] = [];
  for (const f of fs.readdirSync(dir)) {
    if (!f.startsWith('tx.')) continue;
    const text = fs.readFileSync(path.join(dir, f), 'utf8');
    let start = 0;
    // line: client_id transaction_no time script_no time_epoch time_us [schedule_lag];
    // time is "failed"/"skipped" for transactions that did not complete
    while (start < text.length) {
      let end = text.indexOf('\n', start);
      if (end < 0) end = text.length;
      const s1 = text.indexOf(' ', start);
      const s2 = s1 < 0 ? -1 : text.indexOf(' ', s1 + 1);
      const s3 = s2 < 0 ? -1 : text.indexOf(' ', s2 + 1);
      if (s3 > 0 && s3 < end) {
        const us = Number(text.slice(s2 + 1, s3));
        if (Number.isFinite(us)) values.push(us);
      }
      start = end + 1;
    }
  }
  if (values.length === 0) return { avgMs: null, p99Ms: null, count: 0 };
  const arr = Float64Array.from(values).sort();
  let sum = 0;
  for (let i = 0; i < arr.length; i++) sum += arr[i];
  const p99 = arr[Math.max(0, Math.ceil(arr.length * 0.99) - 1)];
  return { avgMs: sum / arr.length / 1000, p99Ms: p99 / 1000, count: arr.length };
}

export interface RunTarget {
  name: string;
  conn: ConnOpts;
  /** the pooler's pid (CPU is measured), absent for direct */
  pid?: number;
  /** pooler log so far, to report new WARNING/ERROR lines */
  log?: () => string;
}

const LOG_ISSUE = /\b(WARNING|ERROR|FATAL|PANIC)\b|Uncaught|Error:|at .*\.js:\d+/;

export async function runPgbench(
  pg: TestPostgres,
  db: string,
  target: RunTarget,
  c: BenchCase,
  round: number,
  durationSec: number,
  keepOutput: boolean,
): Promise<RunResult> {
  if (c.script === 'tpcb') await resetTables(pg, db);
  const dir = makeTempDir('pgbun-bench-', null);
  const logStart = target.log ? target.log().length : 0;
  const threads0 = target.pid ? cpuByThread(target.pid) : null;
  const cpu0 = target.pid ? cpuTimes(target.pid) : null;
  const started = Date.now();
  const r = await pgbench(target.conn, pgbenchArgs(c, durationSec, path.join(dir, 'tx')), { timeoutMs: (durationSec + 120) * 1000 });
  const cpu1 = target.pid ? cpuTimes(target.pid) : null;
  const threads1 = target.pid ? cpuByThread(target.pid) : null;
  const lat = latencyFromLogs(dir);
  removeTempDir(dir);
  const s = r.summary;
  const out = r.stdout + '\n' + r.stderr;
  const problems: string[] = [];
  if (r.timedOut) problems.push('pgbench timed out');
  if (r.code !== 0) problems.push(`pgbench exit ${r.code}${r.signal ? ' ' + r.signal : ''}`);
  if (s.aborted) problems.push('pgbench run aborted');
  if (s.failed) problems.push(`${s.failed} failed transactions`);
  for (const e of s.errors.slice(0, 3)) problems.push(e);
  if (target.pid && cpu1 === null) problems.push(`${target.name} (pid ${target.pid}) is gone`);
  const poolerLogIssues = target.log
    ? target.log().slice(logStart).split('\n').filter((l) => LOG_ISSUE.test(l)).slice(0, 5)
    : [];
  const cpuSec = cpu0 !== null && cpu1 !== null ? cpu1.user + cpu1.sys - cpu0.user - cpu0.sys : null;
  const cpuSysSec = cpu0 !== null && cpu1 !== null ? cpu1.sys - cpu0.sys : null;
  const tx = s.transactions;
  const connTime = /^average connection time = ([\d.]+) ms/m.exec(out);
  return {
    target: target.name,
    caseId: c.id,
    round,
    ok: problems.length === 0 && s.tps !== null,
    tps: s.tps,
    transactions: tx,
    failed: s.failed,
    latencyAvgMs: lat.avgMs ?? s.latencyAvgMs,
    latencyP99Ms: lat.p99Ms,
    connTimeMs: connTime ? Number(connTime[1]) : null,
    cpuSec,
    cpuSysSec,
    cpuSecPer1000Tx: cpuSec !== null && tx ? (cpuSec / tx) * 1000 : null,
    cpuByThread: threads0 && threads1 ? diffThreads(threads0, threads1) : null,
    durationSec: (Date.now() - started) / 1000,
    problems,
    poolerLogIssues,
    ...(keepOutput && problems.length > 0 ? { output: out.slice(-4000) } : {}),
  };
}
