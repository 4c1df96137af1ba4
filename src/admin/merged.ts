// `workers` > 1: SHOW answers for the whole pooler, not for the event loop the admin's connection
// landed on. The console's loop asks every other loop for its own result sets over the bus
// (`console.show`) and merges them with its own: per-pool, per-database and per-user rows are
// summed by key (counters, connection counts; maxwait is the longest wait, paused and disabled
// are set if set anywhere), the stats_period averages are recomputed from every loop's (rates add
// up; times per transaction, query or server assignment are weighted by their rates),
// connection rows (CLIENTS, SERVERS, SOCKETS, FDS) are concatenated in loop order (ids are unique
// over the pooler), LISTS counts distinct names and sums connections; MEM sums, since every loop
// holds its own objects. CONFIG, VERSION, STATE, PEERS and DNS_ZONES are the same everywhere and
// stay local. With one loop nothing here runs: show() returns SHOW_MAP's result as it is.
import { onRequest, requestAll } from '../workers/bus.js';
import { multiWorker, workerSelf } from '../workers/identity.js';
import { limitHits, loginFailures, serverLogins } from '../stats/events.js';
import type { LatencyHistogram } from '../stats/latency.js';
import { SHOW_MAP, sortedPools, type ResultSet, type Value } from './show.js';

type Rows = Value[][];

/** One loop's result sets for the SHOW names asked, in the same order. */
function localParts(names: string[]): ResultSet[] {
  return names.map((n) => (Object.prototype.hasOwnProperty.call(SHOW_MAP, n) ? SHOW_MAP[n]!() : { cols: [], rows: [] }));
}

/** Every loop's result sets for `names`: per name, the loops' results in loop order. */
async function gather(names: string[]): Promise<ResultSet[][]> {
  const replies = await requestAll<ResultSet[]>('console.show', names);
  const all = [...replies, { worker: workerSelf.index, reply: localParts(names) }]
    .sort((a, b) => a.worker - b.worker);
  return names.map((_, k) => all.map((r) => r.reply[k]!));
}

// ---------------------------------------------------------------------------------------------
// merging

const num = (v: Value): number => (v === null || v === '' ? 0 : Number(v));

function cmpKey(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/**
 * Rows grouped by key over the loops and reduced to one row per key. Keys are kept in order of
 * first appearance unless `order` sorts them.
 */
function groupBy(parts: ResultSet[], key: (r: Value[]) => string, reduce: (rows: Rows) => Value[],
  order: ((a: string, b: string) => number) | null): ResultSet {
  const groups = new Map<string, Rows>();
  for (const p of parts) {
    for (const r of p.rows) {
      const k = key(r);
      const g = groups.get(k);
      if (g === undefined) groups.set(k, [r]);
      else g.push(r);
    }
  }
  const keys = [...groups.keys()];
  if (order !== null) keys.sort(order);
  return { cols: parts[0]!.cols, rows: keys.map((k) => reduce(groups.get(k)!)) };
}

/** The first row, with the columns `sum` summed and `max` the largest over all rows. */
function reducer(sum: number[], max: number[] = []): (rows: Rows) => Value[] {
  return (rows) => {
    const out = rows[0]!.slice();
    for (const c of sum) out[c] = rows.reduce((n, r) => n + num(r[c]!), 0);
    for (const c of max) out[c] = rows.reduce((n, r) => Math.max(n, num(r[c]!)), 0);
    return out;
  };
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, k) => from + k);

/** name, or database + NUL + user: byte order of the joined key is PgBouncer's (name, name) order */
const col = (c: number) => (r: Value[]): string => String(r[c]);
const col2 = (a: number, b: number) => (r: Value[]): string => `${String(r[a])}\0${String(r[b])}`;

function concat(parts: ResultSet[]): ResultSet {
  return { cols: parts[0]!.cols, rows: parts.flatMap((p) => p.rows) };
}

// The twelve statistics of SHOW STATS, in their order (stats/counters.ts statValues()); the
// averages of three of them are times per event of another: [time, weight].
const TIME_WEIGHTS: Array<[number, number]> = [[5, 1], [6, 2], [7, 0]];
const NSTATS = 12;

function sumStats(sets: number[][]): number[] {
  const out = new Array<number>(NSTATS).fill(0);
  for (const s of sets) for (let k = 0; k < NSTATS; k++) out[k]! += s[k]!;
  return out;
}

/**
 * The stats_period averages of the pooler from each loop's: rates per second add up; an average
 * time is weighted by its loop's rate of the events it is measured over. When those rates all
 * round down to zero (fewer than one event a second), the loops that saw any count alike.
 */
function mergeAverages(sets: number[][]): number[] {
  const out = sumStats(sets);
  for (const [t, w] of TIME_WEIGHTS) {
    let weight = 0;
    let weighted = 0;
    for (const s of sets) {
      weight += s[w]!;
      weighted += s[t]! * s[w]!;
    }
    if (weight > 0) {
      out[t] = Math.floor(weighted / weight);
    } else {
      const seen = sets.map((s) => s[t]!).filter((v) => v > 0);
      out[t] = seen.length === 0 ? 0 : Math.floor(seen.reduce((a, b) => a + b, 0) / seen.length);
    }
  }
  return out;
}

function stats(rows: Rows, from: number): number[][] {
  return rows.map((r) => r.slice(from, from + NSTATS).map(num));
}

// per SHOW name: the other SHOW results it needs, and how they merge
interface Merger {
  needs?: string[];
  merge(parts: ResultSet[][]): ResultSet;
}

const POOL_COUNTS = range(2, 13);
const MAXWAIT = 13;

const MERGERS: Record<string, Merger> = {
  pools: {
    merge: ([parts]) => groupBy(parts!, col2(0, 1), (rows) => {
      const out = reducer(POOL_COUNTS)(rows);
      // the oldest waiting client anywhere: seconds and microseconds together
      let longest = rows[0]!;
      for (const r of rows) {
        if (num(r[MAXWAIT]!) * 1e6 + num(r[MAXWAIT + 1]!) > num(longest[MAXWAIT]!) * 1e6 + num(longest[MAXWAIT + 1]!)) longest = r;
      }
      out[MAXWAIT] = longest[MAXWAIT]!;
      out[MAXWAIT + 1] = longest[MAXWAIT + 1]!;
      return out;
    }, cmpKey),
  },
  stats: {
    merge: ([parts]) => groupBy(parts!, col(0), (rows) =>
      [rows[0]![0]!, ...sumStats(stats(rows, 1)), ...mergeAverages(stats(rows, 1 + NSTATS))], cmpKey),
  },
  stats_totals: { merge: ([parts]) => groupBy(parts!, col(0), (rows) => [rows[0]![0]!, ...sumStats(stats(rows, 1))], cmpKey) },
  stats_averages: { merge: ([parts]) => groupBy(parts!, col(0), (rows) => [rows[0]![0]!, ...mergeAverages(stats(rows, 1))], cmpKey) },
  totals: {
    // name/value rows: the twelve totals, then the twelve averages
    merge: ([parts]) => {
      const first = parts![0]!;
      const values = parts!.map((p) => p.rows.map((r) => num(r[1]!)));
      const tot = sumStats(values.map((v) => v.slice(0, NSTATS)));
      const avg = mergeAverages(values.map((v) => v.slice(NSTATS, 2 * NSTATS)));
      return { cols: first.cols, rows: first.rows.map((r, k) => [r[0]!, k < NSTATS ? tot[k]! : avg[k - NSTATS]!]) };
    },
  },
  clients: { merge: ([parts]) => concat(parts!) },
  servers: { merge: ([parts]) => concat(parts!) },
  sockets: { merge: ([parts]) => concat(parts!) },
  active_sockets: { merge: ([parts]) => concat(parts!) },
  fds: {
    // the Unix socket (and systemd's) is one file descriptor shared by every loop: listed once
    merge: ([parts]) => {
      const seen = new Set<string>();
      const rows = concat(parts!).rows.filter((r) => {
        if (r[1] !== 'pooler') return true;
        const k = String(r[0]);
        if (seen.has(k)) return false;
        seen.add(k);
        return true;
      });
      return { cols: parts![0]!.cols, rows };
    },
  },
  databases: { merge: ([parts]) => groupBy(parts!, col(0), reducer([12, 14], [15, 16]), cmpKey) },
  users: { merge: ([parts]) => groupBy(parts!, col(0), reducer([5, 7]), cmpKey) },
  peer_pools: { merge: ([parts]) => groupBy(parts!, col(0), reducer(range(1, 5)), (a, b) => Number(a) - Number(b)) },
  mem: { merge: ([parts]) => groupBy(parts!, col(0), reducer([2, 3, 4]), null) },
  dns_hosts: { merge: ([parts]) => groupBy(parts!, col(0), (rows) => rows[0]!, null) },
  lists: {
    // objects every loop has a copy of are counted once by name; connections add up
    needs: ['databases', 'users', 'pools', 'peer_pools', 'dns_hosts'],
    merge: ([lists, databases, users, pools, peerPools, dnsHosts]) => {
      const distinct: Record<string, number> = {
        databases: MERGERS.databases!.merge([databases!]).rows.length,
        users: MERGERS.users!.merge([users!]).rows.length,
        pools: MERGERS.pools!.merge([pools!]).rows.length,
        peer_pools: MERGERS.peer_pools!.merge([peerPools!]).rows.length,
        dns_names: MERGERS.dns_hosts!.merge([dnsHosts!]).rows.length,
      };
      const summed = new Set(['used_clients', 'login_clients', 'used_servers', 'dns_queries', 'dns_pending']);
      // the rest (peers, free lists, DNS zones) is the same in every loop
      const local = lists![0]!;
      const rows = local.rows.map((r, k): Value[] => {
        const name = String(r[0]);
        if (name in distinct) return [r[0]!, distinct[name]!];
        if (summed.has(name)) return [r[0]!, lists!.reduce((n, p) => n + num(p.rows[k]![1]!), 0)];
        return r;
      });
      return { cols: local.cols, rows };
    },
  },
};

/** The SHOW names a merge of `name` needs from every loop: itself first. */
export function partsNeeded(name: string): string[] {
  return [name, ...MERGERS[name]?.needs ?? []];
}

/** Every loop's results for partsNeeded(name), merged into one. */
export function mergeParts(name: string, parts: ResultSet[][]): ResultSet {
  const m = MERGERS[name];
  return m === undefined ? parts[0]![0]! : m.merge(parts);
}

/** A SHOW result for the whole pooler: at once with one loop (or for what every loop has alike). */
export function show(name: string): ResultSet | Promise<ResultSet> {
  if (!multiWorker() || MERGERS[name] === undefined) return SHOW_MAP[name]!();
  return gather(partsNeeded(name)).then((parts) => mergeParts(name, parts));
}

/** The merged SHOW result, awaited (the metrics endpoint). */
export async function showAll(name: string): Promise<ResultSet> {
  return show(name);
}

// another loop's console asks for this loop's rows
onRequest('console.show', (names) => localParts(names as string[]));

// ---------------------------------------------------------------------------------------------
// what the metrics endpoint has beyond SHOW: latency histograms and event counters of every loop

interface Histogram {
  counts: number[];
  sumUs: number;
  count: number;
}

/** One pool's latency histograms (stats/latency.ts), summed over the loops. */
export interface PoolHistograms {
  database: string;
  user: string;
  query: Histogram;
  xact: Histogram;
  wait: Histogram;
}

/** The metrics one loop counted that no SHOW command shows. */
export interface MetricsPart {
  pools: PoolHistograms[];
  loginFailures: Record<string, number>;
  limitHits: Record<string, number>;
  serverLoginFailures: number;
}

function histogram(h: LatencyHistogram): Histogram {
  return { counts: Array.from(h.counts), sumUs: h.sumUs, count: h.count };
}

function localMetrics(): MetricsPart {
  return {
    pools: sortedPools().map((p) => ({
      database: p.db.name, user: p.user.name,
      query: histogram(p.latency.query), xact: histogram(p.latency.xact), wait: histogram(p.latency.wait),
    })),
    loginFailures: { ...loginFailures },
    limitHits: { ...limitHits },
    serverLoginFailures: serverLogins.failed,
  };
}

function addHistogram(into: Histogram, h: Histogram): void {
  for (let k = 0; k < into.counts.length; k++) into.counts[k]! += h.counts[k] ?? 0;
  into.sumUs += h.sumUs;
  into.count += h.count;
}

function addCounts(into: Record<string, number>, from: Record<string, number>): void {
  for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
}

/** Histograms and event counters of the whole pooler (this loop's alone with one loop). */
export async function metricsOfAllLoops(): Promise<MetricsPart> {
  const out = localMetrics();
  if (!multiWorker()) return out;
  const byPool = new Map(out.pools.map((p) => [`${p.database}\0${p.user}`, p]));
  for (const { reply } of await requestAll<MetricsPart>('console.metrics')) {
    for (const p of reply.pools) {
      const k = `${p.database}\0${p.user}`;
      const mine = byPool.get(k);
      if (mine === undefined) {
        byPool.set(k, p);
        continue;
      }
      addHistogram(mine.query, p.query);
      addHistogram(mine.xact, p.xact);
      addHistogram(mine.wait, p.wait);
    }
    addCounts(out.loginFailures, reply.loginFailures);
    addCounts(out.limitHits, reply.limitHits);
    out.serverLoginFailures += reply.serverLoginFailures;
  }
  out.pools = [...byPool.entries()].sort(([a], [b]) => cmpKey(a, b)).map(([, p]) => p);
  return out;
}

onRequest('console.metrics', localMetrics);
