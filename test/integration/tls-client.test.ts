// TLS between clients and pgbun (client_tls_*): every client_tls_sslmode
// with psql (sslmode, sslrootcert, sslcert/sslkey), pgbench and the pg driver; `SSL required`
// for plaintext TCP (Unix socket exempt); plaintext pipelined after SSLRequest refused; direct
// TLS with ALPN `postgresql`; client_tls_protocols/ciphers/tls13_ciphers/ecdhcurve/dheparams;
// the TLS description in the `login attempt` log line; TLS setup errors at startup.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type tls from 'node:tls';
import { pgbench, pgClient, psql, type ConnOpts } from '../lib/clients.js';
import { makeCert, tlsConnect, tlsFixture, wireOver, type TlsFixture } from '../lib/certs.js';
import { expectRefusedAtStart, pgConnstr, startPgbun, type IniSpec, type TestPgbun } from '../lib/pgbun.js';
import { onBun } from '../lib/runtime.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { sleep } from '../lib/procs.js';
import { AUTH, md5Secret, sslRequest, startupMessage, WireClient, wireLogin } from '../lib/wire.js';

const pg = await sharedPostgres();
let fx: TlsFixture;
const bouncers: TestPgbun[] = [];

function ini(tlsSettings: Record<string, string>): IniSpec {
  return {
    pgbouncer: {
      auth_type: 'md5',
      client_tls_key_file: fx.serverKey,
      client_tls_cert_file: fx.serverCert,
      client_tls_ca_file: fx.caFile,
      server_tls_sslmode: 'disable',
      log_connections: 1,
      ...tlsSettings,
    },
    databases: { [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB }) },
  };
}

async function bouncer(tlsSettings: Record<string, string>): Promise<TestPgbun> {
  const b = await startPgbun({
    ini: ini(tlsSettings),
    userlist: [['md5_user', md5Secret('md5_pass', 'md5_user')], ['trust_user', '']],
  });
  bouncers.push(b);
  return b;
}

const conn = (b: TestPgbun, extra: Partial<ConnOpts> = {}): ConnOpts => ({
  host: b.host, port: b.port, user: 'md5_user', password: 'md5_pass', database: TEST_DB, ...extra,
});

/** libpq TLS files as environment variables */
function sslEnv(o: { root?: string; cert?: { key: string; cert: string } } = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  if (o.root) env.PGSSLROOTCERT = o.root;
  if (o.cert) {
    env.PGSSLCERT = o.cert.cert;
    env.PGSSLKEY = o.cert.key;
  } else {
    // no ~/.postgresql/postgresql.crt by accident
    env.PGSSLCERT = '/nonexistent/client.crt';
    env.PGSSLKEY = '/nonexistent/client.key';
  }
  return env;
}

async function psqlOk(c: ConnOpts, env: NodeJS.ProcessEnv = sslEnv()): Promise<void> {
  const r = await psql(c, 'SELECT current_user', { env });
  assert.equal(r.code, 0, `psql failed: ${r.stderr}`);
  assert.deepEqual(r.rows, [[c.user]]);
}

async function psqlFails(c: ConnOpts, env: NodeJS.ProcessEnv, re: RegExp): Promise<string> {
  const r = await psql(c, 'SELECT 1', { env });
  assert.notEqual(r.code, 0, 'psql should have failed');
  assert.match(r.stderr, re);
  return r.stderr;
}

/** Log in with md5 over an established (TLS) wire client and run a query. */
async function loginOver(w: WireClient): Promise<void> {
  const login = await w.login({ user: 'md5_user', database: TEST_DB, password: 'md5_pass' });
  assert.deepEqual(login.authCodes, [AUTH.MD5, AUTH.OK]);
  const r = await w.query('SELECT 40 + 2');
  assert.deepEqual(r.rows, [['42']]);
  await w.terminate();
}

before(() => {
  fx = tlsFixture();
});

after(async () => {
  for (const b of bouncers) await b.stop();
});

const TLS_LOG = /login attempt: db=testdb user=md5_user tls=(TLSv1\.[23]\/[A-Z0-9_-]+(\/ECDH=[A-Za-z0-9]+)?)/;

describe('client_tls_sslmode', () => {
  test('disable: SSLRequest answered N; psql sslmode=prefer goes plain, sslmode=require fails; tls=no in the log', async () => {
    const b = await bouncer({ client_tls_sslmode: 'disable' });
    const w = await WireClient.connect(b);
    await w.write(sslRequest());
    assert.equal((await w.readBytes(1)).toString(), 'N');
    await loginOver(w);
    await psqlOk(conn(b, { sslmode: 'prefer' }));
    await psqlFails(conn(b, { sslmode: 'require' }), sslEnv(), /server does not support SSL/);
    await b.waitForLog(/login attempt: db=testdb user=md5_user tls=no/);
  });

  for (const mode of ['allow', 'prefer']) {
    test(`${mode}: TLS when the client asks (psql, pg driver), plain otherwise; the log names the TLS version and cipher`, async () => {
      const b = await bouncer({ client_tls_sslmode: mode });
      const off = b.logOffset();
      await psqlOk(conn(b, { sslmode: 'require' }));
      const line = await b.waitForLog(TLS_LOG, 5000, off);
      assert.match(line, /tls=TLSv1\.3\/TLS_AES_256_GCM_SHA384/);
      await psqlOk(conn(b, { sslmode: 'disable' }));
      // no certificate check at all in these modes: a client certificate from an unknown CA is fine
      const stranger = fx.client('md5_user', { ca: null });
      await psqlOk(conn(b, { sslmode: 'require' }), sslEnv({ cert: stranger }));
      const c = await pgClient(conn(b), { ssl: { rejectUnauthorized: false } });
      try {
        const r = await c.query('SELECT current_user AS u');
        assert.equal(r.rows[0].u, 'md5_user');
        const stream = (c as unknown as { connection: { stream: tls.TLSSocket } }).connection.stream;
        assert.equal(stream.getProtocol(), 'TLSv1.3');
      } finally {
        await c.end();
      }
    });
  }

  test('require: plaintext TCP gets FATAL "SSL required"; the Unix socket is exempt; psql verify-full checks our certificate', async () => {
    const b = await bouncer({ client_tls_sslmode: 'require' });
    const w = await WireClient.connect(b);
    await w.write(startupMessage({ user: 'md5_user', database: TEST_DB }));
    const err = await w.expectError({ code: '08P01', message: 'SSL required', severity: 'FATAL' });
    assert.deepEqual(Object.keys(err.fields).sort(), ['C', 'M', 'S']);
    await psqlFails(conn(b, { sslmode: 'disable' }), sslEnv(), /SSL required/);
    await psqlOk(conn(b, { sslmode: 'require' }));
    await psqlOk(conn(b, { sslmode: 'verify-full', host: 'localhost' }), sslEnv({ root: fx.caFile }));
    await psqlOk(conn(b, { sslmode: 'verify-full', host: '127.0.0.1' }), sslEnv({ root: fx.caFile }));
    await psqlOk(conn(b, { sslmode: 'disable', host: b.socketDir }));
    // pgbench over TLS, several clients
    const script = path.join(fx.dir, 'select1.sql');
    fs.writeFileSync(script, 'SELECT 1;\n');
    const r = await pgbench(conn(b, { sslmode: 'require' }), ['-n', '-f', script, '-c', '4', '-j', '2', '-t', '50'], { env: sslEnv() });
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.equal(r.summary.transactions, 200);
    assert.equal(r.summary.failed, 0);
  });

  for (const mode of ['verify-ca', 'verify-full']) {
    test(`${mode}: a client certificate signed by client_tls_ca_file is required`, async () => {
      if (onBun) {
        // Bun cannot tell whether a certificate verified on a socket upgraded by SSLRequest
        await expectRefusedAtStart({ ini: ini({ client_tls_sslmode: mode }) }, new RegExp(`client_tls_sslmode = ${mode} needs client certificates verified, which Bun `));
        return;
      }
      const b = await bouncer({ client_tls_sslmode: mode });
      const good = fx.client('md5_user');
      await psqlOk(conn(b, { sslmode: 'verify-full', host: 'localhost' }), sslEnv({ root: fx.caFile, cert: good }));
      // any user name: the certificate is only checked against the CA here (auth_type=md5)
      await psqlOk(conn(b, { sslmode: 'require', user: 'md5_user' }), sslEnv({ cert: fx.client('someone-else') }));
      // no certificate: the handshake fails
      await psqlFails(conn(b, { sslmode: 'require' }), sslEnv(), /certificate required|SSL error|server closed the connection|SSL SYSCALL/);
      // a certificate of another CA, and an expired one: the connection is closed right after
      // the handshake (TLS 1.3 clients finish it before the server checks their certificate)
      const closed = /SSL SYSCALL error: EOF detected|server closed the connection|certificate|SSL error/;
      await psqlFails(conn(b, { sslmode: 'require' }), sslEnv({ cert: fx.client('md5_user', { ca: null }) }), closed);
      await b.waitForLog(/closing because: TLS client certificate verification failed: (DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED)/);
      await psqlFails(conn(b, { sslmode: 'require' }), sslEnv({ cert: fx.client('md5_user', { expired: true }) }), closed);
      await b.waitForLog(/closing because: TLS client certificate verification failed: CERT_HAS_EXPIRED/);
      await psqlFails(conn(b, { sslmode: 'disable' }), sslEnv(), /SSL required/);
    });
  }
});

describe('protocol details', () => {
  let b: TestPgbun;
  before(async () => {
    b = await bouncer({ client_tls_sslmode: 'prefer' });
  });

  test('plaintext pipelined right after the SSLRequest: FATAL "received unencrypted data after SSL request"', async () => {
    const w = await WireClient.connect(b);
    await w.write([sslRequest(), startupMessage({ user: 'md5_user', database: TEST_DB })]);
    await w.expectError({ code: '08P01', message: 'received unencrypted data after SSL request', severity: 'FATAL' });
  });

  test('an SSLRequest after TLS is established is refused like any second SSLRequest', async () => {
    const s = await tlsConnect(b);
    const w = wireOver(s);
    await w.write(sslRequest());
    assert.equal((await w.readBytes(1)).toString(), 'N');
    await loginOver(w);
  });

  test('direct TLS (sslnegotiation=direct): ClientHello first with ALPN postgresql, then the normal startup', async () => {
    const off = b.logOffset();
    const s = await tlsConnect(b, { direct: true });
    assert.equal(s.alpnProtocol, 'postgresql');
    await loginOver(wireOver(s));
    await b.waitForLog(TLS_LOG, 5000, off);
  });

  test('direct TLS without ALPN postgresql is closed before login', async () => {
    const s = await tlsConnect(b, { direct: true, ALPNProtocols: [] });
    const w = wireOver(s);
    await w.write(startupMessage({ user: 'md5_user', database: TEST_DB }));
    await w.waitClose(3000);
    await b.waitForLog(/direct SSL connection without ALPN/);
  });

  test('a TLS client with the wrong ALPN protocol fails the handshake', async () => {
    await assert.rejects(tlsConnect(b, { direct: true, ALPNProtocols: ['http/1.1'] }));
  });
});

describe('client_tls_protocols, ciphers, tls13_ciphers, ecdhcurve, dheparams', () => {
  test('tlsv1.2 only, one cipher, a named curve: what the client negotiates', async () => {
    const b = await bouncer({
      client_tls_sslmode: 'require',
      client_tls_protocols: 'tlsv1.2',
      client_tls_ciphers: 'ECDHE-RSA-AES128-GCM-SHA256',
      client_tls_ecdhcurve: 'secp384r1',
    });
    const off = b.logOffset();
    const s = await tlsConnect(b);
    assert.equal(s.getProtocol(), 'TLSv1.2');
    assert.equal(s.getCipher().name, 'ECDHE-RSA-AES128-GCM-SHA256');
    assert.equal((s.getEphemeralKeyInfo() as { name?: string }).name, 'secp384r1');
    await loginOver(wireOver(s));
    const line = await b.waitForLog(TLS_LOG, 5000, off);
    assert.match(line, /tls=TLSv1\.2\/ECDHE-RSA-AES128-GCM-SHA256/);
    // a TLS 1.3-only client cannot connect
    await assert.rejects(tlsConnect(b, { minVersion: 'TLSv1.3' }));
  });

  test('SET client_tls13_ciphers on the console takes effect at once; a bad value keeps the old one and says so', async () => {
    if (onBun) {
      // BoringSSL has fixed TLS 1.3 suites: a choice is refused rather than ignored
      await expectRefusedAtStart({ ini: ini({ client_tls_sslmode: 'require', client_tls13_ciphers: 'TLS_CHACHA20_POLY1305_SHA256' }) }, /client_tls13_ciphers: Bun .* does not let TLS 1\.3 cipher suites be chosen/);
      const b = await bouncer({ client_tls_sslmode: 'require', admin_users: 'md5_user' });
      const admin = (await wireLogin({ path: b.socketPath }, { user: 'md5_user', password: 'md5_pass', database: 'pgbouncer' })).client;
      try {
        const from = b.logOffset();
        await admin.query("SET client_tls13_ciphers = 'TLS_AES_256_GCM_SHA384'");
        await b.waitForLog(/TLS settings could not be applied, still using old configuration: client_tls13_ciphers: Bun /, 3000, from);
        (await tlsConnect(b)).destroy();
      } finally {
        admin.destroy();
      }
      return;
    }
    const b = await bouncer({
      client_tls_sslmode: 'require',
      client_tls_protocols: 'tlsv1.3',
      client_tls13_ciphers: 'TLS_CHACHA20_POLY1305_SHA256',
      admin_users: 'md5_user',
    });
    const first = await tlsConnect(b);
    assert.equal(first.getCipher().name, 'TLS_CHACHA20_POLY1305_SHA256');
    first.destroy();
    // over the Unix socket, where client_tls_sslmode does not apply
    const admin = (await wireLogin({ path: b.socketPath }, { user: 'md5_user', password: 'md5_pass', database: 'pgbouncer' })).client;
    try {
      const r = await admin.query("SET client_tls13_ciphers = 'TLS_AES_256_GCM_SHA384'");
      assert.equal(r.error, null, JSON.stringify(r.error));
      const next = await tlsConnect(b);
      assert.equal(next.getCipher().name, 'TLS_AES_256_GCM_SHA384');
      next.destroy();
      const from = b.logOffset();
      await admin.query("SET client_tls13_ciphers = 'unknown'");
      await b.waitForLog(/failed to set the TLSv1\.3 cipher suites/, 3000, from);
      const still = await tlsConnect(b);
      assert.equal(still.getCipher().name, 'TLS_AES_256_GCM_SHA384', 'the last good configuration stays');
      still.destroy();
    } finally {
      admin.destroy();
    }
  });

  test('tlsv1.3 only with client_tls13_ciphers; legacy DH parameters for DHE with TLS 1.2', async () => {
    if (onBun) {
      // BoringSSL: no DHE, no choice of TLS 1.3 suites; refused, never weakened
      await expectRefusedAtStart({ ini: ini({ client_tls_sslmode: 'require', client_tls_protocols: 'tlsv1.3', client_tls13_ciphers: 'TLS_CHACHA20_POLY1305_SHA256' }) }, /client_tls13_ciphers: Bun /);
      await expectRefusedAtStart({ ini: ini({ client_tls_sslmode: 'require', client_tls_dheparams: 'legacy' }) }, /client_tls_dheparams = legacy: Bun .* has no DHE/);
      await expectRefusedAtStart({ ini: ini({ client_tls_sslmode: 'require', client_tls_ciphers: 'DHE-RSA-AES128-GCM-SHA256' }) }, /no cipher match/);
      const b13 = await bouncer({ client_tls_sslmode: 'require', client_tls_protocols: 'tlsv1.3' });
      const s13 = await tlsConnect(b13);
      assert.equal(s13.getProtocol(), 'TLSv1.3');
      await loginOver(wireOver(s13));
      await assert.rejects(tlsConnect(b13, { maxVersion: 'TLSv1.2' }));
      return;
    }
    const b13 = await bouncer({
      client_tls_sslmode: 'require',
      client_tls_protocols: 'tlsv1.3',
      client_tls13_ciphers: 'TLS_CHACHA20_POLY1305_SHA256',
    });
    const s = await tlsConnect(b13);
    assert.equal(s.getProtocol(), 'TLSv1.3');
    assert.equal(s.getCipher().name, 'TLS_CHACHA20_POLY1305_SHA256');
    await loginOver(wireOver(s));
    await assert.rejects(tlsConnect(b13, { maxVersion: 'TLSv1.2' }));

    const bdh = await bouncer({
      client_tls_sslmode: 'require',
      client_tls_protocols: 'secure',
      client_tls_ciphers: 'DHE-RSA-AES128-GCM-SHA256',
      client_tls_dheparams: 'auto',
    });
    const d = await tlsConnect(bdh, { maxVersion: 'TLSv1.2' });
    assert.equal(d.getCipher().name, 'DHE-RSA-AES128-GCM-SHA256');
    const kx = d.getEphemeralKeyInfo() as { type?: string; size?: number };
    assert.equal(kx.type, 'DH');
    assert.ok((kx.size ?? 0) >= 2048, `auto DH size ${kx.size}`);
    await loginOver(wireOver(d));

    // dheparams=legacy: 1024-bit RFC 2409 group (a client at OpenSSL 3.5's default security
    // level 2 refuses it, "dh key too small": this one accepts level 1 for the check)
    const blegacy = await bouncer({ client_tls_sslmode: 'require', client_tls_dheparams: 'legacy', client_tls_ciphers: 'DHE-RSA-AES128-GCM-SHA256' });
    const l = await tlsConnect(blegacy, { maxVersion: 'TLSv1.2', ciphers: 'DHE-RSA-AES128-GCM-SHA256:@SECLEVEL=1' });
    assert.equal((l.getEphemeralKeyInfo() as { size?: number }).size, 1024);
    await loginOver(wireOver(l));

    // dheparams=none: no DHE at all, so a DHE-only client fails
    const bnone = await bouncer({ client_tls_sslmode: 'require', client_tls_dheparams: 'none', client_tls_ciphers: 'DHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256' });
    await assert.rejects(tlsConnect(bnone, { maxVersion: 'TLSv1.2', ciphers: 'DHE-RSA-AES128-GCM-SHA256' }));
  });

  test('TLS setup errors stop pgbun at startup ("TLS setup failed")', async () => {
    const cases: Array<[Record<string, string>, RegExp]> = [
      [{ client_tls_sslmode: 'require', client_tls_key_file: '' }, /requires client_tls_key_file and client_tls_cert_file/],
      [{ client_tls_sslmode: 'require', client_tls_key_file: '/nonexistent/key.pem' }, /could not read client_tls_key_file/],
      [{ client_tls_sslmode: 'require', client_tls_protocols: 'tlsv9' }, /invalid TLS protocol: tlsv9/],
      [{ client_tls_sslmode: 'require', client_tls_ciphers: 'NO-SUCH-CIPHER' }, /no cipher match/],
      [{ client_tls_sslmode: 'verify-full', client_tls_ca_file: '' }, /requires client_tls_ca_file/],
    ];
    for (const [settings, re] of cases) await expectRefusedAtStart({ ini: ini(settings) }, re);
  });
});

describe('reload', () => {
  test('RELOAD/SIGHUP re-reads the TLS files; a broken one keeps the configuration in force', async () => {
    const first = { key: fs.readFileSync(fx.serverKey, 'utf8'), cert: fs.readFileSync(fx.serverCert, 'utf8') };
    const second = makeCert(fx.ca, { cn: 'reloaded.example', dns: ['localhost'] });
    const settings = { client_tls_sslmode: 'require', client_tls_key_file: '{{dir}}/srv.key', client_tls_cert_file: '{{dir}}/srv.crt' };
    const b = await startPgbun({ ini: ini(settings), extraFiles: { 'srv.key': first.key, 'srv.crt': first.cert }, userlist: [['md5_user', md5Secret('md5_pass', 'md5_user')]] });
    bouncers.push(b);
    const cn = async (): Promise<string> => {
      const s = await tlsConnect(b);
      const name = String(s.getPeerCertificate().subject.CN);
      s.destroy();
      return name;
    };
    const waitCn = async (want: string): Promise<void> => {
      for (let i = 0; i < 100 && (await cn()) !== want; i++) await sleep(50);
      assert.equal(await cn(), want);
    };
    assert.equal(await cn(), 'localhost');
    b.reload({ extraFiles: { 'srv.key': second.key, 'srv.crt': second.cert } });
    await waitCn('reloaded.example');
    const off = b.logOffset();
    b.reload({ extraFiles: { 'srv.key': 'not a key' } });
    await b.waitForLog(/TLS .*(could not|keeping old|still using old)/i, 5000, off);
    assert.equal(await cn(), 'reloaded.example');
    // a missing file: PgBouncer's line and strerror text (its test_system_error_propagation)
    const off2 = b.logOffset();
    b.reload({ ini: ini({ ...settings, client_tls_cert_file: '{{dir}}/missing.crt' }) });
    await b.waitForLog(/ERROR TLS setup failed: could not read client_tls_cert_file "[^"]*missing\.crt": No such file or directory/, 5000, off2);
    assert.equal(await cn(), 'reloaded.example');
    await loginOver(wireOver(await tlsConnect(b)));
  });
});
