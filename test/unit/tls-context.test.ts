// TLS settings turned into node:tls options (src/tls/context.ts), setupTls/reloadTls keeping the
// old configuration on error and tagging server connections close_needed when the server side
// changed, the self-signed certificate helper, and the SO_PEERCRED lookup (src/auth/peer.ts).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { X509Certificate, constants } from 'node:crypto';
import { cf } from '../../src/config/current.js';
import { cipherString, clientTls, parseProtocols, protocolOptions, reloadTls, serverTls, setupTls } from '../../src/tls/context.js';
import { makeSelfSignedCert } from '../../src/tls/make-cert.js';
import { hasPeerCredentials, peerCredentials, peerUid } from '../../src/auth/peer.js';
import { registry, PgDatabase } from '../../src/pool/objects.js';
import { Server } from '../../src/pool/server.js';
import { ServerState } from '../../src/pool/state.js';
import type { Client } from '../../src/pool/client.js';
import { makeCa, makeCert } from '../lib/certs.js';
import { peerPidLookupWorks } from '../lib/procs.js';
import { onBun } from '../lib/runtime.js';

test('client/server_tls_protocols: keywords, lists, negation, holes', () => {
  assert.deepEqual([...parseProtocols('secure')].sort(), ['TLSv1.2', 'TLSv1.3']);
  assert.deepEqual([...parseProtocols('default')].sort(), ['TLSv1.2', 'TLSv1.3']);
  assert.deepEqual([...parseProtocols('all')].sort(), ['TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3']);
  assert.deepEqual([...parseProtocols('legacy')].sort(), ['TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3']);
  assert.deepEqual([...parseProtocols('tlsv1.3')], ['TLSv1.3']);
  assert.deepEqual([...parseProtocols('TLSv1.2,tlsv1.3')].sort(), ['TLSv1.2', 'TLSv1.3']);
  assert.deepEqual([...parseProtocols('all:!tlsv1.0 -tlsv1.1')].sort(), ['TLSv1.2', 'TLSv1.3']);
  assert.deepEqual([...parseProtocols('tlsv1')].sort(), ['TLSv1', 'TLSv1.1', 'TLSv1.2']);
  assert.throws(() => parseProtocols('tlsv1.4'), /invalid TLS protocol: tlsv1.4/);
  assert.throws(() => parseProtocols('tlsv1.2 !tlsv1.2'), /no TLS protocol enabled/);

  assert.deepEqual(protocolOptions(parseProtocols('secure')), { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.3', secureOptions: 0 });
  // a hole in the middle: min/max span it, SSL_OP_NO_* closes it
  const holed = protocolOptions(parseProtocols('tlsv1.1,tlsv1.3'));
  assert.equal(holed.minVersion, 'TLSv1.1');
  assert.equal(holed.maxVersion, 'TLSv1.3');
  assert.equal(holed.secureOptions, constants.SSL_OP_NO_TLSv1_2);
});

test('*_tls_ciphers keywords and *_tls13_ciphers', () => {
  const dflt = cipherString('client', 'default', null);
  assert.equal(cipherString('client', 'secure', null), dflt);
  assert.equal(cipherString('client', 'fast', null), dflt);
  assert.equal(cipherString('client', 'normal', null), dflt);
  assert.match(dflt, /^TLS_AES_256_GCM_SHA384:.*ECDHE-RSA-AES128-GCM-SHA256/);
  assert.match(cipherString('client', 'all', null), /:ALL:!aNULL:!eNULL$/);
  assert.match(cipherString('client', 'compat', null), /:HIGH:!aNULL$/);
  if (onBun) {
    // BoringSSL cannot choose TLS 1.3 suites: a choice is refused, naming the setting
    assert.throws(() => cipherString('server', 'default', 'TLS_AES_128_GCM_SHA256'), /^Error: server_tls13_ciphers: Bun .* does not let TLS 1\.3 cipher suites be chosen/);
    return;
  }
  assert.equal(cipherString('client', 'ECDHE-RSA-AES128-GCM-SHA256', 'TLS_AES_128_GCM_SHA256'), 'TLS_AES_128_GCM_SHA256:ECDHE-RSA-AES128-GCM-SHA256');
  assert.throws(() => cipherString('client', 'default', 'AES128-SHA'), /failed to set the TLSv1.3 cipher suites: AES128-SHA/);
});

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'pgbun-tls-unit-'));
}

test('setupTls / reloadTls: built from the files, old configuration kept on error, server side change tags close_needed', () => {
  const dir = tmp();
  try {
    const ca = makeCa();
    const write = (name: string, text: string): string => {
      const p = path.join(dir, name);
      fs.writeFileSync(p, text);
      return p;
    };
    const kc = makeCert(ca, { cn: 'localhost' });
    cf.client_tls_sslmode = 'require';
    cf.client_tls_key_file = write('k.pem', kc.key);
    cf.client_tls_cert_file = write('c.pem', kc.cert);
    cf.client_tls_ca_file = '';
    cf.server_tls_sslmode = 'prefer';
    assert.equal(setupTls(true), null);
    const first = clientTls();
    assert.ok(first);
    assert.equal(first.requestCert, false);
    assert.equal(first.requireCert, false);
    const firstServer = serverTls();
    assert.equal(firstServer?.mode, 'prefer');

    // a server connection in a pool
    const db = new PgDatabase('unitdb', null);
    const pool = registry.getPool(db, registry.addUser('unituser'));
    const server = new Server(pool);
    server.changeState(ServerState.IDLE);

    // client side change only: servers stay
    cf.client_tls_ca_file = write('ca.pem', ca.cert);
    assert.equal(reloadTls(), null);
    assert.notEqual(clientTls(), first);
    assert.equal(clientTls()?.requestCert, true);
    assert.equal(server.closeNeeded, false);

    // a broken file: error, everything as before
    const before = clientTls();
    fs.writeFileSync(cf.client_tls_key_file, 'garbage');
    assert.match(reloadTls() ?? '', /client_tls/);
    assert.equal(clientTls(), before);
    fs.writeFileSync(cf.client_tls_key_file, kc.key);

    // same server settings again: no close_needed; a changed one: close_needed
    assert.equal(reloadTls(), null);
    assert.equal(server.closeNeeded, false);
    cf.server_tls_sslmode = 'require';
    assert.equal(reloadTls(), null);
    assert.equal(server.closeNeeded, true);

    cf.client_tls_sslmode = 'disable';
    cf.server_tls_sslmode = 'disable';
    assert.equal(reloadTls(), null);
    assert.equal(clientTls(), null);
    assert.equal(serverTls(), null);
    server.changeState(ServerState.FREE);
    registry.removePool(pool);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a setting the runtime cannot honour safely is refused, naming it (Bun); Node.js takes it', () => {
  const dir = tmp();
  const saved = { ...cf };
  try {
    const ca = makeCa();
    const kc = makeCert(ca, { cn: 'localhost' });
    const write = (name: string, text: string): string => {
      const p = path.join(dir, name);
      fs.writeFileSync(p, text);
      return p;
    };
    const base = {
      client_tls_sslmode: 'require', client_tls_key_file: write('k.pem', kc.key), client_tls_cert_file: write('c.pem', kc.cert),
      client_tls_ca_file: write('ca.pem', ca.cert), auth_type: 'md5', client_tls_dheparams: 'auto', client_tls13_ciphers: null,
      server_tls_sslmode: 'disable',
    } as const;
    const cases: Array<[Partial<typeof cf>, RegExp | null]> = [
      // nothing depends on a certificate's verification: fine everywhere, DHE auto included
      [{}, null],
      [{ client_tls_sslmode: 'verify-ca' }, /^client_tls_sslmode = verify-ca needs client certificates verified, which Bun /],
      [{ client_tls_sslmode: 'verify-full' }, /^client_tls_sslmode = verify-full needs client certificates verified/],
      [{ auth_type: 'cert' }, /^auth_type = cert needs client certificates verified/],
      [{ auth_type: 'hba' }, null],
      [{ client_tls_dheparams: 'legacy' }, /^client_tls_dheparams = legacy: Bun .* has no DHE/],
      [{ client_tls13_ciphers: 'TLS_AES_128_GCM_SHA256' }, /^client_tls13_ciphers: Bun .* does not let TLS 1\.3 cipher suites be chosen/],
    ];
    for (const [over, refusal] of cases) {
      Object.assign(cf, base, over);
      const err = setupTls(true);
      if (onBun && refusal !== null) assert.match(err ?? '', refusal, JSON.stringify(over));
      else assert.equal(err, null, JSON.stringify(over));
    }
  } finally {
    Object.assign(cf, saved);
    setupTls(true);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('pgbun --make-cert: a self-signed pair for localhost and the given names, key mode 0600', () => {
  const dir = tmp();
  try {
    const made = makeSelfSignedCert(dir, ['db.example.com']);
    assert.equal(fs.statSync(made.keyFile).mode & 0o777, 0o600);
    const x = new X509Certificate(fs.readFileSync(made.certFile));
    assert.match(x.subject, /CN=db\.example\.com/);
    assert.equal(x.checkHost('localhost'), 'localhost');
    assert.equal(x.checkIP('127.0.0.1'), '127.0.0.1');
    assert.equal(x.checkHost('db.example.com'), 'db.example.com');
    assert.ok(x.verify(x.publicKey), 'self-signed');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** The peer lookup helpers (perl children) of this process. */
function helperPids(): number[] {
  try {
    return execFileSync('pgrep', ['-P', String(process.pid), '-x', 'perl'], { encoding: 'utf8' }).trim().split('\n').map(Number);
  } catch {
    return []; // pgrep: none
  }
}

test('the peer lookup helper serves every lookup, and is replaced when it dies', async () => {
  const dir = tmp();
  const sockPath = path.join(dir, 's');
  const server = net.createServer();
  const open: net.Socket[] = [];
  try {
    await new Promise<void>((resolve) => server.listen(sockPath, resolve));
    const lookup = async (): Promise<number | undefined> => {
      const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
      open.push(net.connect(sockPath));
      const s = await accepted;
      open.push(s);
      return (await peerCredentials({ isUnix: true, socket: s, remotePid: 0 } as unknown as Client))?.pid;
    };
    for (let i = 0; i < 3; i++) assert.equal(await lookup(), process.pid);
    const before = helperPids();
    if (!peerPidLookupWorks()) {
      // Yama keeps the helper out: it gave up, and each lookup had a process of its own
      assert.deepEqual(before, []);
      return;
    }
    assert.equal(before.length, 1, 'one helper for all lookups');
    process.kill(before[0]!, 'SIGKILL');
    for (let i = 0; i < 100 && helperPids().includes(before[0]!); i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(await lookup(), process.pid, 'answered after the helper died');
    const after = helperPids();
    assert.equal(after.length, 1);
    assert.notEqual(after[0], before[0], 'a new helper');
  } finally {
    for (const x of open) x.destroy();
    server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('peer credentials of a Unix-socket connection (SO_PEERCRED): this very process', async () => {
  const dir = tmp();
  const sockPath = path.join(dir, 's');
  const server = net.createServer();
  try {
    const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
    await new Promise<void>((resolve) => server.listen(sockPath, resolve));
    const c = net.connect(sockPath);
    const s = await accepted;
    const fake = { isUnix: true, socket: s, remotePid: 0 } as unknown as Client;
    const cred = await peerCredentials(fake);
    assert.ok(cred, 'credentials found');
    assert.equal(cred.pid, process.pid);
    assert.equal(cred.uid, process.getuid!());
    // id(1), not os.userInfo(): Bun's says `unknown` for root
    assert.equal(cred.userName, execFileSync('id', ['-un'], { encoding: 'utf8' }).trim());
    assert.equal(fake.remotePid, process.pid);
    assert.equal(peerUid(fake), process.getuid!());
    // on a fresh connection peerUid only answers once peerCredentials has: nothing blocks
    const c2 = net.connect(sockPath);
    const s2 = await new Promise<net.Socket>((resolve) => server.once('connection', resolve));
    const fresh = { isUnix: true, socket: s2, remotePid: 0 } as unknown as Client;
    assert.equal(hasPeerCredentials(fresh), false);
    assert.equal(peerUid(fresh), null);
    await peerCredentials(fresh);
    assert.equal(hasPeerCredentials(fresh), true);
    assert.equal(peerUid(fresh), process.getuid!());
    // TCP connections have no peer credentials
    assert.equal(await peerCredentials({ isUnix: false, socket: s, remotePid: 0 } as unknown as Client), null);
    c.destroy();
    c2.destroy();
    s.destroy();
    s2.destroy();
  } finally {
    server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
