// Per-pool statistics counters, updated on the hot path with plain number fields (no
// allocation). SHOW STATS sums them per database; the stats_period averages are computed from
// snapshots taken every stats_period (stats/period.ts).

export class PoolStats {
  serverAssignmentCount = 0;
  xactCount = 0;
  queryCount = 0;
  /** bytes received from clients */
  clientBytes = 0;
  /** bytes received from servers */
  serverBytes = 0;
  /** microseconds */
  xactTime = 0;
  queryTime = 0;
  waitTime = 0;
  clientParseCount = 0;
  serverParseCount = 0;
  bindCount = 0;
  clientLoginCount = 0;

  addTo(t: PoolStats): void {
    t.serverAssignmentCount += this.serverAssignmentCount;
    t.xactCount += this.xactCount;
    t.queryCount += this.queryCount;
    t.clientBytes += this.clientBytes;
    t.serverBytes += this.serverBytes;
    t.xactTime += this.xactTime;
    t.queryTime += this.queryTime;
    t.waitTime += this.waitTime;
    t.clientParseCount += this.clientParseCount;
    t.serverParseCount += this.serverParseCount;
    t.bindCount += this.bindCount;
    t.clientLoginCount += this.clientLoginCount;
  }

  copyFrom(s: PoolStats): void {
    this.serverAssignmentCount = s.serverAssignmentCount;
    this.xactCount = s.xactCount;
    this.queryCount = s.queryCount;
    this.clientBytes = s.clientBytes;
    this.serverBytes = s.serverBytes;
    this.xactTime = s.xactTime;
    this.queryTime = s.queryTime;
    this.waitTime = s.waitTime;
    this.clientParseCount = s.clientParseCount;
    this.serverParseCount = s.serverParseCount;
    this.bindCount = s.bindCount;
    this.clientLoginCount = s.clientLoginCount;
  }
}

/**
 * PgBouncer's calc_average(): rates per second over `durUs` for counts and bytes; the time
 * averages per transaction / query / server assignment (µs). Integer results, like its
 * uint64 arithmetic.
 */
export function calcAverage(cur: PoolStats, old: PoolStats, durUs: number): PoolStats {
  const avg = new PoolStats();
  if (durUs <= 0) return avg;
  const rate = (a: number, b: number): number => Math.floor((1e6 * (a - b)) / durUs);
  const per = (t: number, n: number): number => (n > 0 ? Math.floor(t / n) : 0);
  const queries = cur.queryCount - old.queryCount;
  const xacts = cur.xactCount - old.xactCount;
  const assignments = cur.serverAssignmentCount - old.serverAssignmentCount;
  avg.serverAssignmentCount = rate(cur.serverAssignmentCount, old.serverAssignmentCount);
  avg.xactCount = rate(cur.xactCount, old.xactCount);
  avg.queryCount = rate(cur.queryCount, old.queryCount);
  avg.clientBytes = rate(cur.clientBytes, old.clientBytes);
  avg.serverBytes = rate(cur.serverBytes, old.serverBytes);
  avg.clientParseCount = rate(cur.clientParseCount, old.clientParseCount);
  avg.serverParseCount = rate(cur.serverParseCount, old.serverParseCount);
  avg.bindCount = rate(cur.bindCount, old.bindCount);
  avg.clientLoginCount = rate(cur.clientLoginCount, old.clientLoginCount);
  avg.queryTime = per(cur.queryTime - old.queryTime, queries);
  avg.xactTime = per(cur.xactTime - old.xactTime, xacts);
  avg.waitTime = per(cur.waitTime - old.waitTime, assignments);
  return avg;
}

/** The `stats: ...` line logged every stats_period when log_stats is on. */
export function statsLogLine(a: PoolStats): string {
  return `stats: ${a.xactCount} xacts/s, ${a.queryCount} queries/s, ${a.clientParseCount} client parses/s, ` +
    `${a.serverParseCount} server parses/s, ${a.bindCount} binds/s, ${a.clientLoginCount} client logins/s, ` +
    `in ${a.clientBytes} B/s, out ${a.serverBytes} B/s, xact ${a.xactTime} us, query ${a.queryTime} us, ` +
    `wait ${a.waitTime} us`;
}
