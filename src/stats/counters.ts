// Per-pool statistics counters, updated on the hot path with plain number fields (no
// allocation). SHOW STATS sums them per database; the stats_period averages are computed from
// snapshots taken by the janitor.

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
