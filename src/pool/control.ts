// Live operations on the pooler: PAUSE, RESUME, SUSPEND, KILL, KILL_CLIENT,
// RECONNECT, WAIT_CLOSE, DISABLE/ENABLE and the SHUTDOWN modes, as mechanics on the registry.
// The admin console (admin/commands.ts) and the signal handlers (process/signals.ts) call these;
// the pooler's own transitions (pooler.ts) already keep servers from being handed out while
// paused and close them when released in pause mode.
//
// What PgBouncer does on every loop iteration (janitor.c per_loop_maint) is maintain() here: in
// pause mode close idle servers, in suspend mode stop reading and wait for output to drain, see
// whether a waiting PAUSE/SUSPEND/WAIT_CLOSE can be answered and whether a shutdown can finish.
// It runs on every janitor tick, and on a fast timer while something is waiting for it.
//
// With `workers` > 1 every event loop has its own pools, so a command acts on all of them: the
// loop that took it (the console's, or the main thread for a signal) applies it and sends it to
// the others over the bus (`control.do`), and a command that waits answers when every loop's
// condition holds (`control.wait`). Only the main thread ends the process: SHUTDOWN elsewhere
// asks it to, and the wait modes exit once every loop has no server (or client) left.
import { cf } from '../config/current.js';
import { log } from '../log/logger.js';
import { exitNow } from '../process/exit.js';
import type { Client } from './client.js';
import { nowUs } from './clock.js';
import { onJanitorTick } from './janitor.js';
import { closeTcpListeners, setAccepting } from './listener.js';
import { sdNotifyStopping } from '../process/systemd.js';
import { onRequest, request, requestAll, tell, tellAll } from '../workers/bus.js';
import { multiWorker, workerSelf } from '../workers/identity.js';
import { findDatabase } from './databases.js';
import { registry, type PgDatabase, type PgPool } from './objects.js';
import {
  assignWaitingClients, disconnectClient, disconnectServer, launchNewConnection, poolerState,
} from './pooler.js';
import type { Server } from './server.js';
import { ClientState, SERVER_STATES_COUNTED, ServerState } from './state.js';

export type ShutdownMode = 'none' | 'wait_for_servers' | 'wait_for_clients';

export const control = {
  shutdown: 'none' as ShutdownMode,
  /** when SUSPEND started (suspend_timeout) */
  suspendStartUs: 0,
  /** SUSPEND was issued in this loop (the others follow it and leave the admin check to it) */
  suspendOwner: false,
};

/** Something waiting for maintain(): an admin's PAUSE/SUSPEND/WAIT_CLOSE reply. */
export interface Waiter {
  done(): boolean;
  /** false once nobody needs the answer (the admin disconnected) */
  alive(): boolean;
  finish(): void;
}

const waiters: Waiter[] = [];
/** sockets SUSPEND stopped reading (RESUME restarts exactly these) */
const suspendedConns = new Set<Client | Server>();

const FAST_MS = 20;
let fastTimer: NodeJS.Timeout | null = null;
let started = false;

/** Hook into the janitor (once, at startup). */
export function startControl(): void {
  if (started) return;
  started = true;
  onJanitorTick(() => {
    maintain();
    trimPools();
  });
  // a worker thread started after the others (one replacing a worker that died) takes on the
  // state the console and signals left the pooler in
  if (workerSelf.index !== 0) {
    void request<ControlOp[]>(0, 'control.state').then((ops) => {
      for (const o of ops ?? []) log.quietly(() => applyOp(o));
    });
  }
}

function ensureFast(): void {
  if (fastTimer !== null) return;
  fastTimer = setInterval(maintain, FAST_MS);
  fastTimer.unref();
}

function stopFastIfIdle(): void {
  if (fastTimer !== null && waiters.length === 0 && control.shutdown === 'none' && !poolerState.suspended) {
    clearInterval(fastTimer);
    fastTimer = null;
  }
}

/** Answer `w` once its condition holds (checked on every maintain(); the fast timer runs meanwhile). */
export function waitUntil(w: Waiter): void {
  waiters.push(w);
  ensureFast();
}

/** Drop a waiter without answering it (e.g. answered another way). */
export function cancelWaiter(w: Waiter): void {
  const k = waiters.indexOf(w);
  if (k >= 0) waiters.splice(k, 1);
}

function poolsOf(db: PgDatabase | null): PgPool[] {
  return registry.pools.filter((p) => !p.db.admin && (db === null || p.db === db));
}

// ---------------------------------------------------------------------------------------------
// PAUSE / RESUME

/** PAUSE (global): stop handing out servers; they are closed as they come back. */
export function pauseAll(): void {
  poolerState.paused = true;
  maintain();
}

export function pauseDb(db: PgDatabase): void {
  db.paused = true;
  maintain();
}

/** PAUSE is complete when no server connection is left (idle ones are closed by maintain()). */
export function pauseDone(db: PgDatabase | null): boolean {
  for (const p of poolsOf(db)) if (p.serverCount > 0) return false;
  return true;
}

/** Close what pause mode does not keep: idle, used and connecting servers (`pause mode`). */
function closeForPause(pool: PgPool): void {
  pool.forEachServer((s) => disconnectServer(s, true, 'pause mode'), [ServerState.IDLE, ServerState.USED, ServerState.LOGIN]);
}

/** Clients queued while paused get their servers now. */
function wakePool(pool: PgPool): void {
  if (pool.db.admin) return;
  assignWaitingClients(pool);
  if (pool.waitingClients.count > 0) launchNewConnection(pool);
}

/** RESUME (global) / SIGUSR2: undo PAUSE or SUSPEND. */
export function resumeAll(): void {
  const wasSuspended = poolerState.suspended;
  poolerState.paused = false;
  poolerState.suspended = false;
  if (wasSuspended) {
    control.suspendStartUs = 0;
    control.suspendOwner = false;
    setAccepting(true);
    const conns = [...suspendedConns];
    suspendedConns.clear();
    for (const x of conns) if (!x.closed) x.stream.resume();
  }
  for (const p of registry.pools.slice()) wakePool(p);
  stopFastIfIdle();
}

export function resumeDb(db: PgDatabase): void {
  db.paused = false;
  for (const p of poolsOf(db)) wakePool(p);
}

export function anyDbPaused(): boolean {
  for (const db of registry.databases.values()) if (db.paused) return true;
  return false;
}

// ---------------------------------------------------------------------------------------------
// SUSPEND

/** SUSPEND: stop accepting and reading, let every buffer drain. `owner`: issued in this loop. */
export function suspendAll(owner = true): void {
  poolerState.suspended = true;
  control.suspendOwner = owner;
  control.suspendStartUs = nowUs();
  setAccepting(false);
  ensureFast();
  maintain();
}

/** Stop reading from one connection; true once nothing of it is left to write. */
function suspendConn(x: Client | Server): boolean {
  if (!suspendedConns.has(x) && !x.stream.isWaiting) {
    x.stream.pause();
    suspendedConns.add(x);
  }
  return x.socket.writableLength === 0;
}

/** Connections SUSPEND still waits for; with `force` (suspend_timeout) they are closed instead. */
function suspendTick(force: boolean): number {
  let pending = 0;
  for (const pool of registry.pools.slice()) {
    if (pool.db.admin) continue;
    for (const c of pool.activeClients.toArray()) {
      if (suspendConn(c)) continue;
      if (force) disconnectClient(c, true, 'suspend_timeout');
      else pending++;
    }
    pool.forEachServer((s) => {
      if (suspendConn(s)) return;
      if (force) disconnectServer(s, true, 'suspend_timeout');
      else pending++;
    }, [ServerState.ACTIVE, ServerState.IDLE]);
    pool.forEachServer((s) => disconnectServer(s, true, 'close unsafe file descriptors on suspend'),
      [ServerState.TESTED, ServerState.USED]);
  }
  // clients in the middle of logging in must finish first
  if (force) {
    for (const c of registry.loginClients.toArray()) disconnectClient(c, true, 'suspend_timeout');
  } else {
    pending += registry.loginClients.count;
  }
  return pending;
}

let suspendPending = 0;

export function suspendDone(): boolean {
  return poolerState.suspended && suspendPending === 0;
}

// ---------------------------------------------------------------------------------------------
// KILL, KILL_CLIENT, RECONNECT, WAIT_CLOSE

/**
 * Close every connection of a pool with `reason` and forget the pool (PgBouncer's kill_pool).
 * Waiting clients go first so that no closing server launches a replacement for them; servers
 * next, telling their linked clients the same reason; then the rest.
 */
function killPool(pool: PgPool, reason: string): void {
  for (const list of [pool.waitingClients, pool.waitingCancelReqs]) {
    for (const c of list.toArray()) disconnectClient(c, true, reason);
  }
  pool.forEachServer((s) => disconnectServer(s, true, reason), [ServerState.ACTIVE, ServerState.ACTIVE_CANCEL,
    ServerState.BEING_CANCELED, ServerState.IDLE, ServerState.USED, ServerState.TESTED, ServerState.LOGIN]);
  for (const list of [pool.activeClients, pool.activeCancelReqs, pool.waitingClients]) {
    for (const c of list.toArray()) disconnectClient(c, true, reason);
  }
  registry.removePool(pool);
}

/** KILL db: close everything of the database and leave it paused (RESUME needed). */
export function killDb(db: PgDatabase): void {
  db.paused = true;
  for (const p of poolsOf(db)) killPool(p, 'database removed');
}

/** KILL without a database (1.25): every database, and the pooler stays paused. */
export function killAll(): void {
  poolerState.paused = true;
  for (const p of poolsOf(null)) killPool(p, 'database removed');
}

/** A database dropped from the config on reload (PgBouncer's kill_database). */
export function dropDatabase(db: PgDatabase): void {
  log.warning(`dropping database '${db.name}' as it does not exist anymore or inactive auto-database`);
  // nothing may open a server for it while its pools are closed, and a client still logging in
  // with a reference to it is refused instead of creating a pool for a database that is gone
  db.paused = true;
  db.disabled = true;
  for (const p of registry.pools.filter((x) => x.db === db)) killPool(p, 'database removed');
  if (registry.databases.get(db.name) === db) registry.databases.delete(db.name);
}

/** Every client connection, for KILL_CLIENT: logging in, in a pool, or a cancel request. */
export function findClientById(id: number): Client | null {
  for (const c of registry.loginClients) if (c.id === id) return c;
  for (const p of registry.pools) {
    for (const list of [p.activeClients, p.waitingClients, p.activeCancelReqs, p.waitingCancelReqs]) {
      for (const c of list) if (c.id === id) return c;
    }
  }
  return null;
}

/** RECONNECT: every server of the database(s) is closed when next released. */
export function reconnect(db: PgDatabase | null): void {
  for (const p of poolsOf(db)) p.tagDirty();
  maintain();
}

/** Servers still to be closed because of RECONNECT or a changed database definition. */
export function closeNeededCount(db: PgDatabase | null): number {
  let k = 0;
  for (const p of poolsOf(db)) {
    p.forEachServer((s) => {
      if (s.closeNeeded || s.generation !== p.db.generation) k++;
    }, SERVER_STATES_COUNTED);
  }
  return k;
}

// ---------------------------------------------------------------------------------------------
// SHUTDOWN

/**
 * SHUTDOWN (immediate) / SIGQUIT / a second SIGINT or SIGTERM. In a worker thread the main thread
 * is asked to end the process (a worker's own exit would only end its loop, which is replaced).
 */
export function shutdownNow(code = 0): void {
  if (workerSelf.index !== 0) {
    tell(0, 'control.exit', code);
    return;
  }
  exitNow(code);
}

/**
 * SHUTDOWN WAIT_FOR_SERVERS / SIGINT: pause, stop taking TCP clients (the Unix socket stays for
 * admins), drop clients waiting for a server, exit once no server connection is left.
 */
export function shutdownWaitForServers(): void {
  control.shutdown = 'wait_for_servers';
  if (workerSelf.index === 0) sdNotifyStopping();
  poolerState.shuttingDown = true;
  poolerState.paused = true;
  closeTcpListeners();
  askOthersWhenDone();
  ensureFast();
  maintain();
}

/** SHUTDOWN WAIT_FOR_CLIENTS / SIGTERM: stop taking TCP clients, exit when the last client leaves. */
export function shutdownWaitForClients(): void {
  control.shutdown = 'wait_for_clients';
  if (workerSelf.index === 0) sdNotifyStopping();
  poolerState.shuttingDown = true;
  closeTcpListeners();
  askOthersWhenDone();
  ensureFast();
  maintain();
}

/** This loop has nothing left that the shutdown mode in force waits for. */
function shutdownDoneHere(): boolean {
  if (control.shutdown === 'wait_for_servers') return registry.serverCount === 0;
  if (control.shutdown === 'wait_for_clients') return registry.clientCount === 0;
  return false;
}

/** main thread, `workers` > 1: the mode the other loops said they are done with */
let othersDone: ShutdownMode = 'none';
let othersAsked: ShutdownMode = 'none';

/** Main thread: ask every other loop to answer once it is done with the shutdown mode now in force. */
function askOthersWhenDone(): void {
  if (!multiWorker() || workerSelf.index !== 0) return;
  const mode = control.shutdown;
  if (othersAsked === mode) return;
  othersAsked = mode;
  void requestAll('control.shutdown_wait').then(() => {
    if (control.shutdown === mode) othersDone = mode;
  });
}

/** The process may exit: the main thread with every other loop done (one loop: this one is). */
function mayExit(): boolean {
  if (!shutdownDoneHere()) return false;
  return !multiWorker() || (workerSelf.index === 0 && othersDone === control.shutdown);
}

// ---------------------------------------------------------------------------------------------
// the per-loop work

let maintaining = false;

function maintain(): void {
  if (maintaining) return; // closing connections can call back into here
  maintaining = true;
  try {
    maintainOnce();
  } finally {
    maintaining = false;
  }
  stopFastIfIdle();
}

function maintainOnce(): void {
  if (poolerState.suspended) {
    const force = cf.suspend_timeout > 0 && control.suspendStartUs !== 0 &&
      nowUs() - control.suspendStartUs >= cf.suspend_timeout * 1e6;
    suspendPending = suspendTick(force);
  } else {
    for (const pool of registry.pools.slice()) {
      if (!pool.db.admin && (poolerState.paused || pool.db.paused)) closeForPause(pool);
    }
  }

  if (control.shutdown === 'wait_for_servers') {
    for (const pool of registry.pools.slice()) {
      if (pool.db.admin) continue;
      for (const c of pool.waitingClients.toArray()) {
        if (c.state === ClientState.WAITING || c.state === ClientState.WAITING_LOGIN) {
          disconnectClient(c, true, 'server shutting down');
        }
      }
    }
    if (mayExit()) {
      log.log('server connections dropped, exiting');
      exitNow(0);
    }
  } else if (control.shutdown === 'wait_for_clients' && mayExit()) {
    log.log('client connections dropped, exiting');
    exitNow(0);
  }

  for (let k = 0; k < waiters.length;) {
    const w = waiters[k]!;
    if (!w.alive()) {
      waiters.splice(k, 1);
    } else if (w.done()) {
      waiters.splice(k, 1);
      w.finish();
    } else {
      k++;
    }
  }

  // the admin who suspended is gone: nobody could ever RESUME (PgBouncer resumes too)
  if (poolerState.suspended && suspendPending === 0 && control.suspendOwner && adminClientsHere() === 0) {
    if (!multiWorker()) {
      log.log('admin disappeared when suspended, doing RESUME');
      resumeAll();
    } else {
      resumeIfNoAdminAnywhere();
    }
  }
}

function adminClientsHere(): number {
  const admin = registry.databases.get('pgbouncer');
  const adminPool = admin?.forcedUser ? admin.pools.get(admin.forcedUser) : undefined;
  return adminPool === undefined ? 0 : adminPool.activeClients.count;
}

/** when the other loops were last asked for their admins (µs), and whether the answer is awaited */
let adminsAskedUs = 0;
let askingAdmins = false;
const ADMINS_ASK_INTERVAL_US = 500_000;

/** `workers` > 1: the loop that suspended has no admin left; resume if no other loop has one. */
function resumeIfNoAdminAnywhere(): void {
  const now = nowUs();
  if (askingAdmins || now - adminsAskedUs < ADMINS_ASK_INTERVAL_US) return;
  askingAdmins = true;
  adminsAskedUs = now;
  void requestAll<number>('control.admins').then((replies) => {
    askingAdmins = false;
    const elsewhere = replies.reduce((n, r) => n + r.reply, 0);
    if (elsewhere > 0 || !poolerState.suspended || !control.suspendOwner || adminClientsHere() > 0) return;
    log.log('admin disappeared when suspended, doing RESUME');
    resumeAll();
    tellAll('control.do', { op: 'resume' } satisfies ControlOp);
  });
}

/**
 * Pool sizes can shrink on RELOAD/SET: idle servers above pool_size + reserve_pool_size are
 * closed (`too many servers in the pool`), used ones first. pool_size 0 = unlimited.
 */
export function trimPools(): void {
  for (const pool of registry.pools.slice()) {
    if (pool.db.admin) continue;
    const size = pool.poolSize;
    if (size <= 0) continue;
    let many = pool.activeServers.count + pool.idleServers.count + pool.usedServers.count +
      pool.testedServers.count - (size + pool.reservePoolSize);
    while (many > 0) {
      const s = pool.usedServers.first() ?? pool.idleServers.first();
      if (s === null) break;
      disconnectServer(s, true, 'too many servers in the pool');
      many--;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// every event loop (`workers` > 1)

/** A control command as the other loops apply it; a database travels by name. */
export interface ControlOp {
  op: 'pause' | 'pause_db' | 'resume' | 'resume_db' | 'suspend' | 'kill' | 'kill_db' | 'reconnect' |
    'reconnect_db' | 'disable' | 'enable' | 'shutdown_servers' | 'shutdown_clients';
  db?: string;
}

/** The database of an op in this loop (an auto-database is registered here too, as by the console). */
function opDatabase(name: string | undefined): PgDatabase | null {
  if (name === undefined) return null;
  const db = findDatabase(name);
  return db === null || db.admin ? null : db;
}

/** Apply an op another loop took (its log lines were written there). */
function applyOp(o: ControlOp): void {
  const db = opDatabase(o.db);
  switch (o.op) {
    case 'pause': if (!poolerState.paused && !poolerState.suspended) pauseAll(); break;
    case 'pause_db': if (db !== null) pauseDb(db); break;
    case 'resume': if (poolerState.paused || poolerState.suspended) resumeAll(); break;
    case 'resume_db': if (db !== null) resumeDb(db); break;
    case 'suspend': if (!poolerState.suspended) suspendAll(false); break;
    case 'kill': killAll(); break;
    case 'kill_db': if (db !== null) killDb(db); break;
    case 'reconnect': reconnect(null); break;
    case 'reconnect_db': if (db !== null) reconnect(db); break;
    case 'disable': if (db !== null) db.disabled = true; break;
    case 'enable': if (db !== null) db.disabled = false; break;
    case 'shutdown_servers': shutdownWaitForServers(); break;
    case 'shutdown_clients': shutdownWaitForClients(); break;
  }
}

/**
 * After applying a command here: the other loops apply it too. Null with one loop (nothing to
 * wait for: the caller answers at once, as always); else resolves once every loop has applied it.
 */
export function applyElsewhere(o: ControlOp): Promise<void> | null {
  if (!multiWorker()) return null;
  return requestAll('control.do', o).then(() => undefined);
}

/** What a waiting command waits for. */
export interface WaitFor {
  what: 'pause' | 'suspend' | 'wait_close';
  /** a database name; none: the whole pooler */
  db?: string;
}

/** The condition that ends a wait, in this loop (PAUSE also ends with a RESUME from elsewhere). */
export function waitCondition(w: WaitFor, db: PgDatabase | null): () => boolean {
  switch (w.what) {
    case 'pause':
      return db === null ? () => !poolerState.paused || pauseDone(null) : () => !db.paused || pauseDone(db);
    case 'suspend':
      return () => !poolerState.suspended || suspendDone();
    case 'wait_close':
      return () => closeNeededCount(db) === 0;
  }
}

/** waits of other loops running here, by their token, so that they can be dropped */
const remoteWaits = new Map<string, { waiter: Waiter; resolve: (done: boolean) => void }>();
let waitSeq = 0;

/**
 * Wait for `w` in every other loop: null with one loop; else the token (to drop the waits with
 * dropWaitElsewhere) and a promise that resolves when every loop's condition holds.
 */
export function waitElsewhere(w: WaitFor): { token: string; done: Promise<void> } | null {
  if (!multiWorker()) return null;
  const token = `${workerSelf.index}:${++waitSeq}`;
  const done = requestAll('control.wait', { ...w, token }).then(() => {
    // the local waiter that depends on this is checked on the fast timer; look now
    ensureFast();
  });
  return { token, done };
}

/** Nobody needs the answer of waitElsewhere() any more (the admin left or cancelled). */
export function dropWaitElsewhere(token: string): void {
  tellAll('control.unwait', token);
}

/** The state PAUSE, SUSPEND, KILL, DISABLE and the signals left here, as the ops that make it. */
function stateOps(): ControlOp[] {
  const ops: ControlOp[] = [];
  if (poolerState.suspended) ops.push({ op: 'suspend' });
  else if (poolerState.paused && control.shutdown === 'none') ops.push({ op: 'pause' });
  for (const db of registry.databases.values()) {
    if (db.admin) continue;
    if (db.paused) ops.push({ op: 'pause_db', db: db.name });
    if (db.disabled) ops.push({ op: 'disable', db: db.name });
  }
  return ops;
}

/** What the other loops ask of this one. */
function answerOtherLoops(): void {
  onRequest('control.do', (d) => {
    log.quietly(() => applyOp(d as ControlOp));
    return true;
  });
  onRequest('control.wait', (d) => {
    const w = d as WaitFor & { token: string };
    const db = w.db === undefined ? null : log.quietly(() => opDatabase(w.db));
    const done = waitCondition(w, db);
    return new Promise<boolean>((resolve) => {
      const waiter: Waiter = {
        done,
        alive: () => true,
        finish: () => {
          remoteWaits.delete(w.token);
          resolve(true);
        },
      };
      remoteWaits.set(w.token, { waiter, resolve });
      waitUntil(waiter);
      maintain();
    });
  });
  onRequest('control.unwait', (d) => {
    const r = remoteWaits.get(d as string);
    if (r === undefined) return;
    remoteWaits.delete(d as string);
    cancelWaiter(r.waiter);
    r.resolve(false);
  });
  onRequest('control.admins', () => adminClientsHere());
  // answered once this loop has nothing left that the shutdown in force waits for
  onRequest('control.shutdown_wait', () => new Promise<boolean>((resolve) => {
    waitUntil({ done: () => control.shutdown !== 'none' && shutdownDoneHere(), alive: () => true, finish: () => resolve(true) });
  }));
  onRequest('control.exit', (d) => {
    if (workerSelf.index === 0) exitNow(d as number);
  });
  onRequest('control.state', stateOps);
}

// registered when the module loads, so that a worker thread answers from its start
answerOtherLoops();
