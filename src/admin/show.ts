// The console's SHOW commands (https://www.pgbouncer.org/usage.html#show-commands): PgBouncer
// 1.25's exact column names, order and type OIDs, values in its units and formats. Monitoring tools
// parse these by column name, so the tables below are the contract;
// test/integration/admin-show.test.ts checks them one by one. Every function returns a result set;
// commands.ts sends it.
import type net from 'node:net';
import { cf } from '../config/current.js';
import { showConfigRows } from '../config/settings.js';
import { formatShowTime } from '../log/logger.js';
import type { Column } from '../protocol/messages.js';
import type { Client } from '../pool/client.js';
import { nowUs } from '../pool/clock.js';
import { dnsCache } from '../pool/dns.js';
import { listenerSockets } from '../pool/listener.js';
import { registry, type PgDatabase, type PgPool } from '../pool/objects.js';
import { poolerState } from '../pool/pooler.js';
import { peerCount, peerList, peerPools, sortedPeerPools } from '../pool/peering.js';
import type { Server } from '../pool/server.js';
import { APPLICATION_NAME, trackedIndex } from '../pool/varcache.js';
import { CLIENT_STATE_NAMES, ClientState, SERVER_STATE_NAMES, ServerState } from '../pool/state.js';
import type { PoolStats } from '../stats/counters.js';
import { periodAverage, totals } from '../stats/period.js';
import { VERSION_STRING } from '../version.js';
import { socketFd } from '../runtime/handles.js';

export type Value = string | number | null;

export interface ResultSet {
  cols: Column[];
  rows: Value[][];
}

// the column types PgBouncer's console uses: text, int4, int8, numeric, bytea
const t = (name: string): Column => ({ name, typeOid: 25, typeLen: -1 });
const i = (name: string): Column => ({ name, typeOid: 23, typeLen: 4 });
const q = (name: string): Column => ({ name, typeOid: 20, typeLen: 8 });
const n = (name: string): Column => ({ name, typeOid: 1700, typeLen: -1 });
const b = (name: string): Column => ({ name, typeOid: 17, typeLen: -1 });

// ---------------------------------------------------------------------------------------------
// ordering: PgBouncer keeps databases, users and pools in name order (strcmp)

function cmp(a: string, b2: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b2));
}

function sortedDatabases(): PgDatabase[] {
  return [...registry.databases.values()].sort((a, c) => cmp(a.name, c.name));
}

export function sortedPools(): PgPool[] {
  return registry.pools.slice().sort((a, c) => cmp(a.db.name, c.db.name) || cmp(a.user.name, c.user.name));
}

function lbh(db: PgDatabase): string | null {
  return db.hosts.length > 1 ? db.loadBalanceHosts : null;
}

// ---------------------------------------------------------------------------------------------
// STATS, STATS_TOTALS, STATS_AVERAGES, TOTALS

const STAT_NAMES = [
  'server_assignment_count', 'xact_count', 'query_count', 'received', 'sent', 'xact_time',
  'query_time', 'wait_time', 'client_parse_count', 'server_parse_count', 'bind_count',
  'client_login_count',
] as const;

function statValues(s: PoolStats): number[] {
  return [s.serverAssignmentCount, s.xactCount, s.queryCount, s.clientBytes, s.serverBytes, s.xactTime,
    s.queryTime, s.waitTime, s.clientParseCount, s.serverParseCount, s.bindCount, s.clientLoginCount];
}

/** pools grouped per database, databases in name order (only databases that have pools) */
function poolsPerDatabase(): Array<[string, PgPool[]]> {
  const out: Array<[string, PgPool[]]> = [];
  for (const p of sortedPools()) {
    const last = out[out.length - 1];
    if (last !== undefined && last[0] === p.db.name) last[1].push(p);
    else out.push([p.db.name, [p]]);
  }
  return out;
}

function showStats(): ResultSet {
  const cols = [t('database'),
    ...STAT_NAMES.map((s) => n(`total_${s}`)),
    ...['server_assignment_count', 'xact_count', 'query_count', 'recv', 'sent', 'xact_time', 'query_time',
      'wait_time', 'client_parse_count', 'server_parse_count', 'bind_count', 'client_login_count'].map((s) => n(`avg_${s}`))];
  const rows = poolsPerDatabase().map(([db, pools]) =>
    [db, ...statValues(totals(pools)), ...statValues(periodAverage(pools))]);
  return { cols, rows };
}

const STATS_PLAIN_COLS = ['server_assignment_count', 'xact_count', 'query_count', 'bytes_received', 'bytes_sent',
  'xact_time', 'query_time', 'wait_time'];

export function showStatsTotals(): ResultSet {
  const cols = [t('database'), ...[...STATS_PLAIN_COLS, 'client_parse_count', 'server_parse_count', 'bind_count',
    'client_login_count'].map(n)];
  return { cols, rows: poolsPerDatabase().map(([db, pools]) => [db, ...statValues(totals(pools))]) };
}

function showStatsAverages(): ResultSet {
  const cols = [t('database'), ...[...STATS_PLAIN_COLS, 'avg_client_parse_count', 'avg_server_parse_count',
    'avg_bind_count', 'avg_client_login_count'].map(n)];
  return { cols, rows: poolsPerDatabase().map(([db, pools]) => [db, ...statValues(periodAverage(pools))]) };
}

const TOTALS_NAMES = ['server_assignment_count', 'xact_count', 'query_count', 'client_bytes', 'server_bytes',
  'xact_time', 'query_time', 'wait_time', 'ps_client_parse_count', 'ps_server_parse_count', 'ps_bind_count',
  'client_login_count'];

function showTotals(): ResultSet {
  const tot = statValues(totals(registry.pools));
  const avg = statValues(periodAverage(registry.pools));
  const rows: Value[][] = [
    ...TOTALS_NAMES.map((name, k) => [`total_${name}`, tot[k]!]),
    ...TOTALS_NAMES.map((name, k) => [`avg_${name}`, avg[k]!]),
  ];
  return { cols: [t('name'), n('value')], rows };
}

// ---------------------------------------------------------------------------------------------
// CLIENTS, SERVERS, SOCKETS, ACTIVE_SOCKETS

const SOCKET_COLS: Column[] = [
  t('type'), t('user'), t('database'), t('replication'), t('state'), t('addr'), i('port'), t('local_addr'),
  i('local_port'), t('connect_time'), t('request_time'), i('wait'), i('wait_us'), i('close_needed'), t('ptr'),
  t('link'), i('remote_pid'), t('tls'), t('application_name'), i('prepared_statements'), i('id'),
];
const DEBUG_COLS: Column[] = [
  i('recv_pos'), i('pkt_pos'), i('pkt_remain'), i('send_pos'), i('send_remain'), i('pkt_avail'), i('send_avail'),
];

function showTime(us: number): string {
  return formatShowTime(us / 1000);
}

function socketDebug(sock: net.Socket): Value[] {
  // pgbun has no fixed-size iobuf: what is still to be written is the socket's queue
  return [0, 0, 0, 0, 0, 0, sock.writableLength];
}

/** The servers SHOW SOCKETS and SHOW FDS list (not the cancel connections). */
const SOCKET_SERVER_STATES = [ServerState.ACTIVE, ServerState.IDLE, ServerState.USED, ServerState.TESTED, ServerState.LOGIN];

/** SHOW CLIENTS' state: an active client without a server is shown as idle (1.25). */
function clientShowState(c: Client): string {
  return c.state === ClientState.ACTIVE && c.link === null ? 'idle' : CLIENT_STATE_NAMES[c.state].show;
}

function clientRow(c: Client, state: string, now: number, debug: boolean): Value[] {
  const started = c.queryStartUs !== 0 ? c.queryStartUs : c.waitStartUs;
  const wait = started !== 0 ? Math.max(0, now - started) : 0;
  // a request forwarded to a peer is in that peer's pool, whose database is named by its [peers] key
  const db = c.pool !== null ? c.pool.db.name : c.peerPool !== null ? String(c.peerPool.peerId) : '(nodb)';
  const row: Value[] = [
    'C', c.loginUser?.name ?? '(nouser)', db, c.replication, state,
    c.addr, c.port, c.localAddr, c.localPort, showTime(c.connectTimeUs), showTime(c.requestTimeUs),
    Math.floor(wait / 1e6), wait % 1e6, 0, c.ptr, c.link?.ptr ?? '', c.remotePid, c.tlsInfo,
    c.vars.get(APPLICATION_NAME) ?? '', c.prepared?.size ?? 0, c.id,
  ];
  if (debug) row.push(...socketDebug(c.socket));
  return row;
}

function serverRow(s: Server, state: string, now: number, debug: boolean): Value[] {
  const wait = s.queryStartUs !== 0 ? Math.max(0, now - s.queryStartUs) : 0;
  const closeNeeded = s.closeNeeded || s.generation !== s.pool.db.generation ? 1 : 0;
  const row: Value[] = [
    'S', s.pool.user.name, s.pool.db.name, s.replication, state,
    s.addr, s.port, s.isUnix ? 'unix' : s.localAddr, s.localPort, showTime(s.connectTimeUs), showTime(s.requestTimeUs),
    Math.floor(wait / 1e6), wait % 1e6, closeNeeded, s.ptr, s.link?.ptr ?? '', s.backendPid, s.tlsInfo,
    s.vars.get(APPLICATION_NAME) ?? '', s.prepared?.lru.size ?? 0, s.id,
  ];
  if (debug) row.push(...socketDebug(s.socket));
  return row;
}

export function showClients(): ResultSet {
  const now = nowUs();
  const rows: Value[][] = [];
  for (const p of sortedPools()) {
    for (const list of [p.activeClients, p.waitingClients, p.activeCancelReqs, p.waitingCancelReqs]) {
      for (const c of list) rows.push(clientRow(c, clientShowState(c), now, false));
    }
  }
  for (const p of sortedPeerPools()) {
    for (const list of [p.activeCancelReqs, p.waitingCancelReqs]) {
      for (const c of list) rows.push(clientRow(c, clientShowState(c), now, false));
    }
  }
  return { cols: SOCKET_COLS, rows };
}

function showServers(): ResultSet {
  const now = nowUs();
  const rows: Value[][] = [];
  for (const p of sortedPools()) p.forEachServer((s) => rows.push(serverRow(s, SERVER_STATE_NAMES[s.state].show, now, false)));
  return { cols: SOCKET_COLS, rows };
}

/** A socket with data not yet processed or not yet written (ACTIVE_SOCKETS). */
function busy(x: Client | Server): boolean {
  return x.socket.writableLength > 0 || x.stream.midMessage || x.stream.isWaiting;
}

function showSockets(activeOnly: boolean): ResultSet {
  const now = nowUs();
  const rows: Value[][] = [];
  const cl = (c: Client): void => {
    if (!activeOnly || busy(c)) rows.push(clientRow(c, CLIENT_STATE_NAMES[c.state].socket, now, true));
  };
  const sv = (s: Server): void => {
    if (!activeOnly || busy(s)) rows.push(serverRow(s, SERVER_STATE_NAMES[s.state].socket, now, true));
  };
  for (const c of registry.loginClients) cl(c);
  for (const p of sortedPools()) {
    for (const c of p.activeClients) cl(c);
    for (const c of p.waitingClients) cl(c);
    p.forEachServer(sv, SOCKET_SERVER_STATES);
  }
  return { cols: [...SOCKET_COLS, ...DEBUG_COLS], rows };
}

// ---------------------------------------------------------------------------------------------
// POOLS, PEER_POOLS, LISTS, USERS, DATABASES, PEERS

export function showPools(): ResultSet {
  const cols = [t('database'), t('user'), i('cl_active'), i('cl_waiting'), i('cl_active_cancel_req'),
    i('cl_waiting_cancel_req'), i('sv_active'), i('sv_active_cancel'), i('sv_being_canceled'), i('sv_idle'),
    i('sv_used'), i('sv_tested'), i('sv_login'), i('maxwait'), i('maxwait_us'), t('pool_mode'),
    t('load_balance_hosts')];
  const now = nowUs();
  const rows = sortedPools().map((p): Value[] => {
    const first = p.waitingClients.first();
    const maxWait = first !== null && first.waitStartUs !== 0 ? Math.max(0, now - first.waitStartUs) : 0;
    return [p.db.name, p.user.name, p.activeClients.count, p.waitingClients.count, p.activeCancelReqs.count,
      p.waitingCancelReqs.count, p.activeServers.count, p.activeCancelServers.count, p.beingCanceledServers.count,
      p.idleServers.count, p.usedServers.count, p.testedServers.count, p.loginServers.count,
      Math.floor(maxWait / 1e6), maxWait % 1e6, p.poolMode, lbh(p.db)];
  });
  return { cols, rows };
}

function showPeerPools(): ResultSet {
  // a peer has a pool once a cancel request has been forwarded to it
  const rows = sortedPeerPools().map((p): Value[] => [p.peerId, p.activeCancelReqs.count, p.waitingCancelReqs.count,
    p.activeCancelServers.count, p.loginServers.count]);
  return {
    cols: [i('peer_id'), i('cl_active_cancel_req'), i('cl_waiting_cancel_req'), i('sv_active_cancel'), i('sv_login')],
    rows,
  };
}

export function showLists(): ResultSet {
  const rows: Value[][] = [
    ['databases', registry.databases.size],
    ['users', registry.users.size],
    ['peers', peerCount()],
    ['pools', registry.pools.length],
    ['peer_pools', peerPools.size],
    ['free_clients', 0],
    ['used_clients', registry.clientCount],
    ['login_clients', registry.loginClients.count],
    ['free_servers', 0],
    ['used_servers', registry.serverCount],
    ['dns_names', dnsCache.size],
    ['dns_zones', 0],
    ['dns_queries', dnsPending()],
    ['dns_pending', dnsPending()],
  ];
  return { cols: [t('list'), i('items')], rows };
}

/** SHOW USERS pool sizes as PgBouncer prints them: text, `%9d`, '' when the user has none. */
function padded(v: number | null | undefined): string {
  return v === null || v === undefined ? '' : String(v).padStart(9);
}

function showUsers(): ResultSet {
  const cols = [t('name'), t('pool_size'), t('reserve_pool_size'), t('pool_mode'), i('max_user_connections'),
    i('current_connections'), i('max_user_client_connections'), i('current_client_connections')];
  const rows = [...registry.users.values()].sort((a, c) => cmp(a.name, c.name)).map((u): Value[] => [
    u.name, padded(u.def?.pool_size), padded(u.def?.reserve_pool_size), u.def?.pool_mode ?? null,
    u.maxUserConnections, u.serverCount, u.maxUserClientConnections, u.clientCount,
  ]);
  return { cols, rows };
}

export function showDatabases(): ResultSet {
  const cols = [t('name'), t('host'), i('port'), t('database'), t('force_user'), i('pool_size'), i('min_pool_size'),
    i('reserve_pool_size'), i('server_lifetime'), t('pool_mode'), t('load_balance_hosts'), i('max_connections'),
    i('current_connections'), i('max_client_connections'), i('current_client_connections'), i('paused'),
    i('disabled')];
  const rows = sortedDatabases().map((db): Value[] => [
    db.name, db.admin ? null : db.def?.host ?? null, db.admin ? cf.listen_port : db.port, db.dbname,
    db.forcedUser?.name ?? null, db.poolSize, db.minPoolSize, db.reservePoolSize, Math.floor(db.serverLifetime),
    db.admin ? 'statement' : db.def?.pool_mode ?? null, lbh(db), db.maxDbConnections, db.serverCount,
    db.maxDbClientConnections, db.clientCount, db.paused ? 1 : 0, db.disabled ? 1 : 0,
  ]);
  return { cols, rows };
}

function showPeers(): ResultSet {
  const rows = peerList().map((p): Value[] => [p.peer_id, p.host, p.port, p.pool_size ?? cf.default_pool_size]);
  return { cols: [i('peer_id'), t('host'), i('port'), i('pool_size')], rows };
}

// ---------------------------------------------------------------------------------------------
// FDS, CONFIG, MEM, DNS_*, VERSION, STATE

function fdOf(sock: net.Socket): number | null {
  return socketFd(sock);
}

function cancelKey(key: Buffer | null): string {
  return key === null || key.length < 8 ? '0' : key.readBigInt64BE(0).toString();
}

function varsOf(x: Client | Server): Value[] {
  const v = (name: string): string | null => {
    const k = trackedIndex(name);
    return k >= 0 ? x.vars.get(k) : null;
  };
  return [v('client_encoding'), v('standard_conforming_strings'), v('DateStyle'), v('TimeZone')];
}

/**
 * SHOW FDS (admin only): the sockets PgBouncer would hand over with -R. pgbun has no takeover,
 * so the secrets columns (password, SCRAM keys) stay NULL: nothing reads them.
 */
function showFds(): ResultSet {
  const cols = [i('fd'), t('task'), t('user'), t('database'), t('addr'), i('port'), q('cancel'), i('link'),
    t('client_encoding'), t('std_strings'), t('datestyle'), t('timezone'), t('password'), b('scram_client_key'),
    b('scram_server_key')];
  const rows: Value[][] = [];
  for (const l of listenerSockets()) {
    rows.push([l.fd, 'pooler', null, null, l.addr, l.port, '0', 0, null, null, null, null, null, null, null]);
  }
  const linkFd = (x: Client | Server | null): number => (x === null ? 0 : fdOf(x.socket) ?? 0);
  const client = (c: Client): void => {
    const fd = fdOf(c.socket);
    if (fd === null || c.tlsInfo !== '') return;
    rows.push([fd, 'client', c.loginUser?.name ?? null, c.pool?.db.name ?? null, c.addr, c.port,
      cancelKey(c.cancelKey), linkFd(c.link), ...varsOf(c), null, null, null]);
  };
  const server = (s: Server): void => {
    const fd = fdOf(s.socket);
    if (fd === null || s.tlsInfo !== '') return;
    rows.push([fd, 'server', s.pool.user.name, s.pool.db.name, s.addr, s.port, cancelKey(s.backendKey),
      linkFd(s.link), ...varsOf(s), null, null, null]);
  };
  for (const c of registry.loginClients) client(c);
  for (const p of sortedPools()) {
    // as PgBouncer: the console's connections (the -R takeover's own among them) stay behind
    if (p.db.admin) continue;
    for (const c of p.activeClients) client(c);
    for (const c of p.waitingClients) client(c);
    p.forEachServer(server, SOCKET_SERVER_STATES);
  }
  return { cols, rows };
}

export function showConfig(): ResultSet {
  return { cols: [t('key'), t('value'), t('default'), t('changeable')], rows: showConfigRows(cf) };
}

/**
 * SHOW MEM: PgBouncer's slab caches. pgbun allocates with the JS heap, so `size` is a nominal
 * per-object size and `used` the number of live objects of that kind.
 */
function showMem(): ResultSet {
  const conns = registry.clientCount + registry.serverCount;
  const slabs: Array<[string, number, number]> = [
    ['user_cache', 2312, registry.users.size],
    ['credentials_cache', 1064, registry.users.size],
    ['db_cache', 208, registry.databases.size],
    ['peer_cache', 208, peerCount()],
    ['peer_pool_cache', 552, peerPools.size],
    ['pool_cache', 552, registry.pools.length],
    ['outstanding_request_cache', 32, 0],
    ['server_cache', 608, registry.serverCount],
    ['client_cache', 608, registry.clientCount],
    ['iobuf_cache', cf.pkt_buf + 16, conns],
    ['var_list_cache', 16, 0],
    ['server_prepared_statement_cache', 56, 0],
  ];
  return {
    cols: [t('name'), i('size'), i('used'), i('free'), i('memtotal')],
    rows: slabs.map(([name, size, used]) => [name, size, used, 0, size * used]),
  };
}

function showDnsHosts(): ResultSet {
  // the host name cache of pool/dns.ts: seconds left until the entry is looked up again
  const now = nowUs();
  const rows = [...dnsCache.values()].map((e): Value[] => [
    e.host, Math.max(0, Math.floor((e.expiresUs - now) / 1e6)), e.addrs.join(','),
  ]);
  return { cols: [t('hostname'), q('ttl'), t('addrs')], rows };
}

function dnsPending(): number {
  let n = 0;
  for (const e of dnsCache.values()) if (e.pending !== null) n++;
  return n;
}

function showDnsZones(): ResultSet {
  return { cols: [t('zonename'), q('serial'), i('count')], rows: [] };
}

export function showVersion(): ResultSet {
  return { cols: [t('version')], rows: [[VERSION_STRING]] };
}

function showState(): ResultSet {
  const suspended = poolerState.suspended;
  const paused = poolerState.paused && !suspended;
  const yn = (x: boolean): string => (x ? 'yes' : 'no');
  return {
    cols: [t('key'), t('value')],
    rows: [['active', yn(!paused && !suspended)], ['paused', yn(paused)], ['suspended', yn(suspended)]],
  };
}

/** SHOW HELP: a NOTICE, not a result set. The DETAIL lists every command pgbun accepts. */
export const HELP_DETAIL = '\n' + [
  'SHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION',
  'SHOW PEERS|PEER_POOLS',
  'SHOW FDS|SOCKETS|ACTIVE_SOCKETS|LISTS|MEM|STATE',
  'SHOW DNS_HOSTS|DNS_ZONES',
  'SHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS',
  'SET key = arg',
  'RELOAD',
  'PAUSE [<db>]',
  'RESUME [<db>]',
  'DISABLE <db>',
  'ENABLE <db>',
  'RECONNECT [<db>]',
  'KILL [<db>]',
  'KILL_CLIENT <client_id>',
  'SUSPEND',
  'SHUTDOWN',
  'SHUTDOWN WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS',
  'WAIT_CLOSE [<db>]',
].map((l) => '\t' + l).join('\n');

/** SHOW <name> → result set builder; `fds` is admin-only (checked by the caller). */
export const SHOW_MAP: Record<string, () => ResultSet> = {
  clients: showClients,
  config: showConfig,
  databases: showDatabases,
  fds: showFds,
  lists: showLists,
  peers: showPeers,
  peer_pools: showPeerPools,
  pools: showPools,
  servers: showServers,
  sockets: () => showSockets(false),
  active_sockets: () => showSockets(true),
  stats: showStats,
  stats_totals: showStatsTotals,
  stats_averages: showStatsAverages,
  users: showUsers,
  version: showVersion,
  totals: showTotals,
  mem: showMem,
  dns_hosts: showDnsHosts,
  dns_zones: showDnsZones,
  state: showState,
};

/** Settings drivers poke at: one text column named after the parameter, fixed values. */
export const FAKE_PARAMS: ReadonlyArray<[string, string]> = [
  ['client_encoding', 'UTF-8'],
  ['default_transaction_isolation', 'read committed'],
  ['standard_conforming_strings', 'on'],
  ['datestyle', 'ISO'],
  ['timezone', 'GMT'],
];
