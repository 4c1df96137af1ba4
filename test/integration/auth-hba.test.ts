// auth_type = hba with one HBA file using every supported line type
// (local, host, hostssl, hostnossl), database and user forms (all, sameuser, lists, @files,
// quoted names), IPv4 with prefix and with a mask column, IPv6, and every method (trust, reject,
// md5, password, scram-sha-256, cert with map=, peer with and without map=, ldap), unparseable
// lines skipped with a warning; auth_ident_file maps. peer runs psql over the Unix socket as
// root and as the postgres OS user (SO_PEERCRED, see src/auth/peer.ts).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { libpqEnv, psql, runCommand, type ConnOpts } from '../lib/clients.js';
import { tlsConnect, tlsFixture, wireOver, type TlsFixture } from '../lib/certs.js';
import { expectRefusedAtStart, pgConnstr, startPgbun, type StartPgbunOptions, type TestPgbun } from '../lib/pgbun.js';
import { onBun } from '../lib/runtime.js';
import { pgBin, sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { isRoot, peerPidLookupWorks, serverOsUser } from '../lib/procs.js';
import { AUTH, attemptLogin, PgServerError, type LoginOptions, type WireTarget } from '../lib/wire.js';

const pg = await sharedPostgres();
let fx: TlsFixture;
let b: TestPgbun;
let h: TestPgbun; // the same, started as the OS user itself (systemd's User=)
let osName: string; // the OS user running this test (root in CI)

const HBA = `# pgbun HBA test: comments and blank lines are skipped

local   peerdb      {{osuser}}                  peer
local   pgbouncer   all                         peer map=adm
local   peerdb      mapped,"other"              peer map=pm
local   all         all                         md5
hostssl sslonly     trust_user  127.0.0.1/32    trust
hostnossl nossl     trust_user  127.0.0.1  255.255.255.255   trust
host    all         trust_user  ::1/128         trust
host    rejectdb    all         0.0.0.0/0       reject
host    sameuser    trust_user  127.0.0.0/8     trust
host    @dbs.txt    @users.txt  127.0.0.1/32    password
host    testdb,"Quoted Db"  md5_user  127.0.0.1/32   md5
host    scramdb     md5_user    127.0.0.1/32    scram-sha-256
host    testdb      scram_user  127.0.0.1/32    md5
hostssl certdb      all         127.0.0.1/32    cert map=cm
host    ldapdb      all         127.0.0.1/32    ldap ldapserver=ldap.example.com ldapport=389
host    trustdb     all         127.0.0.1/32    trust
host    all         all         127.0.0.1/32    gss
host    all         all         samenet         trust
bogus   all         all         127.0.0.1/32    trust
`;

const IDENT = `# mapname system-user db-user
pm   postgres     mapped
cm   md5_user     trust_user
cm   scram_user   all
adm  {{osuser}}   consoleadmin
`;

/**
 * The HBA file as this runtime can take it: on Bun, which cannot tell whether a client
 * certificate verified, the `cert` line would stop pgbun (tested on its own), so it is a comment
 * there (same line numbers).
 */
const hbaText = (text: string): string =>
  (onBun ? text.replace(/^hostssl certdb .*$/m, '# cert rule: refused on Bun') : text).replace('{{osuser}}', osName);

let scramSecret: string;

function options(hba: string): StartPgbunOptions {
  const db = (extra: Record<string, string> = {}): string => pgConnstr(pg, { dbname: TEST_DB, ...extra });
  return {
    ini: {
      pgbouncer: {
        listen_addr: '127.0.0.1,::1',
        auth_type: 'hba',
        client_tls_sslmode: 'prefer',
        client_tls_key_file: fx.serverKey,
        client_tls_cert_file: fx.serverCert,
        client_tls_ca_file: fx.caFile,
        server_tls_sslmode: 'disable',
        admin_users: 'consoleadmin',
      },
      databases: {
        [TEST_DB]: db(),
        "'Quoted Db'": db(),
        peerdb: db({ user: 'trust_user' }),
        sslonly: db(),
        nossl: db(),
        rejectdb: db(),
        trust_user: db(),
        pwdb: db(),
        scramdb: db(),
        certdb: db(),
        ldapdb: db(),
        trustdb: db(),
        nomatch: db(),
      },
    },
    hba,
    ident: IDENT.replace('{{osuser}}', osName),
    extraFiles: { 'dbs.txt': '# databases for the password rule\npwdb, otherdb\n', 'users.txt': 'md5_user\n' },
    userlist: [
      ['md5_user', 'md5_pass'],
      ['scram_user', scramSecret],
      ['trust_user', ''],
      [osName, ''],
      ['mapped', ''],
      ['other', ''],
    ],
  };
}

before(async () => {
  fx = tlsFixture();
  osName = isRoot() ? 'root' : (process.env.USER ?? 'root');
  scramSecret = await pg.secretOf('scram_user');
  [b, h] = await Promise.all([startPgbun(options(hbaText(HBA))), startPgbun({ ...options(hbaText(HBA)), spawnAsUser: true })]);
});

after(async () => {
  await Promise.all([b?.stop(), h?.stop()]);
});

const tcp = (): WireTarget => ({ host: '127.0.0.1', port: b.port });

async function loginOk(target: WireTarget, opts: LoginOptions, codes: number[], expectUser = opts.user): Promise<void> {
  const a = await attemptLogin(target, opts);
  try {
    assert.equal(a.error, null, `login ${JSON.stringify(opts)} failed: ${JSON.stringify(a.error)}`);
    assert.deepEqual(a.authCodes, codes);
    const r = await a.client.query('SELECT current_user');
    assert.deepEqual(r.rows, [[expectUser]]);
  } finally {
    await a.client.terminate();
  }
}

async function loginFails(target: WireTarget, opts: LoginOptions, message: string): Promise<void> {
  const a = await attemptLogin(target, opts);
  try {
    assert.deepEqual(a.error?.fields, { S: 'FATAL', C: '08P01', M: message }, `login ${JSON.stringify(opts)}`);
    await a.client.waitClose(3000);
  } finally {
    a.client.destroy();
  }
}

const SCRAM = [AUTH.SASL, AUTH.SASL_CONTINUE, AUTH.SASL_FINAL, AUTH.OK];

describe('auth_type = hba', () => {
  test('unparseable and unsupported lines are skipped with a warning; the rest loads', async () => {
    // the file is read at the first login
    await loginOk(tcp(), { user: 'trust_user', database: 'trustdb' }, [AUTH.OK]);
    const lines = HBA.split('\n');
    for (const word of [' gss', 'samenet', 'bogus']) {
      const n = lines.findIndex((l) => l.includes(word)) + 1;
      await b.waitForLog(new RegExp(`could not parse hba config line ${n}$`));
    }
  });

  test('host + trust, an IPv6 rule, sameuser with a /8 prefix; trust needs an auth_file user', async () => {
    await loginOk(tcp(), { user: 'trust_user', database: 'trustdb' }, [AUTH.OK]);
    await loginOk({ host: '::1', port: b.port }, { user: 'trust_user', database: TEST_DB }, [AUTH.OK]);
    await loginOk(tcp(), { user: 'trust_user', database: 'trust_user' }, [AUTH.OK]);
    await loginFails(tcp(), { user: 'not_in_auth_file', database: 'trustdb' }, '"trust" authentication failed');
  });

  test('hostssl matches only TLS connections, hostnossl (mask column) only plain ones', async () => {
    const c = (db: string, sslmode: string): ConnOpts => ({ host: '127.0.0.1', port: b.port, user: 'trust_user', database: db, sslmode });
    const ok = async (db: string, sslmode: string): Promise<void> => {
      const r = await psql(c(db, sslmode), 'SELECT current_user');
      assert.equal(r.code, 0, `${db} ${sslmode}: ${r.stderr}`);
    };
    const bad = async (db: string, sslmode: string): Promise<void> => {
      const r = await psql(c(db, sslmode), 'SELECT 1');
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /FATAL: {2}no authentication method is found/);
    };
    await ok('sslonly', 'require');
    await bad('sslonly', 'disable');
    await ok('nossl', 'disable');
    await bad('nossl', 'require');
  });

  test('reject: "login rejected"; no matching rule: "no authentication method is found"', async () => {
    await loginFails(tcp(), { user: 'md5_user', database: 'rejectdb', password: 'md5_pass' }, 'login rejected');
    await loginFails(tcp(), { user: 'md5_user', database: 'nomatch', password: 'md5_pass' }, 'no authentication method is found');
  });

  test('password via @file lists: cleartext; md5 with a quoted database name; scram-sha-256 with a plain secret', async () => {
    await loginOk(tcp(), { user: 'md5_user', database: 'pwdb', password: 'md5_pass' }, [AUTH.CLEARTEXT, AUTH.OK]);
    await loginFails(tcp(), { user: 'md5_user', database: 'pwdb', password: 'wrong' }, 'password authentication failed');
    await loginOk(tcp(), { user: 'md5_user', database: TEST_DB, password: 'md5_pass' }, [AUTH.MD5, AUTH.OK]);
    await loginOk(tcp(), { user: 'md5_user', database: 'Quoted Db', password: 'md5_pass' }, [AUTH.MD5, AUTH.OK]);
    await loginOk(tcp(), { user: 'md5_user', database: 'scramdb', password: 'md5_pass' }, SCRAM);
    await loginFails(tcp(), { user: 'md5_user', database: 'scramdb', password: 'wrong' }, 'SASL authentication failed');
  });

  test('an md5 rule with a stored SCRAM secret uses SCRAM (and SCRAM pass-through to the server)', async () => {
    await loginOk(tcp(), { user: 'scram_user', database: TEST_DB, password: 'scram_pass' }, SCRAM);
  });

  test('local + md5 over the Unix socket', async () => {
    await loginOk({ path: b.socketPath }, { user: 'md5_user', database: TEST_DB, password: 'md5_pass' }, [AUTH.MD5, AUTH.OK]);
  });

  test('ldap rules parse; without LDAP support the login fails with "LDAP authentication failed"', async () => {
    await loginFails(tcp(), { user: 'md5_user', database: 'ldapdb', password: 'x' }, 'LDAP authentication failed');
  });

  test('hostssl + cert map=: the certificate CN maps to the database user through auth_ident_file', async () => {
    if (onBun) {
      // Bun cannot tell whether a certificate verified on a socket upgraded by SSLRequest: a
      // `cert` rule stops pgbun at start, and a reload that brings one keeps the rules in force
      const refusal = /hba\.conf:16: cert authentication needs client certificates verified, which Bun /;
      await expectRefusedAtStart(options(HBA.replace('{{osuser}}', osName)), refusal, /FATAL/);
      const off = b.logOffset();
      b.reload({ hba: HBA.replace('{{osuser}}', osName).replace(/^host {4}trustdb .*$/m, 'host trustdb all 127.0.0.1/32 reject') });
      await b.waitForLog(refusal, 5000, off);
      await loginOk(tcp(), { user: 'trust_user', database: 'trustdb' }, [AUTH.OK]);
      b.reload({ hba: hbaText(HBA) });
      return;
    }
    const login = async (user: string, cn: string): Promise<PgServerError | null> => {
      const c = fx.client(cn);
      const s = await tlsConnect(b, { key: fs.readFileSync(c.key), cert: fs.readFileSync(c.cert) });
      const w = wireOver(s);
      try {
        await w.login({ user, database: 'certdb' });
        const r = await w.query('SELECT current_user');
        assert.deepEqual(r.rows, [[user]]);
        await w.terminate();
        return null;
      } catch (e) {
        w.destroy();
        if (e instanceof PgServerError) return e;
        throw e;
      }
    };
    assert.equal(await login('trust_user', 'md5_user'), null);
    assert.equal(await login('trust_user', 'scram_user'), null); // `all`
    const off = b.logOffset();
    const e = await login('md5_user', 'md5_user'); // the map has no md5_user -> md5_user line
    assert.deepEqual(e?.error.fields, { S: 'FATAL', C: '08P01', M: 'certificate authentication failed' });
    await b.waitForLog(/ident map: cm does not have a match/, 3000, off);
  });

  // pgbun switched from root to `user` cannot use the peer lookup helper (src/auth/peer.ts) and
  // asks a process per peer login, after the `login attempt` line (which says unix(0)); run as
  // its user it has the helper, and the pid before that line
  for (const [how, peerBouncer, pidPattern] of [
    ['pgbun switched to its user by itself (a process per lookup)', () => b, '0'],
    ['pgbun run as its user (the lookup helper)', () => h, peerPidLookupWorks() ? '[1-9]\\d*' : '0'],
  ] as const) {
    test(`local + peer, ${how}: the OS user of the connecting process (SO_PEERCRED) must be the user, or map to it`, async () => {
      const b = peerBouncer();
      const sock: ConnOpts = { host: b.socketDir, port: b.port, user: osName, database: 'peerdb' };
      // psql as this process's OS user (root in CI): user = OS user name
      let r = await psql(sock, 'SELECT current_user');
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(r.rows, [['trust_user']]); // peerdb forces the server user
      await b.waitForLog(new RegExp(`peerdb/${osName}@unix\\(${pidPattern}\\):\\d+ login attempt`));
      // the same OS user asking for another database user: the map does not allow it
      let off = b.logOffset();
      r = await psql({ ...sock, user: 'mapped' }, 'SELECT 1');
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /FATAL: {2}unix socket login rejected/);
      await b.waitForLog(/ident map pm cannot be matched/, 3000, off);

      // psql as the postgres OS user: `pm postgres mapped` lets it in as mapped, not as us
      const pgOs = serverOsUser();
      assert.ok(isRoot() && pgOs, 'the peer test switches to the postgres OS user: run as root (CI does)');
      const asPostgres = (user: string): ReturnType<typeof runCommand> =>
        runCommand('runuser', ['-u', pgOs.name, '--', pgBin('psql'), '-X', '-A', '-t', '-c', 'SELECT current_user'], {
          env: libpqEnv({ ...sock, user }),
        });
      const ok = await asPostgres('mapped');
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(ok.stdout.trim(), 'trust_user');
      off = b.logOffset();
      const bad = await asPostgres(osName);
      assert.notEqual(bad.code, 0);
      assert.match(bad.stderr, /FATAL: {2}unix socket login rejected/);
      await b.waitForLog(new RegExp(`OS user "${pgOs.name}" is not "${osName}"`), 3000, off);
    });

    test(`the admin console through a peer rule with a map, ${how}; the user needs no auth_file entry there`, async () => {
      const b = peerBouncer();
      const r = await psql({ host: b.socketDir, port: b.port, user: 'consoleadmin', database: 'pgbouncer' }, 'SHOW VERSION');
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /PgBouncer/);
    });
  }

  test('RELOAD re-reads the HBA and ident files (last: it changes the rules)', async () => {
    await loginOk(tcp(), { user: 'trust_user', database: 'trustdb' }, [AUTH.OK]);
    const off = b.logOffset();
    b.reload({ hba: hbaText(HBA).replace(/^host {4}trustdb .*$/m, 'host trustdb all 127.0.0.1/32 reject') });
    await b.waitForLog(/could not parse hba config line/, 5000, off); // the file was read again
    await loginFails(tcp(), { user: 'trust_user', database: 'trustdb' }, 'login rejected');
  });
});
