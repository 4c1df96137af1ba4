// The limits of `workers = N` without sockets (src/pool/limits.ts): two loops are played by one
// thread switching workerSelf.index over one shared table, each with its own databases, users
// and pools of the same names, as the real loops have.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { workerSelf } from '../../src/workers/identity.js';
import { Counter, SharedTable } from '../../src/workers/shared.js';
import { PgDatabase, PgPool, PgUser } from '../../src/pool/objects.js';
import type { Client } from '../../src/pool/client.js';
import { nowUs } from '../../src/pool/clock.js';
import {
  Held, REFUSED, TABLE_FULL, claimYield, clearBlocked, clientSlot, countLoggedIn, noteBlocked, poolServers,
  releaseClientSlots, releaseServerSlots, starvingTarget, takeServerSlot, yieldDone,
} from '../../src/pool/limits.js';

/** One loop's view of database `db` and user `user`. */
function loop(): { db: PgDatabase; user: PgUser; pool: PgPool } {
  const db = new PgDatabase('db', null);
  const user = new PgUser('alice');
  return { db, user, pool: new PgPool(db, user) };
}

function as<T>(w: number, f: () => T): T {
  const before = workerSelf.index;
  workerSelf.index = w;
  try {
    return f();
  } finally {
    workerSelf.index = before;
  }
}

/** A waiting client, as far as the pool's list and waitStartUs go. */
function waiter(pool: PgPool, waitStartUs: number): Client {
  const c = { listPrev: null, listNext: null, list: null, waitStartUs } as unknown as Client;
  pool.waitingClients.append(c);
  return c;
}

function fakeClient(): Client {
  return { sharedHeld: 0, sharedDbSlot: -1, sharedUserSlot: -1 } as unknown as Client;
}

function useTable(workers: number, capacity = 64): SharedTable {
  const t = SharedTable.create(workers, capacity);
  workerSelf.table = t;
  workerSelf.count = workers;
  workerSelf.index = 0;
  return t;
}

afterEach(() => {
  workerSelf.table = null;
  workerSelf.count = 1;
  workerSelf.index = 0;
});

test('workers = 1: the checks compare this loop\'s counts and take nothing', () => {
  const { db, pool } = loop();
  assert.equal(takeServerSlot(pool, Held.POOL, 0), 0, 'no limit');
  db.serverCount = 2;
  assert.equal(takeServerSlot(pool, Held.DB, 3), 0);
  assert.equal(takeServerSlot(pool, Held.DB, 2), REFUSED);
  db.clientCount = 5;
  assert.equal(clientSlot(fakeClient(), Held.DB, db, 5), REFUSED);
  assert.equal(clientSlot(fakeClient(), Held.DB, db, 6), 0);
  assert.equal(poolServers(pool), 0);
});

test('a pool slot is shared: what one loop holds the other cannot take, until it is given back', () => {
  const t = useTable(2);
  const a = loop();
  const b = loop();
  assert.equal(as(0, () => takeServerSlot(a.pool, Held.POOL, 2)), Held.POOL);
  assert.equal(as(1, () => takeServerSlot(b.pool, Held.POOL, 2)), Held.POOL);
  assert.equal(as(1, () => takeServerSlot(b.pool, Held.POOL, 2)), REFUSED);
  assert.equal(as(1, () => poolServers(b.pool)), 2, 'servers of every loop');
  as(0, () => releaseServerSlots(a.pool, Held.POOL, true));
  assert.equal(as(1, () => takeServerSlot(b.pool, Held.POOL, 2)), Held.POOL);
  assert.equal(t.share(b.pool.sharedSlot, Counter.SERVERS, 1), 2);
  assert.equal(t.share(b.pool.sharedSlot, Counter.SERVERS, 0), 0);
  // database and user slots are separate from the pool's
  assert.equal(as(0, () => takeServerSlot(a.pool, Held.DB, 1)), Held.DB);
  assert.equal(as(1, () => takeServerSlot(b.pool, Held.DB, 1)), REFUSED);
  assert.equal(as(1, () => takeServerSlot(b.pool, Held.USER, 1)), Held.USER);
});

test('client slots: taken at the check, counted at login if not, given back once', () => {
  const t = useTable(2);
  const a = loop();
  const b = loop();
  const c1 = fakeClient();
  assert.equal(as(0, () => clientSlot(c1, Held.DB, a.db, 2)), Held.DB);
  // a client that was not checked (an admin user on the console) counts from its login
  const c2 = fakeClient();
  as(1, () => countLoggedIn(c2, b.db, b.user));
  assert.equal(c2.sharedHeld, Held.DB | Held.USER);
  assert.equal(as(1, () => clientSlot(fakeClient(), Held.DB, b.db, 2)), REFUSED);
  as(0, () => countLoggedIn(c1, a.db, a.user));
  assert.equal(t.total(a.db.sharedSlot, Counter.CLIENTS), 2, 'the checked client is not counted twice');
  as(0, () => releaseClientSlots(c1));
  as(0, () => releaseClientSlots(c1));
  assert.equal(t.total(a.db.sharedSlot, Counter.CLIENTS), 1, 'given back once');
  assert.equal(t.total(a.user.sharedSlot, Counter.CLIENTS), 1);
});

test('a full table refuses where there is a limit, and counts nothing where there is none', () => {
  useTable(2, 2);
  const { pool, db } = loop();
  assert.equal(takeServerSlot(pool, Held.POOL, 5), Held.POOL);
  assert.equal(takeServerSlot(pool, Held.DB, 5), Held.DB);
  assert.equal(takeServerSlot(pool, Held.USER, 5), TABLE_FULL);
  assert.equal(takeServerSlot(pool, Held.USER, 0), 0);
  assert.equal(clientSlot(fakeClient(), Held.USER, pool.user, 3), TABLE_FULL);
  assert.equal(clientSlot(fakeClient(), Held.DB, db, 3), Held.DB, 'names that have a slot still work');
});

test('moving quotas: a loop gives up at most one server per client waiting elsewhere', () => {
  const t = useTable(3);
  const a = loop();
  const b = loop();
  const c = loop();
  waiter(b.pool, nowUs());
  waiter(b.pool, nowUs());
  as(1, () => noteBlocked(b.pool, Held.POOL));
  assert.equal(t.total(as(1, () => b.pool.sharedSlot), Counter.WAITING), 2);
  // loops 0 and 2 may give up two servers between them, not more
  const s1 = as(0, () => claimYield(a.pool));
  const s2 = as(2, () => claimYield(c.pool));
  assert.ok(s1 >= 0 && s2 >= 0);
  assert.equal(as(0, () => claimYield(a.pool)), -1);
  // the loop that waits gives nothing up for its own clients
  assert.equal(as(1, () => claimYield(b.pool)), -1);
  as(0, () => yieldDone(s1));
  assert.ok(as(0, () => claimYield(a.pool)) >= 0, 'a give-up done makes room for another');
  // served: nobody waits any more, nothing is given up
  as(1, () => clearBlocked(b.pool));
  assert.equal(t.total(b.pool.sharedSlot, Counter.WAITING), 0);
  as(2, () => yieldDone(s2));
  as(0, () => yieldDone(s1));
  assert.equal(as(2, () => claimYield(c.pool)), -1);
});

test('moving quotas: a database limit is given up for only while this loop does not wait on it too', () => {
  const t = useTable(2);
  const a = loop();
  const b = loop();
  waiter(b.pool, nowUs());
  as(1, () => noteBlocked(b.pool, Held.DB));
  const other = new PgPool(a.db, new PgUser('bob'));
  assert.equal(as(0, () => claimYield(other)), a.db.sharedSlot, 'another pool of the database gives one up');
  as(0, () => yieldDone(a.db.sharedSlot));
  waiter(a.pool, nowUs());
  as(0, () => noteBlocked(a.pool, Held.DB));
  assert.equal(as(0, () => claimYield(other)), -1, 'this loop\'s own clients wait on the database: they get it');
  assert.equal(t.total(a.db.sharedSlot, Counter.WAITING), 2);
  // the recorded count follows the waiting clients, by difference
  waiter(b.pool, nowUs());
  as(1, () => noteBlocked(b.pool, Held.DB));
  assert.equal(t.total(a.db.sharedSlot, Counter.WAITING), 3);
  assert.equal(t.share(a.db.sharedSlot, Counter.WAITING, 1), 2);
});

test('clients that waited long ask the loop holding the most servers, when it holds 2 more or they hold none', () => {
  const t = useTable(3);
  const [a, b, c] = [loop(), loop(), loop()];
  const long = nowUs() - 5_000_000;
  waiter(b.pool, long);
  as(1, () => noteBlocked(b.pool, Held.POOL));
  const s = b.pool.sharedSlot;
  as(0, () => takeServerSlot(a.pool, Held.POOL, 0));
  as(2, () => takeServerSlot(c.pool, Held.POOL, 0));
  as(2, () => takeServerSlot(c.pool, Held.POOL, 0));
  const now = nowUs();
  assert.equal(as(1, () => starvingTarget(b.pool, now)), 2, 'loop 2 holds the most');
  assert.equal(as(1, () => starvingTarget(b.pool, now + 1000)), -1, 'asked once a second at most');
  // loop 1 holds one: loop 2 holds only one more, so the servers stay where they are
  as(1, () => takeServerSlot(b.pool, Held.POOL, 0));
  assert.equal(as(1, () => starvingTarget(b.pool, now + 2_000_000)), -1);
  as(2, () => takeServerSlot(c.pool, Held.POOL, 0));
  assert.equal(as(1, () => starvingTarget(b.pool, now + 4_000_000)), 2);
  assert.equal(t.total(s, Counter.SERVERS), 5);
  // clients that have not waited long do not ask
  const fresh = loop();
  waiter(fresh.pool, nowUs());
  as(0, () => noteBlocked(fresh.pool, Held.POOL));
  assert.equal(as(0, () => starvingTarget(fresh.pool, nowUs())), -1);
});

test('room just given up is left to the loop that waits for it', () => {
  useTable(2);
  const a = loop();
  const b = loop();
  as(0, () => takeServerSlot(a.pool, Held.POOL, 1));
  waiter(b.pool, nowUs());
  as(1, () => noteBlocked(b.pool, Held.POOL));
  const s = as(0, () => claimYield(a.pool));
  assert.equal(s, a.pool.sharedSlot);
  as(0, () => releaseServerSlots(a.pool, Held.POOL, true));
  as(0, () => yieldDone(s));
  assert.equal(as(0, () => takeServerSlot(a.pool, Held.POOL, 1)), REFUSED, 'not taken back by the loop that gave it up');
  assert.equal(as(1, () => takeServerSlot(b.pool, Held.POOL, 1)), Held.POOL);
  as(1, () => clearBlocked(b.pool));
  as(1, () => releaseServerSlots(b.pool, Held.POOL, true));
  assert.equal(as(0, () => takeServerSlot(a.pool, Held.POOL, 1)), Held.POOL, 'nobody waits: free for all again');
});
