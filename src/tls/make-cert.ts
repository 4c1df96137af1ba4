// `pgbun --make-cert DIR [HOSTNAME...]`: a self-signed key/certificate pair for a quick start
// with client_tls_sslmode (not for production: use certificates from your CA there). Made with
// node-forge (key generation by node:crypto); TLS itself never uses node-forge.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { hostname } from 'node:os';
import { isIP } from 'node:net';
import * as path from 'node:path';
import forge from 'node-forge';

export interface MadeCert {
  keyFile: string;
  certFile: string;
}

/** Write DIR/pgbun.key (0600) and DIR/pgbun.crt, valid 10 years for the given names. */
export function makeSelfSignedCert(dir: string, names: string[] = []): MadeCert {
  const all = [...new Set([...(names.length > 0 ? names : [hostname()]), 'localhost', '127.0.0.1', '::1'])];
  const { privateKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  const key = forge.pki.privateKeyFromPem(privateKey) as forge.pki.rsa.PrivateKey;
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.setRsaPublicKey(key.n, key.e);
  cert.serialNumber = '01' + randomBytes(8).toString('hex');
  cert.validity.notBefore = new Date(Date.now() - 60_000);
  cert.validity.notAfter = new Date(Date.now() + 3650 * 86400_000);
  const subject = [{ name: 'commonName', value: all[0]! }, { name: 'organizationName', value: 'pgbun' }];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames: all.map((n) => (isIP(n) ? { type: 7, ip: n } : { type: 2, value: n })) },
  ]);
  cert.sign(key, forge.md.sha256.create());
  fs.mkdirSync(dir, { recursive: true });
  const keyFile = path.resolve(dir, 'pgbun.key');
  const certFile = path.resolve(dir, 'pgbun.crt');
  fs.writeFileSync(keyFile, forge.pki.privateKeyToPem(key), { mode: 0o600 });
  fs.chmodSync(keyFile, 0o600);
  fs.writeFileSync(certFile, forge.pki.certificateToPem(cert), { mode: 0o644 });
  return { keyFile, certFile };
}
