// The Prometheus endpoint (metrics_listen_addr, metrics_listen_port): `GET /metrics` in
// Prometheus' text format. PgBouncer has none built in; its users run
// prometheus-community/pgbouncer_exporter, which logs in to the console and turns SHOW output
// into metrics. The `pgbouncer_*` metrics here have that exporter's names, labels and units, so
// dashboards and alerts keep working without it, and their values come from the same functions
// that answer SHOW STATS_TOTALS, POOLS, DATABASES, LISTS, CLIENTS, CONFIG and VERSION
// (admin/show.ts): nothing is computed twice. The `pgbun_*` metrics go beyond it: latency
// histograms (stats/latency.ts), logins by result, server login failures and connection limits
// hit (stats/events.ts). With `workers` > 1 every value covers all event loops: the SHOW results
// are the console's merged ones and the rest is summed over the loops (admin/merged.ts).
//
// prom-client does the exposition (escaping, type and help lines, number formatting). The
// endpoint has its own HTTP server, so it keeps answering during PAUSE, SUSPEND and shutdown,
// until the process exits.
import fs from 'node:fs';
import http from 'node:http';
import client from 'prom-client';
import { cf } from '../config/current.js';
import { log } from '../log/logger.js';
import { LATENCY_BUCKETS } from '../stats/latency.js';
import { metricsOfAllLoops, showAll, type MetricsPart, type PoolHistograms } from './merged.js';
import type { ResultSet, Value } from './show.js';

type Row = Record<string, Value>;

/** A result set's rows keyed by column name: the exporter reads SHOW output by column name too. */
function byName(rs: ResultSet): Row[] {
  return rs.rows.map((r) => Object.fromEntries(rs.cols.map((c, k) => [c.name, r[k] ?? null])));
}

const num = (v: Value): number => (v === null || v === '' ? 0 : Number(v));
const str = (v: Value): string => (v === null ? '' : String(v));

/** The SHOW output of one scrape, computed once and read by every metric's collect(). */
interface Snapshot {
  stats: Row[];
  pools: Row[];
  databases: Row[];
  lists: Map<string, number>;
  clients: Row[];
  config: Map<string, string>;
  version: string;
  /** histograms and event counters */
  more: MetricsPart;
}

let snap: Snapshot | null = null;

async function takeSnapshot(): Promise<Snapshot> {
  const [stats, pools, databases, lists, clients, config, version, more] = await Promise.all([
    showAll('stats_totals'), showAll('pools'), showAll('databases'), showAll('lists'), showAll('clients'),
    showAll('config'), showAll('version'), metricsOfAllLoops(),
  ]);
  return {
    stats: byName(stats),
    pools: byName(pools),
    databases: byName(databases),
    lists: new Map(lists.rows.map((r) => [str(r[0]!), num(r[1]!)])),
    clients: byName(clients),
    config: new Map(config.rows.map((r) => [str(r[0]!), str(r[1]!)])),
    version: str(version.rows[0]![0]!),
    more,
  };
}

const reg = new client.Registry();

function gauge(name: string, help: string, labelNames: string[], fill: (g: client.Gauge, s: Snapshot) => void): void {
  new client.Gauge({
    name, help, labelNames, registers: [reg],
    collect() {
      this.reset();
      if (snap !== null) fill(this, snap);
    },
  });
}

function counter(name: string, help: string, labelNames: string[], fill: (c: client.Counter, s: Snapshot) => void): void {
  new client.Counter({
    name, help, labelNames, registers: [reg],
    collect() {
      // totals kept by pgbun: reset and set to the current value at each scrape
      this.reset();
      if (snap !== null) fill(this, snap);
    },
  });
}

// --------------------------------------------------------------- pgbouncer_exporter's metrics

gauge('pgbouncer_up', 'The pgbouncer scrape succeeded', [], (g) => g.set(1));
gauge('pgbouncer_version_info', 'The pgbouncer version info', ['version'], (g, s) => {
  // the exporter's label is the bare version number of SHOW VERSION
  g.set({ version: /^PgBouncer (\d+\.\d+\.\d+)/.exec(s.version)?.[1] ?? s.version }, 1);
});

// SHOW STATS_TOTALS, per database; times in seconds as the exporter gives them
const STATS: Array<[string, string, string, number]> = [
  ['queries_pooled_total', 'Total number of SQL queries pooled', 'query_count', 1],
  ['queries_duration_seconds_total', 'Total number of seconds spent by pgbouncer when actively connected to PostgreSQL, executing queries', 'query_time', 1e-6],
  ['received_bytes_total', 'Total volume in bytes of network traffic received by pgbouncer, shown as bytes', 'bytes_received', 1],
  ['sent_bytes_total', 'Total volume in bytes of network traffic sent by pgbouncer, shown as bytes', 'bytes_sent', 1],
  ['client_wait_seconds_total', 'Time spent by clients waiting for a server in seconds', 'wait_time', 1e-6],
  ['sql_transactions_pooled_total', 'Total number of SQL transactions pooled', 'xact_count', 1],
  ['server_in_transaction_seconds_total', 'Total number of seconds spent by pgbouncer when connected to PostgreSQL in a transaction, either idle in transaction or executing queries', 'xact_time', 1e-6],
  ['client_parses_total', 'Total number of prepared statements created by clients', 'client_parse_count', 1],
  ['server_parses_total', 'Total number of prepared statements created on a server', 'server_parse_count', 1],
  ['binds_total', 'Total number of prepared statements readied for execution by clients and forwarded to postgres', 'bind_count', 1],
  ['server_assignments_total', 'Total number of times a server was assigned to a client', 'server_assignment_count', 1],
];
for (const [name, help, col, scale] of STATS) {
  counter(`pgbouncer_stats_${name}`, help, ['database'], (c, s) => {
    for (const r of s.stats) c.inc({ database: str(r.database!) }, num(r[col]!) * scale);
  });
}

// SHOW POOLS, per (database, user)
const POOLS: Array<[string, string, string]> = [
  ['client_active_connections', 'Client connections linked to server connection and able to process queries', 'cl_active'],
  ['client_active_cancel_connections', 'Client connections that have forwarded query cancellations to the server and are waiting for the server response', 'cl_active_cancel_req'],
  ['client_waiting_connections', 'Client connections waiting on a server connection', 'cl_waiting'],
  ['client_waiting_cancel_connections', 'Client connections that have not forwarded query cancellations to the server yet', 'cl_waiting_cancel_req'],
  ['server_active_connections', 'Server connections linked to a client connection', 'sv_active'],
  ['server_active_cancel_connections', 'Server connections that are currently forwarding a cancel request', 'sv_active_cancel'],
  ['server_being_canceled_connections', 'Servers that normally could become idle but are waiting to do so until all in-flight cancel requests have completed that were sent to cancel a query on this server', 'sv_being_canceled'],
  ['server_idle_connections', 'Server connections idle and ready for a client query', 'sv_idle'],
  ['server_used_connections', 'Server connections idle more than server_check_delay, needing server_check_query', 'sv_used'],
  ['server_testing_connections', 'Server connections currently running either server_reset_query or server_check_query', 'sv_tested'],
  ['server_login_connections', 'Server connections currently in the process of logging in', 'sv_login'],
];
for (const [name, help, col] of POOLS) {
  gauge(`pgbouncer_pools_${name}`, help, ['database', 'user'], (g, s) => {
    for (const r of s.pools) g.set({ database: str(r.database!), user: str(r.user!) }, num(r[col]!));
  });
}
gauge('pgbouncer_pools_client_maxwait_seconds', 'Age of oldest unserved client connection, shown as second', ['database', 'user'], (g, s) => {
  for (const r of s.pools) g.set({ database: str(r.database!), user: str(r.user!) }, num(r.maxwait!) + num(r.maxwait_us!) * 1e-6);
});

// SHOW DATABASES, per database entry
const DB_LABELS = ['name', 'host', 'port', 'database', 'force_user', 'pool_mode'];
const DATABASES: Array<[string, string, string]> = [
  ['pool_size', 'Maximum number of server connections', 'pool_size'],
  ['reserve_pool', 'Maximum number of additional connections for this database', 'reserve_pool_size'],
  ['max_connections', 'Maximum number of allowed connections for this database', 'max_connections'],
  ['current_connections', 'Current number of connections for this database', 'current_connections'],
  ['paused', 'True(1) if this database is currently paused, else False(0)', 'paused'],
  ['disabled', 'True(1) if this database is currently disabled, else False(0)', 'disabled'],
];
for (const [name, help, col] of DATABASES) {
  gauge(`pgbouncer_databases_${name}`, help, DB_LABELS, (g, s) => {
    for (const r of s.databases) g.set(Object.fromEntries(DB_LABELS.map((l) => [l, str(r[l]!)])), num(r[col]!));
  });
}

// SHOW LISTS
const LISTS: Array<[string, string, string]> = [
  ['databases', 'Count of databases', 'databases'],
  ['users', 'Count of users', 'users'],
  ['pools', 'Count of pools', 'pools'],
  ['free_clients', 'Count of free clients', 'free_clients'],
  ['used_clients', 'Count of used clients', 'used_clients'],
  ['login_clients', 'Count of clients in login state', 'login_clients'],
  ['free_servers', 'Count of free servers', 'free_servers'],
  ['used_servers', 'Count of used servers', 'used_servers'],
  ['cached_dns_names', 'Count of DNS names in the cache', 'dns_names'],
  ['cached_dns_zones', 'Count of DNS zones in the cache', 'dns_zones'],
  ['in_flight_dns_queries', 'Count of in-flight DNS queries', 'dns_queries'],
];
for (const [name, help, item] of LISTS) {
  gauge(`pgbouncer_${name}`, help, [], (g, s) => g.set(s.lists.get(item) ?? 0));
}

// SHOW CONFIG
gauge('pgbouncer_config_max_client_connections', 'Config maximum number of client connections', [], (g, s) =>
  g.set(num(s.config.get('max_client_conn') ?? null)));
gauge('pgbouncer_config_max_user_connections', 'Config maximum number of server connections per user', [], (g, s) =>
  g.set(num(s.config.get('max_user_connections') ?? null)));

// SHOW CLIENTS, counted per (database, user, application_name, state)
gauge('pgbouncer_client_connections', 'Number of client connections', ['database', 'user', 'application_name', 'state'], (g, s) => {
  for (const r of s.clients) g.inc({ database: str(r.database!), user: str(r.user!), application_name: str(r.application_name!), state: str(r.state!) });
});

// --------------------------------------------------------------- pgbun's own

counter('pgbun_client_logins_total', 'Client logins by result: ok (SHOW STATS client_login_count), or why pgbun refused it', ['result'], (c, s) => {
  let ok = 0;
  for (const r of s.stats) ok += num(r.client_login_count!);
  c.inc({ result: 'ok' }, ok);
  for (const [result, n] of Object.entries(s.more.loginFailures)) c.inc({ result }, n);
});
counter('pgbun_server_login_failures_total', 'Server logins to PostgreSQL that failed', [], (c, s) => c.inc(s.more.serverLoginFailures));
counter('pgbun_pool_full_total', 'Times a connection limit refused a client login (max_client_conn, max_db_client_connections, max_user_client_connections) or held back a new server connection (max_db_connections, max_user_connections)', ['limit'], (c, s) => {
  for (const [limit, n] of Object.entries(s.more.limitHits)) c.inc({ limit }, n);
});

/**
 * A histogram kept by the pools themselves (stats/latency.ts): prom-client only formats it,
 * through the registry's metric interface (an object whose get() returns the values).
 */
function poolHistogram(name: string, help: string, pick: (p: PoolHistograms) => PoolHistograms['query']): void {
  const metric = {
    name, help, type: 'histogram', aggregator: 'sum',
    get() {
      const values: Array<{ labels: Record<string, string | number>; value: number; metricName: string }> = [];
      for (const p of snap?.more.pools ?? []) {
        const h = pick(p);
        const labels = { database: p.database, user: p.user };
        let cumulative = 0;
        LATENCY_BUCKETS.forEach((le, k) => {
          cumulative += h.counts[k]!;
          values.push({ labels: { ...labels, le }, value: cumulative, metricName: `${name}_bucket` });
        });
        values.push({ labels: { ...labels, le: '+Inf' }, value: h.count, metricName: `${name}_bucket` });
        values.push({ labels, value: h.sumUs / 1e6, metricName: `${name}_sum` });
        values.push({ labels, value: h.count, metricName: `${name}_count` });
      }
      return Promise.resolve({ name, help, type: 'histogram', aggregator: 'sum', values });
    },
  };
  reg.registerMetric(metric as unknown as client.Metric);
}

poolHistogram('pgbun_query_duration_seconds', 'Query times, as SHOW STATS query_time sums them', (p) => p.query);
poolHistogram('pgbun_transaction_duration_seconds', 'Transaction times, as SHOW STATS xact_time sums them', (p) => p.xact);
poolHistogram('pgbun_client_wait_duration_seconds', 'Time clients waited for a server, as SHOW STATS wait_time sums it', (p) => p.wait);

/** scrapes one after the other: the metrics read the one snapshot in `snap` */
let scrapes: Promise<unknown> = Promise.resolve();

/** The whole exposition, as a scrape gets it. */
function renderMetrics(): Promise<string> {
  const next = scrapes.then(async () => {
    snap = await takeSnapshot();
    try {
      return await reg.metrics();
    } finally {
      snap = null;
    }
  });
  scrapes = next.catch(() => undefined);
  return next;
}

// --------------------------------------------------------------- the HTTP endpoint

function onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
  const path = (req.url ?? '').split('?')[0];
  if (path !== '/metrics') {
    res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' }).end('404 page not found\n');
    return;
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { 'Content-Type': 'text/plain; charset=utf-8', Allow: 'GET, HEAD' }).end('method not allowed\n');
    return;
  }
  renderMetrics().then((body) => {
    res.writeHead(200, { 'Content-Type': reg.contentType });
    res.end(req.method === 'HEAD' ? undefined : body);
  }, (e: unknown) => {
    log.error(`metrics: ${(e as Error).message}`);
    res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' }).end('metrics failed\n');
  });
}

/** Where the settings put the endpoint: a Unix socket path, host:port, or null = off. */
type Where = { path: string } | { host: string; port: number };

function wanted(): Where | null {
  const addr = cf.metrics_listen_addr;
  if (addr.startsWith('/')) return { path: addr };
  if (cf.metrics_listen_port <= 0) return null;
  // no address: loopback only; `*` every IPv4 and IPv6 address
  const host = addr === '' ? '127.0.0.1' : addr === '*' ? '::' : addr;
  return { host, port: cf.metrics_listen_port };
}

function describe(w: Where): string {
  return 'path' in w ? `unix:${w.path}` : `${w.host.includes(':') ? `[${w.host}]` : w.host}:${w.port}`;
}

let current: { server: http.Server; where: Where; key: string } | null = null;

function removeSocketFile(w: Where): void {
  if ('path' in w) {
    try { fs.unlinkSync(w.path); } catch { /* not there */ }
  }
}

function stop(): void {
  if (current === null) return;
  const { server, where } = current;
  current = null;
  server.close();
  server.closeAllConnections();
  removeSocketFile(where);
  log.log(`metrics: stopped listening on ${describe(where)}`);
}

/**
 * Start, stop or move the endpoint to what the settings say (startup and every RELOAD).
 * Resolves with an error text when it cannot listen; the endpoint is then off.
 */
export async function applyMetricsEndpoint(): Promise<string | null> {
  const w = wanted();
  const key = w === null ? '' : describe(w);
  if (current !== null && current.key === key) return null;
  stop();
  if (w === null) return null;
  const server = http.createServer(onRequest);
  // a scrape is one request: do not keep idle connections for long
  server.keepAliveTimeout = 5000;
  removeSocketFile(w); // a stale socket of a dead process
  const err = await new Promise<Error | null>((resolve) => {
    server.once('error', resolve);
    server.listen('path' in w ? { path: w.path } : { host: w.host, port: w.port, ipv6Only: false }, () => {
      server.off('error', resolve);
      resolve(null);
    });
  });
  if (err !== null) return `cannot listen for metrics on ${key}: ${err.message}`;
  current = { server, where: w, key };
  log.log(`metrics: listening on ${key}`);
  return null;
}

// the Unix socket file goes with the process, like the pooler's own
process.on('exit', () => {
  if (current !== null) removeSocketFile(current.where);
});
