// Assigning servers to clients and taking them back (PgBouncer's objects.c): linking,
// releasing, closing and opening connections. State changes themselves go through
// Client.changeState / Server.changeState, which pick the lists.
import { cf } from '../config/current.js';
import { log } from '../log/logger.js';
import { TX_IDLE } from '../protocol/constants.js';
import * as msg from '../protocol/messages.js';
import { nowUs } from './clock.js';
import { ClientState, ServerState } from './state.js';
import { registry, type PgDatabase, type PgPool } from './objects.js';
import { Internal, Server } from './server.js';
import { serverEvents, type ServerEvents } from './server-events.js';
import type { Client } from './client.js';
import { buildSetQuery, VarCache } from './varcache.js';
import { forgetServerStatements, prepared } from './prepared.js';
import { cachedAddress, onDnsChange, resolveHost } from './dns.js';
import { countLoginFailure, limitHits, serverLogins } from '../stats/events.js';
import { onRequest, tell } from '../workers/bus.js';
import { workerSelf } from '../workers/identity.js';
import {
  Held, REFUSED, TABLE_FULL, TABLE_FULL_REASON, claimOwed, claimYield, clearBlocked, noteBlocked, noteStarving,
  releaseServerSlots, starvingTarget, takeServerSlot, yieldDone,
} from './limits.js';

function table(types: string): Uint8Array {
  const t = new Uint8Array(256);
  for (const c of types) t[c.charCodeAt(0)] = 1;
  return t;
}
/** Client -> server message types forwarded without bookkeeping while linked: CopyData, Flush. */
const CLIENT_FAST = table('dH');
/**
 * Server -> client message types forwarded without inspection while linked. Not fast:
 * ReadyForQuery, ParameterStatus, ErrorResponse, CommandComplete and COPY starts change state
 * we track.
 */
const SERVER_FAST = table('DTI12ntsVdAcN');
/** with prepared-statement rewriting every response is matched to its request, except these */
const SERVER_FAST_PREPARED = table('DdANt');

/** global pause state (PAUSE / SUSPEND without a database) */
export const poolerState = {
  paused: false,
  suspended: false,
  shuttingDown: false,
};

// ------------------------------------------------------------------ linking

/** Link a client to a server; forwarding starts now or after the SET batch, if one is needed. */
function link(client: Client, server: Server): boolean {
  const pool = server.pool;
  const now = nowUs();
  if (log.debugEnabled) log.conn('debug', client, `linked to S-${server.ptr}`);
  client.link = server;
  server.link = client;
  if (client.state === ClientState.WAITING) {
    client.endWait(now);
    client.changeState(ClientState.ACTIVE);
  }
  server.changeState(ServerState.ACTIVE);
  server.requestTimeUs = now;
  server.linkEpoch++;
  pool.stats.serverAssignmentCount++;
  // a client still logging in runs its auth_query on the server (auth-query.ts); no SETs
  if (client.authQuery !== null) {
    client.authQuery(server);
    return false;
  }
  const sql = buildSetQuery(client.vars, server.vars);
  if (sql !== null) {
    server.runInternal(Internal.SETVARS, sql);
    return false;
  }
  startForwarding(client, server);
  return true;
}

function startForwarding(client: Client, server: Server): void {
  client.stream.setTarget(server.socket);
  server.stream.setTarget(client.socket);
  client.stream.fastForward = CLIENT_FAST;
  // a replication connection is session-like: its statements are its own
  server.rewriting = server.replication === 'none' && prepared.active(server.pool);
  server.stream.fastForward = server.rewriting ? SERVER_FAST_PREPARED : SERVER_FAST;
}

function unlink(client: Client, server: Server): void {
  if (client.stream.forwardingPartial) server.cutMessage = true;
  client.stream.setTarget(null);
  server.stream.setTarget(null);
  client.stream.fastForward = null;
  server.stream.fastForward = null;
  client.link = null;
  server.link = null;
}

/**
 * A logged-in client sent a packet and has no server. Returns true if it is linked and its
 * packet can be forwarded now; false if it waits (queued, or a SET batch runs first).
 */
export function findServer(client: Client): boolean {
  const pool = client.pool!;
  if (!checkFastFail(client)) return false;
  if (!poolerState.paused && !pool.db.paused) {
    const server = takeIdleServer(pool);
    if (server !== null) return link(client, server);
  }
  client.waitStartUs = nowUs();
  // query_wait_notify: one NOTICE per wait, not per connection
  client.waitNotified = false;
  client.changeState(ClientState.WAITING);
  if (!poolerState.paused && !pool.db.paused) launchNewConnection(pool);
  return false;
}

/**
 * The pool's last server connect or login failed and it has no server: a client needing one is
 * not queued but gets the cached error at once (PgBouncer's check_fast_fail). That holds until
 * a login succeeds, also once server_login_retry is over: then the client that finds the pool so
 * still gets the error, and its request starts the next attempt. The janitor only connects for
 * waiting clients, and there are none, so without it the pool would never try again.
 */
function checkFastFail(client: Client): boolean {
  const pool = client.pool!;
  if (pool.lastLoginError === null) return true;
  if (pool.serverCount - pool.loginServers.count > 0) return true;
  disconnectClient(client, true,
    `server login has been failing, cached error: ${pool.lastLoginError.message} (server_login_retry)`);
  launchNewConnection(pool);
  return false;
}

/** An idle server to use now, or null; servers due a health check are checked first. */
function takeIdleServer(pool: PgPool): Server | null {
  for (;;) {
    const s = pool.idleServers.first();
    if (s === null) break;
    if (s.closeNeeded || s.generation !== pool.db.generation) {
      disconnectServer(s, true, 'database configuration changed');
      continue;
    }
    return s;
  }
  // used servers need server_check_query before reuse
  const u = pool.usedServers.first();
  if (u !== null) {
    if (cf.server_check_query === '') return useServer(u);
    u.changeState(ServerState.TESTED);
    u.runInternal(Internal.CHECK, cf.server_check_query === '<empty>' ? '' : cf.server_check_query);
  }
  return null;
}

function useServer(s: Server): Server {
  return s;
}

/** Give idle servers to waiting clients, oldest client first. */
export function assignWaitingClients(pool: PgPool): void {
  if (poolerState.paused || pool.db.paused) return;
  // restart from the head each time: linking resumes the client, which may run code that
  // changes this list (a held Terminate releases the server again, and so on)
  for (;;) {
    const c = firstWaitingForServer(pool);
    if (c === null) break;
    const s = takeIdleServer(pool);
    if (s === null) break;
    if (link(c, s)) c.stream.resume();
  }
  if (hasWaitingForServer(pool)) launchNewConnection(pool);
  else if (pool.blockedSlot >= 0 && pool.waitingClients.count === 0) clearBlocked(pool);
}

function firstWaitingForServer(pool: PgPool): Client | null {
  for (let c = pool.waitingClients.first(); c !== null; c = c.listNext as Client | null) {
    if (c.state === ClientState.WAITING) return c;
  }
  return null;
}

function hasWaitingForServer(pool: PgPool): boolean {
  return firstWaitingForServer(pool) !== null;
}

// ------------------------------------------------------------------ server events

/** Login finished (ReadyForQuery): the first one of a pool provides the welcome. */
export function serverLoginDone(server: Server, params: Array<[string, string]>): void {
  const pool = server.pool;
  // RECONNECT or a configuration change came during this login (PgPool.tagDirty): its
  // parameters are the old ones, so it is no welcome; the clients waiting get a new login
  if (server.closeNeeded || server.generation !== pool.db.generation) {
    disconnectServer(server, true, 'connect parameters changed');
    if (pool.waitingClients.count > 0) launchNewConnection(pool);
    return;
  }
  pool.lastLoginError = null;
  pool.lastLoginFailedUs = 0;
  pool.lastConnectFailedUs = 0;
  if (server.replication !== 'none') {
    replicationLoginDone(server, params);
    return;
  }
  if (pool.welcome === null) {
    pool.welcome = params;
    pool.welcomeVars = new VarCache();
    pool.welcomeVars.copyFrom(server.vars);
  }
  welcomeWaitingClients(pool);
  const cq = pool.db.def?.connect_query;
  if (cq) {
    server.changeState(ServerState.TESTED);
    server.runInternal(Internal.CONNECT_QUERY, cq);
    return;
  }
  serverReady(server);
}

/** Clients that authenticated before the pool had a welcome get it now. */
function welcomeWaitingClients(pool: PgPool): void {
  for (const c of pool.waitingClients.toArray()) {
    if (c.state === ClientState.WAITING_LOGIN && !c.closed && c.replication === 'none') c.finishLogin();
  }
}

/**
 * Server login failed. An ErrorResponse from the server is relayed to every client waiting in
 * the pool (with the server's SQLSTATE) and cached for server_login_retry.
 */
export function serverLoginFailed(server: Server, sqlstate: string, message: string, fromServer: boolean): void {
  const pool = server.pool;
  serverLogins.failed++;
  if (server.replication !== 'none') {
    // what the server refused is the replication client's request (no replication privilege,
    // no HBA rule for it): only that client fails, with PgBouncer's `login failed`, and the
    // pool's other clients and their logins are not affected
    disconnectServer(server, false, fromServer ? 'login failed' : message);
    return;
  }
  // record the failure first: closing the server looks for a replacement otherwise
  if (sqlstate === '57P03') {
    // the database is starting up or shutting down: clients already waiting keep waiting for a
    // retry after server_login_retry; newcomers meanwhile are told at once (checkFastFail)
    serverConnectFailed(server, message);
    return;
  }
  const err = { sqlstate: fromServer ? sqlstate : '08P01', message };
  pool.lastLoginError = err;
  pool.lastLoginFailedUs = nowUs();
  // every client waiting for this pool gets the server's error now (PgBouncer's
  // kill_pool_logins): those waiting for the welcome, those waiting to run auth_query
  // (auth-query.ts), and those queued for a server, which would otherwise wait out
  // query_wait_timeout for a login that keeps failing. Then the server is closed with the same
  // reason, as PgBouncer 1.25 logs it: one failed login, one line per client and one for the server.
  for (const c of pool.waitingClients.toArray()) disconnectClient(c, true, message, err.sqlstate);
  disconnectServer(server, false, message);
}

/**
 * A new server connection failed before its login (TCP connect, DNS, TLS, server_connect_timeout):
 * no new attempt before server_login_retry, and meanwhile a client that needs a server while the
 * pool has none is told at once (checkFastFail) instead of queueing for query_wait_timeout, as
 * PgBouncer does. Clients already waiting keep waiting: the next attempt may succeed.
 */
export function serverConnectFailed(server: Server, reason: string): void {
  const pool = server.pool;
  const now = nowUs();
  pool.lastConnectFailedUs = now;
  pool.lastLoginError = { sqlstate: '08P01', message: reason };
  pool.lastLoginFailedUs = now;
  disconnectServer(server, false, reason);
}

/** A server with nothing left to do goes idle and, if anyone waits, to a client. */
function serverReady(server: Server): void {
  const pool = server.pool;
  if (!server.ready) {
    disconnectServer(server, true, 'server not ready after internal query');
    return;
  }
  if (server.closeNeeded || server.generation !== pool.db.generation) {
    disconnectServer(server, true, 'database configuration changed');
    return;
  }
  if (server.cancelsInFlight > 0) {
    server.changeState(ServerState.BEING_CANCELED);
    return;
  }
  if (poolerState.paused || pool.db.paused) {
    disconnectServer(server, true, 'pause mode');
    return;
  }
  server.requestTimeUs = nowUs();
  if (workerSelf.table !== null && server.state !== ServerState.LOGIN) {
    // another loop's clients waited long for a server of this limit and asked for the next one
    const slot = claimOwed(pool);
    if (slot >= 0) {
      yieldServer(server, slot);
      return;
    }
  }
  if (cf.server_check_delay === 0 && cf.server_check_query !== '' && server.state === ServerState.ACTIVE) {
    server.changeState(ServerState.USED);
  } else {
    // LIFO, or round robin with server_round_robin: Server.changeState's rule
    server.changeState(ServerState.IDLE);
  }
  assignWaitingClients(pool);
  if (workerSelf.table !== null) yieldIdle(pool);
}

/** The results of a reset/check/SET/connect_query were consumed up to ReadyForQuery. */
export function internalQueryDone(server: Server, kind: Internal, err: string | null): void {
  switch (kind) {
    case Internal.SETVARS: {
      const client = server.link;
      if (err !== null) {
        log.conn('warning', server, `SET failed: ${err}`);
        if (client !== null) disconnectClient(client, true, 'invalid server parameter');
        disconnectServer(server, true, 'invalid server parameter');
        return;
      }
      if (client === null) {
        releaseServer(server);
        return;
      }
      client.vars.adoptCanonical(server.vars);
      startForwarding(client, server);
      client.stream.resume();
      return;
    }
    case Internal.RESET:
    case Internal.CHECK:
      if (err !== null) {
        disconnectServer(server, true, kind === Internal.RESET ? 'reset query failed' : 'server check query failed');
        return;
      }
      serverReady(server);
      return;
    case Internal.CONNECT_QUERY:
      if (err !== null) log.conn('warning', server, `connect_query failed: ${err}`);
      serverReady(server);
      return;
    default:
      return;
  }
}

/**
 * ReadyForQuery reached the client (`done`: the server owes nothing more, Server.noteReadyForQuery):
 * count the query and transaction, and maybe release the server.
 */
export function onReadyForQuery(server: Server, client: Client, status: number, done: boolean, now: number): void {
  const pool = server.pool;
  if (done) {
    if (client.queryStartUs !== 0) {
      pool.stats.queryCount++;
      pool.stats.queryTime += now - client.queryStartUs;
      pool.latency.query.observe(now - client.queryStartUs);
      client.queryStartUs = 0;
    }
    if (status === TX_IDLE && client.xactStartUs !== 0) {
      pool.stats.xactCount++;
      pool.stats.xactTime += now - client.xactStartUs;
      pool.latency.xact.observe(now - client.xactStartUs);
      client.xactStartUs = 0;
    }
  }
  const mode = server.replication === 'none' ? pool.poolMode : 'session';
  if (mode === 'session') {
    if (cf.server_fast_close && done && status === TX_IDLE &&
      (server.closeNeeded || server.generation !== pool.db.generation)) {
      disconnectClient(client, true, 'database configuration changed');
    }
    return;
  }
  if (mode === 'statement' && status !== TX_IDLE) {
    // the server first, as PgBouncer: it tells its client the same reason
    disconnectServer(server, true, 'transaction blocks not allowed in statement pooling mode');
    return;
  }
  if (done) {
    if (server.ready) releaseServer(server);
    // the client is still sending a message the server no longer reads (late CopyData after a
    // failed COPY): release once it is whole, so that the server is not left mid-message
    else if (client.stream.forwardingPartial) client.stream.wantBoundary = true;
  }
}

/** A client's partly forwarded message is now complete: release the server if it waited for that. */
export function onClientBoundary(client: Client): void {
  const server = client.link;
  if (server !== null && server.replication === 'none' && server.pool.poolMode !== 'session' && server.ready) releaseServer(server);
}

/**
 * Take a server back from its client. A server that is not at a clean transaction boundary
 * is closed, never reused: nothing of one client's transaction may reach another.
 */
export function releaseServer(server: Server): void {
  const pool = server.pool;
  const client = server.link;
  if (log.debugEnabled) log.conn('debug', server, client !== null ? `released by C-${client.ptr}` : 'released');
  if (client !== null) unlink(client, server);
  if (server.replication !== 'none') {
    disconnectServer(server, true, 'replication client was closed');
    return;
  }
  if (!server.ready) {
    disconnectServer(server, true, 'unclean server');
    return;
  }
  if (server.closeNeeded || server.generation !== pool.db.generation) {
    disconnectServer(server, true, 'database configuration changed');
    return;
  }
  const reset = cf.server_reset_query;
  if (reset !== '' && (pool.poolMode === 'session' || cf.server_reset_query_always)) {
    server.changeState(ServerState.TESTED);
    server.runInternal(Internal.RESET, reset);
    return;
  }
  serverReady(server);
}

// ------------------------------------------------------------------ closing

/** Close a server connection; a linked client is told why (FATAL with the same reason). */
export function disconnectServer(server: Server, notify: boolean, reason: string): void {
  if (server.closed) return;
  server.closed = true;
  const pool = server.pool;
  if (cf.log_disconnections) {
    log.conn('log', server, `closing because: ${reason} (age=${server.ageSeconds()}s)`);
  }
  const client = server.link;
  if (client !== null) {
    unlink(client, server);
    // a client still logging in (its auth_query ran here) is told only PgBouncer's generic
    // message; the reason is in the server's log line. A replication client waiting for its own
    // server counts as logged in there (PgBouncer: `login failed` when that server's login fails)
    disconnectClient(client, true, client.loggedIn || server.replication !== 'none' ? reason : 'bouncer config error');
  }
  server.stream.stop();
  forgetServerStatements(server);
  const sock = server.socket;
  let gone = true;
  if (notify && !sock.destroyed && sock.writable && server.state !== ServerState.LOGIN && server.cancelTarget === null) {
    if (server.lingers) {
      endLingering(server);
      gone = false;
    } else {
      sock.end(msg.TERMINATE_MSG, () => sock.destroy());
    }
  } else {
    sock.destroy();
  }
  const wasCounted = server.cancelTarget === null;
  server.changeState(ServerState.FREE);
  if (wasCounted) {
    pool.db.serverCount--;
    pool.user.serverCount--;
    registry.serverCount--;
    if (gone) freeServerSlots(server);
  }
  const target = server.cancelTarget;
  if (target !== null) {
    server.cancelTarget = null;
    target.cancelsInFlight--;
    if (target.cancelsInFlight === 0 && target.state === ServerState.BEING_CANCELED && !target.closed) serverReady(target);
    const cc = server.cancelClient;
    server.cancelClient = null;
    if (cc !== null) disconnectClient(cc, false, reason);
    launchWaitingCancels(pool);
  }
  if (hasWaitingForServer(pool)) launchNewConnection(pool);
  if (wasCounted) launchReplicationServers(pool);
}

/** Close a client; its server is released if clean, else closed. */
export function disconnectClient(client: Client, notify: boolean, reason: string, sqlstate = '08P01'): void {
  if (client.closed) return;
  client.closed = true;
  if (notify && client.state === ClientState.LOGIN) {
    const u = client.loginUser;
    countLoginFailure(reason, u !== null && (u.inAuthFile || u.secret !== null));
  }
  if (cf.log_disconnections && !client.silent) {
    log.conn('log', client, `closing because: ${reason} (age=${client.ageSeconds()}s)`);
  }
  // after `closing because`, as PgBouncer logs them
  if (notify && reason !== '' && cf.log_pooler_errors) log.conn('warning', client, `pooler error: ${reason}`);
  const server = client.link;
  if (server !== null) {
    if (server.replication !== 'none') {
      // never reused; Terminate unless the client left PostgreSQL in the middle of a message
      const cut = client.stream.forwardingPartial;
      unlink(client, server);
      disconnectServer(server, !cut, 'replication client was closed');
    } else if (server.ready) {
      releaseServer(server);
    } else {
      unlink(client, server);
      disconnectServer(server, true, server.pendingRfq > 0 || server.unsynced || server.inCopy
        ? 'client disconnected with query in progress'
        : 'client disconnect while server was not ready');
    }
  }
  client.onClosed?.(notify, reason, sqlstate);
  client.release(notify && reason !== '' ? msg.fatal(reason, sqlstate) : null);
}

// ------------------------------------------------------------------ new connections

/** Reserve pool: allowed once the oldest waiting client waited reserve_pool_timeout. */
function reserveAllowed(pool: PgPool): boolean {
  if (pool.reservePoolSize <= 0) return false;
  const first = pool.waitingClients.first();
  if (first === null || first.waitStartUs === 0) return false;
  return cf.reserve_pool_timeout > 0 && nowUs() - first.waitStartUs >= cf.reserve_pool_timeout * 1e6;
}

/** Close one idle server of a pool matching `pred`, but `except`, to make room for a server of `forPool`. */
function evictIdle(pred: (p: PgPool) => boolean, except: PgPool | null, forPool: PgPool): boolean {
  let victim: Server | null = null;
  for (const p of registry.pools) {
    if (p === except || !pred(p)) continue;
    const s = p.idleServers.tail ?? p.usedServers.tail;
    if (s !== null && (victim === null || s.requestTimeUs < victim.requestTimeUs)) victim = s;
  }
  if (victim === null) return false;
  // workers > 1: its slots are free once PostgreSQL has let it go (endLingering), then this loop
  // launches again; with one loop they are free at once, and the caller goes on
  if (workerSelf.table !== null) {
    victim.lingers = true;
    victim.roomFor = forPool;
    forPool.roomPending++;
  }
  disconnectServer(victim, true, 'evicted');
  return true;
}

// ------------------------------------------------------------------ moving quotas (workers > 1)

/** how long a server given up to another loop may take to close before it is cut off */
const GIVE_UP_CLOSE_MS = 2000;

/**
 * Give idle servers of the pool up to other loops whose clients wait for a server that a limit
 * of this pool, its database or its user keeps from them, while no client of this loop waits
 * for one (limits.ts, "Moving quotas").
 */
function yieldIdle(pool: PgPool): void {
  while (pool.waitingClients.count === 0) {
    const s = pool.idleServers.tail ?? pool.usedServers.tail;
    if (s === null) return;
    const slot = claimYield(pool);
    if (slot < 0) return;
    yieldServer(s, slot);
  }
}

function yieldServer(server: Server, slot: number): void {
  server.yieldSlot = slot;
  server.lingers = true;
  disconnectServer(server, true, 'evicted');
}

/**
 * A server closed to make room (workers > 1): Terminate, and its slots are free only once
 * PostgreSQL has closed the connection, so that the server opened in its place, in this loop
 * (the pool it was evicted for launches then) or another (told by releaseServerSlots), never
 * runs beside it.
 */
function endLingering(server: Server): void {
  const sock = server.socket;
  sock.once('close', () => {
    const forPool = server.roomFor;
    freeServerSlots(server);
    if (forPool !== null) launchForWaiting(forPool);
  });
  sock.end(msg.TERMINATE_MSG);
  // the end of the connection is read even if reading had been paused
  sock.resume();
  setTimeout(() => {
    if (!sock.destroyed) sock.destroy();
  }, GIVE_UP_CLOSE_MS).unref();
}

/** The server is closed: its shared slots are given back, once (workers > 1). */
function freeServerSlots(server: Server): void {
  const held = server.sharedHeld;
  if (held !== 0) {
    server.sharedHeld = 0;
    releaseServerSlots(server.pool, held, true);
  }
  if (server.yieldSlot >= 0) {
    yieldDone(server.yieldSlot);
    server.yieldSlot = -1;
  }
  if (server.roomFor !== null) {
    server.roomFor.roomPending--;
    server.roomFor = null;
  }
}

/** New servers for the clients waiting in the pool, as the janitor opens them. */
function launchForWaiting(pool: PgPool): void {
  let pooled = false;
  for (let c = pool.waitingClients.first(); c !== null && !pooled; c = c.listNext as Client | null) {
    pooled = c.replication === 'none' || c.state === ClientState.WAITING;
  }
  if (pooled) launchNewConnection(pool);
  launchReplicationServers(pool);
}

/**
 * Janitor, workers > 1: forget a wait that is over, give idle servers up to loops that wait,
 * and ask for a server for clients that have waited long on a limit (limits.starvingTarget).
 */
export function shareQuotas(pool: PgPool, now: number): void {
  // nobody waits, or they could not use a server given up for them now (paused, or the pool's
  // logins fail and are retried later): other loops keep theirs
  if (pool.blockedSlot >= 0 && (pool.waitingClients.count === 0 || cannotLaunch(pool, now))) clearBlocked(pool);
  yieldIdle(pool);
  const target = starvingTarget(pool, now);
  if (target >= 0) tell(target, 'limits.starving', pool.blockedSlot);
}

function cannotLaunch(pool: PgPool, now: number): boolean {
  const retryUs = cf.server_login_retry * 1e6;
  return poolerState.paused || poolerState.suspended || pool.db.paused ||
    pool.lastLoginFailedUs !== 0 && now - pool.lastLoginFailedUs < retryUs ||
    pool.lastConnectFailedUs !== 0 && now - pool.lastConnectFailedUs < retryUs;
}

// another loop's clients wait for a server that a limit keeps from them
onRequest('limits.wanted', () => {
  for (const p of registry.pools) yieldIdle(p);
});
// a server that counted against a limit closed in another loop: clients waiting on one try now
onRequest('limits.freed', () => {
  for (const p of registry.pools.slice()) if (p.blockedSlot >= 0) launchForWaiting(p);
});
// another loop's clients waited long: the next server of that limit released here goes to them
onRequest('limits.starving', (slot) => {
  noteStarving(slot as number);
});

/**
 * Open one more server connection for the pool if every limit allows it (`forMinPoolSize`: the
 * janitor's min_pool_size upkeep, which stops at min_pool_size).
 */
export function launchNewConnection(pool: PgPool, forMinPoolSize = false): void {
  const db = pool.db;
  if (db.admin || poolerState.shuttingDown && !hasWaitingForServer(pool)) return;
  // PAUSE/SUSPEND (admin console, SIGUSR1): no new servers until RESUME, else a server released
  // and closed in pause mode would be replaced at once, over and over (control.ts)
  if (poolerState.paused || poolerState.suspended || db.paused) return;
  // one login at a time per pool (a replication client's own server is not one of the pool's)
  if (pool.loginServers.count > 0 && pooledLoginInFlight(pool)) return;
  // workers > 1: a server is closing to make room for this pool's next one (evictIdle)
  if (pool.roomPending > 0) return;
  const now = nowUs();
  const retryUs = cf.server_login_retry * 1e6;
  if (pool.lastLoginFailedUs !== 0 && now - pool.lastLoginFailedUs < retryUs) return;
  if (pool.lastConnectFailedUs !== 0 && now - pool.lastConnectFailedUs < retryUs) return;
  const size = pool.poolSize;
  // a pool without a welcome (new, or tagged dirty by RECONNECT or a configuration change) may
  // go over pool_size for it, as in PgBouncer: its servers may all be old ones waiting to close.
  // With workers > 1 only in a loop that has servers of the pool: one new to it waits for room
  // like any other, rather than every loop going over once.
  const overForWelcome = pool.welcome === null && (workerSelf.table === null || pool.serverCount > 0);
  let held = takeServerSlot(pool, Held.POOL, forMinPoolSize ? pool.minPoolSize : overForWelcome ? 0 : size);
  if (held === REFUSED) {
    if (forMinPoolSize || !reserveAllowed(pool) ||
      (held = takeServerSlot(pool, Held.POOL, size + pool.reservePoolSize)) === REFUSED) {
      noteBlocked(pool, Held.POOL);
      return;
    }
    log.conn('log', firstWaiting(pool) ?? { logPrefix: () => `${db.name}/${pool.user.name}` },
      'taking connection from reserve_pool');
  }
  if (held === TABLE_FULL) {
    noRoomInTable(pool);
    return;
  }
  held = takeDbUserSlots(pool, held, false);
  if (held < 0) return;
  openServer(pool, null, held);
  clearBlocked(pool);
}

/** an idle server was closed to make room: look again */
const ROOM_EVICTED = -3;
/** workers > 1: an idle server is closing to make room: wait for it (endLingering) */
const ROOM_FREEING = -4;

/**
 * max_db_connections and max_user_connections for one more server of `pool`, whose pool slot
 * is taken (`held`): at a limit an idle server of another pool of the database or user is
 * closed to make room, if there is one (for a replication client's server one of its own pool
 * too, and then ROOM_EVICTED asks to look again, as closing may have served it; with workers > 1
 * ROOM_FREEING waits for it to close). Returns `held` with the slots taken, or REFUSED /
 * TABLE_FULL / ROOM_EVICTED / ROOM_FREEING with `held` given back.
 */
function takeDbUserSlots(pool: PgPool, held: number, replication: boolean): number {
  const db = pool.db;
  const user = pool.user;
  let r = takeServerSlot(pool, Held.DB, db.maxDbConnections);
  if (r === REFUSED && evictIdle((p) => p.db === db, replication ? null : pool, pool)) r = afterEvict(pool, Held.DB, replication);
  if (r < 0) return refuseServer(pool, held, r, Held.DB);
  held |= r;
  r = takeServerSlot(pool, Held.USER, user.maxUserConnections);
  if (r === REFUSED && evictIdle((p) => p.user === user, replication ? null : pool, pool)) r = afterEvict(pool, Held.USER, replication);
  if (r < 0) return refuseServer(pool, held, r, Held.USER);
  return held | r;
}

function afterEvict(pool: PgPool, kind: Held.DB | Held.USER, replication: boolean): number {
  if (pool.roomPending > 0) return ROOM_FREEING;
  if (replication) return ROOM_EVICTED;
  return takeServerSlot(pool, kind, kind === Held.DB ? pool.db.maxDbConnections : pool.user.maxUserConnections);
}

function refuseServer(pool: PgPool, held: number, r: number, kind: Held.DB | Held.USER): number {
  releaseServerSlots(pool, held, false);
  if (r === TABLE_FULL) {
    noRoomInTable(pool);
  } else if (r === REFUSED) {
    if (kind === Held.DB) limitHits.max_db_connections++;
    else limitHits.max_user_connections++;
    noteBlocked(pool, kind);
  }
  return r;
}

const tableFullLogged = new WeakSet<PgPool>();

/**
 * workers > 1 and the shared counters have no slot left for the pool, its database or its user:
 * its limits cannot be kept over the loops, so it gets no server and its waiting clients are
 * told why rather than left to time out.
 */
function noRoomInTable(pool: PgPool): void {
  if (!tableFullLogged.has(pool)) {
    tableFullLogged.add(pool);
    log.error(`${pool.db.name}/${pool.user.name}: the counters shared by the workers have no room left for this pool, its database or user; its clients are refused`);
  }
  for (const c of pool.waitingClients.toArray()) disconnectClient(c, true, TABLE_FULL_REASON);
}

function firstWaiting(pool: PgPool): Client | null {
  return pool.waitingClients.first();
}

/** Choose the host for a new connection (load_balance_hosts). null = Unix socket dir. */
function pickHost(db: PgDatabase): string | null {
  if (db.hosts.length === 0) return null;
  const h = db.hosts[db.hostIndex % db.hosts.length]!;
  if (db.loadBalanceHosts === 'round-robin') db.hostIndex = (db.hostIndex + 1) % db.hosts.length;
  return h;
}

/**
 * A new server for the pool, or of its own for a replication client (`owner`); `held`: what it
 * took in the shared counters (workers > 1), given back when it closes.
 */
function openServer(pool: PgPool, owner: Client | null, held: number): Server {
  const server = new Server(pool);
  server.sharedHeld = held;
  if (owner !== null) {
    // linked from the start: the client is told why if the login fails, and leaving closes it
    server.replication = owner.replication;
    server.startupExtra = owner.replicationStartupParams();
    server.link = owner;
    owner.link = server;
  }
  server.changeState(ServerState.LOGIN);
  pool.db.serverCount++;
  pool.user.serverCount++;
  registry.serverCount++;
  const host = pickHost(pool.db);
  if (host === null || host.startsWith('/') || host.startsWith('@')) {
    server.connect(host, pool.db.port);
    return server;
  }
  const ip = cachedAddress(host);
  if (ip !== undefined) {
    server.connect(host, pool.db.port, ip);
    return server;
  }
  // a name to look up first; the server counts as logging in meanwhile
  server.connectHost = host;
  server.addr = host;
  server.port = pool.db.port;
  void resolveHost(host).then((addr) => {
    if (server.closed) return;
    if (addr === null) {
      // like a failed connect: with load_balance_hosts = disable the next host is tried next
      advanceHost(pool.db);
      serverConnectFailed(server, 'server DNS lookup failed');
      return;
    }
    server.connect(host, pool.db.port, addr);
  });
  return server;
}

// servers connected to an address a name no longer has are closed when released
onDnsChange((host, gone) => {
  for (const p of registry.pools) {
    p.forEachServer((s) => {
      if (s.connectHost === host && gone.includes(s.addr)) {
        s.closeNeeded = true;
        if (s.state === ServerState.IDLE || s.state === ServerState.USED) disconnectServer(s, true, 'server DNS address changed');
      }
    }, [ServerState.IDLE, ServerState.USED, ServerState.ACTIVE, ServerState.TESTED]);
  }
});

/** With load_balance_hosts=disable, a failed connect moves on to the next host. */
export function advanceHost(db: PgDatabase): void {
  if (db.loadBalanceHosts === 'disable' && db.hosts.length > 1) db.hostIndex = (db.hostIndex + 1) % db.hosts.length;
}

// ------------------------------------------------------------------ replication

/*
 * A client with `replication` in its startup packet (PgBouncer 1.23+) gets a server of its own,
 * started with the client's replication mode, tracked parameters and options: PostgreSQL's
 * walsender keeps state no other client may see (a streaming position, slots, a snapshot), so
 * such a server is never pooled. It is linked to its client from the moment it is made, in every
 * pool_mode behaves as in session mode, is never idle or reset, and is closed when its client
 * leaves (as the client is when the server goes). It counts against pool_size,
 * max_db_connections and max_user_connections like any server; when the pool is full, an idle
 * server of the pool is closed to make room (`evicted`), else the client waits for a free slot.
 */

/** Open servers for the pool's replication clients that wait for one, as far as the limits allow. */
export function launchReplicationServers(pool: PgPool): void {
  const db = pool.db;
  if (db.admin || poolerState.paused || poolerState.suspended || db.paused || pool.roomPending > 0) return;
  const now = nowUs();
  const retryUs = cf.server_login_retry * 1e6;
  if (pool.lastLoginFailedUs !== 0 && now - pool.lastLoginFailedUs < retryUs) return;
  if (pool.lastConnectFailedUs !== 0 && now - pool.lastConnectFailedUs < retryUs) return;
  for (;;) {
    let client: Client | null = null;
    for (let c = pool.waitingClients.first(); c !== null; c = c.listNext as Client | null) {
      if (c.wantsReplicationServer) {
        client = c;
        break;
      }
    }
    if (client === null) return;
    const room = replicationRoom(pool);
    // closing a server launches again (disconnectServer): look for a waiting client anew
    if (room === ROOM_EVICTED) continue;
    if (room < 0) return;
    openServer(pool, client, room);
    clearBlocked(pool);
  }
}

/**
 * Whether one more server may be opened for a replication client: the slots taken for it (0 or
 * more, see openServer), ROOM_EVICTED (an idle server was closed to make room: check again) or
 * below 0 (wait for a server to close: ROOM_FREEING, one closing now).
 */
function replicationRoom(pool: PgPool): number {
  const db = pool.db;
  const size = pool.poolSize;
  let held = takeServerSlot(pool, Held.POOL, size);
  if (held === REFUSED) {
    if (evictIdle((p) => p === pool, null, pool)) return pool.roomPending > 0 ? ROOM_FREEING : ROOM_EVICTED;
    if (!reserveAllowed(pool) || (held = takeServerSlot(pool, Held.POOL, size + pool.reservePoolSize)) === REFUSED) {
      noteBlocked(pool, Held.POOL);
      return REFUSED;
    }
    log.conn('log', pool.waitingClients.first() ?? { logPrefix: () => `${db.name}/${pool.user.name}` },
      'taking connection from reserve_pool');
  }
  if (held === TABLE_FULL) {
    noRoomInTable(pool);
    return TABLE_FULL;
  }
  return takeDbUserSlots(pool, held, true);
}

/** A login of the pool's own (not a replication client's server) is in progress. */
function pooledLoginInFlight(pool: PgPool): boolean {
  for (let s = pool.loginServers.first(); s !== null; s = s.listNext as Server | null) {
    if (s.replication === 'none') return true;
  }
  return false;
}

/** A replication client's server logged in: welcome the client with its parameters and start. */
function replicationLoginDone(server: Server, params: Array<[string, string]>): void {
  const client = server.link;
  if (client === null || client.closed) {
    disconnectServer(server, true, 'replication client was closed');
    return;
  }
  server.changeState(ServerState.ACTIVE);
  server.requestTimeUs = nowUs();
  server.linkEpoch++;
  server.pool.stats.serverAssignmentCount++;
  // the welcome goes out before anything the server sends from now on; messages the client
  // sent early are fed to its stream by finishReplicationLogin and forwarded
  startForwarding(client, server);
  client.finishReplicationLogin(params, server.vars);
}

// ------------------------------------------------------------------ cancel

/**
 * A CancelRequest for a linked client: a new connection to the same server address carries
 * PostgreSQL's key for the server the client is linked to right now.
 */
export function startCancel(cancelClient: Client, target: Client): void {
  const server = target.link;
  const pool = target.pool!;
  if (server === null || !server.hasBackendKey) {
    disconnectClient(cancelClient, false, 'cancel request for idle client');
    return;
  }
  cancelClient.cancelFor = target;
  // at most 2 x pool_size cancel connections at once; the rest wait (cancel_wait_timeout)
  const size = pool.poolSize;
  if (size > 0 && pool.activeCancelServers.count >= 2 * size) {
    cancelClient.changeState(ClientState.WAITING_CANCEL);
    return;
  }
  openCancel(cancelClient, server);
}

function openCancel(cancelClient: Client, server: Server): void {
  const pool = server.pool;
  cancelClient.changeState(ClientState.ACTIVE_CANCEL);
  const cs = new Server(pool, true);
  cs.cancelTarget = server;
  cs.cancelEpoch = server.linkEpoch;
  cs.cancelClient = cancelClient;
  server.cancelsInFlight++;
  cs.changeState(ServerState.ACTIVE_CANCEL);
  cs.connect(server.isUnix ? server.connectHost : server.addr, server.port);
}

/** A cancel connection finished: start the next queued cancel of the pool. */
function launchWaitingCancels(pool: PgPool): void {
  const size = pool.poolSize;
  for (;;) {
    if (size > 0 && pool.activeCancelServers.count >= 2 * size) return;
    const c = pool.waitingCancelReqs.first();
    if (c === null) return;
    const target = c.cancelFor;
    const server = target?.link ?? null;
    if (target === null || target.closed || server === null || !server.hasBackendKey) {
      disconnectClient(c, false, 'cancel request for idle client');
      continue;
    }
    openCancel(c, server);
  }
}

/**
 * The cancel connection is up: send the key, unless the server moved on meanwhile. The cancel
 * is done when PostgreSQL closes the connection (it has signalled the backend by then); only
 * then may the server be given to another client (Server.onSocketClose).
 */
export function sendCancel(cs: Server): void {
  const target = cs.cancelTarget!;
  if (target.closed || target.linkEpoch !== cs.cancelEpoch || target.link === null) {
    disconnectServer(cs, false, 'cancel request no longer needed');
    return;
  }
  cs.cancelSent = true;
  cs.socket.end(msg.cancelRequest(target.backendKey!));
}

// Server connections report to these (server-events.ts), without importing this module.
Object.assign(serverEvents, {
  disconnect: disconnectServer,
  loginFailed: serverLoginFailed,
  loginDone: serverLoginDone,
  connectFailed: serverConnectFailed,
  advanceHost,
  readyForQuery: onReadyForQuery,
  internalDone: internalQueryDone,
  sendCancel,
} satisfies ServerEvents);
