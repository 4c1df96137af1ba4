// TLS between pgbun and PostgreSQL (server_tls_*): every server_tls_sslmode against
// a PostgreSQL started with ssl=on (what the backend sees, from pg_stat_ssl), the CA check of
// verify-ca and the host name check of verify-full, a client certificate for PostgreSQL's `cert`
// auth (server_tls_key_file/cert_file), a server without TLS (prefer falls back, require and
// above refuse), and Unix-socket servers that never use TLS.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { makeCa, makeCert, tlsFixture, writeKeyCert, writePem, type TlsFixture } from '../lib/certs.js';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres, startPostgres, TEST_DB, type TestPostgres } from '../lib/postgres.js';
import { serverOsUser } from '../lib/procs.js';
import { attemptLogin, wireLogin } from '../lib/wire.js';

const plainPg = await sharedPostgres();
let fx: TlsFixture;
let sslPg: TestPostgres;
let otherCaFile: string;
let certRoleCert: { key: string; cert: string };
const bouncers: TestPgbun[] = [];

before(async () => {
  fx = tlsFixture();
  const owner = serverOsUser();
  // PostgreSQL's certificate names only localhost (no IP address): verify-full to 127.0.0.1 fails
  const pgCert = writeKeyCert(fx.dir, 'pg', makeCert(fx.ca, { cn: 'localhost', dns: ['localhost'] }), owner);
  otherCaFile = writePem(fx.dir, 'other-ca.crt', makeCa('another CA').cert, owner);
  certRoleCert = writeKeyCert(fx.dir, 'tls-cert-role', makeCert(fx.ca, { cn: 'tls_cert_role', client: true }), owner);
  sslPg = await startPostgres({
    conf: { ssl: 'on', ssl_cert_file: pgCert.cert, ssl_key_file: pgCert.key, ssl_ca_file: fx.caFile },
    hba: 'hostssl all tls_cert_role 127.0.0.1/32 cert\nhost all tls_cert_role 127.0.0.1/32 reject',
  });
  await sslPg.query('CREATE ROLE tls_cert_role LOGIN');
  await sslPg.query('GRANT ALL ON SCHEMA public TO tls_cert_role', TEST_DB);
});

after(async () => {
  for (const b of bouncers) await b.stop();
  await sslPg?.stop();
});

async function bouncer(settings: Record<string, string | number>, dbs: Record<string, string>): Promise<TestPgbun> {
  const b = await startPgbun({
    ini: {
      pgbouncer: { auth_type: 'trust', log_connections: 1, client_login_timeout: 3, ...settings },
      databases: dbs,
    },
    userlist: [['trust_user', ''], ['tls_cert_role', '']],
  });
  bouncers.push(b);
  return b;
}

const SSL_QUERY = 'SELECT ssl::text, coalesce(version, \'\') FROM pg_stat_ssl WHERE pid = pg_backend_pid()';

/** What the backend of a session through pgbun says about its connection: [ssl, version]. */
async function backendTls(b: TestPgbun, db: string, user = 'trust_user'): Promise<string[]> {
  const { client } = await wireLogin(b, { user, database: db });
  try {
    const r = await client.query(SSL_QUERY);
    assert.equal(r.error, null, JSON.stringify(r.error));
    return r.rows[0] as string[];
  } finally {
    await client.terminate();
  }
}

/** A login that waits for a server that never comes: client_login_timeout (server down). */
async function assertServerDown(b: TestPgbun, db: string, logRe: RegExp): Promise<void> {
  const off = b.logOffset();
  const a = await attemptLogin(b, { user: 'trust_user', database: db, timeoutMs: 10_000 });
  try {
    assert.deepEqual(a.error?.fields, { S: 'FATAL', C: '08P01', M: 'client_login_timeout (server down)' });
  } finally {
    a.client.destroy();
  }
  await b.waitForLog(logRe, 3000, off);
}

describe('server_tls_sslmode against PostgreSQL with ssl=on', () => {
  for (const [mode, expectSsl] of [['disable', 'false'], ['allow', 'false'], ['prefer', 'true'], ['require', 'true']] as const) {
    test(`${mode}: the backend sees ssl=${expectSsl}`, async () => {
      const b = await bouncer({ server_tls_sslmode: mode }, { db: pgConnstr(sslPg, { dbname: TEST_DB }) });
      const [ssl, version] = await backendTls(b, 'db');
      assert.equal(ssl, expectSsl);
      if (expectSsl === 'true') {
        assert.equal(version, 'TLSv1.3');
        await b.waitForLog(/S-0x[0-9a-f]+: db\/trust_user@127\.0\.0\.1:\d+ TLS connection established: TLSv1\.3\/TLS_AES_256_GCM_SHA384/);
      }
    });
  }

  test('server_tls_protocols and server_tls_ciphers are what PostgreSQL negotiates', async () => {
    const b = await bouncer({ server_tls_sslmode: 'require', server_tls_protocols: 'tlsv1.2', server_tls_ciphers: 'ECDHE-RSA-AES256-GCM-SHA384' },
      { db: pgConnstr(sslPg, { dbname: TEST_DB }) });
    const { client } = await wireLogin(b, { user: 'trust_user', database: 'db' });
    try {
      const r = await client.query('SELECT version, cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
      assert.deepEqual(r.rows, [['TLSv1.2', 'ECDHE-RSA-AES256-GCM-SHA384']]);
    } finally {
      await client.terminate();
    }
  });

  test('verify-ca: the server certificate must chain to server_tls_ca_file', async () => {
    const good = await bouncer({ server_tls_sslmode: 'verify-ca', server_tls_ca_file: fx.caFile }, { db: pgConnstr(sslPg, { dbname: TEST_DB }) });
    assert.equal((await backendTls(good, 'db'))[0], 'true');
    const bad = await bouncer({ server_tls_sslmode: 'verify-ca', server_tls_ca_file: otherCaFile }, { db: pgConnstr(sslPg, { dbname: TEST_DB }) });
    // "self signed" is the wording of OpenSSL before 3.0 and of BoringSSL (Bun)
    await assertServerDown(bad, 'db', /connect failed: certificate verify failed: (self[- ]signed certificate in certificate chain|unable to get local issuer certificate)/);
    await bad.waitForLog(/closing because: connect failed \(/);
  });

  test('verify-full: also the host name (localhost matches the certificate, 127.0.0.1 does not)', async () => {
    const b = await bouncer({ server_tls_sslmode: 'verify-full', server_tls_ca_file: fx.caFile }, {
      byname: `host=localhost port=${sslPg.port} dbname=${TEST_DB}`,
      byip: pgConnstr(sslPg, { dbname: TEST_DB }),
    });
    assert.equal((await backendTls(b, 'byname'))[0], 'true');
    await assertServerDown(b, 'byip', /connect failed: certificate verify failed: .*(IP: 127\.0\.0\.1 is not in the cert's list|does not match)/);
    // verify-ca accepts the same connection: only verify-full checks the name
    const ca = await bouncer({ server_tls_sslmode: 'verify-ca', server_tls_ca_file: fx.caFile }, { byip: pgConnstr(sslPg, { dbname: TEST_DB }) });
    assert.equal((await backendTls(ca, 'byip'))[0], 'true');
  });

  test('a client certificate for PostgreSQL cert auth: server_tls_key_file / server_tls_cert_file', async () => {
    const b = await bouncer({
      server_tls_sslmode: 'verify-full',
      server_tls_ca_file: fx.caFile,
      server_tls_key_file: certRoleCert.key,
      server_tls_cert_file: certRoleCert.cert,
    }, { db: `host=localhost port=${sslPg.port} dbname=${TEST_DB}` });
    const { client } = await wireLogin(b, { user: 'tls_cert_role', database: 'db' });
    try {
      const r = await client.query('SELECT current_user');
      assert.deepEqual(r.rows, [['tls_cert_role']]);
    } finally {
      await client.terminate();
    }
    // without it PostgreSQL refuses the login; its error (and SQLSTATE) reaches the client
    const nocert = await bouncer({ server_tls_sslmode: 'require' }, { db: pgConnstr(sslPg, { dbname: TEST_DB }) });
    const a = await attemptLogin(nocert, { user: 'tls_cert_role', database: 'db' });
    try {
      assert.equal(a.error?.S, 'FATAL');
      assert.equal(a.error?.C, '28000');
      assert.match(a.error?.M ?? '', /connection requires a valid client certificate/);
    } finally {
      a.client.destroy();
    }
  });

  test('Unix-socket servers never use TLS, whatever the mode', async () => {
    const b = await bouncer({ server_tls_sslmode: 'verify-full', server_tls_ca_file: fx.caFile }, {
      db: `host=${sslPg.socketDir} port=${sslPg.port} dbname=${TEST_DB}`,
    });
    assert.deepEqual(await backendTls(b, 'db'), ['false', '']);
  });
});

describe('server_tls_sslmode against PostgreSQL without TLS', () => {
  test('prefer: the server answers N and the login goes on in plain text', async () => {
    const b = await bouncer({ server_tls_sslmode: 'prefer' }, { db: pgConnstr(plainPg, { dbname: TEST_DB }) });
    assert.deepEqual(await backendTls(b, 'db'), ['false', '']);
  });

  for (const mode of ['require', 'verify-ca', 'verify-full']) {
    test(`${mode}: "server refused SSL", the server connection is closed, waiting clients time out`, async () => {
      const b = await bouncer({ server_tls_sslmode: mode, server_tls_ca_file: fx.caFile }, { db: `host=localhost port=${plainPg.port} dbname=${TEST_DB}` });
      await assertServerDown(b, 'db', /closing because: server refused SSL/);
    });
  }
});

describe('reload', () => {
  test('a changed server TLS configuration closes the pooled server connections (close_needed)', async () => {
    const ini = (mode: string) => ({
      pgbouncer: { auth_type: 'trust', server_tls_sslmode: mode, server_reset_query: '' },
      databases: { db: pgConnstr(sslPg, { dbname: TEST_DB }) },
    });
    const b = await startPgbun({ ini: ini('disable'), userlist: [['trust_user', '']] });
    bouncers.push(b);
    const { client } = await wireLogin(b, { user: 'trust_user', database: 'db' });
    const pid = async (): Promise<string> => (await client.query('SELECT pg_backend_pid()')).rows[0]![0]!;
    const before = await pid();
    assert.deepEqual(await backendTls(b, 'db'), ['false', '']);
    const off = b.logOffset();
    b.reload({ ini: ini('require') });
    // the linked session is not cut; idle servers are closed instead of reused
    await b.waitForLog(/closing because: database configuration changed/, 5000, off);
    assert.equal(await pid(), before);
    await client.terminate();
    assert.equal((await backendTls(b, 'db'))[0], 'true');
  });
});
