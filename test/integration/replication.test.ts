// Replication connections through pgbun (PgBouncer 1.23+): `replication=database` (logical) and
// `replication=true` (physical) clients each get a server of their own, started with their
// replication mode, parameters and options, in every pool_mode. Checked with the raw protocol
// (IDENTIFY_SYSTEM, CREATE_REPLICATION_SLOT, START_REPLICATION and its CopyBoth stream in both
// directions), PostgreSQL's own tools (pg_receivewal, pg_basebackup, pg_recvlogical), a logical
// subscription whose publisher is reached through pgbun, pool_size limits and eviction, the
// server closed with its client (never reused), cancel requests, refused logins, HBA, auth_query
// and TLS.
//
// A private PostgreSQL with wal_level=logical and `replication` HBA rules: the shared one has
// neither, and replication slots are better kept away from the other test files.

import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { tlsFixture } from '../lib/certs.js';
import { libpqEnv, psqlRaw, runCommand } from '../lib/clients.js';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { ensureDatabase, logLines, roleUserlist, waitUntil } from '../lib/pool-helpers.js';
import { pgBin, startPostgres, TEST_DB, type TestPostgres } from '../lib/postgres.js';
import { makeTempDir, removeTempDir, trackChild, withTimeout } from '../lib/procs.js';
import { attemptLogin, message, query, sendCancel, WireClient, wireLogin, type WireMessage } from '../lib/wire.js';
import { show } from './admin-lib.js';

const REPL_ROLE = 'it_repl_role';
const REPL_PW = 'it_repl_pw';
const TABLE = 'it_repl_t';

let pg: TestPostgres;
let b: TestPgbun;
let tmp: string;

before(async () => {
  pg = await startPostgres({
    conf: { wal_level: 'logical', max_wal_senders: 20, max_replication_slots: 20, wal_sender_timeout: '60s' },
    hba: [
      'local replication postgres trust',
      'host replication postgres 127.0.0.1/32 trust',
      `host replication ${REPL_ROLE} 127.0.0.1/32 scram-sha-256`,
    ].join('\n'),
  });
  await pg.query(`CREATE ROLE ${REPL_ROLE} LOGIN REPLICATION PASSWORD '${REPL_PW}'`);
  await pg.query(`CREATE TABLE ${TABLE} (a int)`, TEST_DB);
  await pg.query(`GRANT ALL ON ${TABLE} TO PUBLIC`, TEST_DB);
  tmp = makeTempDir('pgbun-repl-', null);
  const db = (extra: Record<string, string | number> = {}): string => pgConnstr(pg, { dbname: TEST_DB, ...extra });
  b = await startPgbun({
    ini: {
      databases: {
        // the global pool_mode is statement: replication connections are session-like anyway
        stmt: db(),
        tx: db({ pool_mode: 'transaction' }),
        sess: db({ pool_mode: 'session' }),
        small: db({ pool_size: 2 }),
        small_sess: db({ pool_size: 2, pool_mode: 'session' }),
        maxdb: db({ max_db_connections: 1 }),
        aq: db({ auth_user: 'postgres' }),
        // PostgreSQL 15's pg_basebackup and pg_receivewal always ask for database `replication`
        replication: pgConnstr(pg, { dbname: 'replication', pool_mode: 'transaction' }),
      },
      pgbouncer: {
        auth_type: 'scram-sha-256', pool_mode: 'statement', admin_users: 'admin', default_pool_size: 5,
        log_connections: 1, log_disconnections: 1,
      },
    },
    userlist: [...roleUserlist(), ['admin', 'admin_pw']],
  });
});

after(async () => {
  await b?.stop();
  await pg?.stop();
  if (tmp) removeTempDir(tmp);
});

const target = () => ({ host: b.host, port: b.port });
const PASSWORDS: Record<string, string> = Object.fromEntries(roleUserlist());

function replLogin(database: string, replication: string, params: Record<string, string> = {}, user = 'postgres') {
  return wireLogin(target(), { user, password: PASSWORDS[user], database, params: { replication, ...params } });
}

async function admin(): Promise<WireClient> {
  return (await wireLogin(target(), { user: 'admin', password: 'admin_pw', database: 'pgbouncer' })).client;
}

async function adminShow(sql: string): Promise<Array<Record<string, string | null>>> {
  const c = await admin();
  try {
    return await show(c, sql);
  } finally {
    await c.terminate();
  }
}

async function one(c: WireClient, sql: string): Promise<string | null> {
  const r = await c.query(sql);
  assert.equal(r.error, null, `${sql}: ${JSON.stringify(r.error)}`);
  return r.rows[0]?.[0] ?? null;
}

/** backend pids of walsenders (physical or logical) whose application_name is `app` */
async function walsenders(app: string): Promise<number[]> {
  const rows = await pg.query<{ pid: number }>(
    `SELECT pid FROM pg_stat_activity WHERE backend_type = 'walsender' AND application_name = $1`, 'postgres', [app]);
  return rows.map((r) => Number(r.pid));
}

async function alive(pid: number): Promise<boolean> {
  return (await pg.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', 'postgres', [pid])).length > 0;
}

/** libpq connection string to pgbun for PostgreSQL's tools */
function connstr(database: string, extra: Record<string, string> = {}): string {
  return Object.entries({ host: b.host, port: String(b.port), user: 'postgres', password: PASSWORDS.postgres!, dbname: database, ...extra })
    .map(([k, v]) => `${k}=${v}`).join(' ');
}

const toolEnv = (): NodeJS.ProcessEnv => libpqEnv({ host: b.host, port: b.port, user: 'postgres', password: PASSWORDS.postgres });

/** A standby status update ('r'): written/flushed/applied positions 0 (the server keeps its own), no reply wanted. */
function standbyStatus(): Buffer {
  const body = Buffer.alloc(34);
  body.write('r', 0, 'latin1');
  return message('d', body);
}

/** Read CopyData until the logical decoding output (test_decoding text) has `until`; answers keepalives. */
async function decodeUntil(c: WireClient, until: RegExp, timeoutMs = 20_000): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  const lines: string[] = [];
  for (;;) {
    const m: WireMessage = await c.readMessage(Math.max(1, deadline - Date.now()));
    assert.equal(m.type, 'd', `CopyData expected, got '${m.type}' ${m.body.toString('latin1')}`);
    if (m.body[0] === 0x77 /* w: XLogData */) {
      const text = m.body.toString('utf8', 25);
      lines.push(text);
      if (until.test(text)) return lines;
    } else if (m.body[0] === 0x6b /* k: keepalive */ && m.body[17] === 1) {
      await c.write(standbyStatus());
    }
  }
}

describe('startup parameter replication', () => {
  test('values other than database or a boolean are refused as PostgreSQL refuses them', async () => {
    for (const v of ['maybe', 'Database', '2']) {
      const a = await attemptLogin(target(), { user: 'postgres', password: PASSWORDS.postgres, database: 'stmt', params: { replication: v } });
      try {
        assert.deepEqual(a.error?.fields, { S: 'FATAL', C: '08P01', M: `invalid value for parameter "replication": "${v}"` });
        await a.client.waitClose();
      } finally {
        a.client.destroy();
      }
    }
  });

  test('a false value is an ordinary pooled connection', async () => {
    for (const v of ['false', 'off', '0', 'no']) {
      const { client } = await replLogin('stmt', v);
      try {
        assert.equal(await one(client, 'SELECT backend_type FROM pg_stat_activity WHERE pid = pg_backend_pid()'), 'client backend');
      } finally {
        await client.terminate();
      }
    }
  });

  test('log_connections names the replication mode', async () => {
    const off = b.logOffset();
    const { client } = await replLogin('stmt', 'database');
    await client.terminate();
    const { client: p } = await replLogin('stmt', 'on');
    await p.terminate();
    const attempts = logLines(b, /login attempt: db=stmt user=postgres/, off);
    assert.deepEqual(attempts.map((l) => l.replace(/^.* login attempt: /, '')), [
      'db=stmt user=postgres tls=no replication=database',
      'db=stmt user=postgres tls=no replication=yes',
    ]);
  });
});

describe('logical replication connection', () => {
  for (const db of ['stmt', 'tx', 'sess']) {
    test(`${db}: the server's own welcome, SQL, IDENTIFY_SYSTEM, a slot and a decoded stream both ways`, async () => {
      const app = `it-logical-${db}`;
      const slot = `it_slot_${db}`;
      const { client: c, login } = await replLogin(db, 'database', { application_name: app, options: '-c enable_seqscan=off -c work_mem=1234kB' });
      try {
        // the welcome is the server's: its application_name, its server_version
        assert.equal(login.params.application_name, app);
        assert.match(login.params.server_version ?? '', /^15/);
        assert.ok(login.backendKey !== null);
        // options reach the server as they are, untracked parameters included
        assert.equal(await one(c, 'SHOW enable_seqscan'), 'off');
        assert.equal(await one(c, 'SHOW work_mem'), '1234kB');
        assert.equal(await one(c, 'SELECT backend_type FROM pg_stat_activity WHERE pid = pg_backend_pid()'), 'walsender');
        const pid = Number(await one(c, 'SELECT pg_backend_pid()'));

        const id = await c.query('IDENTIFY_SYSTEM');
        assert.equal(id.error, null, JSON.stringify(id.error));
        assert.deepEqual(id.columns, ['systemid', 'timeline', 'xlogpos', 'dbname']);
        assert.equal(id.rows[0]![3], TEST_DB);

        const cr = await c.query(`CREATE_REPLICATION_SLOT ${slot} TEMPORARY LOGICAL test_decoding`);
        assert.equal(cr.error, null, JSON.stringify(cr.error));
        // in statement and transaction mode a transaction block keeps the server too
        assert.equal((await c.query('BEGIN')).status, 'T');
        assert.equal(await one(c, 'SELECT pg_backend_pid()'), String(pid));
        assert.equal((await c.query('COMMIT')).status, 'I');

        await pg.query(`INSERT INTO ${TABLE} VALUES (${db.length})`, TEST_DB);
        await c.write(query(`START_REPLICATION SLOT ${slot} LOGICAL 0/0`));
        const start = await c.readMessage(10_000);
        assert.equal(start.type, 'W', `CopyBothResponse expected, got ${start.type} ${start.body.toString('latin1')}`);
        // the client's own CopyData reaches the walsender (a status update it would refuse if garbled)
        await c.write(standbyStatus());
        const lines = await decodeUntil(c, /^COMMIT/);
        assert.ok(lines.some((l) => l.includes(`table public.${TABLE}: INSERT: a[integer]:${db.length}`)), lines.join('\n'));

        // mid-stream the server is this client's, active, shown as logical
        const servers = (await adminShow('SHOW SERVERS')).filter((s) => s.database === db && s.replication !== 'none');
        assert.equal(servers.length, 1, JSON.stringify(servers));
        assert.equal(servers[0]!.replication, 'logical');
        assert.equal(servers[0]!.state, 'active');
        assert.equal(servers[0]!.remote_pid, String(pid));
        const clients = (await adminShow('SHOW CLIENTS')).filter((x) => x.database === db);
        assert.deepEqual(clients.map((x) => [x.replication, x.state, x.link]), [['logical', 'active', servers[0]!.ptr]]);

        // more data streams after a quiet moment: nothing took the server away
        await pg.query(`INSERT INTO ${TABLE} VALUES (${db.length + 100})`, TEST_DB);
        const more = await decodeUntil(c, /^COMMIT/);
        assert.ok(more.some((l) => l.includes(`a[integer]:${db.length + 100}`)), more.join('\n'));

        // CopyDone ends the stream; the connection goes on as before
        await c.write(message('c'));
        const end = await c.readUntil('Z', 10_000);
        assert.ok(!end.some((m) => m.type === 'E'), JSON.stringify(end.map((m) => [m.type, m.body.toString('latin1')])));
        const again = await c.query('IDENTIFY_SYSTEM');
        assert.equal(again.error, null);
        assert.equal(await one(c, 'SELECT pg_backend_pid()'), String(pid));
      } finally {
        await c.terminate();
      }
      await waitUntil('the walsender to end with its client', () => walsenders(app), (p) => p.length === 0, 10_000);
    });
  }

  test('the server goes with its client and is never reused: a later client gets another backend', async () => {
    const app = 'it-not-reused';
    const { client: r } = await replLogin('sess', 'database', { application_name: app });
    const pid = Number(await one(r, 'SELECT pg_backend_pid()'));
    const off = b.logOffset();
    await r.terminate();
    await b.waitForLog(/S-0x[0-9a-f]+: sess\/postgres@\S+ closing because: replication client was closed \(age=\d+s\)/, 5000, off);
    await waitUntil('the walsender to exit', () => alive(pid), (a) => !a, 10_000);
    const { client: n } = await replLogin('sess', 'false');
    try {
      assert.notEqual(Number(await one(n, 'SELECT pg_backend_pid()')), pid);
      const servers = (await adminShow('SHOW SERVERS')).filter((s) => s.database === 'sess');
      assert.deepEqual(servers.map((s) => s.replication), ['none']);
    } finally {
      await n.terminate();
    }
  });

  test('a CancelRequest with pgbun\'s key cancels the query of the client\'s own walsender', async () => {
    const { client: c, login } = await replLogin('stmt', 'database', { application_name: 'it-cancel' });
    try {
      await c.write(query('SELECT pg_sleep(30)'));
      await waitUntil('the query running', async () => (await pg.query<{ n: string }>(
        `SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'it-cancel' AND query LIKE 'SELECT pg_sleep%' AND state = 'active'`))[0]!.n,
      (n) => n === '1', 10_000);
      await sendCancel(target(), login.backendKey!);
      const r = await c.collect(10_000);
      assert.equal(r.error?.C, '57014', JSON.stringify(r.error));
      assert.equal(await one(c, 'SELECT 1'), '1');
    } finally {
      await c.terminate();
    }
  });

  test('the client goes with its server: a terminated walsender ends the client', async () => {
    const { client: r } = await replLogin('tx', 'database', { application_name: 'it-killed' });
    const pid = Number(await one(r, 'SELECT pg_backend_pid()'));
    await pg.query('SELECT pg_terminate_backend($1)', 'postgres', [pid]);
    const err = await r.expectError({ severity: 'FATAL', code: '57P01', closed: false, timeoutMs: 10_000 });
    assert.match(err.M, /terminating connection due to administrator command/);
    assert.ok(await withTimeout(r.closedPromise, 10_000), 'client closed');
    r.destroy();
  });

  test('a client that leaves in the middle of a CopyData mid-stream: its server is closed, not reused', async () => {
    const app = 'it-cut-stream';
    const { client: c } = await replLogin('tx', 'database', { application_name: app });
    const pid = Number(await one(c, 'SELECT pg_backend_pid()'));
    assert.equal((await c.query('CREATE_REPLICATION_SLOT it_cut TEMPORARY LOGICAL test_decoding')).error, null);
    await c.write(query('START_REPLICATION SLOT it_cut LOGICAL 0/0'));
    assert.equal((await c.readMessage(10_000)).type, 'W');
    const off = b.logOffset();
    // the header and a few bytes of a 100-byte CopyData, then gone
    const head = Buffer.alloc(15);
    head.write('d', 0, 'latin1');
    head.writeInt32BE(104, 1);
    head.write('r', 5, 'latin1');
    await c.write(head);
    c.destroy();
    await b.waitForLog(/S-0x[0-9a-f]+: tx\/postgres@\S+ closing because: replication client was closed \(age=\d+s\)/, 5000, off);
    await waitUntil('the walsender to exit', () => alive(pid), (a) => !a, 10_000);
    assert.equal((await adminShow('SHOW SERVERS')).filter((s) => s.remote_pid === String(pid)).length, 0);
  });

  test('a client that leaves while its server logs in closes that server', async () => {
    const c = await WireClient.connect(target());
    const off = b.logOffset();
    await c.startup({ user: 'postgres', database: 'stmt', replication: 'database', application_name: 'it-early-leave' });
    c.destroy();
    // whatever the moment, no walsender of this client stays
    await b.waitForLog(/C-0x[0-9a-f]+: stmt\/postgres@\S+ closing because: client unexpected eof/, 5000, off);
    await waitUntil('no walsender left', () => walsenders('it-early-leave'), (p) => p.length === 0, 10_000);
    assert.equal((await adminShow('SHOW SERVERS')).filter((s) => s.database === 'stmt' && s.replication !== 'none').length, 0);
  });
});

describe('physical replication connection', () => {
  test('IDENTIFY_SYSTEM works, SQL is refused by the walsender, the connection stays', async () => {
    const { client: c, login } = await replLogin('tx', 'true', { application_name: 'it-phys' });
    try {
      assert.equal(login.params.application_name, 'it-phys');
      const id = await c.query('IDENTIFY_SYSTEM');
      assert.equal(id.error, null, JSON.stringify(id.error));
      assert.equal(id.rows[0]![3], null, 'no database for a physical walsender');
      const sql = await c.query('SELECT 1');
      assert.equal(sql.error?.C, '0A000');
      assert.equal(sql.error?.M, 'cannot execute SQL commands in WAL sender for physical replication');
      assert.equal((await c.query('IDENTIFY_SYSTEM')).error, null);
      const servers = (await adminShow('SHOW SERVERS')).filter((s) => s.database === 'tx');
      assert.deepEqual(servers.map((s) => [s.replication, s.state]), [['physical', 'active']]);
    } finally {
      await c.terminate();
    }
  });

  test('pg_receivewal streams WAL through pgbun and stops cleanly on SIGINT', async () => {
    const dir = path.join(tmp, 'wal');
    fs.mkdirSync(dir);
    const p: ChildProcess = spawn(pgBin('pg_receivewal'), ['-d', connstr('replication', { application_name: 'it-receivewal' }), '-D', dir, '--no-loop'], {
      env: toolEnv(), stdio: ['ignore', 'ignore', 'pipe'],
    });
    trackChild(p, 'pg_receivewal');
    let stderr = '';
    p.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => p.once('exit', (code) => resolve(code)));
    try {
      await waitUntil('a WAL file from pg_receivewal', () => fs.readdirSync(dir), (f) => f.length > 0, 20_000);
      // status updates (client CopyData) flow while it streams; a WAL switch streams a new segment
      await pg.query(`INSERT INTO ${TABLE} VALUES (7); SELECT pg_switch_wal()`, TEST_DB);
      await waitUntil('a second WAL file', () => fs.readdirSync(dir), (f) => f.length > 1, 20_000);
      const servers = (await adminShow('SHOW SERVERS')).filter((s) => s.database === 'replication');
      assert.deepEqual(servers.map((s) => [s.replication, s.state]), [['physical', 'active']]);
    } finally {
      p.kill('SIGINT');
    }
    assert.equal(await exited, 0, stderr);
    await waitUntil('the walsender to end', () => walsenders('it-receivewal'), (x) => x.length === 0, 10_000);
  });

  test('pg_basebackup copies the cluster through pgbun, WAL streamed on a second connection', async () => {
    const dir = path.join(tmp, 'base');
    const r = await runCommand(pgBin('pg_basebackup'), ['-d', connstr('replication'), '-D', dir, '-X', 'stream', '-c', 'fast'], {
      env: toolEnv(), timeoutMs: 120_000,
    });
    assert.equal(r.code, 0, r.stderr);
    assert.ok(fs.existsSync(path.join(dir, 'PG_VERSION')));
    assert.ok(fs.existsSync(path.join(dir, 'backup_manifest')));
    assert.ok(fs.readdirSync(path.join(dir, 'pg_wal')).some((f) => /^[0-9A-F]{24}$/.test(f)));
    fs.rmSync(dir, { recursive: true, force: true });
  });
});

describe('logical replication with PostgreSQL tools', () => {
  test('pg_recvlogical creates a slot, streams decoded changes, drops the slot', async () => {
    const slot = 'it_recvlogical';
    const base = ['-d', connstr('tx', { application_name: 'it-recvlogical' }), '--slot', slot];
    const created = await runCommand(pgBin('pg_recvlogical'), [...base, '--create-slot', '-P', 'test_decoding'], { env: toolEnv() });
    assert.equal(created.code, 0, created.stderr);
    const p = spawn(pgBin('pg_recvlogical'), [...base, '--start', '--no-loop', '-f', '-', '-s', '1'], {
      env: toolEnv(), stdio: ['ignore', 'pipe', 'pipe'],
    });
    trackChild(p, 'pg_recvlogical');
    let out = '';
    let stderr = '';
    p.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => p.once('exit', (code) => resolve(code)));
    try {
      await waitUntil('pg_recvlogical streaming', () => walsenders('it-recvlogical'), (x) => x.length === 1, 10_000);
      await pg.query(`INSERT INTO ${TABLE} VALUES (4242)`, TEST_DB);
      await waitUntil('the decoded insert', () => out, (o) => /COMMIT/.test(o.slice(o.indexOf('4242'))) && o.includes('4242'), 20_000);
      const lines = out.split('\n');
      const i = lines.findIndex((l) => l === `table public.${TABLE}: INSERT: a[integer]:4242`);
      assert.ok(i > 0, out);
      assert.match(lines[i - 1]!, /^BEGIN \d+$/);
      assert.match(lines[i + 1]!, /^COMMIT \d+$/);
    } finally {
      p.kill('SIGINT');
    }
    // PostgreSQL 15's pg_recvlogical reports "unexpected termination of replication stream" on
    // SIGINT even when connected to PostgreSQL directly; its exit status is what counts
    assert.equal(await exited, 0, stderr);
    await waitUntil('the walsender to end', () => walsenders('it-recvlogical'), (x) => x.length === 0, 10_000);
    const dropped = await runCommand(pgBin('pg_recvlogical'), [...base, '--drop-slot'], { env: toolEnv() });
    assert.equal(dropped.code, 0, dropped.stderr);
    assert.equal((await pg.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', 'postgres', [slot])).length, 0);
  });

  test('a subscription whose publisher is reached through pgbun (transaction pool): initial copy and changes', async () => {
    const target = 'it_repl_target';
    await ensureDatabase(pg, target);
    await pg.query(`CREATE TABLE ${TABLE}_sub (a int)`, TEST_DB);
    await pg.query(`INSERT INTO ${TABLE}_sub VALUES (1)`, TEST_DB);
    await pg.query(`CREATE PUBLICATION it_pub FOR TABLE ${TABLE}_sub`, TEST_DB);
    // a subscription in the same cluster cannot create its slot in CREATE SUBSCRIPTION itself
    await pg.query(`SELECT pg_create_logical_replication_slot('it_sub_slot', 'pgoutput')`, TEST_DB);
    await pg.query(`CREATE TABLE ${TABLE}_sub (a int)`, target);
    const conninfo = connstr('tx').replace(/'/g, "''");
    await pg.query(`CREATE SUBSCRIPTION it_sub CONNECTION '${conninfo}' PUBLICATION it_pub
      WITH (slot_name = it_sub_slot, create_slot = false)`, target);
    try {
      const count = async (): Promise<number> => Number((await pg.query<{ n: string }>(`SELECT count(*) AS n FROM ${TABLE}_sub`, target))[0]!.n);
      await waitUntil('the initial copy', count, (n) => n === 1, 30_000, 200);
      await pg.query(`INSERT INTO ${TABLE}_sub VALUES (2), (3)`, TEST_DB);
      await waitUntil('the replicated rows', count, (n) => n === 3, 30_000, 200);
      const servers = (await adminShow('SHOW SERVERS')).filter((s) => s.database === 'tx');
      assert.ok(servers.some((s) => s.replication === 'logical' && s.state === 'active'), JSON.stringify(servers));
    } finally {
      // DROP SUBSCRIPTION also drops the slot, through pgbun
      await pg.query('DROP SUBSCRIPTION it_sub', target);
    }
    assert.equal((await pg.query(`SELECT 1 FROM pg_replication_slots WHERE slot_name = 'it_sub_slot'`)).length, 0);
  });
});

describe('limits', () => {
  test('replication servers count against pool_size: a third client waits until one leaves', async () => {
    const app = 'it-pool-size';
    const r1 = (await replLogin('small', 'database', { application_name: app })).client;
    const r2 = (await replLogin('small', 'database', { application_name: app })).client;
    const third = replLogin('small', 'database', { application_name: app });
    let r3: WireClient | null = null;
    try {
      const c = await admin();
      try {
        await waitUntil('the third client waiting', async () => (await show(c, 'SHOW POOLS')).find((p) => p.database === 'small'),
          (p) => p?.cl_waiting === '1' && p.sv_active === '2' && p.sv_login === '0', 5000);
        const waiting = (await show(c, 'SHOW CLIENTS')).filter((x) => x.database === 'small' && x.state === 'waiting');
        assert.deepEqual(waiting.map((x) => x.replication), ['logical']);
        assert.equal((await walsenders(app)).length, 2);
        await r1.terminate();
        r3 = (await third).client;
        assert.equal(await one(r3, 'SELECT 1'), '1');
        const pool = (await show(c, 'SHOW POOLS')).find((p) => p.database === 'small')!;
        assert.deepEqual([pool.cl_active, pool.cl_waiting, pool.sv_active, pool.sv_idle], ['2', '0', '2', '0']);
      } finally {
        await c.terminate();
      }
    } finally {
      await r2.terminate();
      if (r3 !== null) await r3.terminate();
      else void third.then((x) => x.client.terminate(), () => {});
    }
    // closed right away, nothing left in the pool
    await waitUntil('every walsender gone', () => walsenders(app), (p) => p.length === 0, 10_000);
    await waitUntil('no server left in the pool', async () => (await adminShow('SHOW SERVERS')).filter((s) => s.database === 'small').length, (n) => n === 0);
  });

  test('a full pool of idle servers makes room for a replication client by closing one (evicted)', async () => {
    // two sessions at once leave two idle servers in the pool of two
    const n1 = (await replLogin('small_sess', 'off')).client;
    const n2 = (await replLogin('small_sess', 'off')).client;
    await one(n1, 'SELECT 1');
    await one(n2, 'SELECT 1');
    await n1.terminate();
    await n2.terminate();
    await waitUntil('two idle servers', async () => (await adminShow('SHOW POOLS')).find((p) => p.database === 'small_sess'),
      (p) => p?.sv_idle === '2', 5000);
    const off = b.logOffset();
    const { client: r } = await replLogin('small_sess', 'database');
    try {
      assert.equal(logLines(b, /S-0x[0-9a-f]+: small_sess\/postgres@\S+ closing because: evicted \(age=\d+s\)/, off).length, 1);
      const servers = (await adminShow('SHOW SERVERS')).filter((s) => s.database === 'small_sess');
      assert.deepEqual(servers.map((s) => [s.replication, s.state]).sort(), [['logical', 'active'], ['none', 'idle']]);
    } finally {
      await r.terminate();
    }
  });

  test('max_db_connections: a replication client waits while the database is at its limit', async () => {
    const { client: r1 } = await replLogin('maxdb', 'database', { application_name: 'it-maxdb' });
    const second = replLogin('maxdb', 'true', { application_name: 'it-maxdb' });
    try {
      await waitUntil('the second client waiting', async () => (await adminShow('SHOW POOLS')).find((p) => p.database === 'maxdb'),
        (p) => p?.cl_waiting === '1' && p.sv_active === '1', 5000);
      await r1.terminate();
      const { client: r2 } = await second;
      assert.equal((await r2.query('IDENTIFY_SYSTEM')).error, null);
      await r2.terminate();
    } finally {
      await r1.terminate();
    }
  });
});

describe('refused replication logins', () => {
  test('a role without REPLICATION: the client gets PgBouncer\'s `login failed`, the pool stays usable', async () => {
    const off = b.logOffset();
    const a = await attemptLogin(target(), { user: 'scram_user', password: 'scram_pass', database: 'tx', params: { replication: 'database' } });
    try {
      assert.deepEqual(a.error?.fields, { S: 'FATAL', C: '08P01', M: 'login failed' });
    } finally {
      a.client.destroy();
    }
    await b.waitForLog(/S-0x[0-9a-f]+: tx\/scram_user@\S+ server login failed: FATAL must be superuser or replication role to start walsender/, 5000, off);
    await waitUntil('both closing lines', () => logLines(b, /closing because: login failed \(age=\d+s\)$/, off).length, (n) => n === 2);
    assert.equal(logLines(b, /C-0x[0-9a-f]+: tx\/scram_user@\S+ closing because: login failed/, off).length, 1);
    // the refusal was the replication request's: an ordinary client of the same pool logs in at once
    const { client } = await wireLogin(target(), { user: 'scram_user', password: 'scram_pass', database: 'tx' });
    try {
      assert.equal(await one(client, 'SELECT current_user'), 'scram_user');
    } finally {
      await client.terminate();
    }
  });

  test('physical replication without a `replication` rule in PostgreSQL\'s pg_hba.conf', async () => {
    const off = b.logOffset();
    const a = await attemptLogin(target(), { user: 'scram_user', password: 'scram_pass', database: 'stmt', params: { replication: 'yes' } });
    try {
      assert.deepEqual(a.error?.fields, { S: 'FATAL', C: '08P01', M: 'login failed' });
    } finally {
      a.client.destroy();
    }
    await b.waitForLog(new RegExp(`server login failed: FATAL no pg_hba.conf entry for replication connection from host "127.0.0.1", user "scram_user"`), 5000, off);
  });
});

describe('authentication', () => {
  test('auth_query: a replication role known only to PostgreSQL, SCRAM passed through to its own server', async () => {
    for (const mode of ['database', 'true']) {
      const { client } = await wireLogin(target(), { user: REPL_ROLE, password: REPL_PW, database: 'aq', params: { replication: mode } });
      try {
        assert.equal((await client.query('IDENTIFY_SYSTEM')).error, null);
      } finally {
        await client.terminate();
      }
    }
  });

  test('HBA: physical replication matches only rules naming `replication`; logical matches the database', async () => {
    const hb = await startPgbun({
      ini: {
        databases: { repl: pgConnstr(pg, { dbname: TEST_DB }) },
        pgbouncer: { auth_type: 'hba' },
      },
      userlist: roleUserlist(),
      hba: [
        'host replication postgres 127.0.0.1/32 trust',
        'host repl postgres 127.0.0.1/32 reject',
        'host all trust_user 127.0.0.1/32 trust',
      ].join('\n'),
    });
    try {
      const t = { host: hb.host, port: hb.port };
      const physical = await wireLogin(t, { user: 'postgres', database: 'repl', params: { replication: 'true' } });
      assert.equal((await physical.client.query('IDENTIFY_SYSTEM')).error, null);
      await physical.client.terminate();
      const logical = await attemptLogin(t, { user: 'postgres', database: 'repl', params: { replication: 'database' } });
      assert.deepEqual(logical.error?.fields, { S: 'FATAL', C: '08P01', M: 'login rejected' });
      logical.client.destroy();
      const noRule = await attemptLogin(t, { user: 'trust_user', database: 'repl', params: { replication: 'true' } });
      assert.deepEqual(noRule.error?.fields, { S: 'FATAL', C: '08P01', M: 'no authentication method is found' });
      noRule.client.destroy();
    } finally {
      await hb.stop();
    }
  });

  test('over TLS: psql with sslmode=verify-full runs IDENTIFY_SYSTEM, logical and physical', async () => {
    const fx = tlsFixture();
    const tb = await startPgbun({
      ini: {
        databases: { repl: pgConnstr(pg, { dbname: TEST_DB }) },
        pgbouncer: {
          auth_type: 'trust', client_tls_sslmode: 'require', client_tls_key_file: fx.serverKey,
          client_tls_cert_file: fx.serverCert, client_tls_ca_file: fx.caFile,
        },
      },
      userlist: roleUserlist(),
    });
    try {
      for (const mode of ['database', 'true']) {
        const r = await psqlRaw({ host: 'localhost', port: tb.port, user: 'postgres', database: 'repl', sslmode: 'verify-full' },
          ['-d', `dbname=repl replication=${mode} sslrootcert=${fx.caFile}`, '-A', '-t', '-c', 'IDENTIFY_SYSTEM']);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /^\d+\|1\|[0-9A-F]+\/[0-9A-F]+\|/);
      }
    } finally {
      await tb.stop();
    }
  });
});
