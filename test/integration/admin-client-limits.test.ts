// Admin console clients count as clients: SHOW USERS and SHOW DATABASES count them, and
// max_user_client_connections / max_db_client_connections limit them, except admin_users,
// who can always reach the console (as in PgBouncer).

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { sharedPostgres } from '../lib/postgres.js';
import type { TestPgbun } from '../lib/pgbun.js';
import { attemptLogin, type WireClient } from '../lib/wire.js';
import { ADMIN, STATS, adminLogin, show, startAdminBouncer } from './admin-lib.js';
import { waitUntil } from '../lib/pool-helpers.js';

const pg = await sharedPostgres();
const bouncers: TestPgbun[] = [];
const open: WireClient[] = [];

after(async () => {
  for (const c of open) c.destroy();
  for (const b of bouncers) await b.stop();
});

async function bouncer(settings: Record<string, string | number>): Promise<TestPgbun> {
  const b = await startAdminBouncer(pg, settings);
  bouncers.push(b);
  return b;
}

async function console(b: TestPgbun, user: string): Promise<WireClient> {
  const c = await adminLogin(b, user);
  open.push(c);
  return c;
}

async function refused(b: TestPgbun, user: string): Promise<string | undefined> {
  const r = await attemptLogin({ host: b.host, port: b.port }, { user, database: 'pgbouncer' });
  r.client.destroy();
  return r.error?.fields.M;
}

test('max_user_client_connections: stats users are counted and limited on the console, admin_users are not limited', async () => {
  const b = await bouncer({ max_user_client_connections: 2 });
  const s1 = await console(b, STATS);
  await console(b, STATS);
  const users = new Map((await show(s1, 'SHOW USERS')).map((r) => [r.name, r]));
  assert.equal(users.get(STATS)!.current_client_connections, '2');
  assert.equal(users.get(STATS)!.max_user_client_connections, '2');
  assert.equal(await refused(b, STATS), 'client connections exceeded (max_user_client_connections)');
  // three admins: all in, all counted
  const a = [await console(b, ADMIN), await console(b, ADMIN), await console(b, ADMIN)];
  const after = new Map((await show(a[0]!, 'SHOW USERS')).map((r) => [r.name, r]));
  assert.equal(after.get(ADMIN)!.current_client_connections, '3');
  // closing gives the count back
  s1.destroy();
  await waitUntil('the closed session no longer counted',
    async () => new Map((await show(a[0]!, 'SHOW USERS')).map((r) => [r.name, r])).get(STATS)!.current_client_connections,
    (n) => n === '1');
  await console(b, STATS);
});

test('max_db_client_connections: the console database counts its clients and limits stats users', async () => {
  const b = await bouncer({ max_db_client_connections: 2 });
  const s1 = await console(b, STATS);
  await console(b, STATS);
  assert.equal(await refused(b, STATS), 'client connections exceeded (max_db_client_connections)');
  const a = await console(b, ADMIN);
  const dbs = new Map((await show(a, 'SHOW DATABASES')).map((r) => [r.name, r]));
  assert.equal(dbs.get('pgbouncer')!.current_client_connections, '3');
  assert.equal(dbs.get('pgbouncer')!.max_client_connections, '2');
  s1.destroy();
});
