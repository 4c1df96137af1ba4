// TLS towards clients (client_tls_*): SSLRequest answered 'S' and the accepted
// socket upgraded in place, or a connection that starts right away with a TLS ClientHello
// (PostgreSQL 17's sslnegotiation=direct, ALPN `postgresql`). Login processing pauses during
// the handshake and resumes on the TLS socket.
import type net from 'node:net';
import tls from 'node:tls';
import { log } from '../log/logger.js';
import type { Client } from '../pool/client.js';
import { clientTls, type ClientSideTls } from './context.js';
import { tlsVerifyError } from '../runtime/handles.js';

/** ALPN protocol name of PostgreSQL (PostgreSQL 17, direct SSL negotiation). */
const ALPN_POSTGRESQL = 'postgresql';

/**
 * An SSLRequest arrived: answer 'S' and start TLS on the client socket, or return false to have
 * 'N' answered (client_tls_sslmode=disable).
 */
export function acceptClientTls(client: Client): boolean {
  const conf = clientTls();
  // no TLS over a Unix socket (PgBouncer answers N there too), nor a second time
  if (conf === null || client.isUnix || client.tlsInfo !== '') return false;
  client.socket.write('S');
  upgrade(client, conf, null, false);
  return true;
}

/**
 * The connection starts with a TLS ClientHello (direct TLS). `hello` holds the bytes read so
 * far. Return false if direct TLS is not possible (the client is then failed).
 */
export function acceptDirectTls(client: Client, hello: Buffer): boolean {
  const conf = clientTls();
  if (conf === null || client.isUnix) return false;
  upgrade(client, conf, hello, true);
  return true;
}

function upgrade(client: Client, conf: ClientSideTls, hello: Buffer | null, direct: boolean): void {
  client.pauseLogin();
  const raw = client.socket;
  if (hello !== null) {
    // Give the bytes already read back to the socket: the TLS socket starts with what is
    // buffered in the one it wraps.
    raw.pause();
    raw.removeAllListeners('data');
    raw.unshift(hello);
  }
  const sock = new tls.TLSSocket(raw as net.Socket, {
    isServer: true,
    secureContext: conf.context,
    requestCert: conf.requestCert,
    // verify-ca/verify-full: the handshake itself fails without a certificate (the client sees
    // the TLS alert); its verification result is checked below
    rejectUnauthorized: conf.requireCert,
    ALPNProtocols: [ALPN_POSTGRESQL],
  });
  let handshakeDone = false;
  sock.once('error', (err: Error) => {
    if (!handshakeDone) log.conn('log', client, `TLS handshake failed: ${err.message}`);
  });
  client.replaceSocket(sock);
  sock.once('secure', () => {
    handshakeDone = true;
    if (client.closed) return;
    const why = checkPeer(sock, conf);
    if (why !== null) {
      // no FATAL over a connection whose peer we refused: just close it
      client.drop(why);
      return;
    }
    if (direct && sock.alpnProtocol !== ALPN_POSTGRESQL) {
      client.drop('direct SSL connection without ALPN protocol negotiation extension');
      return;
    }
    client.tlsInfo = describeTls(sock);
    client.resumeLogin();
  });
}

/** Why the client's certificate is not acceptable, or null. */
function checkPeer(sock: tls.TLSSocket, conf: ClientSideTls): string | null {
  const cert = sock.getPeerCertificate();
  const hasCert = cert !== null && Object.keys(cert).length > 0;
  // allow/prefer/require check no certificate (auth_type=cert checks it itself,
  // clientCertificate()); verify-ca/verify-full need one that verifies against the CA
  if (!conf.requireCert) return null;
  if (!hasCert) return 'TLS client certificate required';
  const err = verifyError(sock);
  if (err !== null) return `TLS client certificate verification failed: ${err}`;
  return null;
}

/**
 * The chain verification result of the peer's certificate, null = verified. OpenSSL itself fails
 * the handshake only for a missing certificate; node checks the chain and leaves the decision
 * to tls.Server (which sets `authorized`), and a TLSSocket upgraded in place has no tls.Server.
 * So the check tls.Server does is done here, through the same handle method it uses; where
 * that is missing (another runtime) the certificate counts as unverified.
 */
function verifyError(sock: tls.TLSSocket): string | null {
  const e = tlsVerifyError(sock);
  if (e === 'unsupported') return 'cannot verify';
  if (e !== null) {
    sock.authorizationError = e as unknown as Error;
    return e;
  }
  sock.authorized = true;
  return null;
}

/** `TLSv1.3/TLS_AES_256_GCM_SHA384[/ECDH=X25519]`, as PgBouncer's tls_get_connection_info(). */
export function describeTls(sock: tls.TLSSocket): string {
  const proto = sock.getProtocol() ?? 'unknown';
  const cipher = sock.getCipher()?.name ?? 'unknown';
  const kx = sock.getEphemeralKeyInfo() as { type?: string; name?: string; size?: number } | null;
  if (kx && kx.type === 'ECDH' && kx.name) return `${proto}/${cipher}/ECDH=${kx.name}`;
  if (kx && kx.type === 'DH' && kx.size) return `${proto}/${cipher}/DH=${kx.size}`;
  return `${proto}/${cipher}`;
}

/**
 * The verified client certificate of a TLS client, or why there is none (for the log):
 * `TLS connection required`, `TLS client certificate required`, or a failed verification.
 */
export function clientCertificate(client: Client): tls.PeerCertificate | string {
  const sock = client.socket;
  if (!(sock instanceof tls.TLSSocket) || client.tlsInfo === '') return 'TLS connection required';
  const cert = sock.getPeerCertificate();
  if (cert === null || Object.keys(cert).length === 0) return 'TLS client certificate required';
  const err = sock.authorized ? null : verifyError(sock);
  return err === null ? cert : `TLS client certificate verification failed: ${err}`;
}
