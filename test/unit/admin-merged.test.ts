// workers = N: how the console merges the SHOW results of the event loops (admin/merged.ts),
// on hand-made result sets with the real columns: sums by key, the longest wait, the
// stats_period averages recomputed, LISTS counting names once, FDS listing a shared socket once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mergeParts, partsNeeded } from '../../src/admin/merged.js';
import { SHOW_MAP, type ResultSet, type Value } from '../../src/admin/show.js';

/** Result sets of `name`'s columns, one per loop, with these rows. */
function loops(name: string, ...rows: Value[][][]): ResultSet[] {
  const cols = SHOW_MAP[name]!().cols;
  return rows.map((r) => ({ cols, rows: r }));
}

function merge(name: string, ...rows: Value[][][]): Array<Record<string, Value>> {
  const rs = mergeParts(name, [loops(name, ...rows)]);
  assert.deepEqual(rs.cols, SHOW_MAP[name]!().cols, 'the columns of one loop');
  return rs.rows.map((r) => Object.fromEntries(rs.cols.map((c, k) => [c.name, r[k]!])));
}

test('POOLS: counts summed per (database, user), the longest wait, pools in name order', () => {
  const row = (db: string, user: string, n: number, wait: number, waitUs: number): Value[] =>
    [db, user, n, n, 0, 0, n, 0, 0, n, 0, 0, 0, wait, waitUs, 'transaction', null];
  const out = merge('pools',
    [row('b', 'u', 1, 0, 500), row('a', 'u', 2, 1, 5)],
    [row('b', 'u', 3, 0, 900_000)],
    [row('a', 'u', 4, 0, 999_999), row('a', 'ab', 1, 0, 0)]);
  assert.deepEqual(out.map((r) => [r.database, r.user]), [['a', 'ab'], ['a', 'u'], ['b', 'u']]);
  const au = out[1]!;
  assert.equal(au.cl_active, 6);
  assert.equal(au.sv_idle, 6);
  assert.deepEqual([au.maxwait, au.maxwait_us], [1, 5], '1.000005 s beats 0.999999 s');
  assert.deepEqual([out[2]!.maxwait, out[2]!.maxwait_us], [0, 900_000]);
  assert.equal(au.pool_mode, 'transaction');
});

test('STATS: totals summed; rates summed, times weighted by the rate of what they average over', () => {
  // twelve totals then twelve averages: assignments, xacts, queries, recv, sent, xact_time,
  // query_time, wait_time, client parses, server parses, binds, logins
  const loop1: Value[] = ['db', 10, 10, 20, 100, 200, 1000, 500, 50, 1, 1, 1, 2,
    /* avg */ 2, 10, 20, 100, 200, 100, 50, 10, 1, 1, 1, 0];
  const loop2: Value[] = ['db', 30, 30, 60, 300, 600, 3000, 1500, 150, 3, 3, 3, 4,
    /* avg */ 6, 30, 60, 300, 600, 200, 10, 30, 3, 3, 3, 0];
  const [r] = merge('stats', [loop1], [loop2]);
  assert.equal(r!.total_xact_count, 40);
  assert.equal(r!.total_query_time, 2000);
  assert.equal(r!.total_client_login_count, 6);
  assert.equal(r!.avg_xact_count, 40);
  assert.equal(r!.avg_recv, 400);
  // (100 * 10 + 200 * 30) / 40 xacts/s; (50 * 20 + 10 * 60) / 80 queries/s; (10 * 2 + 30 * 6) / 8
  assert.equal(r!.avg_xact_time, 175);
  assert.equal(r!.avg_query_time, 20);
  assert.equal(r!.avg_wait_time, 25);
  // below one event a second everywhere: the loops that saw any count alike
  const slow = (t: number): Value[] => ['db', ...new Array<number>(12).fill(0), 0, 0, 0, 0, 0, t, 0, 0, 0, 0, 0, 0];
  assert.equal(merge('stats', [slow(300)], [slow(0)], [slow(100)])[0]!.avg_xact_time, 200);
  // STATS_AVERAGES are the same numbers without the totals
  const [a] = merge('stats_averages', [loop1.slice(0, 1).concat(loop1.slice(13))], [loop2.slice(0, 1).concat(loop2.slice(13))]);
  assert.equal(a!.xact_time, 175);
  assert.equal(a!.xact_count, 40);
});

test('TOTALS: the total_ rows summed, the avg_ rows merged as STATS', () => {
  const one = SHOW_MAP.totals!();
  const part = (totals: number[], avgs: number[]): ResultSet =>
    ({ cols: one.cols, rows: one.rows.map((r, k) => [r[0]!, k < 12 ? totals[k]! : avgs[k - 12]!]) });
  const t1 = new Array<number>(12).fill(1);
  const a1 = [0, 10, 0, 0, 0, 100, 0, 0, 0, 0, 0, 0];
  const a2 = [0, 30, 0, 0, 0, 200, 0, 0, 0, 0, 0, 0];
  const rs = mergeParts('totals', [[part(t1, a1), part(t1, a2)]]);
  const byName = new Map(rs.rows.map((r) => [r[0], r[1]]));
  assert.equal(byName.get('total_xact_count'), 2);
  assert.equal(byName.get('avg_xact_count'), 40);
  assert.equal(byName.get('avg_xact_time'), 175);
});

test('DATABASES and USERS: current connections summed, paused/disabled if so anywhere', () => {
  const db = (cur: number, clients: number, paused: number): Value[] =>
    ['d', 'h', 5432, 'd', null, 20, 0, 0, 3600, null, null, 0, cur, 0, clients, paused, 0];
  const [d] = merge('databases', [db(1, 2, 0)], [db(3, 4, 1)], [db(0, 0, 0)]);
  assert.deepEqual([d!.current_connections, d!.current_client_connections, d!.paused, d!.pool_size], [4, 6, 1, 20]);
  const user = (cur: number, clients: number): Value[] => ['u', '', '', null, 0, cur, 0, clients];
  const [u] = merge('users', [user(1, 1)], [user(2, 5)]);
  assert.deepEqual([u!.current_connections, u!.current_client_connections], [3, 6]);
});

test('LISTS: databases, users and pools counted once by name; connections summed', () => {
  const names = partsNeeded('lists');
  assert.deepEqual(names, ['lists', 'databases', 'users', 'pools', 'peer_pools', 'dns_hosts']);
  const lists = (used: number): Value[][] => SHOW_MAP.lists!().rows.map((r) =>
    [r[0]!, r[0] === 'used_clients' ? used : r[0] === 'databases' ? 99 : r[1]!]);
  const dbRow = (name: string): Value[] => [name, null, 0, name, null, 0, 0, 0, 0, null, null, 0, 0, 0, 0, 0, 0];
  const poolRow = (d: string): Value[] => [d, 'u', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, null, null];
  const parts: ResultSet[][] = [
    loops('lists', lists(3), lists(4)),
    loops('databases', [dbRow('a'), dbRow('b')], [dbRow('a'), dbRow('c')]),
    loops('users', [['u', '', '', null, 0, 0, 0, 0]], [['u', '', '', null, 0, 0, 0, 0]]),
    loops('pools', [poolRow('a')], [poolRow('a'), poolRow('c')]),
    loops('peer_pools', [], []),
    loops('dns_hosts', [['h1', 10, '1.2.3.4']], [['h1', 5, '1.2.3.4'], ['h2', 5, '1.2.3.5']]),
  ];
  const rs = mergeParts('lists', parts);
  const items = new Map(rs.rows.map((r) => [r[0], r[1]]));
  assert.equal(items.get('databases'), 3);
  assert.equal(items.get('users'), 1);
  assert.equal(items.get('pools'), 2);
  assert.equal(items.get('dns_names'), 2);
  assert.equal(items.get('used_clients'), 7);
  assert.deepEqual(rs.rows.map((r) => r[0]), SHOW_MAP.lists!().rows.map((r) => r[0]), 'rows in their order');
});

test('CLIENTS concatenated in loop order; FDS lists a listening socket shared by the loops once', () => {
  const client = (id: number): Value[] => ['C', 'u', 'd', null, 'active', '127.0.0.1', 1, '127.0.0.1', 6432, '', '', 0, 0,
    0, `0x${id}`, '', 0, '', '', 0, id];
  assert.deepEqual(merge('clients', [client(3)], [client(1), client(4)]).map((r) => r.id), [3, 1, 4]);
  const fd = (n: number, task: string): Value[] => [n, task, null, null, 'unix', 6432, '0', 0, null, null, null, null, null, null, null];
  const out = merge('fds', [fd(5, 'pooler'), fd(6, 'pooler'), fd(20, 'client')], [fd(5, 'pooler'), fd(7, 'pooler'), fd(21, 'client')]);
  assert.deepEqual(out.map((r) => [r.fd, r.task]), [[5, 'pooler'], [6, 'pooler'], [20, 'client'], [7, 'pooler'], [21, 'client']]);
});
