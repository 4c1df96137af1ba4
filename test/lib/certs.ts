// Certificates made on the fly with node-forge for the TLS tests: a CA, server certificates
// (with subjectAltName DNS/IP entries or only a CommonName) and client certificates (CN = the
// user name, optionally DNS SANs), signed by that CA or self-signed, and written to files with
// the ownership and modes the consumers insist on (libpq refuses a client key readable by others;
// PostgreSQL refuses a server key not owned by its OS user or readable by others).

import * as fs from 'node:fs';
import * as path from 'node:path';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import * as net from 'node:net';
import * as tls from 'node:tls';
import forge from 'node-forge';
import { chownTo, makeTempDir, serverOsUser, type OsUser } from './procs.js';
import { sslRequest, WireClient } from './wire.js';

export interface KeyCert {
  /** PEM private key */
  key: string;
  /** PEM certificate */
  cert: string;
}

export interface Ca extends KeyCert {
  forgeKey: forge.pki.rsa.PrivateKey;
  forgeCert: forge.pki.Certificate;
}

export interface CertOptions {
  /** subject CommonName */
  cn: string;
  /** subjectAltName DNS entries */
  dns?: string[];
  /** subjectAltName IP Address entries */
  ips?: string[];
  /** for a client certificate (extendedKeyUsage clientAuth instead of serverAuth) */
  client?: boolean;
  /** already expired */
  expired?: boolean;
}

function newKeyPair(): { pem: string; key: forge.pki.rsa.PrivateKey; pub: forge.pki.rsa.PublicKey } {
  // node's RSA generation (native), converted for forge: forge's pure-JS one takes seconds
  const { privateKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  const key = forge.pki.privateKeyFromPem(privateKey) as forge.pki.rsa.PrivateKey;
  const pub = forge.pki.setRsaPublicKey(key.n, key.e);
  return { pem: forge.pki.privateKeyToPem(key), key, pub };
}

function baseCert(pub: forge.pki.PublicKey, cn: string, expired: boolean): forge.pki.Certificate {
  const cert = forge.pki.createCertificate();
  cert.publicKey = pub;
  cert.serialNumber = '01' + randomBytes(8).toString('hex');
  const now = Date.now();
  cert.validity.notBefore = new Date(now - (expired ? 10 : 1) * 86400_000);
  cert.validity.notAfter = new Date(now + (expired ? -2 : 3650) * 86400_000);
  cert.setSubject([{ name: 'commonName', value: cn }, { name: 'organizationName', value: 'pgbun tests' }]);
  return cert;
}

/** A CA that signs the other certificates. */
export function makeCa(cn = 'pgbun test CA'): Ca {
  const kp = newKeyPair();
  const cert = baseCert(kp.pub, cn, false);
  cert.setIssuer(cert.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(kp.key, forge.md.sha256.create());
  return { key: kp.pem, cert: forge.pki.certificateToPem(cert), forgeKey: kp.key, forgeCert: cert };
}

/** A certificate signed by `ca`, or self-signed when `ca` is null. */
export function makeCert(ca: Ca | null, o: CertOptions): KeyCert {
  const kp = newKeyPair();
  const cert = baseCert(kp.pub, o.cn, o.expired ?? false);
  cert.setIssuer(ca ? ca.forgeCert.subject.attributes : cert.subject.attributes);
  const alt: Array<{ type: number; value?: string; ip?: string }> = [
    ...(o.dns ?? []).map((d) => ({ type: 2, value: d })),
    ...(o.ips ?? []).map((ip) => ({ type: 7, ip })),
  ];
  const ext: object[] = [
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
    { name: 'extKeyUsage', serverAuth: !o.client, clientAuth: !!o.client },
  ];
  if (alt.length > 0) ext.push({ name: 'subjectAltName', altNames: alt });
  cert.setExtensions(ext);
  cert.sign(ca ? ca.forgeKey : kp.key, forge.md.sha256.create());
  return { key: kp.pem, cert: forge.pki.certificateToPem(cert) };
}

/**
 * Write `<name>.key` (mode 0600) and `<name>.crt` into dir, owned by `owner` (null = us).
 * Returns the paths.
 */
export function writeKeyCert(dir: string, name: string, kc: KeyCert, owner: OsUser | null = null): { key: string; cert: string } {
  const key = path.join(dir, `${name}.key`);
  const cert = path.join(dir, `${name}.crt`);
  fs.writeFileSync(key, kc.key, { mode: 0o600 });
  fs.chmodSync(key, 0o600);
  fs.writeFileSync(cert, kc.cert, { mode: 0o644 });
  chownTo(key, owner);
  chownTo(cert, owner);
  return { key, cert };
}

/** Write a PEM (e.g. a CA certificate) readable by everyone. */
export function writePem(dir: string, name: string, pem: string, owner: OsUser | null = null): string {
  const p = path.join(dir, name);
  fs.writeFileSync(p, pem, { mode: 0o644 });
  chownTo(p, owner);
  return p;
}

// ---------------------------------------------------------------------------------------------
// A ready set for a test file: CA, a server certificate for localhost/127.0.0.1, and client
// certificates on demand, all in one temp dir readable by the pgbun/PostgreSQL OS user.

export interface TlsFixture {
  dir: string;
  ca: Ca;
  /** the CA certificate file (client_tls_ca_file, server_tls_ca_file, sslrootcert) */
  caFile: string;
  /** server key/cert: CN=localhost, SAN DNS:localhost, IP:127.0.0.1 */
  serverKey: string;
  serverCert: string;
  /**
   * A client certificate signed by the CA (or `ca` given) with key mode 0600 owned by us, as
   * libpq wants it for sslkey. Cached per name.
   */
  client(name: string, o?: Partial<CertOptions> & { ca?: Ca | null }): { key: string; cert: string };
}

export function tlsFixture(): TlsFixture {
  const owner = serverOsUser();
  const dir = makeTempDir('pgbun-certs-', owner);
  const ca = makeCa();
  const caFile = writePem(dir, 'ca.crt', ca.cert, owner);
  const srv = writeKeyCert(dir, 'server', makeCert(ca, { cn: 'localhost', dns: ['localhost'], ips: ['127.0.0.1'] }), owner);
  const clients = new Map<string, { key: string; cert: string }>();
  let n = 0;
  return {
    dir,
    ca,
    caFile,
    serverKey: srv.key,
    serverCert: srv.cert,
    client(name, o = {}) {
      const id = `${name}:${JSON.stringify(o.dns ?? [])}:${o.cn ?? ''}:${o.ca === null ? 'self' : o.ca ? o.ca.cert.length : 'main'}:${o.expired ?? false}`;
      let c = clients.get(id);
      if (!c) {
        const signer = o.ca === undefined ? ca : o.ca;
        c = writeKeyCert(dir, `client-${n++}`, makeCert(signer, { cn: o.cn ?? name, dns: o.dns, client: true, expired: o.expired }), null);
        clients.set(id, c);
      }
      return c;
    },
  };
}

/**
 * A TLS connection to a pgbun/PostgreSQL: SSLRequest first (or `direct`: TLS right away, ALPN
 * `postgresql` unless ALPNProtocols says otherwise). Rejects if the answer is not 'S' or the
 * handshake fails.
 */
export async function tlsConnect(
  target: { host: string; port: number },
  opts: tls.ConnectionOptions & { direct?: boolean } = {},
): Promise<tls.TLSSocket> {
  const raw = net.connect(target.port, target.host);
  await new Promise<void>((resolve, reject) => {
    raw.once('connect', resolve);
    raw.once('error', reject);
  });
  const { direct, ...tlsOpts } = opts;
  if (!direct) {
    raw.write(sslRequest());
    const answer = await new Promise<Buffer>((resolve, reject) => {
      raw.once('data', resolve);
      raw.once('error', reject);
      raw.once('close', () => reject(new Error('closed before the SSLRequest answer')));
    });
    raw.removeAllListeners('data');
    raw.removeAllListeners('close');
    if (answer.toString('latin1') !== 'S') {
      raw.destroy();
      throw new Error(`SSLRequest answered ${JSON.stringify(answer.toString('latin1'))}`);
    }
  }
  const sock = tls.connect({
    socket: raw,
    rejectUnauthorized: false,
    ...(direct ? { ALPNProtocols: ['postgresql'] } : {}),
    ...tlsOpts,
  });
  await new Promise<void>((resolve, reject) => {
    sock.once('secureConnect', resolve);
    sock.once('error', reject);
    sock.once('close', () => reject(new Error('closed during the TLS handshake')));
  });
  sock.removeAllListeners('close');
  sock.removeAllListeners('error');
  return sock;
}

/** The raw protocol client (wire.ts) over a TLS socket from tlsConnect(). */
export function wireOver(sock: tls.TLSSocket): WireClient {
  const Ctor = WireClient as unknown as new (s: net.Socket) => WireClient;
  return new Ctor(sock);
}
