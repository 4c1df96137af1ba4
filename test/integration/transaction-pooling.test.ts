// Transaction and statement pooling with PgBouncer's semantics: when a server
// is linked and released, statement mode's FATAL, pool mode precedence user > database > global,
// isolation between clients sharing one server (tracked parameters re-applied with one SET batch,
// application_name_add_host, server_reset_query_always), and a client that disconnects
// mid-transaction never handing its transaction to the next client.
//
// Every pool here has pool_size = 1, so consecutive clients share one PostgreSQL backend and
// anything leaking between them would be visible.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres } from '../lib/postgres.js';
import { sleep } from '../lib/procs.js';
import { parseErrorFields, type PgError, type WireClient } from '../lib/wire.js';
import {
  closingRe,
  ensureDatabase,
  login,
  logLines,
  reEscape,
  roleUserlist,
  serverPids,
  settlesWithin,
  waitUntil,
} from '../lib/pool-helpers.js';

const pg = await sharedPostgres();
const DB = 'txp_modes';
const STMT_ERR = 'transaction blocks not allowed in statement pooling mode';

let txb: TestPgbun; // global pool_mode = transaction, per-db and per-user overrides
let stb: TestPgbun; // global pool_mode = statement
let rsb: TestPgbun; // transaction mode with server_reset_query_always = 1
let ahb: TestPgbun; // transaction mode with application_name_add_host = 1

const open: WireClient[] = [];
async function cl(b: TestPgbun, db: string, user = 'trust_user', params: Record<string, string> = {}): Promise<WireClient> {
  const { client } = await login(b, user, db, params);
  open.push(client);
  return client;
}

function db(extra: Record<string, string | number> = {}): string {
  return pgConnstr(pg, { dbname: DB, pool_size: 1, ...extra });
}

before(async () => {
  await ensureDatabase(pg, DB);
  // every statement on this database reaches the server log: the SET batch is checked there
  await pg.query(`ALTER DATABASE ${DB} SET log_statement = 'all'`);
  await pg.query(`CREATE TABLE IF NOT EXISTS modes_t (x int)`, DB);
  await pg.query(`GRANT ALL ON modes_t TO PUBLIC`, DB);
  const common = { auth_type: 'trust', max_client_conn: 200 };
  [txb, stb, rsb, ahb] = await Promise.all([
    startPgbun({
      ini: {
        pgbouncer: { ...common, pool_mode: 'transaction' },
        databases: {
          m_tx: db({ pool_mode: 'transaction' }),
          m_stmt: db({ pool_mode: 'statement' }),
          m_sess: db({ pool_mode: 'session' }),
          m_none: db(),
        },
        users: { md5_user: 'pool_mode=session', scram_user: 'pool_mode=statement' },
      },
      userlist: roleUserlist(),
    }),
    startPgbun({
      ini: {
        pgbouncer: { ...common, pool_mode: 'statement' },
        databases: { s_none: db(), s_sess: db({ pool_mode: 'session' }) },
        users: { scram_user: 'pool_mode=transaction' },
      },
      userlist: roleUserlist(),
    }),
    startPgbun({
      ini: {
        pgbouncer: { ...common, pool_mode: 'transaction', server_reset_query_always: 1 },
        databases: { r_tx: db() },
      },
      userlist: roleUserlist(),
    }),
    startPgbun({
      ini: {
        pgbouncer: { ...common, pool_mode: 'transaction', application_name_add_host: 1 },
        databases: { a_tx: db() },
      },
      userlist: roleUserlist(),
    }),
  ]);
});

after(async () => {
  for (const c of open) c.destroy();
  await Promise.all([txb?.stop(), stb?.stop(), rsb?.stop(), ahb?.stop()]);
});

/** First row, first column. */
async function one(c: WireClient, sql: string): Promise<string | null> {
  const r = await c.query(sql);
  assert.equal(r.error, null, `${sql}: ${JSON.stringify(r.error)}`);
  return r.rows[0]?.[0] ?? null;
}

async function pidOf(c: WireClient): Promise<number> {
  return Number(await one(c, 'SELECT pg_backend_pid()'));
}

/**
 * Send BEGIN and report what happens: a FATAL (statement mode) or the ReadyForQuery status.
 * In statement mode PgBouncer may or may not pass the server's CommandComplete/ReadyForQuery
 * before its FATAL, so everything up to the error or a quiet 300 ms is read.
 */
async function beginOutcome(c: WireClient): Promise<{ fatal: PgError | null; status: string }> {
  await c.write(Buffer.concat([Buffer.from('Q'), int32(4 + 6), Buffer.from('BEGIN\0')]));
  let status = '';
  for (;;) {
    let m;
    try {
      m = await c.readMessage(status === '' ? 5000 : 300);
    } catch (e) {
      if (status !== '') return { fatal: null, status };
      throw e;
    }
    if (m.type === 'E') return { fatal: parseErrorFields(m.body), status };
    if (m.type === 'Z') status = String.fromCharCode(m.body[0]);
  }
}

function int32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n, 0);
  return b;
}

/**
 * The pool mode in effect for (user, database), told apart by behaviour only: statement mode
 * rejects BEGIN; session mode keeps the pool's only server linked to an idle client, so a
 * second client waits; transaction mode lets it through.
 */
async function effectiveMode(b: TestPgbun, database: string, user: string): Promise<'statement' | 'session' | 'transaction'> {
  const c1 = await cl(b, database, user);
  const c2 = await cl(b, database, user);
  try {
    assert.deepEqual((await c1.query('SELECT 1')).rows, [['1']]);
    const second = c2.query('SELECT 2');
    const through = await settlesWithin(second, 1000);
    if (!through) {
      await c1.terminate();
      const r = await second; // released when the session ends
      assert.deepEqual(r.rows, [['2']]);
      return 'session';
    }
    assert.deepEqual((await second).rows, [['2']]);
    const out = await beginOutcome(c2);
    if (out.fatal !== null) {
      assert.equal(out.fatal.S, 'FATAL');
      assert.equal(out.fatal.C, '08P01');
      assert.equal(out.fatal.M, STMT_ERR);
      await c2.waitClose();
      return 'statement';
    }
    assert.equal(out.status, 'T');
    return 'transaction';
  } finally {
    await c1.terminate();
    await c2.terminate();
  }
}

describe('pool mode precedence: user > database > global', () => {
  const cases: Array<[string, () => TestPgbun, string, string, string]> = [
    ['global transaction', () => txb, 'm_none', 'trust_user', 'transaction'],
    ['global statement', () => stb, 's_none', 'trust_user', 'statement'],
    ['database statement over global transaction', () => txb, 'm_stmt', 'trust_user', 'statement'],
    ['database session over global transaction', () => txb, 'm_sess', 'trust_user', 'session'],
    ['database session over global statement', () => stb, 's_sess', 'trust_user', 'session'],
    ['database transaction (explicit)', () => txb, 'm_tx', 'trust_user', 'transaction'],
    ['user session over database statement', () => txb, 'm_stmt', 'md5_user', 'session'],
    ['user session over global transaction', () => txb, 'm_none', 'md5_user', 'session'],
    ['user statement over database transaction', () => txb, 'm_tx', 'scram_user', 'statement'],
    ['user statement over database session', () => txb, 'm_sess', 'scram_user', 'statement'],
    ['user transaction over global statement', () => stb, 's_none', 'scram_user', 'transaction'],
    ['user transaction over database session', () => stb, 's_sess', 'scram_user', 'transaction'],
  ];
  for (const [name, b, database, user, want] of cases) {
    test(`${name}: ${user}@${database} pools in ${want} mode`, async () => {
      assert.equal(await effectiveMode(b(), database, user), want);
    });
  }
});

describe('transaction mode: linking and releasing', () => {
  test('two clients share the one server; a second client waits while the first is in a transaction', async () => {
    const a = await cl(txb, 'm_tx');
    const b = await cl(txb, 'm_tx');
    const pa = await pidOf(a);
    const pb = await pidOf(b);
    assert.equal(pa, pb, 'pool_size=1: the same backend for both clients');
    assert.equal((await a.query('BEGIN')).status, 'T');
    await a.query('INSERT INTO modes_t VALUES (100)');
    const waiting = b.query('SELECT count(*) FROM modes_t WHERE x = 100');
    assert.equal(await settlesWithin(waiting, 600), false, 'b must wait while a holds the server in a transaction');
    const commit = await a.query('COMMIT');
    assert.deepEqual(commit.tags, ['COMMIT']);
    const r = await waiting;
    assert.deepEqual(r.rows, [['1']], 'b runs after the commit and sees the committed row');
    assert.equal(r.status, 'I');
    assert.equal(await pidOf(b), pa);
    await pg.query('DELETE FROM modes_t WHERE x = 100', DB);
  });

  test('a pipelined batch keeps the server until its last response (release on ReadyForQuery I with nothing owed)', async () => {
    const a = await cl(txb, 'm_tx');
    const b = await cl(txb, 'm_tx');
    // two simple queries in one write: the server is idle ('I') after the first, but a
    // response is still owed, so it must not go to b in between
    await a.write(Buffer.concat([q('SELECT pg_backend_pid(), pg_sleep(0.3)'), q('SELECT pg_backend_pid()')]));
    await sleep(50);
    const bq = b.query('SELECT pg_backend_pid()');
    const r1 = await a.collect();
    const r2 = await a.collect();
    assert.equal(r1.status, 'I');
    assert.equal(r2.status, 'I');
    assert.equal(r1.rows[0][0], r2.rows[0][0], 'both of a\'s queries ran on one server');
    assert.equal((await bq).rows[0][0], r1.rows[0][0]);
  });
});

test('transaction mode: an extended-protocol batch ended by Flush (no Sync) keeps the server until the Sync', async () => {
  const a = await cl(txb, 'm_tx');
  const b = await cl(txb, 'm_tx');
  await a.write([
    ext('P', Buffer.from('\0SELECT pg_backend_pid()\0\0\0')),
    ext('B', Buffer.from('\0\0\0\0\0\0\0\0')),
    ext('E', Buffer.from('\0\0\0\0\0')),
    ext('H', Buffer.alloc(0)),
  ]);
  const got = await a.readUntil('C');
  assert.deepEqual(got.map((m) => m.type), ['1', '2', 'D', 'C']);
  const pidA = got[2].body.toString('utf8', 6);
  const bq = b.query('SELECT pg_backend_pid()');
  assert.equal(await settlesWithin(bq, 400), false, 'no Sync yet: the server stays with a');
  await a.write(ext('S', Buffer.alloc(0)));
  const z = await a.readMessage();
  assert.equal(z.type, 'Z');
  assert.equal(String.fromCharCode(z.body[0]), 'I');
  assert.equal((await bq).rows[0][0], pidA);
});

test('transaction mode: a tracked parameter the server rejects: FATAL "invalid server parameter"', async () => {
  const off = txb.logOffset();
  const { client: a, login: l } = await login(txb, 'trust_user', 'm_tx', { TimeZone: 'No/Such_Zone' });
  open.push(a);
  assert.equal(l.params.TimeZone, 'No/Such_Zone', 'the welcome carries the client\'s own value');
  await a.write(q('SELECT 1'));
  const e = await a.expectError({ timeoutMs: 5000 });
  assert.deepEqual([e.S, e.C, e.M], ['FATAL', '08P01', 'invalid server parameter']);
  await txb.waitForLog(closingRe('C', 'm_tx', 'trust_user', 'invalid server parameter'), 3000, off);
  await txb.waitForLog(closingRe('S', 'm_tx', 'trust_user', 'invalid server parameter'), 3000, off);
  // the pool goes on
  const b = await cl(txb, 'm_tx');
  assert.deepEqual((await b.query('SELECT 1')).rows, [['1']]);
});

test('the welcome carries the client\'s tracked parameters (ParameterStatus)', async () => {
  const { client, login: l } = await login(txb, 'trust_user', 'm_tx', { DateStyle: 'Postgres, DMY', TimeZone: 'Asia/Tokyo', application_name: 'welcome_app' });
  open.push(client);
  assert.equal(l.params.DateStyle, 'Postgres, DMY');
  assert.equal(l.params.TimeZone, 'Asia/Tokyo');
  assert.equal(l.params.application_name, 'welcome_app');
  assert.equal(l.params.server_encoding, 'UTF8');
  assert.match(l.params.server_version ?? '', /^15/);
});

function q(sql: string): Buffer {
  const body = Buffer.from(sql + '\0', 'utf8');
  return Buffer.concat([Buffer.from('Q'), int32(body.length + 4), body]);
}

describe('statement mode', () => {
  test('single statements and implicit-transaction batches work, on one shared server', async () => {
    const a = await cl(stb, 's_none');
    const b = await cl(stb, 's_none');
    const r = await a.query('SELECT 1; SELECT 2');
    assert.deepEqual(r.rows, [['1'], ['2']]);
    assert.equal(r.status, 'I');
    assert.equal(await pidOf(a), await pidOf(b));
  });

  test(`BEGIN closes client and server: FATAL "${STMT_ERR}" (08P01), logged as closing because`, async () => {
    const off = stb.logOffset();
    const a = await cl(stb, 's_none');
    const pid = await pidOf(a);
    const out = await beginOutcome(a);
    assert.ok(out.fatal, 'a FATAL after BEGIN');
    assert.deepEqual(out.fatal, { S: 'FATAL', C: '08P01', M: STMT_ERR, fields: { S: 'FATAL', C: '08P01', M: STMT_ERR } });
    await a.waitClose();
    await stb.waitForLog(closingRe('C', 's_none', 'trust_user', STMT_ERR), 3000, off);
    await stb.waitForLog(new RegExp(`WARNING C-0x[0-9a-f]+: s_none/trust_user@\\S+ pooler error: ${STMT_ERR}$`), 3000, off);
    // the server (in a transaction) is closed, not reused
    await waitUntil('the backend in a transaction to go away', () => serverPids(pg, DB), (p) => !p.includes(pid));
    const c = await cl(stb, 's_none');
    assert.notEqual(await pidOf(c), pid);
    assert.equal((await c.query('SELECT 1')).status, 'I');
  });

  test('BEGIN in statement mode: the client gets only the FATAL, the server closes first with the same reason', async () => {
    const off = stb.logOffset();
    const a = await cl(stb, 's_none');
    await a.write(Buffer.concat([Buffer.from('Q'), int32(4 + 6), Buffer.from('BEGIN\0')]));
    // neither BEGIN's CommandComplete nor the ReadyForQuery 'T' reach the client
    const m = await a.readMessage();
    assert.equal(m.type, 'E');
    assert.deepEqual(parseErrorFields(m.body).M, STMT_ERR);
    await a.waitClose();
    await stb.waitForLog(new RegExp(`pooler error: ${STMT_ERR}$`), 3000, off);
    const lines = stb.log().slice(off).split('\n').filter((l) => l.includes(STMT_ERR));
    assert.equal(lines.length, 3, lines.join('\n'));
    assert.match(lines[0]!, closingRe('S', 's_none', 'trust_user', STMT_ERR));
    assert.match(lines[1]!, closingRe('C', 's_none', 'trust_user', STMT_ERR));
    assert.match(lines[2]!, new RegExp(`WARNING C-0x[0-9a-f]+: s_none/trust_user@\\S+ pooler error: ${STMT_ERR}$`));
  });

  test('an extended-protocol BEGIN is refused the same way', async () => {
    const a = await cl(stb, 's_none');
    await a.write(Buffer.concat([ext('P', Buffer.from('\0BEGIN\0\0\0')), ext('B', Buffer.from('\0\0\0\0\0\0\0\0')), ext('E', Buffer.from('\0\0\0\0\0')), ext('S', Buffer.alloc(0))]));
    for (;;) {
      const m = await a.readMessage();
      if (m.type === 'E') {
        const e = parseErrorFields(m.body);
        assert.deepEqual([e.S, e.C, e.M], ['FATAL', '08P01', STMT_ERR]);
        break;
      }
    }
    await a.waitClose();
  });
});

function ext(type: string, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from(type), int32(body.length + 4), body]);
}

describe('isolation between clients sharing a server (transaction mode)', () => {
  test('tracked parameters (startup and SET) are re-applied per client: each sees its own values', async () => {
    const show = "SELECT current_setting('DateStyle'), current_setting('TimeZone'), current_setting('application_name'), current_setting('IntervalStyle'), pg_backend_pid()";
    const a = await cl(txb, 'm_tx', 'trust_user', { DateStyle: 'German, DMY', TimeZone: 'Asia/Tokyo', application_name: 'client_a' });
    const b = await cl(txb, 'm_tx', 'trust_user', { TimeZone: 'America/New_York', application_name: 'client_b' });
    const pids = new Set<string>();
    for (let i = 0; i < 3; i++) {
      const ra = await a.query(show);
      const rb = await b.query(show);
      assert.deepEqual(ra.rows[0].slice(0, 4), ['German, DMY', 'Asia/Tokyo', 'client_a', 'postgres']);
      assert.deepEqual(rb.rows[0].slice(0, 4), ['ISO, MDY', 'America/New_York', 'client_b', 'postgres']);
      // the SET batch's results are swallowed: each client sees only its own query's answer
      assert.deepEqual(ra.tags, ['SELECT 1']);
      assert.deepEqual(rb.tags, ['SELECT 1']);
      pids.add(ra.rows[0][4]!).add(rb.rows[0][4]!);
    }
    assert.equal(pids.size, 1, 'one server for both clients');
    // SET in one client never reaches the other
    assert.deepEqual((await a.query("SET TimeZone = 'Europe/Paris'")).tags, ['SET']);
    assert.deepEqual((await a.query("SET IntervalStyle = 'postgres_verbose'")).tags, ['SET']);
    assert.deepEqual((await b.query("SET application_name = 'client_b2'")).tags, ['SET']);
    const ra = await a.query(show);
    const rb = await b.query(show);
    assert.deepEqual(ra.rows[0].slice(0, 4), ['German, DMY', 'Europe/Paris', 'client_a', 'postgres_verbose']);
    assert.deepEqual(rb.rows[0].slice(0, 4), ['ISO, MDY', 'America/New_York', 'client_b2', 'postgres']);
    assert.equal(new Set([ra.rows[0][4], rb.rows[0][4], ...pids]).size, 1);
    // and the server-side view agrees while a's query runs
    const seen = await a.query(`SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()`);
    assert.deepEqual(seen.rows, [['client_a']]);
  });

  test('client_encoding and parameters given in `options` (-c) are tracked per client too', async () => {
    const show = "SELECT current_setting('client_encoding'), current_setting('TimeZone'), pg_backend_pid()";
    const a = await cl(txb, 'm_tx', 'trust_user', { client_encoding: 'LATIN1', options: '-c TimeZone=Asia/Seoul' });
    const b = await cl(txb, 'm_tx', 'trust_user', { client_encoding: 'UTF8', options: '--TimeZone=Europe/Lisbon' });
    for (let i = 0; i < 2; i++) {
      const ra = await a.query(show);
      const rb = await b.query(show);
      assert.deepEqual(ra.rows[0].slice(0, 2), ['LATIN1', 'Asia/Seoul']);
      assert.deepEqual(rb.rows[0].slice(0, 2), ['UTF8', 'Europe/Lisbon']);
      assert.equal(ra.rows[0][2], rb.rows[0][2]);
    }
    // a SET is reported to the client that made it with a ParameterStatus
    const r = await a.query("SET client_encoding = 'WIN1252'");
    const ps = r.messages.filter((m) => m.type === 'S').map((m) => m.body.toString('latin1'));
    assert.deepEqual(ps, ['client_encoding\0WIN1252\0']);
    assert.equal((await b.query(show)).rows[0][0], 'UTF8');
    assert.equal((await a.query(show)).rows[0][0], 'WIN1252');
  });

  test('the parameters are applied with one simple-Query SET batch', async () => {
    const a = await cl(txb, 'm_tx', 'trust_user', { DateStyle: 'SQL, DMY', TimeZone: 'Asia/Kolkata', application_name: 'batch_a' });
    const b = await cl(txb, 'm_tx', 'trust_user', { application_name: 'batch_b' });
    await b.query('SELECT 1');
    const marker = `batch_marker_${Date.now()}`;
    assert.deepEqual((await a.query(`SELECT '${marker}'`)).rows, [[marker]]);
    const log = await waitUntil('the marker in the server log', () => pg.log(), (l) => l.includes(marker), 5000);
    const lines = log.split('\n');
    const at = lines.findIndex((l) => l.includes(`SELECT '${marker}'`));
    // the statement right before the client's own one (same backend) is the batch
    const before = lines.slice(0, at).filter((l) => / trust_user@txp_modes LOG:  statement: /.test(l));
    const batch = before[before.length - 1];
    assert.match(batch, /LOG: {2}statement: SET DateStyle='SQL, DMY';SET TimeZone='Asia\/Kolkata';SET application_name='batch_a';$/);
  });

  test('application_name_add_host appends " - host:port" of the client', async () => {
    const a = await cl(ahb, 'a_tx', 'trust_user', { application_name: 'myapp' });
    const want = `myapp - 127.0.0.1:${a.socket.localPort}`;
    assert.equal(await one(a, 'SHOW application_name'), want);
    assert.equal(await one(a, 'SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()'), want);
    const b = await cl(ahb, 'a_tx', 'trust_user', { application_name: 'other' });
    assert.equal(await one(b, 'SHOW application_name'), `other - 127.0.0.1:${b.socket.localPort}`);
    assert.equal(await one(a, 'SHOW application_name'), want);
  });

  test('without server_reset_query_always no reset query runs between transactions (session state stays on the server)', async () => {
    const a = await cl(txb, 'm_tx');
    const b = await cl(txb, 'm_tx');
    await a.query('CREATE TEMP TABLE IF NOT EXISTS leak_probe (x int)');
    await a.query("SET work_mem = '7MB'");
    assert.equal(await pidOf(a), await pidOf(b));
    assert.equal(await one(b, "SELECT count(*) FROM pg_class WHERE relname = 'leak_probe' AND relpersistence = 't'"), '1');
    assert.equal(await one(b, 'SHOW work_mem'), '7MB');
    await a.query('DISCARD ALL'); // leave the shared server clean for the other tests
  });

  test('server_reset_query_always = 1: a temp table or SET of one client never reaches the next one', async () => {
    const a = await cl(rsb, 'r_tx', 'trust_user', { TimeZone: 'Asia/Tokyo' });
    const b = await cl(rsb, 'r_tx');
    assert.deepEqual((await a.query('CREATE TEMP TABLE reset_probe (x int)')).tags, ['CREATE TABLE']);
    assert.deepEqual((await a.query("SET work_mem = '7MB'")).tags, ['SET']);
    assert.equal(await pidOf(a), await pidOf(b), 'same server');
    assert.equal(await one(b, "SELECT count(*) FROM pg_class WHERE relname = 'reset_probe' AND relpersistence = 't'"), '0');
    assert.equal(await one(b, 'SHOW work_mem'), '4MB');
    const [{ tz }] = await pg.query<{ tz: string }>("SELECT reset_val AS tz FROM pg_settings WHERE name = 'TimeZone'");
    assert.equal(await one(b, 'SHOW TimeZone'), tz, 'the server default');
    // a's tracked parameter is re-applied after the reset; its temp table is gone too
    assert.equal(await one(a, 'SHOW TimeZone'), 'Asia/Tokyo');
    assert.equal(await one(a, "SELECT count(*) FROM pg_class WHERE relname = 'reset_probe' AND relpersistence = 't'"), '0');
  });
});

describe('a client that disconnects mid-transaction never hands its transaction to the next client', () => {
  for (const how of ['EOF', 'Terminate'] as const) {
    test(`${how} inside an open transaction: the server is closed ("client disconnect while server was not ready")`, async () => {
      const off = txb.logOffset();
      const a = await cl(txb, 'm_tx');
      const b = await cl(txb, 'm_tx');
      assert.equal((await a.query('BEGIN')).status, 'T');
      await a.query('INSERT INTO modes_t VALUES (200)');
      await a.query('CREATE TEMP TABLE mid_tx_probe (x int)');
      await a.query("SET LOCAL work_mem = '9MB'");
      const pid = await pidOf(a);
      const waiting = b.query(
        "SELECT (SELECT count(*) FROM modes_t WHERE x = 200), (SELECT count(*) FROM pg_class WHERE relname = 'mid_tx_probe'), pg_current_xact_id_if_assigned() IS NULL, current_setting('work_mem'), pg_backend_pid()",
      );
      assert.equal(await settlesWithin(waiting, 300), false);
      if (how === 'EOF') a.destroy();
      else await a.terminate();
      const r = await waiting;
      assert.equal(r.error, null, JSON.stringify(r.error));
      assert.deepEqual(r.rows[0].slice(0, 4), ['0', '0', 't', '4MB'], 'nothing of a\'s transaction is visible to b');
      assert.equal(r.status, 'I', 'b is not inside a transaction');
      assert.notEqual(Number(r.rows[0][4]), pid, 'b got a new server');
      await txb.waitForLog(closingRe('S', 'm_tx', 'trust_user', 'client disconnect while server was not ready'), 3000, off);
      await txb.waitForLog(closingRe('C', 'm_tx', 'trust_user', how === 'EOF' ? 'client unexpected eof' : 'client close request'), 3000, off);
      await waitUntil('the old backend to exit', () => serverPids(pg, DB), (p) => !p.includes(pid));
      const [{ n }] = await pg.query<{ n: string }>('SELECT count(*) AS n FROM modes_t WHERE x = 200', DB);
      assert.equal(n, '0', 'the transaction was rolled back');
    });
  }

  test('disconnect with a query in progress: the server is closed ("client disconnected with query in progress")', async () => {
    const off = txb.logOffset();
    const a = await cl(txb, 'm_tx');
    const pid = await pidOf(a);
    await a.write(q('SELECT pg_sleep(1.5)'));
    await sleep(200);
    a.destroy();
    await txb.waitForLog(closingRe('S', 'm_tx', 'trust_user', 'client disconnected with query in progress'), 3000, off);
    const b = await cl(txb, 'm_tx');
    const started = Date.now();
    const pb = await pidOf(b);
    assert.notEqual(pb, pid);
    assert.ok(Date.now() - started < 1000, 'the next client does not wait for the abandoned query');
    await waitUntil('the old backend to exit', () => serverPids(pg, DB), (p) => !p.includes(pid), 5000);
  });

  test('a server that dies while linked: the client is closed ("server conn crashed?"), the next client gets a new server', async () => {
    const off = txb.logOffset();
    const a = await cl(txb, 'm_tx');
    assert.equal((await a.query('BEGIN')).status, 'T');
    const pid = await pidOf(a);
    await pg.query('SELECT pg_terminate_backend($1::int)', 'postgres', [pid]);
    await a.closedPromise;
    await txb.waitForLog(closingRe('S', 'm_tx', 'trust_user', 'server conn crashed?'), 3000, off);
    await txb.waitForLog(closingRe('C', 'm_tx', 'trust_user', 'server conn crashed?'), 3000, off);
    const b = await cl(txb, 'm_tx');
    const r = await b.query('SELECT pg_backend_pid()');
    assert.equal(r.status, 'I');
    assert.notEqual(Number(r.rows[0][0]), pid);
  });

  test('after COMMIT the same server is reused (clean release, no close)', async () => {
    const off = txb.logOffset();
    const a = await cl(txb, 'm_tx');
    await a.query('BEGIN');
    const pid = await pidOf(a);
    await a.query('COMMIT');
    await a.terminate();
    const b = await cl(txb, 'm_tx');
    assert.equal(await pidOf(b), pid);
    assert.deepEqual(logLines(txb, new RegExp(`S-0x[0-9a-f]+: m_tx/.*closing because: ${reEscape('client disconnect')}`), off), []);
  });
});
