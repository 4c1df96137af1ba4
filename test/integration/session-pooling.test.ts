// Session pooling through real sockets. CancelRequest forwarding (raw
// protocol, psql, postgres.js), parameter tracking (startup parameters reach the server, the
// welcome ParameterStatus set), pool_size limits with waiting clients, server_reset_query, a
// client leaving mid-transaction or mid-query, and a server killed mid-query.

import { spawn } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { libpqEnv, postgresJs } from '../lib/clients.js';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { pgBin, sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { sleep, trackChild } from '../lib/procs.js';
import { cancelRequest, parseErrorFields, query, readCStrings, sendCancel, WireClient, wireLogin, type PgError } from '../lib/wire.js';

const pg = await sharedPostgres();
const POOL_ROLE = 'it_sess_pool';
const TX_TABLE = `it_sess_tx_${process.pid}`;

let b: TestPgbun;
const target = () => ({ host: b.host, port: b.port });

before(async () => {
  await pg.createRole(POOL_ROLE, 'pool_pw');
  await pg.query(`CREATE TABLE ${TX_TABLE} (id int)`, TEST_DB);
  await pg.query(`GRANT ALL ON ${TX_TABLE} TO PUBLIC`, TEST_DB);
  const one = pgConnstr(pg, { dbname: TEST_DB, pool_size: 1 });
  b = await startPgbun({
    ini: {
      databases: {
        [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB }),
        two: pgConnstr(pg, { dbname: TEST_DB, pool_size: 2 }),
        // one single-server pool per test, so that the tests do not share servers
        tz1: one,
        reset1: one,
        tx1: one,
        query1: one,
        kill1: one,
      },
      pgbouncer: { auth_type: 'md5', pool_mode: 'session' },
    },
    userlist: [
      ['md5_user', await pg.secretOf('md5_user')],
      [POOL_ROLE, 'pool_pw'],
    ],
  });
});

after(async () => {
  await b?.stop();
  await pg.query(`DROP TABLE IF EXISTS ${TX_TABLE}`, TEST_DB).catch(() => {});
  await pg.query(`DROP ROLE IF EXISTS ${POOL_ROLE}`).catch(() => {});
});

function login(database = TEST_DB, params: Record<string, string> = {}, user = 'md5_user', password = 'md5_pass') {
  return wireLogin(target(), { user, password, database, params });
}

async function backendPid(c: WireClient): Promise<number> {
  const r = await c.query('SELECT pg_backend_pid()');
  assert.equal(r.error, null, JSON.stringify(r.error));
  return Number(r.rows[0][0]);
}

async function assertServing(): Promise<void> {
  assert.equal(b.proc.exitCode, null, `pgbun exited:\n${b.stderr()}`);
  const { client } = await login();
  assert.deepEqual((await client.query('SELECT 7')).rows, [['7']]);
  await client.terminate();
}

/** Read messages until the connection closes; returns them (throws if it stays open). */
async function readToClose(c: WireClient, timeoutMs: number): Promise<Array<{ type: string; error?: PgError }>> {
  const out: Array<{ type: string; error?: PgError }> = [];
  for (;;) {
    const m = await c.readMessageOrClose(timeoutMs);
    if (!m) return out;
    out.push(m.type === 'E' ? { type: 'E', error: parseErrorFields(m.body) } : { type: m.type });
  }
}

describe('cancel requests', () => {
  test('a CancelRequest with pgbun\'s key stops SELECT pg_sleep(30) within a second; the session goes on', async () => {
    const { client, login: res } = await login();
    const key = res.backendKey!;
    const pid = await backendPid(client);
    // pgbun's own key: not the server's, first byte's top bit clear
    assert.notEqual(key.pid, pid);
    assert.ok(key.pid >= 0, `key pid ${key.pid}`);
    const off = b.logOffset();
    const running = client.query('SELECT pg_sleep(30)', 10_000);
    await sleep(300);
    const sent = Date.now();
    await sendCancel(target(), key);
    const r = await running;
    const took = Date.now() - sent;
    assert.ok(took < 1000, `cancel took ${took} ms`);
    assert.equal(r.error?.S, 'ERROR');
    assert.equal(r.error?.C, '57014');
    assert.equal(r.error?.M, 'canceling statement due to user request');
    assert.equal(r.status, 'I');
    // same session, same server
    assert.equal(await backendPid(client), pid);
    await client.terminate();
    await b.waitForLog(/C-0x[0-9a-f]+: \S+ closing because: successfully sent cancel request \(age=0s\)$/, 3000, off);
    await b.waitForLog(new RegExp(`S-0x[0-9a-f]+: ${TEST_DB}/md5_user@\\S+ closing because: successfully sent cancel request \\(age=0s\\)$`), 3000, off);
  });

  test('psql: Ctrl-C (SIGINT) cancels a running pg_sleep(30) through pgbun', async () => {
    const off = b.logOffset();
    const env = libpqEnv(b.conn('md5_user', 'md5_pass', TEST_DB));
    const p = spawn(pgBin('psql'), ['-X', '-c', 'SELECT pg_sleep(30)'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    trackChild(p, 'psql', 'SIGKILL', false);
    let stderr = '';
    p.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => p.once('exit', (code) => resolve(code)));
    await b.waitForLog(/login attempt: db=testdb user=md5_user/, 5000, off);
    await sleep(700); // the query is running
    const sent = Date.now();
    p.kill('SIGINT');
    const timer = setTimeout(() => p.kill('SIGKILL'), 10_000);
    const code = await exited;
    clearTimeout(timer);
    const took = Date.now() - sent;
    assert.ok(took < 1500, `psql ended ${took} ms after SIGINT\n${stderr}`);
    assert.equal(code, 1, stderr);
    assert.match(stderr, /ERROR: {2}canceling statement due to user request/);
  });

  test('postgres.js query.cancel() through pgbun', async () => {
    const sql = postgresJs(b.conn('md5_user', 'md5_pass', TEST_DB));
    try {
      await sql`SELECT 1`;
      const q = sql`SELECT pg_sleep(30)`;
      q.execute();
      await sleep(300);
      const sent = Date.now();
      q.cancel();
      await assert.rejects(q, (e: { code?: string }) => e.code === '57014');
      assert.ok(Date.now() - sent < 1000, `took ${Date.now() - sent} ms`);
      assert.equal((await sql`SELECT 5 AS five`)[0].five, 5);
    } finally {
      await sql.end();
    }
  });

  test('a CancelRequest with a wrong key is closed silently and cancels nothing', async () => {
    const { client, login: res } = await login();
    await backendPid(client);
    const off = b.logOffset();
    const running = client.query('SELECT pg_sleep(1.5), 1', 10_000);
    await sleep(200);
    const c = await WireClient.connect(target());
    await c.write(cancelRequest(res.backendKey!.pid, res.backendKey!.secret ^ 1));
    await c.waitClose(3000);
    assert.equal(c.pending.length, 0);
    c.destroy();
    const r = await running;
    assert.equal(r.error, null, JSON.stringify(r.error));
    assert.deepEqual(r.rows, [['', '1']]);
    await client.terminate();
    await b.waitForLog(/closing because: failed cancel request \(age=0s\)$/, 3000, off);
  });

  test('a CancelRequest for a client without a server is dropped', async () => {
    const { client, login: res } = await login(); // logged in, no query yet: not linked
    const off = b.logOffset();
    const c = await WireClient.connect(target());
    await c.write(cancelRequest(res.backendKey!.pid, res.backendKey!.secret));
    await c.waitClose(3000);
    assert.equal(c.pending.length, 0);
    c.destroy();
    await b.waitForLog(/cancel request for idle client/, 3000, off);
    assert.deepEqual((await client.query('SELECT 8')).rows, [['8']]);
    await client.terminate();
  });
});

describe('parameter tracking', () => {
  test('application_name, client_encoding, DateStyle, TimeZone from the startup packet: welcome ParameterStatus and on the server', async () => {
    const params = { application_name: 'it_app', client_encoding: 'LATIN1', DateStyle: 'ISO, DMY', TimeZone: 'America/New_York' };
    const { client, login: res } = await login(TEST_DB, params);
    for (const [k, v] of Object.entries(params)) assert.equal(res.params[k], v, `welcome ParameterStatus ${k}`);
    // the rest of the welcome comes from the pool's first server
    assert.match(res.params.server_version, /^15\./);
    assert.equal(res.params.server_encoding, 'UTF8');
    assert.equal(res.params.integer_datetimes, 'on');
    assert.equal(res.params.standard_conforming_strings, 'on');
    assert.equal(res.params.IntervalStyle, 'postgres');
    assert.equal(res.params.is_superuser, 'off');
    assert.equal(res.params.session_authorization, 'md5_user');
    assert.deepEqual(Object.keys(res.params).sort(), [
      'DateStyle',
      'IntervalStyle',
      'TimeZone',
      'application_name',
      'client_encoding',
      'default_transaction_read_only',
      'in_hot_standby',
      'integer_datetimes',
      'is_superuser',
      'server_encoding',
      'server_version',
      'session_authorization',
      'standard_conforming_strings',
    ]);
    assert.ok(res.backendKey, 'BackendKeyData');
    assert.equal(res.status, 'I');
    const r = await client.query(
      `SELECT current_setting('application_name'), current_setting('client_encoding'), current_setting('DateStyle'), current_setting('TimeZone'), pg_backend_pid()`,
    );
    const [row] = r.rows;
    assert.deepEqual(row.slice(0, 4), ['it_app', 'LATIN1', 'ISO, DMY', 'America/New_York']);
    const seen = await pg.query<{ application_name: string }>(`SELECT application_name FROM pg_stat_activity WHERE pid = ${row[4]}`);
    assert.deepEqual(seen, [{ application_name: 'it_app' }]);
    // a SET in the session: the server's ParameterStatus reaches the client
    const set = await client.query(`SET TimeZone = 'Asia/Kolkata'`);
    const ps = set.messages.filter((m) => m.type === 'S').map((m) => readCStrings(m.body));
    assert.deepEqual(ps, [['TimeZone', 'Asia/Kolkata']]);
    await client.terminate();
  });

  test('parameter names are case-insensitive (libpq sends PGTZ as "timezone")', async () => {
    const { client, login: res } = await login(TEST_DB, { timezone: 'Europe/Paris', datestyle: 'German', APPLICATION_NAME: 'it_upper' });
    assert.equal(res.params.TimeZone, 'Europe/Paris');
    const r = await client.query(`SELECT current_setting('TimeZone'), current_setting('DateStyle'), current_setting('application_name')`);
    assert.deepEqual(r.rows, [['Europe/Paris', 'German, DMY', 'it_upper']]);
    await client.terminate();
  });

  test('one server, clients with different settings: each sees its own, an unset one the server\'s', async () => {
    const a = await login('tz1', { TimeZone: 'Asia/Tokyo', application_name: 'it_a' });
    const pidA = await backendPid(a.client);
    await a.client.terminate();
    const p = await login('tz1', { TimeZone: 'Europe/Paris' });
    assert.equal(await backendPid(p.client), pidA, 'same server (pool_size=1)');
    const rp = await p.client.query(`SELECT current_setting('TimeZone'), current_setting('application_name')`);
    assert.deepEqual(rp.rows, [['Europe/Paris', '']]);
    await p.client.terminate();
    const c = await login('tz1');
    assert.equal(await backendPid(c.client), pidA);
    const rc = await c.client.query(`SELECT current_setting('TimeZone')`);
    assert.notEqual(rc.rows[0][0], 'Europe/Paris');
    assert.notEqual(rc.rows[0][0], 'Asia/Tokyo');
    assert.equal(rc.rows[0][0], c.login.params.TimeZone, 'the welcome value (from the pool\'s first server)');
    await c.client.terminate();
  });
});

describe('session pooling', () => {
  test('pool_size limits server connections; a client waits until a server is released', async () => {
    const opts = ['two', {}, POOL_ROLE, 'pool_pw'] as const;
    const count = async () =>
      Number((await pg.query<{ n: string }>(`SELECT count(*) AS n FROM pg_stat_activity WHERE usename = '${POOL_ROLE}'`))[0].n);
    const c1 = await login(...opts);
    const c2 = await login(...opts);
    const c3 = await login(...opts);
    try {
      const pid1 = await backendPid(c1.client);
      const pid2 = await backendPid(c2.client);
      assert.notEqual(pid1, pid2);
      await c3.client.write(query('SELECT pg_backend_pid()'));
      await sleep(700);
      assert.equal(c3.client.pending.length, 0, 'the third client must wait');
      assert.equal(await count(), 2);
      const released = Date.now();
      await c1.client.terminate();
      const r3 = await c3.client.collect(5000);
      assert.ok(Date.now() - released < 2000, `waited ${Date.now() - released} ms after the release`);
      assert.equal(Number(r3.rows[0][0]), pid1, 'the released server is reused');
      assert.equal(await count(), 2);
    } finally {
      for (const c of [c1, c2, c3]) await c.client.terminate();
    }
  });

  test('server_reset_query (DISCARD ALL) runs on release: the next client sees nothing of the previous one', async () => {
    const a = await login('reset1');
    const pid = await backendPid(a.client);
    for (const sql of [
      'CREATE TEMP TABLE it_tmp (x int)',
      `SET work_mem = '7MB'`,
      'PREPARE it_prep AS SELECT 1',
      'LISTEN it_chan',
      `SELECT set_config('it.custom', 'leak', false)`,
    ]) {
      const r = await a.client.query(sql);
      assert.equal(r.error, null, `${sql}: ${JSON.stringify(r.error)}`);
    }
    await a.client.terminate();
    const n = await login('reset1');
    assert.equal(await backendPid(n.client), pid, 'same server');
    const r = await n.client.query(
      `SELECT to_regclass('it_tmp') IS NULL, current_setting('work_mem'), (SELECT count(*) FROM pg_prepared_statements),
              (SELECT count(*) FROM pg_listening_channels()), coalesce(current_setting('it.custom', true), '')`,
    );
    assert.deepEqual(r.rows, [['t', '4MB', '0', '0', '']]);
    await n.client.terminate();
  });

  test('a client leaving mid-transaction: the server is closed, the next client gets no open transaction', async () => {
    for (const leave of ['terminate', 'eof'] as const) {
      const off = b.logOffset();
      const a = await login('tx1');
      const pid = await backendPid(a.client);
      assert.equal((await a.client.query('BEGIN')).status, 'T');
      assert.equal((await a.client.query(`INSERT INTO ${TX_TABLE} VALUES (1)`)).status, 'T');
      if (leave === 'terminate') await a.client.terminate();
      else a.client.destroy();
      await b.waitForLog(
        new RegExp(`S-0x[0-9a-f]+: tx1/md5_user@\\S+ closing because: client disconnect while server was not ready \\(age=\\d+s\\)$`),
        3000,
        off,
      );
      const n = await login('tx1');
      const r = await n.client.query(`SELECT pg_backend_pid(), txid_current_if_assigned(), now() = statement_timestamp(), (SELECT count(*) FROM ${TX_TABLE})`);
      assert.equal(r.status, 'I');
      assert.notEqual(Number(r.rows[0][0]), pid, `${leave}: a new server`);
      assert.deepEqual(r.rows[0].slice(1), [null, 't', '0'], `${leave}: no transaction, nothing committed`);
      await n.client.terminate();
    }
  });

  test('a client leaving mid-query: the server is closed, the next client does not wait for the query', async () => {
    const off = b.logOffset();
    const a = await login('query1');
    const pid = await backendPid(a.client);
    await a.client.write(query('SELECT pg_sleep(5)'));
    await sleep(200);
    a.client.destroy();
    await b.waitForLog(
      /S-0x[0-9a-f]+: query1\/md5_user@\S+ closing because: (client disconnect while server was not ready|client disconnected with query in progress) \(age=\d+s\)$/,
      3000,
      off,
    );
    const started = Date.now();
    const n = await login('query1');
    const pid2 = await backendPid(n.client);
    assert.ok(Date.now() - started < 2000, `waited ${Date.now() - started} ms`);
    assert.notEqual(pid2, pid);
    await n.client.terminate();
  });

  test('a server killed mid-query: the client gets a FATAL and is closed; pgbun goes on', async () => {
    const off = b.logOffset();
    const a = await login('kill1');
    const pid = await backendPid(a.client);
    await a.client.write(query('SELECT pg_sleep(10)'));
    await sleep(300);
    await pg.query(`SELECT pg_terminate_backend(${pid})`);
    const msgs = await readToClose(a.client, 3000);
    a.client.destroy();
    const errors = msgs.filter((m) => m.type === 'E').map((m) => m.error!.fields);
    assert.ok(errors.length >= 1, `messages: ${JSON.stringify(msgs)}`);
    assert.ok(!msgs.some((m) => m.type === 'Z'), 'no ReadyForQuery');
    for (const e of errors) {
      assert.equal(e.S, 'FATAL');
      assert.ok(
        (e.C === '57P01' && e.M === 'terminating connection due to administrator command') || (e.C === '08P01' && e.M === 'server conn crashed?'),
        JSON.stringify(e),
      );
    }
    await b.waitForLog(new RegExp(`S-0x[0-9a-f]+: kill1/md5_user@\\S+ closing because: server conn crashed\\? \\(age=\\d+s\\)$`), 3000, off);
    // the pool recovers with a fresh server
    const n = await login('kill1');
    assert.notEqual(await backendPid(n.client), pid);
    await n.client.terminate();
    await assertServing();
  });
});
