// The Prometheus endpoint (metrics_listen_addr, metrics_listen_port): pgbouncer_exporter's
// metrics with the values SHOW STATS_TOTALS / SHOW POOLS give, scraped during a pgbench run and
// after it; the output accepted by `promtool check metrics` (Debian package prometheus); 404 and
// 405; listening on 127.0.0.1 only or on a Unix socket; started, moved and stopped by RELOAD;
// served during PAUSE, SUSPEND and SHUTDOWN; pgbun's own login, limit and latency metrics.

import { spawnSync } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pgbench, assertPgbenchClean } from '../lib/clients.js';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { canConnect, freePort, sleep } from '../lib/procs.js';
import { attemptLogin, wireLogin, type WireClient } from '../lib/wire.js';
import { ADMIN, adminLogin, eventually, show } from './admin-lib.js';

const pg = await sharedPostgres();
const ROLE = 'metrics_bench';
const PW = 'metrics_pw';

type Where = { host: string; port: number } | { socketPath: string };

function httpRequest(where: Where, urlPath: string, method = 'GET'): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ ...where, path: urlPath, method, agent: false, timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

interface Sample { name: string; labels: Record<string, string>; value: number }

/** The exposition's samples (comments skipped). */
function parse(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  return samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
}

async function scrape(where: Where): Promise<{ text: string; samples: Sample[] }> {
  const r = await httpRequest(where, '/metrics');
  assert.equal(r.status, 200, r.body);
  assert.match(String(r.headers['content-type']), /^text\/plain; version=0\.0\.4/);
  return { text: r.body, samples: parse(r.body) };
}

function promtool(text: string): void {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  assert.ok(!r.error, `promtool: ${r.error?.message} (Debian package prometheus)`);
  assert.equal(r.status, 0, `promtool check metrics:\n${r.stdout}${r.stderr}`);
}

// SHOW STATS_TOTALS column → exporter metric and unit
const STATS_MAP: Array<[string, string, number]> = [
  ['query_count', 'pgbouncer_stats_queries_pooled_total', 1],
  ['query_time', 'pgbouncer_stats_queries_duration_seconds_total', 1e-6],
  ['bytes_received', 'pgbouncer_stats_received_bytes_total', 1],
  ['bytes_sent', 'pgbouncer_stats_sent_bytes_total', 1],
  ['wait_time', 'pgbouncer_stats_client_wait_seconds_total', 1e-6],
  ['xact_count', 'pgbouncer_stats_sql_transactions_pooled_total', 1],
  ['xact_time', 'pgbouncer_stats_server_in_transaction_seconds_total', 1e-6],
  ['client_parse_count', 'pgbouncer_stats_client_parses_total', 1],
  ['server_parse_count', 'pgbouncer_stats_server_parses_total', 1],
  ['bind_count', 'pgbouncer_stats_binds_total', 1],
  ['server_assignment_count', 'pgbouncer_stats_server_assignments_total', 1],
];

const POOLS_MAP: Array<[string, string]> = [
  ['cl_active', 'pgbouncer_pools_client_active_connections'],
  ['cl_waiting', 'pgbouncer_pools_client_waiting_connections'],
  ['cl_active_cancel_req', 'pgbouncer_pools_client_active_cancel_connections'],
  ['cl_waiting_cancel_req', 'pgbouncer_pools_client_waiting_cancel_connections'],
  ['sv_active', 'pgbouncer_pools_server_active_connections'],
  ['sv_active_cancel', 'pgbouncer_pools_server_active_cancel_connections'],
  ['sv_being_canceled', 'pgbouncer_pools_server_being_canceled_connections'],
  ['sv_idle', 'pgbouncer_pools_server_idle_connections'],
  ['sv_used', 'pgbouncer_pools_server_used_connections'],
  ['sv_tested', 'pgbouncer_pools_server_testing_connections'],
  ['sv_login', 'pgbouncer_pools_server_login_connections'],
];

const close = (a: number, b: number): boolean => Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(a), Math.abs(b));

describe('metrics on 127.0.0.1 during pgbench', () => {
  let b: TestPgbun;
  let admin: WireClient;
  let where: { host: string; port: number };
  let benchdb: string;

  before(async () => {
    benchdb = await pg.ensurePgbench();
    await pg.createRole(ROLE, PW);
    await pg.query(`GRANT pgbench_owner TO ${ROLE}`);
    const port = await freePort();
    where = { host: '127.0.0.1', port };
    b = await startPgbun({
      ini: {
        pgbouncer: { auth_type: 'trust', admin_users: ADMIN, pool_mode: 'transaction', default_pool_size: 4, metrics_listen_addr: '127.0.0.1', metrics_listen_port: port },
        databases: { benchdb: pgConnstr(pg, { dbname: benchdb }) },
      },
      userlist: [[ADMIN, ''], [ROLE, PW]],
    });
    admin = await adminLogin(b);
  });

  after(async () => {
    admin?.destroy();
    await b?.stop();
    await pg.query(`DROP ROLE IF EXISTS ${ROLE}`).catch(() => {});
  });

  test('counters lie between two SHOW STATS_TOTALS around each scrape, and equal them once pgbench is done', async () => {
    const run = pgbench(b.conn(ROLE, PW, 'benchdb'), ['-n', '-c', '8', '-j', '2', '-T', '4', '-M', 'extended', '-S'], { timeoutMs: 60_000 });
    let done = false;
    void run.finally(() => (done = true));
    let scrapes = 0;
    while (!done) {
      const before = (await show(admin, 'SHOW STATS_TOTALS')).find((r) => r.database === 'benchdb');
      const { samples, text } = await scrape(where);
      const after = (await show(admin, 'SHOW STATS_TOTALS')).find((r) => r.database === 'benchdb');
      if (before !== undefined && after !== undefined) {
        for (const [col, metric, scale] of STATS_MAP) {
          const v = value(samples, metric, { database: 'benchdb' });
          assert.ok(v !== undefined, `${metric} missing:\n${text}`);
          assert.ok(v >= Number(before[col]) * scale - 1e-9 && v <= Number(after[col]) * scale + 1e-9,
            `${metric} = ${v}, SHOW STATS_TOTALS ${col} went from ${before[col]} to ${after[col]}`);
        }
        scrapes++;
      }
      await sleep(200);
    }
    assertPgbenchClean(await run);
    assert.ok(scrapes >= 3, `scrapes during the run: ${scrapes}`);

    // quiet now: every value equals SHOW's
    const stats = (await show(admin, 'SHOW STATS_TOTALS')).find((r) => r.database === 'benchdb')!;
    const pools = await show(admin, 'SHOW POOLS');
    const { samples, text } = await scrape(where);
    promtool(text);
    for (const [col, metric, scale] of STATS_MAP) {
      assert.ok(close(value(samples, metric, { database: 'benchdb' })!, Number(stats[col]) * scale), `${metric} vs ${col} ${stats[col]}`);
    }
    assert.ok(Number(stats.query_count) > 100);
    for (const p of pools) {
      const labels = { database: p.database!, user: p.user! };
      for (const [col, metric] of POOLS_MAP) assert.equal(value(samples, metric, labels), Number(p[col]), `${metric} ${JSON.stringify(labels)}`);
      assert.equal(value(samples, 'pgbouncer_pools_client_maxwait_seconds', labels), Number(p.maxwait) + Number(p.maxwait_us) * 1e-6);
    }
    // the latency histograms count what SHOW STATS counts
    const pool = { database: 'benchdb', user: ROLE };
    assert.equal(value(samples, 'pgbun_query_duration_seconds_count', pool), Number(stats.query_count));
    assert.equal(value(samples, 'pgbun_query_duration_seconds_bucket', { ...pool, le: '+Inf' }), Number(stats.query_count));
    assert.ok(close(value(samples, 'pgbun_query_duration_seconds_sum', pool)!, Number(stats.query_time) * 1e-6));
    assert.equal(value(samples, 'pgbun_transaction_duration_seconds_count', pool), Number(stats.xact_count));
    assert.ok(close(value(samples, 'pgbun_client_wait_duration_seconds_sum', pool)!, Number(stats.wait_time) * 1e-6));
    const buckets = samples.filter((s) => s.name === 'pgbun_query_duration_seconds_bucket' && s.labels.database === 'benchdb');
    assert.equal(buckets[0]!.labels.le, '0.0001');
    assert.equal(buckets[buckets.length - 2]!.labels.le, '10');
    for (let k = 1; k < buckets.length; k++) assert.ok(buckets[k]!.value >= buckets[k - 1]!.value, 'cumulative buckets');
  });

  test('SHOW DATABASES, LISTS, CONFIG and VERSION as the exporter publishes them; pgbouncer_up', async () => {
    const dbs = await show(admin, 'SHOW DATABASES');
    const lists = await show(admin, 'SHOW LISTS');
    const { samples } = await scrape(where);
    assert.equal(value(samples, 'pgbouncer_up'), 1);
    assert.equal(value(samples, 'pgbouncer_version_info', { version: '1.25.2' }), 1);
    const bench = dbs.find((d) => d.name === 'benchdb')!;
    const labels = { name: 'benchdb', host: bench.host!, port: bench.port!, database: bench.database!, force_user: '', pool_mode: '' };
    assert.equal(value(samples, 'pgbouncer_databases_pool_size', labels), Number(bench.pool_size));
    assert.equal(value(samples, 'pgbouncer_databases_reserve_pool', labels), Number(bench.reserve_pool_size));
    assert.equal(value(samples, 'pgbouncer_databases_current_connections', labels), Number(bench.current_connections));
    assert.equal(value(samples, 'pgbouncer_databases_paused', labels), 0);
    const item = (n: string): number => Number(lists.find((l) => l.list === n)!.items);
    assert.equal(value(samples, 'pgbouncer_databases'), item('databases'));
    assert.equal(value(samples, 'pgbouncer_pools'), item('pools'));
    assert.equal(value(samples, 'pgbouncer_used_servers'), item('used_servers'));
    assert.equal(value(samples, 'pgbouncer_cached_dns_names'), item('dns_names'));
    assert.equal(value(samples, 'pgbouncer_config_max_client_connections'), 100);
    assert.equal(value(samples, 'pgbouncer_config_max_user_connections'), 0);
    // SHOW CLIENTS grouped: the console client itself, in the state SHOW CLIENTS gives it
    const me = (await show(admin, 'SHOW CLIENTS')).find((c) => c.database === 'pgbouncer')!;
    assert.equal(value((await scrape(where)).samples, 'pgbouncer_client_connections', { database: 'pgbouncer', user: ADMIN, application_name: me.application_name!, state: me.state! }), 1);
  });

  test('other paths get 404, other methods 405', async () => {
    assert.equal((await httpRequest(where, '/')).status, 404);
    assert.equal((await httpRequest(where, '/metricsx')).status, 404);
    const post = await httpRequest(where, '/metrics', 'POST');
    assert.equal(post.status, 405);
    assert.equal(post.headers.allow, 'GET, HEAD');
    assert.equal((await httpRequest(where, '/metrics?x=1')).status, 200);
  });

  test('listens on 127.0.0.1 only', async () => {
    assert.equal(await canConnect({ host: '127.0.0.1', port: where.port }), true);
    assert.equal(await canConnect({ host: '127.0.0.2', port: where.port }), false);
  });

  test('served during PAUSE and SUSPEND', async () => {
    await show(admin, 'PAUSE');
    try {
      const { samples } = await scrape(where);
      assert.equal(value(samples, 'pgbouncer_up'), 1);
    } finally {
      await show(admin, 'RESUME');
    }
    await show(admin, 'SUSPEND');
    try {
      assert.equal(value((await scrape(where)).samples, 'pgbouncer_up'), 1);
    } finally {
      await show(admin, 'RESUME');
    }
  });
});

describe('metrics on a Unix socket, moved by RELOAD, pgbun\'s login metrics', () => {
  let b: TestPgbun;
  let sock: string;

  before(async () => {
    b = await startPgbun({
      ini: {
        pgbouncer: { auth_type: 'hba', admin_users: ADMIN, max_db_client_connections: 2 },
        databases: { [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB }) },
      },
      hba: 'host all rejected 127.0.0.1/32 reject\nhost all all 127.0.0.1/32 scram-sha-256\nlocal all all trust\n',
      userlist: [[ADMIN, ''], ['trust_user', 'trust_pass']],
    });
    sock = path.join(b.dir, 'metrics.sock');
  });

  after(async () => {
    await b?.stop();
  });

  test('off by default; RELOAD starts it on a Unix socket, moves it to TCP and stops it', async () => {
    const port = await freePort();
    const ini = (extra: Record<string, string | number>) => ({
      pgbouncer: { auth_type: 'hba', admin_users: ADMIN, max_db_client_connections: 2, ...extra },
      databases: { [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB }) },
    });
    assert.equal(await canConnect({ path: sock }), false);
    let off = b.logOffset();
    b.reload({ ini: ini({ metrics_listen_addr: sock }) });
    await b.waitForLog(/metrics: listening on unix:/, 10_000, off);
    assert.equal(value((await scrape({ socketPath: sock })).samples, 'pgbouncer_up'), 1);

    off = b.logOffset();
    b.reload({ ini: ini({ metrics_listen_addr: '127.0.0.1', metrics_listen_port: port }) });
    await b.waitForLog(/metrics: listening on 127\.0\.0\.1:\d+/, 10_000, off);
    assert.equal(await canConnect({ path: sock }), false);
    assert.equal(value((await scrape({ host: '127.0.0.1', port })).samples, 'pgbouncer_up'), 1);

    off = b.logOffset();
    b.reload({ ini: ini({ metrics_listen_addr: sock }) });
    await b.waitForLog(/metrics: listening on unix:/, 10_000, off);
    assert.equal(await canConnect({ host: '127.0.0.1', port }), false);
  });

  test('logins by result, pool-full events, promtool accepts it', async () => {
    const target = { host: b.host, port: b.port };
    const before = (await scrape({ socketPath: sock })).samples;
    const logins = (s: Sample[], result: string): number => value(s, 'pgbun_client_logins_total', { result }) ?? NaN;

    const wrong = await attemptLogin(target, { user: 'trust_user', database: TEST_DB, password: 'nope' });
    assert.equal(wrong.error?.M, 'SASL authentication failed');
    wrong.client.destroy();
    const unknown = await attemptLogin(target, { user: 'nobody', database: TEST_DB, password: 'nope' });
    assert.equal(unknown.error?.M, 'SASL authentication failed');
    unknown.client.destroy();
    const rejected = await attemptLogin(target, { user: 'rejected', database: TEST_DB });
    assert.equal(rejected.error?.M, 'login rejected');
    rejected.client.destroy();
    const ok = await attemptLogin(target, { user: 'trust_user', database: TEST_DB, password: 'trust_pass' });
    assert.equal(ok.error, null);
    // max_db_client_connections = 2: the third client of the database is refused
    const ok2 = await attemptLogin(target, { user: 'trust_user', database: TEST_DB, password: 'trust_pass' });
    const full = await attemptLogin(target, { user: 'trust_user', database: TEST_DB, password: 'trust_pass' });
    assert.equal(full.error?.M, 'client connections exceeded (max_db_client_connections)');
    for (const c of [ok, ok2, full]) c.client.destroy();

    let after: Sample[] = [];
    await eventually('login counters', async () => {
      after = (await scrape({ socketPath: sock })).samples;
      return logins(after, 'ok') - logins(before, 'ok') === 2;
    });
    assert.equal(logins(after, 'wrong_password') - logins(before, 'wrong_password'), 1);
    assert.equal(logins(after, 'unknown_user') - logins(before, 'unknown_user'), 1);
    assert.equal(logins(after, 'hba_reject') - logins(before, 'hba_reject'), 1);
    assert.equal(logins(after, 'pool_full') - logins(before, 'pool_full'), 1);
    assert.equal(logins(after, 'tls_required'), 0);
    assert.equal(value(after, 'pgbun_pool_full_total', { limit: 'max_db_client_connections' }), 1);
    assert.equal(value(after, 'pgbun_server_login_failures_total'), 0);
    promtool((await scrape({ socketPath: sock })).text);
  });

  test('served while SHUTDOWN WAIT_FOR_CLIENTS waits for a client', async () => {
    // over the Unix socket: `local all all trust`
    const unix = { path: b.socketPath };
    const { client } = await wireLogin(unix, { user: 'trust_user', database: TEST_DB });
    const { client: admin } = await wireLogin(unix, { user: ADMIN, database: 'pgbouncer' });
    const off = b.logOffset();
    void admin.query('SHUTDOWN WAIT_FOR_CLIENTS').catch(() => {});
    await b.waitForLog(/SHUTDOWN|shutting down/i, 10_000, off).catch(() => {});
    await sleep(300);
    assert.equal(b.proc.exitCode, null, 'pgbun waits for its client');
    assert.equal(value((await scrape({ socketPath: sock })).samples, 'pgbouncer_up'), 1);
    client.destroy();
    admin.destroy();
    assert.ok(await b.waitExit(10_000), 'pgbun exits once the client left');
  });
});
