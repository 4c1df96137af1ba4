// The pooler's limits over every event loop of `workers = N`: max_client_conn,
// max_db_client_connections, max_user_client_connections, pool_size (+ reserve_pool_size),
// max_db_connections, max_user_connections and min_pool_size hold for the sum over all loops,
// never N times over. Each connection takes its slots in the shared counters (workers/shared.ts)
// where the limit is checked and gives them back exactly once when it closes; what it holds is
// kept on it (`sharedHeld`). With workers = 1 there is no table: every check compares this loop's
// own counts, as before, and nothing else runs.
//
// Moving quotas: a server belongs to one loop and serves only that loop's clients. A loop whose
// clients wait for a server that a limit keeps it from opening records how many wait, in its
// Counter.WAITING share of the slot of that limit (the pool's, the database's or the user's), and
// tells the other loops. A loop holding an idle server that counts against that limit, with no
// client of its own waiting for it, gives it up (pooler.yieldIdle): it reserves the give-up in
// Counter.YIELDING, so that no two loops close a server for the same waiting client, closes the
// server (`evicted`), and frees its slots once PostgreSQL has closed the connection, so the new
// server never runs beside the old backend; the waiting loops are told and open theirs at once
// (the loop that gave the room up leaves it to them for a while: handingOver).
// A loop with clients of its own waiting keeps its servers, so even load does not move them to
// and fro; but clients that waited long (STARVING_US) ask the loop holding the most servers of
// the limit for the next one it releases, as long as that loop holds at least two more than
// theirs or theirs holds none, so that no loop's clients wait for ever while others are busy.
import { workerSelf } from '../workers/identity.js';
import { tellAll } from '../workers/bus.js';
import { Counter, type SharedTable } from '../workers/shared.js';
import { nowUs } from './clock.js';
import type { PgDatabase, PgPool, PgUser } from './objects.js';
import type { Client } from './client.js';

/** What a connection holds in the shared counters (Client.sharedHeld, Server.sharedHeld). */
export const enum Held {
  POOL = 1,
  DB = 2,
  USER = 4,
  GLOBAL = 8,
}

/** takeServerSlot / clientSlot: the limit is reached. */
export const REFUSED = -1;
/** The shared table has no slot left for the name: nothing could be counted, so nothing is allowed. */
export const TABLE_FULL = -2;
export const TABLE_FULL_REASON = 'no more connections allowed (shared counter table full)';

/** clients blocked this long ask another loop for one of its servers (moving quotas) */
const STARVING_US = 1_000_000;
/** how long room given up to other loops is left to them (handingOver) */
const HANDOVER_US = 1_000_000;

let globalSlotNo = -2;

function globalSlot(t: SharedTable): number {
  if (globalSlotNo === -2) globalSlotNo = t.slot('global', '');
  return globalSlotNo;
}

function dbSlot(t: SharedTable, db: PgDatabase): number {
  if (db.sharedSlot === -2) db.sharedSlot = t.slot('db', db.name);
  return db.sharedSlot;
}

function userSlot(t: SharedTable, user: PgUser): number {
  if (user.sharedSlot === -2) user.sharedSlot = t.slot('user', user.name);
  return user.sharedSlot;
}

function poolSlot(t: SharedTable, pool: PgPool): number {
  if (pool.sharedSlot === -2) pool.sharedSlot = t.slot('pool', `${pool.db.name}\0${pool.user.name}`);
  return pool.sharedSlot;
}

function slotOf(t: SharedTable, pool: PgPool, kind: number): number {
  return kind === Held.POOL ? poolSlot(t, pool) : kind === Held.DB ? dbSlot(t, pool.db) : userSlot(t, pool.user);
}

// ------------------------------------------------------------------ clients

/** A new client connection counts against max_client_conn, as every client socket does in PgBouncer. */
export function countClientConnection(c: Client): void {
  const t = workerSelf.table;
  if (t === null) return;
  const g = globalSlot(t);
  if (g < 0) return;
  t.add(g, Counter.CLIENTS, workerSelf.index, 1);
  c.sharedHeld |= Held.GLOBAL;
}

/** Client connections of the whole pooler, the one asking included (`local`: this loop's). */
export function clientConnections(local: number): number {
  const t = workerSelf.table;
  if (t === null) return local;
  const g = globalSlot(t);
  return g < 0 ? Infinity : t.total(g, Counter.CLIENTS);
}

/**
 * One more client of the database or user within `limit` (max_db_client_connections,
 * max_user_client_connections; 0 or less: none): 0 or the Held bit taken, REFUSED or TABLE_FULL.
 */
export function clientSlot(c: Client, kind: Held.DB | Held.USER, owner: PgDatabase | PgUser, limit: number): number {
  const t = workerSelf.table;
  if (t === null) return limit <= 0 || owner.clientCount < limit ? 0 : REFUSED;
  const s = kind === Held.DB ? dbSlot(t, owner as PgDatabase) : userSlot(t, owner as PgUser);
  if (s < 0) return limit > 0 ? TABLE_FULL : 0;
  if (!t.tryAcquire(s, Counter.CLIENTS, workerSelf.index, limit)) return REFUSED;
  holdClientSlot(c, kind, s);
  return kind;
}

function holdClientSlot(c: Client, kind: Held.DB | Held.USER, s: number): void {
  c.sharedHeld |= kind;
  if (kind === Held.DB) c.sharedDbSlot = s;
  else c.sharedUserSlot = s;
}

/**
 * Logged in: counted in its database and user. Clients that were not checked at login (admin
 * users on the console, a user auth_query found) are counted now, without a limit, as this loop
 * counts them.
 */
export function countLoggedIn(c: Client, db: PgDatabase, user: PgUser | null): void {
  const t = workerSelf.table;
  if (t === null) return;
  const w = workerSelf.index;
  if ((c.sharedHeld & Held.DB) === 0) {
    const s = dbSlot(t, db);
    if (s >= 0) {
      t.add(s, Counter.CLIENTS, w, 1);
      holdClientSlot(c, Held.DB, s);
    }
  }
  if (user !== null && (c.sharedHeld & Held.USER) === 0) {
    const s = userSlot(t, user);
    if (s >= 0) {
      t.add(s, Counter.CLIENTS, w, 1);
      holdClientSlot(c, Held.USER, s);
    }
  }
}

/** The client is gone: what it held is given back (once: the mask is cleared). */
export function releaseClientSlots(c: Client): void {
  const held = c.sharedHeld;
  const t = workerSelf.table;
  if (held === 0 || t === null) return;
  c.sharedHeld = 0;
  const w = workerSelf.index;
  if ((held & Held.GLOBAL) !== 0) t.add(globalSlotNo, Counter.CLIENTS, w, -1);
  if ((held & Held.DB) !== 0) t.add(c.sharedDbSlot, Counter.CLIENTS, w, -1);
  if ((held & Held.USER) !== 0) t.add(c.sharedUserSlot, Counter.CLIENTS, w, -1);
}

// ------------------------------------------------------------------ servers

/**
 * One more server of `pool` within the limit of `kind` (its pool, database or user; `limit` 0
 * or less: none). With workers = 1 this compares this loop's count and takes nothing (0); with
 * more, the slot is taken in the shared counters and its Held bit returned, to be kept on the
 * server (openServer) and given back when it closes. REFUSED at the limit, TABLE_FULL when the
 * name has no slot and there is a limit.
 */
export function takeServerSlot(pool: PgPool, kind: Held, limit: number): number {
  const t = workerSelf.table;
  if (t === null) {
    const count = kind === Held.POOL ? pool.serverCount : kind === Held.DB ? pool.db.serverCount : pool.user.serverCount;
    return limit <= 0 || count < limit ? 0 : REFUSED;
  }
  const s = slotOf(t, pool, kind);
  if (s < 0) return limit > 0 ? TABLE_FULL : 0;
  if (givenUp.size > 0 && limit > 0 && handingOver(t, s)) return REFUSED;
  return t.tryAcquire(s, Counter.SERVERS, workerSelf.index, limit) ? kind : REFUSED;
}

/**
 * Give back the slots in `held` (taken by takeServerSlot for a server of `pool`). `closed`: a
 * server closed, so loops waiting for one of these slots are told (a slot taken and given back
 * before any server was opened frees nothing new).
 */
export function releaseServerSlots(pool: PgPool, held: number, closed: boolean): void {
  const t = workerSelf.table;
  if (t === null || held === 0) return;
  const w = workerSelf.index;
  let wanted = false;
  for (let kind: number = Held.POOL; kind <= Held.USER; kind <<= 1) {
    if ((held & kind) === 0) continue;
    const s = slotOf(t, pool, kind);
    t.add(s, Counter.SERVERS, w, -1);
    if (closed && othersWaiting(t, s) > 0) wanted = true;
  }
  if (wanted) tellSoon('limits.freed');
}

/** Servers of the pool over every loop (min_pool_size, server_idle_timeout above it). */
export function poolServers(pool: PgPool): number {
  const t = workerSelf.table;
  if (t === null) return pool.serverCount;
  const s = poolSlot(t, pool);
  return s < 0 ? pool.serverCount : t.total(s, Counter.SERVERS);
}

// ------------------------------------------------------------------ moving quotas

const toTell = new Set<string>();

/** Tell the other loops once this turn of the event loop is over: a burst of changes is one message. */
function tellSoon(kind: 'limits.wanted' | 'limits.freed'): void {
  if (toTell.size === 0) {
    setImmediate(() => {
      for (const k of toTell) tellAll(k);
      toTell.clear();
    });
  }
  toTell.add(kind);
}

/** Clients of other loops waiting for a server that the limit of slot `s` keeps from them. */
function othersWaiting(t: SharedTable, s: number): number {
  return t.total(s, Counter.WAITING) - t.share(s, Counter.WAITING, workerSelf.index);
}

/**
 * A new server for the clients waiting in `pool` was refused by the limit of `kind`: record how
 * many wait (this loop's Counter.WAITING share of that limit's slot), and tell the other loops
 * when that is news to them.
 */
export function noteBlocked(pool: PgPool, kind: Held): void {
  const t = workerSelf.table;
  if (t === null) return;
  const s = slotOf(t, pool, kind);
  const n = pool.waitingClients.count;
  if (s < 0 || n === 0) {
    setBlocked(t, pool, -1, 0);
  } else if (setBlocked(t, pool, s, n)) {
    tellSoon('limits.wanted');
  }
}

/** The clients of the pool got a server, or none waits any more. */
export function clearBlocked(pool: PgPool): void {
  const t = workerSelf.table;
  if (t !== null && pool.blockedSlot >= 0) setBlocked(t, pool, -1, 0);
}

/** Record `n` waiting on slot `s` (-1: none); true when more wait there than before. */
function setBlocked(t: SharedTable, pool: PgPool, s: number, n: number): boolean {
  const before = s === pool.blockedSlot ? pool.blockedCount : 0;
  if (s === pool.blockedSlot && n === pool.blockedCount) return false;
  const w = workerSelf.index;
  if (pool.blockedSlot >= 0) t.add(pool.blockedSlot, Counter.WAITING, w, -pool.blockedCount);
  pool.blockedSlot = s;
  pool.blockedCount = s >= 0 ? n : 0;
  if (s >= 0) t.add(s, Counter.WAITING, w, n);
  return s >= 0 && n > before;
}

/** Reserve the give-up of one server for clients of another loop waiting on slot `s`. */
function reserveYield(t: SharedTable, s: number): boolean {
  const others = othersWaiting(t, s);
  return others > 0 && t.tryAcquire(s, Counter.YIELDING, workerSelf.index, others);
}

/**
 * Whether this loop gives up an idle server of `pool`, none of whose own clients waits for one
 * (the caller checks): clients of another loop wait for a server that the limit of this pool,
 * of its database or of its user keeps from them (for the database or user only while no client
 * of this loop waits on that limit too: those get the server first, pooler.evictIdle). Returns
 * the slot the give-up is reserved on (Counter.YIELDING, see yieldDone), or -1.
 */
export function claimYield(pool: PgPool): number {
  const t = workerSelf.table!;
  const w = workerSelf.index;
  const ps = poolSlot(t, pool);
  if (ps >= 0 && reserveYield(t, ps)) return ps;
  const ds = dbSlot(t, pool.db);
  if (ds >= 0 && t.share(ds, Counter.WAITING, w) === 0 && reserveYield(t, ds)) return ds;
  const us = userSlot(t, pool.user);
  if (us >= 0 && t.share(us, Counter.WAITING, w) === 0 && reserveYield(t, us)) return us;
  return -1;
}

/** Slots this loop gave a server up on, with when (handingOver). */
const givenUp = new Map<number, number>();

/** The server given up on slot `s` is closed and its slots are free. */
export function yieldDone(s: number): void {
  const t = workerSelf.table;
  if (t === null) return;
  t.add(s, Counter.YIELDING, workerSelf.index, -1);
  givenUp.set(s, nowUs());
}

/**
 * A loop that has just given a server up does not take its room back while the loops it gave
 * it to still wait: they are told only now, and this loop, with clients of its own waiting
 * (a give-up asked for by starvingTarget) or new ones, would otherwise be first.
 */
function handingOver(t: SharedTable, s: number): boolean {
  const at = givenUp.get(s);
  if (at === undefined) return false;
  if (nowUs() - at < HANDOVER_US && othersWaiting(t, s) > 0) return true;
  givenUp.delete(s);
  return false;
}

/** Slots another loop asked a server of (starvingTarget), with when it asked. */
const owed = new Map<number, number>();

export function noteStarving(s: number): void {
  owed.set(s, nowUs());
}

/**
 * A server of `pool` has just been released: the slot of a give-up another loop asked for
 * (`limits.starving`) that it settles, reserved as claimYield does; -1: keep it.
 */
export function claimOwed(pool: PgPool): number {
  if (owed.size === 0) return -1;
  const t = workerSelf.table!;
  const now = nowUs();
  for (let kind: number = Held.POOL; kind <= Held.USER; kind <<= 1) {
    const s = slotOf(t, pool, kind);
    const at = owed.get(s);
    if (at === undefined) continue;
    owed.delete(s);
    if (now - at < 2 * STARVING_US && reserveYield(t, s)) return s;
  }
  return -1;
}

/**
 * Janitor: the loop to ask for a server for the clients of `pool` if they have waited long on
 * a limit (at most once per STARVING_US): the loop holding the most servers of that limit, if it
 * holds two more than this one or this one holds none. -1: nobody to ask.
 */
export function starvingTarget(pool: PgPool, now: number): number {
  const t = workerSelf.table;
  const s = pool.blockedSlot;
  if (t === null || s < 0 || now - pool.starvingAskedUs < STARVING_US) return -1;
  const first = pool.waitingClients.first();
  if (first === null || first.waitStartUs === 0 || now - first.waitStartUs < STARVING_US) return -1;
  const w = workerSelf.index;
  const mine = t.share(s, Counter.SERVERS, w);
  let best = -1;
  let most = 0;
  for (let x = 0; x < t.workers; x++) {
    if (x === w) continue;
    const n = t.share(s, Counter.SERVERS, x);
    if (n > most) {
      most = n;
      best = x;
    }
  }
  if (best < 0 || mine > 0 && most - mine < 2) return -1;
  pool.starvingAskedUs = now;
  return best;
}
