// The stats_period timer (PgBouncer's refresh_stats): every period each pool's counters are
// snapshotted; the averages of SHOW STATS / STATS_AVERAGES / TOTALS and the `stats: ...` log
// line are computed from the last two snapshots. Between snapshots nothing here runs, so the
// hot path only ever increments the plain counters of PoolStats.
//
// With `workers = N` every loop keeps its own snapshots (for its own SHOW STATS), but the log
// line is one per period for the whole pooler, as PgBouncer's: only the main thread writes it,
// after asking every worker thread what its pools counted since the main thread last asked.
import { cf } from '../config/current.js';
import { log } from '../log/logger.js';
import { nowUs } from '../pool/clock.js';
import { registry, type PgPool } from '../pool/objects.js';
import { onRequest, peers, request } from '../workers/bus.js';
import { multiWorker, workerSelf } from '../workers/identity.js';
import { PoolStats, calcAverage, statsLogLine } from './counters.js';

interface Snapshots {
  /** counters at the end of the period before the last one */
  older: PoolStats;
  /** counters at the end of the last period */
  newer: PoolStats;
}

const snaps = new WeakMap<PgPool, Snapshots>();
let oldStampUs = 0;
let newStampUs = 0;
let timer: NodeJS.Timeout | null = null;
const ZERO = new PoolStats();

/** Start the period timer (at startup). The period is re-read each time, as PgBouncer does. */
export function startStats(): void {
  if (timer !== null) return;
  newStampUs = nowUs();
  if (multiWorker() && workerSelf.index !== 0) onRequest('stats.period', sinceLastAsked);
  arm();
}

function arm(): void {
  const seconds = cf.stats_period > 0 ? cf.stats_period : 60;
  timer = setTimeout(refreshStats, seconds * 1000);
  timer.unref();
}

/** One period is over: shift the snapshots, log the global averages. */
function refreshStats(): void {
  oldStampUs = newStampUs;
  newStampUs = nowUs();
  const cur = new PoolStats();
  const old = new PoolStats();
  for (const pool of registry.pools) {
    let s = snaps.get(pool);
    if (s === undefined) {
      s = { older: new PoolStats(), newer: new PoolStats() };
      snaps.set(pool, s);
    }
    s.older.copyFrom(s.newer);
    s.newer.copyFrom(pool.stats);
    s.newer.addTo(cur);
    s.older.addTo(old);
  }
  if (workerSelf.index === 0) {
    if (multiWorker()) void logAllLoops(cur, old, newStampUs - oldStampUs);
    else if (cf.log_stats) log.log(statsLogLine(calcAverage(cur, old, newStampUs - oldStampUs)));
  }
  if (timer !== null) arm();
}

/** A worker thread's counters (summed over its pools) now and when the main thread last asked. */
interface LoopSums {
  cur: PoolStats;
  old: PoolStats;
}

/** Worker threads: each pool's counters when the main thread last asked for them. */
const lastAsked = new WeakMap<PgPool, PoolStats>();

/**
 * Worker threads, asked by the main thread once per period: what the pools counted since the
 * last time it asked. The window is the main thread's, not this loop's own stats_period timer
 * (which runs on its own phase); a pool dropped in between takes its counts along, as it does
 * from the single loop's snapshots.
 */
function sinceLastAsked(): LoopSums {
  const sums: LoopSums = { cur: new PoolStats(), old: new PoolStats() };
  for (const pool of registry.pools) {
    let last = lastAsked.get(pool);
    if (last === undefined) {
      last = new PoolStats();
      lastAsked.set(pool, last);
    }
    pool.stats.addTo(sums.cur);
    last.addTo(sums.old);
    last.copyFrom(pool.stats);
  }
  return sums;
}

/** Answers that came after the line of their period was written: they count in the next one. */
const late: LoopSums = { cur: new PoolStats(), old: new PoolStats() };

/**
 * The main thread of `workers = N`: the period's line over every loop. Counts and bytes are
 * summed, so the rates add up; the time averages come out weighted by the loops' counts (total
 * time over total transactions, queries or assignments). A loop that does not answer within half
 * a period (at most 5 s) is not waited for: its answer counts in the next line, so no
 * transaction is lost or counted twice. The loops are asked even with log_stats off, so that a
 * line after turning it on covers one period.
 */
async function logAllLoops(cur: PoolStats, old: PoolStats, durUs: number): Promise<void> {
  late.cur.addTo(cur);
  late.old.addTo(old);
  late.cur.copyFrom(ZERO);
  late.old.copyFrom(ZERO);
  let open = true;
  const answers = peers().map((w) =>
    request<LoopSums>(w, 'stats.period').then((r) => {
      if (r === undefined) return; // the worker is gone: its counts went with it
      const into = open ? { cur, old } : late;
      Object.assign(new PoolStats(), r.cur).addTo(into.cur);
      Object.assign(new PoolStats(), r.old).addTo(into.old);
    }));
  const waitMs = Math.min((cf.stats_period > 0 ? cf.stats_period : 60) * 500, 5000);
  let wait: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.all(answers),
    new Promise<void>((resolve) => { wait = setTimeout(resolve, waitMs); wait.unref(); }),
  ]);
  clearTimeout(wait);
  open = false;
  if (cf.log_stats) log.log(statsLogLine(calcAverage(cur, old, durUs)));
}

/** Averages of the last complete period over the given pools (zeros before the first one). */
export function periodAverage(pools: Iterable<PgPool>): PoolStats {
  const cur = new PoolStats();
  const old = new PoolStats();
  for (const pool of pools) {
    const s = snaps.get(pool);
    (s?.newer ?? ZERO).addTo(cur);
    (s?.older ?? ZERO).addTo(old);
  }
  return calcAverage(cur, old, oldStampUs === 0 ? 0 : newStampUs - oldStampUs);
}

/** Live totals over the given pools. */
export function totals(pools: Iterable<PgPool>): PoolStats {
  const t = new PoolStats();
  for (const pool of pools) pool.stats.addTo(t);
  return t;
}
