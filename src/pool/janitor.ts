// The one periodic task (PgBouncer's janitor, every ~1/3 s): every client and query timeout, server
// health (check delay, lifetime, idle timeout), min_pool_size upkeep, reserve pool, retries
// after failed logins, auto-database expiry. One timer for the whole process, not one per
// connection.
import { cf } from '../config/current.js';
import * as msg from '../protocol/messages.js';
import { TX_IDLE } from '../protocol/constants.js';
import { log } from '../log/logger.js';
import { nowUs } from './clock.js';
import { registry, type PgPool } from './objects.js';
import { ClientState, ServerState } from './state.js';
import type { Client } from './client.js';
import type { Server } from './server.js';
import {
  disconnectClient, disconnectServer, launchNewConnection, launchReplicationServers, poolerState, serverConnectFailed,
  shareQuotas,
} from './pooler.js';
import { poolServers } from './limits.js';
import { workerSelf } from '../workers/identity.js';

const PERIOD_MS = 333;
let timer: NodeJS.Timeout | null = null;
/** extra work hooked in by other modules (stats period, shutdown checks) */
const tickHooks: Array<(now: number) => void> = [];

export function onJanitorTick(f: (now: number) => void): void {
  tickHooks.push(f);
}

export function startJanitor(): void {
  if (timer !== null) return;
  timer = setInterval(janitorTick, PERIOD_MS);
  timer.unref();
}

function janitorTick(): void {
  const now = nowUs();
  checkLoginClients(now);
  ensureForcedUserPools();
  for (const pool of registry.pools.slice()) {
    if (pool.db.admin) continue;
    checkWaitingClients(pool, now);
    checkActiveClients(pool, now);
    checkActiveServers(pool, now);
    checkFastClose(pool);
    checkIdleServers(pool, now);
    checkLoginServers(pool, now);
    checkPoolSize(pool, now);
    if (workerSelf.table !== null) shareQuotas(pool, now);
  }
  checkIdlePools(now);
  for (const f of tickHooks) f(now);
}

/**
 * A database with a forced user and min_pool_size has its pool (and so its minimum of servers)
 * before any client comes, as in PgBouncer: the pool's user is known without a client.
 */
function ensureForcedUserPools(): void {
  if (poolerState.paused || poolerState.suspended || poolerState.shuttingDown) return;
  for (const db of registry.databases.values()) {
    if (db.admin || db.forcedUser === null || db.paused || db.disabled || db.minPoolSize <= 0) continue;
    if (!db.pools.has(db.forcedUser)) registry.getPool(db, db.forcedUser);
  }
}

function poolInUse(p: PgPool): boolean {
  return p.clientCount > 0 || p.serverCount > 0 || p.activeCancelReqs.count > 0 ||
    p.waitingCancelReqs.count > 0 || p.activeCancelServers.count > 0;
}

/** pool_idle_timeout frees empty pools; autodb_idle_timeout drops unused auto-databases. */
function checkIdlePools(now: number): void {
  for (const p of registry.pools.slice()) {
    if (p.db.admin) continue;
    if (poolInUse(p)) {
      p.emptySinceUs = 0;
      continue;
    }
    if (p.emptySinceUs === 0) p.emptySinceUs = now;
    else if (cf.pool_idle_timeout > 0 && now - p.emptySinceUs > cf.pool_idle_timeout * 1e6) {
      log.log(`cleaning up idle pool: ${p.db.name}/${p.user.name}`);
      registry.removePool(p);
    }
  }
  for (const db of Array.from(registry.databases.values())) {
    if (!db.autodb) continue;
    let used = false;
    for (const p of db.pools.values()) if (poolInUse(p)) used = true;
    if (used) {
      db.inactiveSinceUs = 0;
      continue;
    }
    if (db.inactiveSinceUs === 0) db.inactiveSinceUs = now;
    else if (now - db.inactiveSinceUs > cf.autodb_idle_timeout * 1e6) {
      for (const p of Array.from(db.pools.values())) registry.removePool(p);
      registry.databases.delete(db.name);
      log.log(`dropping database '${db.name}' as it does not exist anymore or inactive auto-database`);
    }
  }
}

function checkLoginClients(now: number): void {
  const t = cf.client_login_timeout * 1e6;
  if (t <= 0) return;
  for (const c of registry.loginClients.toArray()) {
    if (now - c.connectTimeUs > t) disconnectClient(c, true, 'client_login_timeout');
  }
}

function checkWaitingClients(pool: PgPool, now: number): void {
  const waitTimeout = pool.queryWaitTimeout * 1e6;
  const queryTimeout = pool.queryTimeout * 1e6;
  const loginTimeout = cf.client_login_timeout * 1e6;
  const notifyAfter = cf.query_wait_notify * 1e6;
  for (const c of pool.waitingClients.toArray()) {
    const waited = now - c.waitStartUs;
    if (c.state === ClientState.WAITING_LOGIN) {
      if (loginTimeout > 0 && now - c.connectTimeUs > loginTimeout) {
        disconnectClient(c, true, 'client_login_timeout (server down)');
        continue;
      }
    }
    if (queryTimeout > 0 && waited > queryTimeout) {
      disconnectClient(c, true, 'query_timeout');
    } else if (waitTimeout > 0 && waited > waitTimeout) {
      disconnectClient(c, true, 'query_wait_timeout');
    } else if (notifyAfter > 0 && !c.waitNotified && c.state === ClientState.WAITING && waited > notifyAfter) {
      c.waitNotified = true;
      c.send(msg.notice('No server connection available in postgres backend, client being queued'));
    }
  }
  for (const c of pool.waitingCancelReqs.toArray()) {
    if (cf.cancel_wait_timeout > 0 && now - c.connectTimeUs > cf.cancel_wait_timeout * 1e6) {
      disconnectClient(c, false, 'cancel_wait_timeout');
    }
  }
}

function checkActiveClients(pool: PgPool, now: number): void {
  const idle = pool.clientIdleTimeout * 1e6;
  if (idle <= 0) return;
  for (const c of pool.activeClients.toArray()) {
    if (c.link === null && now - c.requestTimeUs > idle) disconnectClient(c, true, 'client_idle_timeout');
  }
}

function checkActiveServers(pool: PgPool, now: number): void {
  const qt = pool.queryTimeout * 1e6;
  const itt = pool.idleTransactionTimeout * 1e6;
  const tt = pool.transactionTimeout * 1e6;
  if (qt <= 0 && itt <= 0 && tt <= 0) return;
  for (const s of pool.activeServers.toArray()) {
    if (s.link === null) continue;
    if (qt > 0 && s.queryStartUs !== 0 && now - s.queryStartUs > qt) {
      disconnectServer(s, true, 'query timeout');
    } else if (tt > 0 && s.xactStartUs !== 0 && s.txStatus !== TX_IDLE && now - s.xactStartUs > tt) {
      disconnectServer(s, true, 'transaction timeout');
    } else if (itt > 0 && s.txStatus !== TX_IDLE && s.pendingRfq === 0 && !s.unsynced &&
      now - Math.max(s.lastPacketUs, s.link.requestTimeUs) > itt) {
      disconnectServer(s, true, 'idle transaction timeout');
    }
  }
}

/**
 * server_fast_close: in session mode a server that must be closed (RECONNECT, a changed
 * configuration) goes as soon as it is between two transactions, with its client, instead of
 * when the client leaves; as in PgBouncer's janitor, an idle session does not have to send
 * another query first (pooler.onReadyForQuery does it at once when a transaction ends).
 */
function checkFastClose(pool: PgPool): void {
  if (!cf.server_fast_close || pool.poolMode !== 'session') return;
  for (const s of pool.activeServers.toArray()) {
    if (s.link !== null && s.ready && (s.closeNeeded || s.generation !== pool.db.generation)) {
      disconnectServer(s, true, 'database configuration changed');
    }
  }
}

function checkIdleServers(pool: PgPool, now: number): void {
  const idleTimeout = cf.server_idle_timeout * 1e6;
  const lifetime = pool.db.serverLifetime * 1e6;
  const checkDelay = cf.server_check_delay * 1e6;
  const minSize = pool.minPoolSize;
  const check = (s: Server, list: 'idle' | 'used'): void => {
    if (s.closeNeeded || s.generation !== pool.db.generation) {
      disconnectServer(s, true, 'database configuration changed');
      return;
    }
    if (poolerState.paused || pool.db.paused) {
      disconnectServer(s, true, 'pause mode');
      return;
    }
    const age = now - s.connectTimeUs;
    // lifetime closures are spaced by lifetime/pool_size so a pool does not reconnect at once
    if (age >= lifetime) {
      const size = pool.poolSize > 0 ? pool.poolSize : 1;
      if (now - pool.lastLifetimeDisconnectUs >= lifetime / size) {
        pool.lastLifetimeDisconnectUs = now;
        disconnectServer(s, true, 'server lifetime over');
        return;
      }
    }
    const idleFor = now - s.requestTimeUs;
    if (idleTimeout > 0 && idleFor > idleTimeout && poolServers(pool) > minSize) {
      disconnectServer(s, true, 'server idle timeout');
      return;
    }
    if (list === 'idle' && cf.server_check_query !== '' && idleFor > checkDelay) {
      s.changeState(ServerState.USED);
    }
  };
  pool.forEachServer((s) => check(s, s.state === ServerState.USED ? 'used' : 'idle'), [ServerState.USED, ServerState.IDLE]);
}

function checkLoginServers(pool: PgPool, now: number): void {
  const t = cf.server_connect_timeout * 1e6;
  for (const s of pool.loginServers.toArray()) {
    // tagged dirty while logging in (PgPool.tagDirty): its login would use the old settings
    if (s.closeNeeded || s.generation !== pool.db.generation) disconnectServer(s, true, 'connect parameters changed');
    else if (t > 0 && now - s.connectTimeUs > t) serverConnectFailed(s, 'connect timeout');
  }
}

function checkPoolSize(pool: PgPool, now: number): void {
  // waiting clients: new connections (retry after a failed login once server_login_retry passed,
  // reserve pool after reserve_pool_timeout)
  let waiting = false;
  let replicationWaiting = false;
  for (let c = pool.waitingClients.first(); c !== null; c = c.listNext as Client | null) {
    // a replication client waits for a server of its own, not one of the pool's
    if (c.replication !== 'none' && c.state === ClientState.WAITING_LOGIN) {
      if (c.link === null) replicationWaiting = true;
    } else if (c.state === ClientState.WAITING || c.state === ClientState.WAITING_LOGIN) {
      waiting = true;
    }
    if (waiting && replicationWaiting) break;
  }
  if (replicationWaiting) launchReplicationServers(pool);
  if (waiting) {
    launchNewConnection(pool);
    return;
  }
  // min_pool_size: only for pools with a forced user or at least one client; with workers > 1
  // the servers of every loop together
  const min = pool.minPoolSize;
  if (min > 0 && poolServers(pool) < min && (pool.db.forcedUser !== null || pool.clientCount > 0) &&
    !poolerState.paused && !pool.db.paused) {
    launchNewConnection(pool, true);
  }
  void now;
}
