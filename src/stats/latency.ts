// Latency histograms per pool (query, transaction, client wait), for the Prometheus endpoint
// (admin/metrics.ts). They are observed on the hot path, where pooler.ts already computes the
// times that SHOW STATS sums: one bucket search over a fixed array and three additions, no
// allocation, no label lookup (prom-client's labelled children hash their labels on every
// observe(), about 250 ns; this is a few ns). The endpoint turns them into Prometheus histograms.

/** Upper bounds (seconds) from 100 µs to 10 s, as Prometheus buckets: `le`, inclusive. */
export const LATENCY_BUCKETS = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
] as const;

const BOUNDS_US = Float64Array.from(LATENCY_BUCKETS, (s) => s * 1e6);
const NB = BOUNDS_US.length;

export class LatencyHistogram {
  /** observations per bucket, not cumulative; the last one is above 10 s (+Inf) */
  readonly counts = new Float64Array(NB + 1);
  /** microseconds */
  sumUs = 0;
  count = 0;

  observe(us: number): void {
    let i = 0;
    while (i < NB && us > BOUNDS_US[i]!) i++;
    this.counts[i]!++;
    this.sumUs += us;
    this.count++;
  }
}

/** The three histograms of one pool. */
export class PoolLatency {
  readonly query = new LatencyHistogram();
  readonly xact = new LatencyHistogram();
  readonly wait = new LatencyHistogram();
}
