// Protocol-level prepared statements in transaction mode (max_prepared_statements, as PgBouncer
// 1.21+ does them): PGBOUNCER_<n> server names shared between clients, synthetic
// ParseComplete/CloseComplete in the right place, Parse injected on a server that lacks the
// statement, the per-server LRU (max_prepared_statements = 2) closing evicted statements,
// DEALLOCATE ALL / DISCARD ALL, the FATALs for reused and unknown names,
// max_prepared_statements = 0 forwarding names as they are; and real drivers: the `pg` driver's
// named statements across many clients and few servers, the `postgres` driver's pipelined
// prepared statements.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pgPool, postgresJs } from '../lib/clients.js';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres } from '../lib/postgres.js';
import {
  bindMessage,
  closeMessage,
  describeMessage,
  executeMessage,
  parseErrorFields,
  parseMessage,
  sync,
  toResult,
  type QueryResult,
  type WireClient,
  type WireMessage,
} from '../lib/wire.js';
import { ensureDatabase, expectFatal, login, roleUserlist, serverPids, settlesWithin, waitUntil } from '../lib/pool-helpers.js';
import { sleep } from '../lib/procs.js';

const pg = await sharedPostgres();
const DB = 'txp_prep';

let P: TestPgbun; // max_prepared_statements default (200)
let E: TestPgbun; // max_prepared_statements = 2
let Z: TestPgbun; // max_prepared_statements = 0
let R: TestPgbun; // server_reset_query_always = 1 (DISCARD ALL after every transaction)

const open: WireClient[] = [];
async function cl(b: TestPgbun, db: string): Promise<WireClient> {
  const { client } = await login(b, 'trust_user', db);
  open.push(client);
  return client;
}

before(async () => {
  await ensureDatabase(pg, DB);
  const dbs = (sizes: number[]) => Object.fromEntries(sizes.map((n) => [`p${n}`, pgConnstr(pg, { dbname: DB, pool_size: n })]));
  const base = { auth_type: 'trust', pool_mode: 'transaction', max_client_conn: 300 };
  [P, E, Z, R] = await Promise.all([
    startPgbun({
      ini: {
        pgbouncer: base,
        databases: { ...dbs([1, 2, 3]), pstmt: pgConnstr(pg, { dbname: DB, pool_size: 3, pool_mode: 'statement' }) },
      },
      userlist: roleUserlist(),
    }),
    startPgbun({ ini: { pgbouncer: { ...base, max_prepared_statements: 2 }, databases: dbs([1]) }, userlist: roleUserlist() }),
    startPgbun({ ini: { pgbouncer: { ...base, max_prepared_statements: 0 }, databases: dbs([2]) }, userlist: roleUserlist() }),
    startPgbun({ ini: { pgbouncer: { ...base, server_reset_query_always: 1 }, databases: dbs([1]) }, userlist: roleUserlist() }),
  ]);
});

after(async () => {
  for (const c of open) c.destroy();
  await Promise.all([P?.stop(), E?.stop(), Z?.stop(), R?.stop()]);
});

const types = (r: QueryResult): string => r.messages.map((m) => m.type).join('');

/** Parse (optional), Bind, Execute, Sync in one write; the collected response. */
async function run(c: WireClient, name: string, params: string[], sql?: string): Promise<QueryResult> {
  const msgs: Buffer[] = [];
  if (sql !== undefined) msgs.push(parseMessage(name, sql));
  msgs.push(bindMessage('', name, params), executeMessage(), sync());
  await c.write(msgs);
  return collectOrFail(c);
}

/** collect(), but when the connection closes the test fails naming the error pgbun sent. */
async function collectOrFail(c: WireClient): Promise<QueryResult> {
  const seen: WireMessage[] = [];
  for (;;) {
    let m: WireMessage;
    try {
      m = await c.readMessage(10_000);
    } catch (e) {
      const errs = seen.filter((x) => x.type === 'E').map((x) => JSON.stringify(parseErrorFields(x.body)));
      throw new Error(`${(e as Error).message} after ${seen.map((x) => x.type).join('')} ${errs.join(' ')}`);
    }
    seen.push(m);
    if (m.type === 'Z') break;
  }
  return toResult(seen);
}

/** The server's prepared statements, as seen by the server this client is given next. */
async function serverStatements(c: WireClient): Promise<Array<[string, string]>> {
  const r = await c.query('SELECT name, statement FROM pg_prepared_statements ORDER BY name');
  assert.equal(r.error, null);
  return r.rows.map((row) => [row[0]!, row[1]!]);
}

describe('name rewriting and sharing (max_prepared_statements = 200)', () => {
  test('a named Parse becomes PGBOUNCER_<n> on the server; the client keeps using its own name', async () => {
    const a = await cl(P, 'p1');
    await a.query('DEALLOCATE ALL');
    const r = await run(a, 'mine', ['21'], 'SELECT $1::int * 2 AS doubled');
    assert.equal(types(r), '12DCZ');
    assert.deepEqual(r.rows, [['42']]);
    const st = await serverStatements(a);
    assert.equal(st.length, 1);
    assert.match(st[0][0], /^PGBOUNCER_\d+$/);
    assert.equal(st[0][1], 'SELECT $1::int * 2 AS doubled');
    // executing again by the client's name
    const again = await run(a, 'mine', ['5']);
    assert.equal(types(again), '2DCZ');
    assert.deepEqual(again.rows, [['10']]);
  });

  test('two clients preparing the same text share one server statement; the second gets a synthetic ParseComplete in order', async () => {
    const a = await cl(P, 'p1');
    const b = await cl(P, 'p1');
    await a.query('DEALLOCATE ALL');
    const text = 'SELECT $1::text AS shared_probe';
    assert.deepEqual((await run(a, 'a_name', ['x'], text)).rows, [['x']]);
    // b: Parse of a statement the server already has, then Bind/Describe/Execute in one batch
    await b.write([parseMessage('b_name', text), bindMessage('', 'b_name', ['y']), describeMessage('P', ''), executeMessage(), sync()]);
    const r = await b.collect();
    assert.equal(types(r), '12TDCZ', 'ParseComplete, BindComplete, RowDescription, DataRow, CommandComplete, ReadyForQuery');
    assert.deepEqual(r.rows, [['y']]);
    const st = (await serverStatements(b)).filter(([, s]) => s === text);
    assert.equal(st.length, 1, 'one server-side statement for both clients');
  });

  test('Close of a statement is answered with CloseComplete and frees the name for a new text', async () => {
    const a = await cl(P, 'p1');
    await run(a, 'reuse', ['1'], 'SELECT $1::int AS first_text');
    await a.write([closeMessage('S', 'reuse'), sync()]);
    const closed = await a.collect();
    assert.equal(types(closed), '3Z');
    const r = await run(a, 'reuse', ['7'], 'SELECT $1::int + 100 AS second_text');
    assert.equal(types(r), '12DCZ');
    assert.deepEqual(r.rows, [['107']]);
  });

  test('a client without a server: Parse of a statement a server accepted and Sync are answered by pgbun, while the only server is in a transaction', async () => {
    // pgbench -M prepared prepares with PQprepare, which waits, while the thread's other clients
    // hold every server in an open transaction: waiting for a server here would stall them all
    const a = await cl(P, 'p1');
    const b = await cl(P, 'p1');
    const text = 'SELECT $1::int + 1 AS unlinked_probe';
    await a.write([parseMessage('a_s', text), sync()]);
    assert.equal(types(await collectOrFail(a)), '1Z');
    assert.equal((await a.query('BEGIN')).status, 'T');
    try {
      await b.write([parseMessage('b_s', text), sync()]);
      const r = await collectOrFail(b);
      assert.equal(types(r), '1Z', 'ParseComplete, ReadyForQuery with a\'s transaction open');
      assert.equal(r.status, 'I');
      // a statement no server has seen needs one: it waits for a's transaction
      await b.write([parseMessage('b_new', 'SELECT 2 AS unseen_probe'), sync()]);
      const unseen = collectOrFail(b);
      assert.equal(await settlesWithin(unseen, 300), false, 'an unknown statement waits for a server');
      await a.query('COMMIT');
      assert.equal(types(await unseen), '1Z');
      assert.deepEqual((await run(b, 'b_s', ['41'])).rows, [['42']], 'the statement runs on the server');
    } finally {
      await a.query('ROLLBACK').catch(() => {});
    }
  });

  test('a Bind on a server that lacks the statement gets a Parse injected (its ParseComplete swallowed)', async () => {
    const a = await cl(P, 'p2');
    const b = await cl(P, 'p2');
    const text = 'SELECT $1::int + 1 AS injected, pg_backend_pid() AS pid';
    const first = await run(a, 'inj', ['1'], text);
    assert.deepEqual(first.rows[0][0], '2');
    const pid1 = first.rows[0][1];
    // b takes that server (LIFO) and keeps it in a transaction
    assert.equal((await b.query('BEGIN')).status, 'T');
    const pb = (await b.query('SELECT pg_backend_pid()')).rows[0][0];
    assert.equal(pb, pid1, 'b holds the server a prepared on');
    const r = await run(a, 'inj', ['41']);
    assert.equal(types(r), '2DCZ', 'no ParseComplete reaches the client for the injected Parse');
    assert.equal(r.rows[0][0], '42');
    assert.notEqual(r.rows[0][1], pid1, 'ran on the other server');
    await b.query('COMMIT');
  });

  test('Describe of a statement by name works on any server', async () => {
    const a = await cl(P, 'p2');
    await run(a, 'desc', ['1'], 'SELECT $1::int AS described');
    await a.write([describeMessage('S', 'desc'), sync()]);
    const r = await a.collect();
    assert.equal(types(r), 'tTZ');
    assert.deepEqual(r.columns, ['described']);
  });
});

describe('statements and server failures', () => {
  test('a Parse the server rejects leaves no statement behind: the name can be prepared again', async () => {
    const a = await cl(P, 'p1');
    await a.write([parseMessage('broken', 'SELEC oops'), sync()]);
    const bad = await collectOrFail(a);
    assert.equal(bad.error?.C, '42601');
    assert.equal(bad.status, 'I');
    const r = await run(a, 'broken', ['9'], 'SELECT $1::int AS fixed');
    assert.equal(types(r), '12DCZ');
    assert.deepEqual(r.rows, [['9']]);
  });

  test('a server that dies takes its statements along; the client\'s statement is re-prepared on the next server', async () => {
    const a = await cl(P, 'p1');
    const first = await run(a, 'survivor', ['1'], 'SELECT $1::int AS survivor, pg_backend_pid()');
    const pid = first.rows[0][1];
    await pg.query('SELECT pg_terminate_backend($1::int)', 'postgres', [pid]);
    await waitUntil('the backend to exit', () => serverPids(pg, DB), (p) => !p.map(String).includes(pid!));
    await sleep(200);
    const r = await run(a, 'survivor', ['2']);
    assert.equal(r.error, null, JSON.stringify(r.error));
    assert.equal(types(r), '2DCZ');
    assert.equal(r.rows[0][0], '2');
    assert.notEqual(r.rows[0][1], pid);
  });
});

describe('DEALLOCATE ALL and DISCARD ALL', () => {
  for (const cmd of ['DEALLOCATE ALL', 'DISCARD ALL']) {
    test(`${cmd} clears the client's names and the server's statements`, async () => {
      const a = await cl(P, 'p1');
      await a.query('DEALLOCATE ALL');
      assert.deepEqual((await run(a, 'd1', ['3'], 'SELECT $1::int AS dealloc_probe')).rows, [['3']]);
      assert.equal((await serverStatements(a)).length, 1);
      assert.deepEqual((await a.query(cmd)).tags, [cmd]);
      assert.equal((await serverStatements(a)).length, 0);
      // the name is free again: no "already in use"
      const r = await run(a, 'd1', ['4'], 'SELECT $1::int AS dealloc_probe');
      assert.equal(types(r), '12DCZ');
      assert.deepEqual(r.rows, [['4']]);
      assert.equal((await serverStatements(a)).length, 1);
    });
  }

  test('server_reset_query_always: the reset DISCARD ALL empties the server, the client\'s statement is re-prepared', async () => {
    const a = await cl(R, 'p1');
    assert.deepEqual((await run(a, 'kept', ['1'], 'SELECT $1::int AS reset_probe')).rows, [['1']]);
    // the transaction ended: the server ran DISCARD ALL before being reused
    assert.equal((await serverStatements(a)).length, 0);
    for (const v of ['2', '3']) {
      const r = await run(a, 'kept', [v]);
      assert.equal(r.error, null, JSON.stringify(r.error));
      assert.equal(types(r), '2DCZ');
      assert.deepEqual(r.rows, [[v]]);
    }
  });

  test('after DEALLOCATE ALL the old name is unknown: FATAL "prepared statement did not exist"', async () => {
    const a = await cl(P, 'p1');
    await run(a, 'gone', ['1'], 'SELECT $1::int AS gone_probe');
    await a.query('DEALLOCATE ALL');
    await a.write([bindMessage('', 'gone', ['1']), executeMessage(), sync()]);
    await expectFatal(a, 'prepared statement did not exist');
  });
});

describe('FATAL errors for statement names', () => {
  test('Parse of a name already in use: FATAL "prepared statement name is already in use" (08P01), logged', async () => {
    const off = P.logOffset();
    const a = await cl(P, 'p1');
    await run(a, 'dup', ['1'], 'SELECT $1::int AS dup_probe');
    await a.write([parseMessage('dup', 'SELECT 2'), sync()]);
    await expectFatal(a, 'prepared statement name is already in use');
    await P.waitForLog(/prepared statement 'dup' was already prepared/, 3000, off);
    await P.waitForLog(/closing because: prepared statement name is already in use \(age=\d+s\)/, 3000, off);
  });

  test('Bind of an unknown name: FATAL "prepared statement did not exist" (08P01)', async () => {
    const off = P.logOffset();
    const a = await cl(P, 'p1');
    await a.write([bindMessage('', 'nosuch', []), executeMessage(), sync()]);
    await expectFatal(a, 'prepared statement did not exist');
    await P.waitForLog(/closing because: prepared statement did not exist \(age=\d+s\)/, 3000, off);
  });

  test('Describe of an unknown name: FATAL "prepared statement did not exist" (08P01)', async () => {
    const a = await cl(P, 'p1');
    await a.query('SELECT 1');
    await a.write([describeMessage('S', 'nosuch2'), sync()]);
    await expectFatal(a, 'prepared statement did not exist');
  });
});

describe('max_prepared_statements = 2: the per-server LRU closes evicted statements', () => {
  test('8 distinct statements on one server: all work, the server never holds more than 2, evicted ones are re-prepared', async () => {
    const a = await cl(E, 'p1');
    await a.query('DEALLOCATE ALL');
    for (let i = 1; i <= 8; i++) {
      const r = await run(a, `e${i}`, [String(i)], `SELECT $1::int * ${i} AS evict_${i}`);
      assert.equal(types(r), '12DCZ', `statement ${i}: the Close of the evicted one is not seen by the client`);
      assert.deepEqual(r.rows, [[String(i * i)]]);
      const st = await serverStatements(a);
      assert.ok(st.length <= 2, `after statement ${i}: ${st.length} statements on the server`);
      assert.ok(st.every(([n]) => /^PGBOUNCER_\d+$/.test(n)));
    }
    // the two most recent are on the server
    const texts = (await serverStatements(a)).map(([, s]) => s).sort();
    assert.deepEqual(texts, ['SELECT $1::int * 7 AS evict_7', 'SELECT $1::int * 8 AS evict_8']);
    // e1 was evicted long ago: executing it again injects its Parse (swallowed)
    for (const i of [1, 3, 8, 2]) {
      const r = await run(a, `e${i}`, ['10']);
      assert.equal(types(r), '2DCZ');
      assert.deepEqual(r.rows, [[String(10 * i)]]);
      assert.ok((await serverStatements(a)).length <= 2);
    }
  });

  test('a pipelined batch using more statements than the LRU holds still answers every message in order', async () => {
    const a = await cl(E, 'p1');
    const msgs: Buffer[] = [];
    for (let i = 1; i <= 5; i++) msgs.push(parseMessage(`pipe${i}`, `SELECT ${i} + $1::int AS pipe_${i}`));
    for (let i = 1; i <= 5; i++) msgs.push(bindMessage('', `pipe${i}`, ['100']), executeMessage());
    msgs.push(sync());
    await a.write(msgs);
    const r = await a.collect();
    assert.equal(types(r), '11111' + '2DC'.repeat(5) + 'Z');
    assert.deepEqual(r.rows, [['101'], ['102'], ['103'], ['104'], ['105']]);
    assert.ok((await serverStatements(a)).length <= 2);
  });
});

describe('max_prepared_statements = 0: names are forwarded as they are', () => {
  test('the server sees the client\'s name; on another server it does not exist (26000 from PostgreSQL)', async () => {
    const a = await cl(Z, 'p2');
    const b = await cl(Z, 'p2');
    await a.query('DEALLOCATE ALL');
    const r = await run(a, 'raw_name', ['5'], 'SELECT $1::int AS raw, pg_backend_pid()');
    assert.deepEqual(r.rows[0][0], '5');
    const pid1 = r.rows[0][1];
    assert.deepEqual(await serverStatements(a), [['raw_name', 'SELECT $1::int AS raw, pg_backend_pid()']]);
    assert.equal((await b.query('BEGIN')).status, 'T');
    assert.equal((await b.query('SELECT pg_backend_pid()')).rows[0][0], pid1);
    const other = await run(a, 'raw_name', ['6']);
    assert.ok(other.error, 'the other server has no such statement');
    assert.equal(other.error.C, '26000');
    assert.equal(other.error.S, 'ERROR');
    assert.equal(other.error.M, 'prepared statement "raw_name" does not exist');
    assert.equal(other.status, 'I');
    await b.query('COMMIT');
    // on the server that has it, it works
    assert.deepEqual((await run(a, 'raw_name', ['7'])).rows[0][0], '7');
  });
});

describe('real drivers, many clients over few servers', () => {
  test('pg driver: 40 clients with named statements ({name, text}) over pool_size = 3', async () => {
    const pool = pgPool({ host: P.host, port: P.port, user: 'trust_user', database: 'p3' }, { max: 40 });
    try {
      const jobs: Array<Promise<void>> = [];
      const pids = new Set<number>();
      for (let i = 0; i < 400; i++) {
        jobs.push(
          (async () => {
            if (i % 2 === 0) {
              const r = await pool.query({ name: 'add', text: 'SELECT $1::int + $2::int AS s, pg_backend_pid() AS pid', values: [i, 1] });
              assert.equal(r.rows[0].s, i + 1);
              pids.add(r.rows[0].pid);
            } else {
              const r = await pool.query({ name: 'cat', text: 'SELECT $1::text || $2::text AS t, pg_backend_pid() AS pid', values: ['n', String(i)] });
              assert.equal(r.rows[0].t, `n${i}`);
              pids.add(r.rows[0].pid);
            }
          })(),
        );
      }
      await Promise.all(jobs);
      assert.ok(pids.size >= 1 && pids.size <= 3, `${pids.size} servers used`);
      assert.ok((await serverPids(pg, DB, 'trust_user')).length >= 1);
      // named statements inside explicit transactions, several clients at once
      await Promise.all(
        Array.from({ length: 10 }, async (_, k) => {
          const c = await pool.connect();
          try {
            await c.query('BEGIN');
            const a = await c.query({ name: 'add', text: 'SELECT $1::int + $2::int AS s, pg_backend_pid() AS pid', values: [k, 2] });
            const b = await c.query({ name: 'cat', text: 'SELECT $1::text || $2::text AS t, pg_backend_pid() AS pid', values: ['t', String(k)] });
            assert.equal(a.rows[0].s, k + 2);
            assert.equal(b.rows[0].t, `t${k}`);
            assert.equal(a.rows[0].pid, b.rows[0].pid, 'one server for the whole transaction');
            await c.query('COMMIT');
          } finally {
            c.release();
          }
        }),
      );
    } finally {
      await pool.end();
    }
  });

  test('pg driver in statement mode: named statements over pool_size = 3', async () => {
    const pool = pgPool({ host: P.host, port: P.port, user: 'trust_user', database: 'pstmt' }, { max: 20 });
    try {
      await Promise.all(
        Array.from({ length: 200 }, async (_, i) => {
          const r = await pool.query({ name: 'sq', text: 'SELECT $1::int * $1::int AS sq', values: [i] });
          assert.equal(r.rows[0].sq, i * i);
        }),
      );
    } finally {
      await pool.end();
    }
  });

  test('postgres driver: 10 connections each pipelining 30 prepared queries over pool_size = 3', async () => {
    const sqls = Array.from({ length: 10 }, () => postgresJs({ host: P.host, port: P.port, user: 'trust_user', database: 'p3' }, { max: 1, prepare: true }));
    try {
      await Promise.all(
        sqls.map(async (sql, k) => {
          const rs = await Promise.all(
            Array.from({ length: 30 }, (_, i) =>
              i % 3 === 0
                ? sql`SELECT ${i}::int + ${k}::int AS v`
                : i % 3 === 1
                  ? sql`SELECT ${'s' + i}::text AS v`
                  : sql`SELECT ${i}::int * 2 AS v, ${k}::int AS k`,
            ),
          );
          rs.forEach((r, i) => {
            const want = i % 3 === 0 ? i + k : i % 3 === 1 ? 's' + i : i * 2;
            assert.equal(r[0].v, want, `connection ${k} query ${i}`);
          });
          // a transaction with pipelined statements inside
          const [x, y] = await sql.begin((t) => [t`SELECT ${k}::int AS x, pg_backend_pid() AS pid`, t`SELECT ${k * 2}::int AS y, pg_backend_pid() AS pid`]);
          assert.equal(x[0].x, k);
          assert.equal(y[0].y, k * 2);
          assert.equal(x[0].pid, y[0].pid);
        }),
      );
    } finally {
      await Promise.all(sqls.map((s) => s.end()));
    }
    // the postgres driver named its statements; on the server they are PGBOUNCER_<n>
    const c = await cl(P, 'p3');
    const names = (await serverStatements(c)).map(([n]) => n);
    assert.ok(names.every((n) => /^PGBOUNCER_\d+$/.test(n)), names.join(','));
  });
});
