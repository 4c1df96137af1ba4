// Helpers shared by the admin-*.test.ts files: a pgbun with the console configured, raw console
// sessions, and RowDescription parsing (column names, type OIDs and lengths are part of the
// console's contract with monitoring tools).
import assert from 'node:assert/strict';
import { pgConnstr, startPgbun, type IniSpec, type StartPgbunOptions, type TestPgbun } from '../lib/pgbun.js';
import type { TestPostgres } from '../lib/postgres.js';
import { TEST_DB } from '../lib/postgres.js';
import { waitUntil } from '../lib/pool-helpers.js';
import { WireClient, wireLogin, type QueryResult, type WireMessage } from '../lib/wire.js';

export const ADMIN = 'admin';
export const STATS = 'stats';

export interface ColumnInfo {
  name: string;
  tableOid: number;
  attnum: number;
  typeOid: number;
  typeLen: number;
  typmod: number;
  format: number;
}

/** Every field of a RowDescription. */
export function parseRowDescription(m: WireMessage): ColumnInfo[] {
  assert.equal(m.type, 'T');
  const n = m.body.readInt16BE(0);
  const out: ColumnInfo[] = [];
  let o = 2;
  for (let k = 0; k < n; k++) {
    const end = m.body.indexOf(0, o);
    const name = m.body.toString('utf8', o, end);
    o = end + 1;
    out.push({
      name,
      tableOid: m.body.readInt32BE(o),
      attnum: m.body.readInt16BE(o + 4),
      typeOid: m.body.readInt32BE(o + 6),
      typeLen: m.body.readInt16BE(o + 10),
      typmod: m.body.readInt32BE(o + 12),
      format: m.body.readInt16BE(o + 16),
    });
    o += 18;
  }
  return out;
}

export interface AdminResult extends QueryResult {
  cols: ColumnInfo[];
  /** rows as objects keyed by column name */
  objects: Array<Record<string, string | null>>;
}

/** Run one console query and parse the result. */
export async function adminQuery(c: WireClient, sql: string, timeoutMs = 10_000): Promise<AdminResult> {
  const r = await c.query(sql, timeoutMs);
  const t = r.messages.find((m) => m.type === 'T');
  const cols = t ? parseRowDescription(t) : [];
  const objects = r.rows.map((row) => Object.fromEntries(cols.map((col, k) => [col.name, row[k] ?? null])));
  return { ...r, cols, objects };
}

/** Run a console query that must succeed; returns the rows as objects. */
export async function show(c: WireClient, sql: string): Promise<Array<Record<string, string | null>>> {
  const r = await adminQuery(c, sql);
  assert.equal(r.error, null, `${sql}: ${JSON.stringify(r.error)}`);
  return r.objects;
}

/** The console answers ERROR (08P01 unless given) with exactly this text, then ReadyForQuery. */
export async function expectAdminError(c: WireClient, sql: string, message: string | RegExp, code = '08P01'): Promise<void> {
  const r = await c.query(sql);
  assert.ok(r.error, `${sql}: expected an error, got ${JSON.stringify(r.tags)}`);
  assert.equal(r.error.S, 'ERROR', sql);
  assert.equal(r.error.C, code, sql);
  if (typeof message === 'string') assert.equal(r.error.M, message, sql);
  else assert.match(r.error.M, message, sql);
  assert.deepEqual(Object.keys(r.error.fields).sort(), ['C', 'M', 'S'], `${sql}: only S, C, M fields`);
  assert.equal(r.status, 'I');
}

/** The console answers with this CommandComplete tag (and no error). */
export async function expectTag(c: WireClient, sql: string, tag: string, timeoutMs = 10_000): Promise<QueryResult> {
  const r = await c.query(sql, timeoutMs);
  assert.equal(r.error, null, `${sql}: ${JSON.stringify(r.error)}`);
  assert.deepEqual(r.tags, [tag], sql);
  assert.equal(r.status, 'I');
  return r;
}

export async function adminLogin(b: TestPgbun, user = ADMIN, password?: string): Promise<WireClient> {
  const { client } = await wireLogin({ host: b.host, port: b.port }, { user, database: 'pgbouncer', password });
  return client;
}

/** A normal client of the pooler (trust auth in these tests). */
export async function userLogin(b: TestPgbun, database = TEST_DB, user = 'trust_user', params: Record<string, string> = {}): Promise<WireClient> {
  const { client } = await wireLogin({ host: b.host, port: b.port }, { user, database, params });
  return client;
}

/** databases every admin test pgbun serves: testdb, benchdb and a small pool `small` (pool_size=1). */
export function adminDatabases(pg: TestPostgres): Record<string, string> {
  return {
    [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB }),
    small: pgConnstr(pg, { dbname: TEST_DB, pool_size: 1 }),
    benchdb: pgConnstr(pg, { dbname: 'benchdb' }),
  };
}

export const USERLIST: Array<[string, string]> = [
  [ADMIN, ''],
  [STATS, ''],
  ['trust_user', ''],
  ['other', ''],
];

/** pgbun with trust auth, the console users and the test databases; `pgbouncer` overrides merge. */
export async function startAdminBouncer(pg: TestPostgres, pgbouncer: Record<string, string | number> = {},
  more: Partial<StartPgbunOptions> = {}): Promise<TestPgbun> {
  const ini: IniSpec = {
    databases: adminDatabases(pg),
    pgbouncer: { auth_type: 'trust', admin_users: ADMIN, stats_users: STATS, pool_mode: 'transaction', ...pgbouncer },
  };
  return startPgbun({ ini, userlist: USERLIST, ...more });
}

/** Poll `f` until it returns true (or fail after timeoutMs): waitUntil for a yes/no condition. */
export async function eventually(what: string, f: () => Promise<boolean> | boolean, timeoutMs = 5000): Promise<void> {
  await waitUntil(what, f, (ok) => ok, timeoutMs, 25);
}

/** Resolve `p` or report that it is still pending after ms (for "this must block" checks). */
export async function pendingAfter<T>(p: Promise<T>, ms: number): Promise<boolean> {
  let settled = false;
  p.then(() => (settled = true), () => (settled = true));
  await new Promise((r) => setTimeout(r, ms));
  return !settled;
}
