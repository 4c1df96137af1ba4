// Counters shared by the event loops of `workers = N`, so that the limits of the pooler
// (max_client_conn, pool sizes, max_db/user_connections, ...) hold for the sum over all workers
// rather than N times over. One SharedArrayBuffer, created by the main thread and given to every
// worker thread, holds a hash table of slots: the whole pooler, each database, each user, each
// (database, user) pool. A slot has a few counters; each counter has a total, which limits are
// checked against with compare-and-swap, and a column per worker holding that worker's share,
// so that the share of a worker that died can be taken off the totals.
//
// Slots are found by a 64-bit hash of the name (SHA-256's first 8 bytes, never 0), stored with
// one compare-and-swap: a slot is claimed without a lock and never freed. Two names with the same
// 64-bit hash would share their counters; with thousands of names the odds are about 1 in 10^12.
// Lookups hash, so callers keep the slot number (PgPool, PgDatabase and PgUser cache theirs).
import { createHash } from 'node:crypto';

/** What a slot counts. */
export const enum Counter {
  /** server connections (pool_size, max_db_connections, max_user_connections) */
  SERVERS = 0,
  /** client connections (max_client_conn, max_db/user_client_connections) */
  CLIENTS = 1,
  /** clients waiting for a server that their worker cannot open: another worker should give one up */
  WAITING = 2,
  /** servers a worker is giving up for those waiting clients, not yet closed (so no two give up one for the same client) */
  YIELDING = 3,
}
const COUNTERS = 4;

export type SlotKind = 'global' | 'db' | 'user' | 'pool';

/** Slots in the table: names of databases, users and pools together (autodb can make many). */
export const DEFAULT_CAPACITY = 16384;

export class SharedTable {
  private readonly keys: BigInt64Array;
  private readonly cells: Int32Array;
  private readonly stride: number;
  readonly capacity: number;

  /** `workers`: how many columns; `buffer`: made by SharedTable.create() in the main thread. */
  constructor(readonly buffer: SharedArrayBuffer, readonly workers: number) {
    this.capacity = buffer.byteLength / (8 + COUNTERS * (1 + workers) * 4);
    this.keys = new BigInt64Array(buffer, 0, this.capacity);
    this.stride = 1 + workers;
    this.cells = new Int32Array(buffer, this.capacity * 8, this.capacity * COUNTERS * this.stride);
  }

  static create(workers: number, capacity = DEFAULT_CAPACITY): SharedTable {
    return new SharedTable(new SharedArrayBuffer(capacity * (8 + COUNTERS * (1 + workers) * 4)), workers);
  }

  /** The slot of a name, claimed if new; -1 when the table is full. */
  slot(kind: SlotKind, name: string): number {
    const digest = createHash('sha256').update(kind).update('\0').update(name).digest();
    const key = digest.readBigInt64LE(0) | 1n;
    const cap = this.capacity;
    let i = digest.readUInt32LE(8) % cap;
    for (let n = 0; n < cap; n++) {
      const seen = Atomics.compareExchange(this.keys, i, 0n, key);
      if (seen === 0n || seen === key) return i;
      i = i + 1 === cap ? 0 : i + 1;
    }
    return -1;
  }

  private cell(slot: number, counter: Counter): number {
    return (slot * COUNTERS + counter) * this.stride;
  }

  /**
   * Add one for `worker` if the total stays within `limit` (0 or less: no limit). False, and
   * nothing changed, when the total is already at the limit.
   */
  tryAcquire(slot: number, counter: Counter, worker: number, limit: number): boolean {
    const c = this.cell(slot, counter);
    if (limit <= 0) {
      Atomics.add(this.cells, c, 1);
    } else {
      for (;;) {
        const cur = Atomics.load(this.cells, c);
        if (cur >= limit) return false;
        if (Atomics.compareExchange(this.cells, c, cur, cur + 1) === cur) break;
      }
    }
    Atomics.add(this.cells, c + 1 + worker, 1);
    return true;
  }

  /** Change `worker`'s share and the total by `delta`, whatever the limits. */
  add(slot: number, counter: Counter, worker: number, delta: number): void {
    const c = this.cell(slot, counter);
    Atomics.add(this.cells, c, delta);
    Atomics.add(this.cells, c + 1 + worker, delta);
  }

  total(slot: number, counter: Counter): number {
    return Atomics.load(this.cells, this.cell(slot, counter));
  }

  /** `worker`'s share of a counter. */
  share(slot: number, counter: Counter, worker: number): number {
    return Atomics.load(this.cells, this.cell(slot, counter) + 1 + worker);
  }

  /** A worker is gone: its shares come off the totals (what it held closed with it). */
  releaseWorker(worker: number): void {
    for (let slot = 0; slot < this.capacity; slot++) {
      if (Atomics.load(this.keys, slot) === 0n) continue;
      for (let counter = 0; counter < COUNTERS; counter++) {
        const c = this.cell(slot, counter);
        const n = Atomics.exchange(this.cells, c + 1 + worker, 0);
        if (n !== 0) Atomics.sub(this.cells, c, n);
      }
    }
  }
}
