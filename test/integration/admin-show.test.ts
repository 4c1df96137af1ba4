// The admin console's access rules, grammar and every SHOW command. Column lists are checked
// against the tables below (PgBouncer 1.25's columns: name, order, type OID and length, and
// RowDescription's fixed fields); values are checked in scenarios.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { psql, psqlRaw } from '../lib/clients.js';
import { pgConnstr, type TestPgbun } from '../lib/pgbun.js';
import { pgBin, sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { isRoot, serverOsUser } from '../lib/procs.js';
import {
  attemptLogin, bindMessage, executeMessage, md5Secret, message, parseErrorFields, parseMessage, sync, WireClient, wireLogin,
} from '../lib/wire.js';
import {
  ADMIN, STATS, adminDatabases, adminLogin, adminQuery, eventually, expectAdminError, expectTag, show,
  startAdminBouncer, userLogin,
} from './admin-lib.js';

const pg = await sharedPostgres();

// ---------------------------------------------------------------------------------------------
// the column tables of PgBouncer 1.25 (t=text i=int4 q=int8 n=numeric b=bytea)

const SOCKET = 'type t, user t, database t, replication t, state t, addr t, port i, local_addr t, local_port i, ' +
  'connect_time t, request_time t, wait i, wait_us i, close_needed i, ptr t, link t, remote_pid i, tls t, ' +
  'application_name t, prepared_statements i, id i';
const SOCKET_DEBUG = SOCKET + ', recv_pos i, pkt_pos i, pkt_remain i, send_pos i, send_remain i, pkt_avail i, send_avail i';

const COLUMNS: Record<string, string> = {
  STATS: 'database t, total_server_assignment_count n, total_xact_count n, total_query_count n, total_received n, ' +
    'total_sent n, total_xact_time n, total_query_time n, total_wait_time n, total_client_parse_count n, ' +
    'total_server_parse_count n, total_bind_count n, total_client_login_count n, avg_server_assignment_count n, ' +
    'avg_xact_count n, avg_query_count n, avg_recv n, avg_sent n, avg_xact_time n, avg_query_time n, ' +
    'avg_wait_time n, avg_client_parse_count n, avg_server_parse_count n, avg_bind_count n, avg_client_login_count n',
  STATS_TOTALS: 'database t, server_assignment_count n, xact_count n, query_count n, bytes_received n, bytes_sent n, ' +
    'xact_time n, query_time n, wait_time n, client_parse_count n, server_parse_count n, bind_count n, ' +
    'client_login_count n',
  STATS_AVERAGES: 'database t, server_assignment_count n, xact_count n, query_count n, bytes_received n, ' +
    'bytes_sent n, xact_time n, query_time n, wait_time n, avg_client_parse_count n, avg_server_parse_count n, ' +
    'avg_bind_count n, avg_client_login_count n',
  TOTALS: 'name t, value n',
  SERVERS: SOCKET,
  CLIENTS: SOCKET,
  SOCKETS: SOCKET_DEBUG,
  ACTIVE_SOCKETS: SOCKET_DEBUG,
  POOLS: 'database t, user t, cl_active i, cl_waiting i, cl_active_cancel_req i, cl_waiting_cancel_req i, ' +
    'sv_active i, sv_active_cancel i, sv_being_canceled i, sv_idle i, sv_used i, sv_tested i, sv_login i, ' +
    'maxwait i, maxwait_us i, pool_mode t, load_balance_hosts t',
  PEER_POOLS: 'peer_id i, cl_active_cancel_req i, cl_waiting_cancel_req i, sv_active_cancel i, sv_login i',
  LISTS: 'list t, items i',
  USERS: 'name t, pool_size t, reserve_pool_size t, pool_mode t, max_user_connections i, current_connections i, ' +
    'max_user_client_connections i, current_client_connections i',
  DATABASES: 'name t, host t, port i, database t, force_user t, pool_size i, min_pool_size i, reserve_pool_size i, ' +
    'server_lifetime i, pool_mode t, load_balance_hosts t, max_connections i, current_connections i, ' +
    'max_client_connections i, current_client_connections i, paused i, disabled i',
  PEERS: 'peer_id i, host t, port i, pool_size i',
  FDS: 'fd i, task t, user t, database t, addr t, port i, cancel q, link i, client_encoding t, std_strings t, ' +
    'datestyle t, timezone t, password t, scram_client_key b, scram_server_key b',
  CONFIG: 'key t, value t, default t, changeable t',
  MEM: 'name t, size i, used i, free i, memtotal i',
  DNS_HOSTS: 'hostname t, ttl q, addrs t',
  DNS_ZONES: 'zonename t, serial q, count i',
  VERSION: 'version t',
  STATE: 'key t, value t',
};

const TYPES: Record<string, [number, number]> = { t: [25, -1], i: [23, 4], q: [20, 8], n: [1700, -1], b: [17, -1] };

function expectedColumns(spec: string): Array<{ name: string; typeOid: number; typeLen: number }> {
  return spec.split(', ').map((c) => {
    const [name, letter] = c.split(' ');
    const [typeOid, typeLen] = TYPES[letter!]!;
    return { name: name!, typeOid, typeLen };
  });
}

const TIME_RE = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Za-z+\-0-9]+$/;

let b: TestPgbun;
let admin: WireClient;

before(async () => {
  await pg.ensurePgbench();
  b = await startAdminBouncer(pg, { stats_period: 1 }, {
    ini: {
      databases: {
        ...adminDatabases(pg),
        statsdb: pgConnstr(pg, { dbname: TEST_DB }),
        forced: `host=127.0.0.1,localhost port=${pg.port} dbname=${TEST_DB} user=trust_user pool_mode=session`,
      },
      users: { other: 'pool_size=7 reserve_pool_size=2 pool_mode=statement max_user_connections=5' },
      peers: { 1: 'host=127.0.0.1 port=6999' },
      pgbouncer: {
        auth_type: 'trust', admin_users: ADMIN, stats_users: STATS, pool_mode: 'transaction', stats_period: 1,
      },
    },
  });
  admin = await adminLogin(b);
});

after(async () => {
  await admin?.terminate();
  await b?.stop();
});

describe('SHOW column lists', () => {
  for (const [cmd, spec] of Object.entries(COLUMNS)) {
    test(`SHOW ${cmd}: names, order, type OIDs`, async () => {
      const r = await adminQuery(admin, `SHOW ${cmd}`);
      assert.equal(r.error, null, JSON.stringify(r.error));
      assert.deepEqual(r.tags, ['SHOW']);
      assert.deepEqual(r.cols.map((c) => ({ name: c.name, typeOid: c.typeOid, typeLen: c.typeLen })), expectedColumns(spec));
      for (const c of r.cols) {
        assert.deepEqual([c.tableOid, c.attnum, c.typmod, c.format], [0, 0, -1, 0], `${cmd}.${c.name}`);
      }
      for (const row of r.rows) assert.equal(row.length, r.cols.length);
    });
  }

  test('SELECT is SHOW; quoted words, case and a trailing ; are accepted', async () => {
    for (const q of ['select version', 'SHOW "version"', 'show VERSION;', '  Show\n version ; ']) {
      const rows = await show(admin, q);
      assert.match(rows[0]!.version!, /^PgBouncer 1\.25\.2 \(pgbun /);
    }
  });

  test('SHOW HELP is a NOTICE `Console usage` listing every command', async () => {
    const r = await adminQuery(admin, 'SHOW HELP');
    assert.equal(r.error, null);
    assert.deepEqual(r.tags, ['SHOW']);
    assert.equal(r.cols.length, 0, 'no result set');
    assert.equal(r.notices.length, 1);
    const n = r.notices[0]!;
    assert.deepEqual([n.S, n.C, n.M], ['NOTICE', '00000', 'Console usage']);
    const lines = n.fields.D!.split('\n');
    assert.equal(lines[0], '');
    for (const l of lines.slice(1)) assert.match(l, /^\t[A-Z_]/);
    for (const cmd of ['SHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS', 'SET key = arg', 'KILL_CLIENT <client_id>',
      'SHUTDOWN WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS', 'WAIT_CLOSE [<db>]', 'SHOW PEERS|PEER_POOLS']) {
      assert.ok(lines.includes('\t' + cmd), cmd);
    }
  });

  test('driver probes: SHOW of fixed settings, SET of them ignored', async () => {
    const fixed: Record<string, string> = {
      client_encoding: 'UTF-8', default_transaction_isolation: 'read committed', standard_conforming_strings: 'on',
      datestyle: 'ISO', timezone: 'GMT',
    };
    for (const [name, value] of Object.entries(fixed)) {
      const r = await adminQuery(admin, `SHOW ${name.toUpperCase()}`);
      assert.deepEqual(r.cols.map((c) => [c.name, c.typeOid]), [[name, 25]]);
      assert.deepEqual(r.rows, [[value]]);
    }
    const stats = await adminLogin(b, STATS);
    const r = await stats.query("SET DateStyle = 'ISO, MDY'");
    assert.equal(r.error, null);
    assert.deepEqual(r.tags, ['SET']);
    assert.deepEqual(r.notices.map((x) => [x.S, x.C, x.M]), [['NOTICE', '00000', 'SET ignored']]);
    await stats.terminate();
  });
});

describe('console grammar and errors', () => {
  test('invalid commands, bad arguments, one statement per query', async () => {
    for (const q of ['SELECT 1', 'SHOW', 'SHOW NOSUCH', 'SHOW POOLS; SHOW STATS', 'show version;;', 'FOO BAR BAZ',
      'RELOAD now', 'SUSPEND x', 'SHUTDOWN NOW', 'SET x', '']) {
      await expectAdminError(admin, q, `invalid command '${q}', use SHOW HELP;`);
    }
    await expectAdminError(admin, `PAUSE ${'a'.repeat(64)}`, 'bad arguments');
    await expectAdminError(admin, `${'x'.repeat(16)} y`, 'bad arguments');
    await expectAdminError(admin, 'SET "" = 1', 'bad arguments');
    // 63 bytes fit: an unknown database, not a length error
    await expectAdminError(admin, `PAUSE ${'a'.repeat(63)}`, `no such database: ${'a'.repeat(63)}`);
    const log = b.log();
    assert.match(log, /ERROR invalid command 'SELECT 1', use SHOW HELP;/);
    assert.match(log, /WARNING C-0x[0-9a-f]+: pgbouncer\/admin@127\.0\.0\.1:\d+ pooler error: bad arguments/);
  });

  test('SET: tag `SET key=value`, non-reloadable keys accepted and ignored, errors', async () => {
    await expectTag(admin, 'SET query_wait_notify = 7', 'SET query_wait_notify=7');
    await expectTag(admin, "SET server_reset_query TO 'DISCARD ALL; SELECT ''x'''", "SET server_reset_query=DISCARD ALL; SELECT 'x'");
    await expectTag(admin, 'SET listen_port = 1', 'SET listen_port=1');
    const cfg = new Map((await show(admin, 'SHOW CONFIG')).map((r) => [r.key, r]));
    assert.equal(cfg.get('query_wait_notify')!.value, '7');
    assert.equal(cfg.get('server_reset_query')!.value, "DISCARD ALL; SELECT 'x'");
    assert.equal(cfg.get('listen_port')!.value, String(b.port));
    await expectAdminError(admin, 'SET no_such_key = 1', 'SET failed');
    await expectAdminError(admin, 'SET query_wait_notify = abc', 'SET failed');
    assert.match(b.log(), /ERROR unknown parameter: pgbouncer\/no_such_key\n.*ERROR SET failed/);
    // a TLS setting re-applies TLS; a failure is a NOTICE, the value is set all the same
    await expectTag(admin, "SET client_tls_key_file = '/nonexistent/key.pem'", 'SET client_tls_key_file=/nonexistent/key.pem');
    await expectTag(admin, "SET client_tls_cert_file = '/nonexistent/cert.pem'", 'SET client_tls_cert_file=/nonexistent/cert.pem');
    const tls = await expectTag(admin, 'SET client_tls_sslmode = allow', 'SET client_tls_sslmode=allow');
    assert.deepEqual(tls.notices.map((x) => [x.S, x.C, x.M]),
      [['NOTICE', '00000', 'TLS settings could not be applied, still using old configuration']]);
    await expectTag(admin, 'SET client_tls_sslmode = disable', 'SET client_tls_sslmode=disable');
    await expectTag(admin, "SET client_tls_key_file = ''", 'SET client_tls_key_file=');
    await expectTag(admin, "SET client_tls_cert_file = ''", 'SET client_tls_cert_file=');
    await expectTag(admin, 'SET query_wait_notify = 5', 'SET query_wait_notify=5');
    await expectTag(admin, "SET server_reset_query = 'DISCARD ALL'", 'SET server_reset_query=DISCARD ALL');
  });

  test('anything but a simple Query: ERROR, ReadyForQuery, then FATAL `bad packet`', async () => {
    /** every message up to the close, as type (+ severity, SQLSTATE, text of an ErrorResponse) */
    const answer = async (m: Buffer): Promise<string[]> => {
      const c = await adminLogin(b);
      await c.write(m);
      const out: string[] = [];
      for (let r = await c.readMessageOrClose(); r !== null; r = await c.readMessageOrClose()) {
        if (r.type !== 'E') out.push(r.type);
        else {
          const e = parseErrorFields(r.body);
          assert.deepEqual(Object.keys(e.fields).sort(), ['C', 'M', 'S']);
          out.push(`E ${e.S} ${e.C} ${e.M}`);
        }
      }
      return out;
    };
    const expected = (error: string): string[] => [`E ERROR 08P01 ${error}`, 'Z', 'E FATAL 08P01 bad packet'];
    const extended = 'extended query protocol not supported by admin console';
    assert.deepEqual(await answer(Buffer.concat([parseMessage('', 'SHOW POOLS'), sync()])), expected(extended));
    assert.deepEqual(await answer(bindMessage('', '')), expected(extended));
    assert.deepEqual(await answer(executeMessage()), expected(extended));
    // the COPY messages too: the console never asked for them, they are not dropped silently
    for (const t of 'SHDCFdcf') {
      assert.deepEqual(await answer(message(t, 'x')), expected(`unsupported packet type for admin console: ${t.charCodeAt(0)}`), t);
    }
  });
});

describe('console access', () => {
  test('admin welcome: ParameterStatus set, BackendKeyData, tracked params echoed', async () => {
    const { client, login } = await wireLogin({ host: b.host, port: b.port },
      { user: ADMIN, database: 'pgbouncer', params: { application_name: 'monitor' } });
    assert.deepEqual(login.params, {
      server_version: '1.25.2/bouncer', client_encoding: 'UTF8', server_encoding: 'UTF8', DateStyle: 'ISO',
      TimeZone: 'GMT', standard_conforming_strings: 'on', is_superuser: 'on', application_name: 'monitor',
    });
    assert.ok(login.backendKey);
    assert.equal(login.status, 'I');
    await client.terminate();
  });

  test('stats_users may SHOW but not control, SET or SHOW FDS; known non-admins are `not allowed`', async () => {
    const s = await adminLogin(b, STATS);
    assert.ok((await show(s, 'SHOW POOLS')).length > 0);
    for (const q of ['PAUSE', 'RESUME', 'SUSPEND', 'KILL testdb', 'KILL_CLIENT 1', 'RELOAD', 'RECONNECT', 'WAIT_CLOSE',
      'DISABLE testdb', 'ENABLE testdb', 'SHUTDOWN', 'SET verbose = 1', 'SHOW FDS']) {
      await expectAdminError(s, q, 'admin access needed');
    }
    await s.terminate();
    const other = await attemptLogin({ host: b.host, port: b.port }, { user: 'other', database: 'pgbouncer' });
    assert.equal(other.error?.M, 'not allowed');
    assert.equal(other.error?.S, 'FATAL');
    assert.equal(other.error?.C, '08P01');
    await other.client.waitClose();
    // the internal `pgbouncer` user over TCP is a known user like any other
    const pgb = await attemptLogin({ host: b.host, port: b.port }, { user: 'pgbouncer', database: 'pgbouncer' });
    assert.equal(pgb.error?.M, 'not allowed');
  });

  test('console logins are exempt from max_client_conn', async () => {
    await expectTag(admin, 'SET max_client_conn = 2', 'SET max_client_conn=2');
    const extra: WireClient[] = [];
    try {
      extra.push(await userLogin(b)); // admin + this one = 2
      const refused = await attemptLogin({ host: b.host, port: b.port }, { user: 'trust_user', database: TEST_DB });
      assert.equal(refused.error?.M, 'no more connections allowed (max_client_conn)');
      extra.push(await adminLogin(b, STATS));
      extra.push(await adminLogin(b));
      assert.equal((await show(extra[2]!, 'SHOW LISTS')).find((r) => r.list === 'used_clients')!.items, '4');
    } finally {
      for (const c of extra) await c.terminate();
      await expectTag(admin, 'SET max_client_conn = 100', 'SET max_client_conn=100');
    }
  });

  test('md5: `not allowed` comes before the password, unknown users fail the password exchange', async () => {
    const m = await startAdminBouncer(pg, { auth_type: 'md5' }, {
      userlist: [[ADMIN, md5Secret('adminpw', ADMIN)], ['other', 'otherpw']],
    });
    try {
      const ok = await wireLogin({ host: m.host, port: m.port }, { user: ADMIN, database: 'pgbouncer', password: 'adminpw' });
      assert.deepEqual(ok.login.authCodes, [5, 0]);
      await ok.client.terminate();
      const other = await attemptLogin({ host: m.host, port: m.port }, { user: 'other', database: 'pgbouncer', password: 'otherpw' });
      assert.deepEqual(other.authCodes, [], 'no password asked');
      assert.equal(other.error?.M, 'not allowed');
      const unknown = await attemptLogin({ host: m.host, port: m.port }, { user: 'nobody', database: 'pgbouncer', password: 'x' });
      assert.deepEqual(unknown.authCodes, [5]);
      assert.equal(unknown.error?.M, 'password authentication failed');
      const wrong = await attemptLogin({ host: m.host, port: m.port }, { user: ADMIN, database: 'pgbouncer', password: 'bad' });
      assert.equal(wrong.error?.M, 'password authentication failed');
    } finally {
      await m.stop();
    }
  });

  test('auth_type=any: admin_users are admins, any other name gets read-only access', async () => {
    const a = await startAdminBouncer(pg, { auth_type: 'any' }, {
      ini: {
        databases: { [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB, user: 'trust_user' }) },
        pgbouncer: { auth_type: 'any', admin_users: ADMIN, stats_users: STATS },
      },
    });
    try {
      const anyone = await adminLogin(a, 'whoever');
      assert.ok((await show(anyone, 'SHOW DATABASES')).some((r) => r.name === TEST_DB));
      await expectAdminError(anyone, 'PAUSE', 'admin access needed');
      await anyone.terminate();
      const adm = await adminLogin(a, ADMIN);
      await expectTag(adm, 'PAUSE', 'PAUSE');
      await expectTag(adm, 'RESUME', 'RESUME');
      await adm.terminate();
    } finally {
      await a.stop();
    }
  });

  test('user `pgbouncer` over the Unix socket with pgbun\'s uid gets in without a password', async () => {
    // pgbun runs as `postgres` when the tests run as root (startPgbun sets `user`), else as us
    const runAs = isRoot() ? serverOsUser() : null;
    const env: NodeJS.ProcessEnv = { ...process.env, PGCONNECT_TIMEOUT: '5' };
    for (const k of Object.keys(env)) if (k.startsWith('PG') && k !== 'PGCONNECT_TIMEOUT') delete env[k];
    const args = ['-X', '-A', '-t', '-h', b.socketDir, '-p', String(b.port), '-U', 'pgbouncer', '-d', 'pgbouncer', '-c', 'SHOW STATE'];
    const r = spawnSync(pgBin('psql'), args, { env, encoding: 'utf8', timeout: 20_000, ...(runAs ? { uid: runAs.uid, gid: runAs.gid } : {}) });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'active|yes\npaused|no\nsuspended|no');
    await b.waitForLog(/LOG C-0x[0-9a-f]+: pgbouncer\/pgbouncer@unix\(\d+\):\d+ pgbouncer access from unix socket/);
    if (runAs) {
      // another uid (root here) is an ordinary `pgbouncer` user: not in admin_users
      const other = await attemptLogin({ path: b.socketPath }, { user: 'pgbouncer', database: 'pgbouncer' });
      assert.equal(other.error?.M, 'not allowed');
    }
  });

  test('psql: SHOW POOLS / CLIENTS / STATS through the real binary', async () => {
    const pools = await psql(b.conn(ADMIN, undefined, 'pgbouncer'), 'SHOW POOLS');
    assert.equal(pools.code, 0, pools.stderr);
    assert.ok(pools.rows.some((r) => r[0] === 'pgbouncer' && r[1] === 'pgbouncer' && r[15] === 'statement'));
    const raw = await psqlRaw(b.conn(STATS, undefined, 'pgbouncer'), ['-c', 'SHOW CLIENTS', '-c', 'SHOW STATS_TOTALS']);
    assert.equal(raw.code, 0, raw.stderr);
    assert.match(raw.stdout, /^ type \| user +\| database +\| replication \| state/m);
    assert.match(raw.stdout, /\| psql +\|/);
    assert.match(raw.stdout, /^ database +\| server_assignment_count \| xact_count/m);
    const help = await psqlRaw(b.conn(ADMIN, undefined, 'pgbouncer'), ['-c', 'SHOW HELP']);
    assert.match(help.stderr, /NOTICE: {2}Console usage\nDETAIL: {2}\n\tSHOW HELP\|CONFIG/);
  });
});

describe('SHOW values', () => {
  test('POOLS/CLIENTS/SERVERS: a full pool queues clients, links and waits are shown', async () => {
    const a = await userLogin(b, 'small', 'trust_user', { application_name: 'holder' });
    const w = await userLogin(b, 'small', 'trust_user', { application_name: 'waiter' });
    try {
      await a.query('BEGIN');
      const pid = (await a.query('SELECT pg_backend_pid()')).rows[0]![0]!;
      const pending = w.query('SELECT 42');
      let pool: Record<string, string | null> | undefined;
      await eventually('cl_waiting = 1', async () => {
        pool = (await show(admin, 'SHOW POOLS')).find((r) => r.database === 'small' && r.user === 'trust_user');
        return pool?.cl_waiting === '1';
      });
      assert.equal(pool!.cl_active, '1');
      assert.equal(pool!.sv_active, '1');
      assert.equal(pool!.sv_idle, '0');
      assert.equal(pool!.pool_mode, 'transaction');
      assert.equal(pool!.load_balance_hosts, null);
      await new Promise((r) => setTimeout(r, 1100));
      pool = (await show(admin, 'SHOW POOLS')).find((r) => r.database === 'small')!;
      assert.ok(Number(pool.maxwait) >= 1, `maxwait ${pool.maxwait}`);
      assert.ok(Number(pool.maxwait_us) >= 0 && Number(pool.maxwait_us) < 1e6);

      const clients = (await show(admin, 'SHOW CLIENTS')).filter((r) => r.database === 'small');
      const holder = clients.find((r) => r.application_name === 'holder')!;
      const waiter = clients.find((r) => r.application_name === 'waiter')!;
      assert.equal(holder.state, 'active');
      assert.equal(waiter.state, 'waiting');
      assert.ok(Number(waiter.wait) >= 1, `wait ${waiter.wait}`);
      assert.equal(holder.type, 'C');
      assert.equal(holder.user, 'trust_user');
      assert.equal(holder.replication, 'none');
      assert.equal(holder.addr, '127.0.0.1');
      assert.equal(holder.port, String(a.socket.localPort));
      assert.equal(holder.local_addr, '127.0.0.1');
      assert.equal(holder.local_port, String(b.port));
      assert.match(holder.connect_time!, TIME_RE);
      assert.match(holder.request_time!, TIME_RE);
      assert.match(holder.ptr!, /^0x[0-9a-f]+$/);
      assert.equal(waiter.link, '');
      assert.ok(Number(waiter.id) > Number(holder.id), 'ids increase');
      assert.equal(holder.close_needed, '0');
      assert.equal(holder.tls, '');

      const servers = (await show(admin, 'SHOW SERVERS')).filter((r) => r.database === 'small');
      assert.equal(servers.length, 1);
      const sv = servers[0]!;
      assert.equal(sv.type, 'S');
      assert.equal(sv.state, 'active');
      assert.equal(sv.user, 'trust_user');
      assert.equal(sv.link, holder.ptr);
      assert.equal(holder.link, sv.ptr);
      assert.equal(sv.remote_pid, pid);
      assert.equal(sv.addr, '127.0.0.1');
      assert.equal(sv.port, String(pg.port));
      assert.equal(sv.close_needed, '0');

      const sockets = await show(admin, 'SHOW SOCKETS');
      assert.ok(sockets.some((r) => r.state === 'cl_waiting' && r.ptr === waiter.ptr));
      assert.ok(sockets.some((r) => r.state === 'sv_active' && r.ptr === sv.ptr));
      // the waiting client's query is held: it is an active socket
      assert.ok((await show(admin, 'SHOW ACTIVE_SOCKETS')).some((r) => r.ptr === waiter.ptr));

      await a.query('COMMIT');
      assert.deepEqual((await pending).rows, [['42']]);
      const after = (await show(admin, 'SHOW CLIENTS')).filter((r) => r.database === 'small');
      assert.deepEqual(after.map((r) => r.state), ['idle', 'idle']);
      const p2 = (await show(admin, 'SHOW POOLS')).find((r) => r.database === 'small')!;
      assert.deepEqual([p2.cl_active, p2.cl_waiting, p2.sv_active, p2.sv_idle, p2.maxwait], ['2', '0', '0', '1', '0']);
    } finally {
      await a.terminate();
      await w.terminate();
    }
  });

  test('CLIENTS over the Unix socket: addr `unix`', async () => {
    const { client } = await wireLogin({ path: b.socketPath }, { user: 'trust_user', database: TEST_DB, params: { application_name: 'unixapp' } });
    const row = (await show(admin, 'SHOW CLIENTS')).find((r) => r.application_name === 'unixapp')!;
    assert.equal(row.addr, 'unix');
    assert.equal(row.port, String(b.port));
    assert.equal(row.local_addr, 'unix');
    await client.terminate();
  });

  test('DATABASES: effective sizes, forced user, host lists, admin db row', async () => {
    const rows = new Map((await show(admin, 'SHOW DATABASES')).map((r) => [r.name, r]));
    assert.deepEqual([...rows.keys()], ['benchdb', 'forced', 'pgbouncer', 'small', 'statsdb', TEST_DB], 'sorted by name');
    assert.deepEqual(rows.get(TEST_DB), {
      name: TEST_DB, host: '127.0.0.1', port: String(pg.port), database: TEST_DB, force_user: null, pool_size: '20',
      min_pool_size: '0', reserve_pool_size: '0', server_lifetime: '3600', pool_mode: null, load_balance_hosts: null,
      max_connections: '0', current_connections: rows.get(TEST_DB)!.current_connections, max_client_connections: '0',
      current_client_connections: rows.get(TEST_DB)!.current_client_connections, paused: '0', disabled: '0',
    });
    assert.equal(rows.get('small')!.pool_size, '1');
    const forced = rows.get('forced')!;
    assert.deepEqual([forced.host, forced.force_user, forced.pool_mode, forced.load_balance_hosts],
      ['127.0.0.1,localhost', 'trust_user', 'session', 'round-robin']);
    const adm = rows.get('pgbouncer')!;
    assert.deepEqual([adm.host, adm.port, adm.database, adm.force_user, adm.pool_size, adm.pool_mode],
      [null, String(b.port), 'pgbouncer', 'pgbouncer', '2', 'statement']);
  });

  test('USERS: padded text sizes, NULL pool_mode when unset, effective limits', async () => {
    const rows = new Map((await show(admin, 'SHOW USERS')).map((r) => [r.name, r]));
    assert.deepEqual(rows.get('other'), {
      name: 'other', pool_size: '        7', reserve_pool_size: '        2', pool_mode: 'statement',
      max_user_connections: '5', current_connections: '0', max_user_client_connections: '0', current_client_connections: '0',
    });
    // the console session asking counts as a client of its user, as in PgBouncer
    assert.deepEqual(rows.get(ADMIN), {
      name: ADMIN, pool_size: '', reserve_pool_size: '', pool_mode: null, max_user_connections: '0',
      current_connections: '0', max_user_client_connections: '0', current_client_connections: '1',
    });
    assert.ok(rows.has('pgbouncer'));
    const names = [...rows.keys()];
    assert.deepEqual(names, [...names].sort());
  });

  test('CONFIG: value, default and changeable as PgBouncer shows them', async () => {
    const cfg = new Map((await show(admin, 'SHOW CONFIG')).map((r) => [r.key, r]));
    assert.deepEqual(cfg.get('admin_users'), { key: 'admin_users', value: ADMIN, default: '', changeable: 'yes' });
    assert.deepEqual(cfg.get('listen_port'), { key: 'listen_port', value: String(b.port), default: '6432', changeable: 'no' });
    assert.deepEqual(cfg.get('unix_socket_mode'), { key: 'unix_socket_mode', value: '511', default: '0777', changeable: 'no' });
    assert.deepEqual(cfg.get('auth_user'), { key: 'auth_user', value: null, default: null, changeable: 'yes' });
    assert.deepEqual(cfg.get('stats_period'), { key: 'stats_period', value: '1', default: '60', changeable: 'yes' });
    const keys = [...cfg.keys()];
    assert.deepEqual(keys, [...keys].sort());
  });

  test('PEERS, PEER_POOLS, LISTS, MEM, DNS, STATE, VERSION, FDS', async () => {
    assert.deepEqual(await show(admin, 'SHOW PEERS'), [{ peer_id: '1', host: '127.0.0.1', port: '6999', pool_size: '20' }]);
    assert.deepEqual(await show(admin, 'SHOW PEER_POOLS'), []);
    const lists = new Map((await show(admin, 'SHOW LISTS')).map((r) => [r.list, Number(r.items)]));
    assert.deepEqual([...lists.keys()], ['databases', 'users', 'peers', 'pools', 'peer_pools', 'free_clients', 'used_clients',
      'login_clients', 'free_servers', 'used_servers', 'dns_names', 'dns_zones', 'dns_queries', 'dns_pending']);
    assert.equal(lists.get('databases'), 6);
    assert.equal(lists.get('peers'), 1);
    assert.ok(lists.get('used_clients')! >= 1);
    assert.equal(lists.get('pools'), (await show(admin, 'SHOW POOLS')).length);
    const mem = (await show(admin, 'SHOW MEM')).map((r) => r.name);
    assert.deepEqual(mem, ['user_cache', 'credentials_cache', 'db_cache', 'peer_cache', 'peer_pool_cache', 'pool_cache',
      'outstanding_request_cache', 'server_cache', 'client_cache', 'iobuf_cache', 'var_list_cache',
      'server_prepared_statement_cache']);
    // the host name cache: `forced` lists localhost; two servers at once use both hosts
    const f1 = await userLogin(b, 'forced');
    const f2 = await userLogin(b, 'forced');
    await f1.query('SELECT 1');
    await f2.query('SELECT 1');
    const dns = await show(admin, 'SHOW DNS_HOSTS');
    assert.deepEqual(dns.map((r) => r.hostname), ['localhost']);
    assert.ok(Number(dns[0]!.ttl) >= 0 && Number(dns[0]!.ttl) <= 15, `ttl ${dns[0]!.ttl}`);
    assert.match(dns[0]!.addrs ?? '', /127\.0\.0\.1|::1/);
    const lists2 = new Map((await show(admin, 'SHOW LISTS')).map((r) => [r.list, Number(r.items)]));
    assert.equal(lists2.get('dns_names'), 1);
    f1.destroy();
    f2.destroy();
    assert.deepEqual(await show(admin, 'SHOW DNS_ZONES'), []);
    assert.deepEqual(await show(admin, 'SHOW STATE'), [
      { key: 'active', value: 'yes' }, { key: 'paused', value: 'no' }, { key: 'suspended', value: 'no' }]);
    const pooled = await userLogin(b, TEST_DB);
    const fds = await show(admin, 'SHOW FDS');
    const listeners = fds.filter((r) => r.task === 'pooler');
    assert.deepEqual(listeners.map((r) => [r.addr, r.port]), [['127.0.0.1', String(b.port)], ['unix', String(b.port)]]);
    for (const r of fds) assert.ok(Number(r.fd) > 2);
    const client = fds.find((r) => r.task === 'client' && r.user === 'trust_user' && r.database === TEST_DB);
    assert.ok(client, 'a pooled client');
    assert.equal(client.database, TEST_DB);
    assert.match(client.cancel!, /^-?\d+$/);
    // the console's own connections are not handed over (the -R takeover is one of them)
    assert.deepEqual(fds.filter((r) => r.database === 'pgbouncer'), []);
    pooled.destroy();
  });

  test('STATS, STATS_TOTALS, TOTALS count per database; averages over stats_period; the stats log line', async () => {
    const c = await userLogin(b, 'statsdb');
    for (let k = 0; k < 5; k++) await c.query(`SELECT ${k}`);
    await c.query('BEGIN');
    await c.query('SELECT pg_sleep(0.05)');
    await c.query('COMMIT');
    // one named statement, bound twice (extended protocol)
    await c.write([parseMessage('st1', 'SELECT $1::int', [0]), bindMessage('', 'st1', ['1']), executeMessage(), sync()]);
    assert.equal((await c.collect()).status, 'I');
    await c.write([bindMessage('', 'st1', ['2']), executeMessage(), sync()]);
    assert.deepEqual((await c.collect()).rows, [['2']]);
    const totals = (await show(admin, 'SHOW STATS_TOTALS')).find((r) => r.database === 'statsdb')!;
    assert.equal(totals.xact_count, '8');
    assert.equal(totals.query_count, '10');
    assert.equal(totals.server_assignment_count, '8');
    assert.equal(totals.client_login_count, '1');
    assert.equal(totals.client_parse_count, '1');
    assert.equal(totals.server_parse_count, '1');
    assert.equal(totals.bind_count, '2');
    assert.ok(Number(totals.bytes_received) > 100);
    assert.ok(Number(totals.bytes_sent) > 100);
    assert.ok(Number(totals.xact_time) >= 50_000, `xact_time ${totals.xact_time} µs includes the 50 ms sleep`);
    assert.ok(Number(totals.query_time) >= 50_000);
    assert.ok(Number(totals.query_time) < 10_000_000);
    const stats = (await show(admin, 'SHOW STATS')).find((r) => r.database === 'statsdb')!;
    assert.equal(stats.total_xact_count, '8');
    assert.equal(stats.total_query_count, '10');
    assert.equal(stats.total_received, totals.bytes_received);
    const dbs = (await show(admin, 'SHOW STATS')).map((r) => r.database);
    assert.deepEqual(dbs, [...dbs].sort());
    assert.ok(dbs.includes('pgbouncer'), 'the console has a stats row too');
    const tot = new Map((await show(admin, 'SHOW TOTALS')).map((r) => [r.name, r.value]));
    assert.deepEqual([...tot.keys()].slice(0, 12), ['total_server_assignment_count', 'total_xact_count', 'total_query_count',
      'total_client_bytes', 'total_server_bytes', 'total_xact_time', 'total_query_time', 'total_wait_time',
      'total_ps_client_parse_count', 'total_ps_server_parse_count', 'total_ps_bind_count', 'total_client_login_count']);
    assert.deepEqual([...tot.keys()].slice(12), [...tot.keys()].slice(0, 12).map((k) => k!.replace(/^total_/, 'avg_')));
    assert.ok(Number(tot.get('total_xact_count')) >= 8);

    // averages: the period with this burst in it shows rates > 0 (stats_period = 1)
    const from = b.logOffset();
    for (let k = 0; k < 20; k++) await c.query('SELECT 1');
    let avg: Record<string, string | null> | undefined;
    await eventually('averages of the busy period', async () => {
      avg = (await show(admin, 'SHOW STATS_AVERAGES')).find((r) => r.database === 'statsdb');
      return Number(avg?.xact_count) > 0;
    }, 4000);
    assert.ok(Number(avg!.query_count) >= Number(avg!.xact_count));
    assert.ok(Number(avg!.bytes_received) > 0);
    assert.ok(Number(avg!.query_time) > 0, 'µs per query');
    const line = await b.waitForLog(/LOG stats: [1-9]\d* xacts\/s/, 4000, from);
    assert.match(line, /LOG stats: \d+ xacts\/s, \d+ queries\/s, \d+ client parses\/s, \d+ server parses\/s, \d+ binds\/s, \d+ client logins\/s, in \d+ B\/s, out \d+ B\/s, xact \d+ us, query \d+ us, wait \d+ us$/);
    await c.terminate();
  });
});

describe('SHOW STATS counts what PgBouncer counts', () => {
  test('bytes: client messages but Terminate, server answers but the login; console sessions not; the first login wait', async () => {
    const p = await startAdminBouncer(pg);
    try {
      const admin = await adminLogin(p);
      const c = await userLogin(p, TEST_DB);
      const r = await c.query('SELECT 1');
      assert.deepEqual(r.rows, [['1']]);
      const answer = r.messages.reduce((n, m) => n + 5 + m.body.length, 0);
      await c.terminate();
      await c.closedPromise;
      const query = 1 + 4 + 'SELECT 1'.length + 1;
      await eventually('the client gone', async () => (await show(admin, 'SHOW CLIENTS')).every((x) => x.database !== TEST_DB));
      const row = (await show(admin, 'SHOW STATS_TOTALS')).find((x) => x.database === TEST_DB);
      assert.equal(row!.bytes_received, String(query), 'the Query, not the Terminate');
      assert.equal(row!.bytes_sent, String(answer), 'the answer to the Query, not the server login');
      // the first client of a pool waits for the pool's first server login: that is wait time
      assert.ok(Number(row!.wait_time) > 0, `wait_time ${row!.wait_time}`);
      // console queries are counted as transactions and queries, their bytes are not
      const console = (await show(admin, 'SHOW STATS_TOTALS')).find((x) => x.database === 'pgbouncer')!;
      assert.ok(Number(console.query_count) > 0);
      assert.equal(console.bytes_received, '0');
      assert.equal(console.bytes_sent, '0');
      await admin.terminate();
    } finally {
      await p.stop();
    }
  });
});

describe('a psql session can run every command of SHOW HELP', () => {
  test('SHOW ..., SET, RELOAD, PAUSE, RESUME, DISABLE, ENABLE, RECONNECT, KILL, KILL_CLIENT, SUSPEND, WAIT_CLOSE, SHUTDOWN', async () => {
    const p = await startAdminBouncer(pg);
    const victim = await userLogin(p, TEST_DB, 'trust_user', { application_name: 'victim' });
    const a = await adminLogin(p);
    const id = (await show(a, 'SHOW CLIENTS')).find((r) => r.application_name === 'victim')!.id!;
    await a.terminate();
    const help = await psqlRaw(p.conn(ADMIN, undefined, 'pgbouncer'), ['-c', 'SHOW HELP']);
    const commands = help.stderr.split('\n').filter((l) => l.startsWith('\t')).map((l) => l.slice(1));
    // every SHOW word, and each other command with an argument where it takes one
    const script: string[] = [];
    for (const line of commands) {
      const m = /^SHOW (.*)$/.exec(line);
      if (m) script.push(...m[1]!.split('|').map((w) => `SHOW ${w};`));
    }
    script.push('SET verbose = 1;', 'RELOAD;', 'PAUSE;', 'RESUME;', `PAUSE ${TEST_DB};`, `RESUME ${TEST_DB};`,
      `DISABLE ${TEST_DB};`, `ENABLE ${TEST_DB};`, 'RECONNECT;', `RECONNECT ${TEST_DB};`, `KILL_CLIENT ${id};`,
      `KILL ${TEST_DB};`, `RESUME ${TEST_DB};`, 'KILL;', 'RESUME;', 'SUSPEND;', 'RESUME;', 'WAIT_CLOSE;',
      `WAIT_CLOSE ${TEST_DB};`, 'SHUTDOWN WAIT_FOR_CLIENTS;');
    // the commands named in HELP are all in the script
    for (const line of commands.filter((l) => !l.startsWith('SHOW'))) {
      const word = line.split(' ')[0]!;
      assert.ok(script.some((s) => s.startsWith(word)), word);
    }
    const r = await psqlRaw(p.conn(ADMIN, undefined, 'pgbouncer'), ['-v', 'ON_ERROR_STOP=1', '-e', '-f', '-'],
      { input: script.join('\n') + '\n' });
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /ERROR/);
    await victim.expectError({ message: 'admin forced disconnect', severity: 'FATAL', code: '08P01' });
    // SHUTDOWN WAIT_FOR_CLIENTS: psql was the last client
    const exit = await p.waitExit(5000);
    assert.deepEqual(exit, { code: 0, signal: null });
    assert.match(p.log(), /LOG client connections dropped, exiting/);
  });
});
