// auth_type = cert: a verified client certificate whose name
// (subjectAltName DNS entries, else the CommonName; wildcards) is the user name. Failures are
// FATAL "certificate authentication failed" with the reason in the log.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { psql, type ConnOpts } from '../lib/clients.js';
import { tlsConnect, tlsFixture, wireOver, type TlsFixture } from '../lib/certs.js';
import { expectRefusedAtStart, pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { onBun } from '../lib/runtime.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { attemptLogin, md5Secret, PgServerError } from '../lib/wire.js';

const pg = await sharedPostgres();
let fx: TlsFixture;
let strict: TestPgbun; // verify-full
let optional: TestPgbun; // require + CA: certificate optional, checked by auth
const bouncers: TestPgbun[] = [];
const CERT_FAILED = 'certificate authentication failed';

function ini(mode: string) {
  return {
    ini: {
      pgbouncer: {
        auth_type: 'cert',
        client_tls_sslmode: mode,
        client_tls_key_file: fx.serverKey,
        client_tls_cert_file: fx.serverCert,
        client_tls_ca_file: fx.caFile,
        server_tls_sslmode: 'disable',
      },
      databases: {
        [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB }),
        forced: pgConnstr(pg, { dbname: TEST_DB, user: 'trust_user' }),
      },
    },
    userlist: [['md5_user', md5Secret('md5_pass', 'md5_user')], ['trust_user', ''], ['app.example.com', '']] as Array<[string, string]>,
  };
}

async function bouncer(mode: string): Promise<TestPgbun> {
  const b = await startPgbun(ini(mode));
  bouncers.push(b);
  return b;
}

before(async () => {
  fx = tlsFixture();
  if (onBun) return;
  strict = await bouncer('verify-full');
  optional = await bouncer('require');
});

after(async () => {
  for (const b of bouncers) await b.stop();
});

const conn = (b: TestPgbun, user: string, database = TEST_DB): ConnOpts => ({ host: b.host, port: b.port, user, database, sslmode: 'require' });
const env = (c?: { key: string; cert: string }): NodeJS.ProcessEnv =>
  c ? { PGSSLCERT: c.cert, PGSSLKEY: c.key } : { PGSSLCERT: '/nonexistent/c.crt', PGSSLKEY: '/nonexistent/c.key' };

async function psqlAs(b: TestPgbun, user: string, cert: { key: string; cert: string } | undefined, database = TEST_DB): Promise<{ code: number | null; stderr: string; rows: string[][] }> {
  return psql(conn(b, user, database), 'SELECT current_user', { env: env(cert) });
}

/** Over our own TLS client: the exact FATAL and the log reason. */
async function assertCertFails(b: TestPgbun, user: string, cert: { key: string; cert: string } | null, logRe: RegExp): Promise<void> {
  const off = b.logOffset();
  const s = await tlsConnect(b, cert ? { key: fs.readFileSync(cert.key), cert: fs.readFileSync(cert.cert) } : {});
  const w = wireOver(s);
  await assert.rejects(w.login({ user, database: TEST_DB }), (e: unknown) => {
    assert.ok(e instanceof PgServerError, String(e));
    assert.deepEqual(e.error.fields, { S: 'FATAL', C: '08P01', M: CERT_FAILED });
    return true;
  });
  await w.waitClose(3000);
  await b.waitForLog(logRe, 3000, off);
}

if (onBun) {
  // Bun cannot tell whether a certificate verified on a socket upgraded by SSLRequest
  test('on Bun, auth_type = cert is refused at start, naming the setting', async () => {
    await expectRefusedAtStart(ini('require'), /auth_type = cert needs client certificates verified, which Bun /);
    await expectRefusedAtStart(ini('verify-full'), /client_tls_sslmode = verify-full needs client certificates verified, which Bun /);
  });
} else {
  describe('auth_type = cert', () => {
    test('the CommonName names the user (psql with sslcert/sslkey); no password is asked', async () => {
      const r = await psqlAs(strict, 'md5_user', fx.client('md5_user'));
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(r.rows, [['md5_user']]);
    });

    test('subjectAltName DNS entries are authoritative: they name the user, the CN is then ignored', async () => {
      const r = await psqlAs(strict, 'trust_user', fx.client('x', { cn: 'someone', dns: ['other', 'trust_user'] }));
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(r.rows, [['trust_user']]);
      await assertCertFails(strict, 'trust_user', fx.client('y', { cn: 'trust_user', dns: ['not-the-user'] }), /TLS certificate name mismatch/);
    });

    test('a wildcard SAN matches one label', async () => {
      const wild = fx.client('w', { cn: 'wild', dns: ['*.example.com'] });
      const r = await psqlAs(strict, 'app.example.com', wild, 'forced');
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(r.rows, [['trust_user']]);
    });

    test('name mismatch: FATAL "certificate authentication failed", log "TLS certificate name mismatch"', async () => {
      const r = await psqlAs(strict, 'trust_user', fx.client('md5_user'));
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /FATAL: {2}certificate authentication failed/);
      await assertCertFails(strict, 'trust_user', fx.client('md5_user'), /TLS certificate name mismatch/);
    });

    test('a user not in auth_file fails even with a matching certificate', async () => {
      await assertCertFails(strict, 'nobody_here', fx.client('nobody_here'), /no such user: nobody_here/);
    });

    test('no TLS (Unix socket): "TLS connection required" in the log', async () => {
      const off = strict.logOffset();
      const a = await attemptLogin({ path: strict.socketPath }, { user: 'md5_user', database: TEST_DB });
      try {
        assert.deepEqual(a.error?.fields, { S: 'FATAL', C: '08P01', M: CERT_FAILED });
      } finally {
        a.client.destroy();
      }
      await strict.waitForLog(/TLS connection required/, 3000, off);
    });

    test('client_tls_sslmode=require: no certificate or an unverified one fails authentication, a good one works', async () => {
      await assertCertFails(optional, 'md5_user', null, /TLS client certificate required/);
      await assertCertFails(optional, 'md5_user', fx.client('md5_user', { ca: null }), /TLS client certificate verification failed: DEPTH_ZERO_SELF_SIGNED_CERT/);
      const r = await psqlAs(optional, 'md5_user', fx.client('md5_user'));
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(r.rows, [['md5_user']]);
    });
  });
}
