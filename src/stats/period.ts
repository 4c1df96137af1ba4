// The stats_period timer (PgBouncer's refresh_stats): every period each pool's counters are
// snapshotted; the averages of SHOW STATS / STATS_AVERAGES / TOTALS and the `stats: ...` log
// line are computed from the last two snapshots. Between snapshots nothing here runs, so the
// hot path only ever increments the plain counters of PoolStats.
import { cf } from '../config/current.js';
import { log } from '../log/logger.js';
import { nowUs } from '../pool/clock.js';
import { registry, type PgPool } from '../pool/objects.js';
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
  if (cf.log_stats) log.log(statsLogLine(calcAverage(cur, old, newStampUs - oldStampUs)));
  if (timer !== null) arm();
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
