// TLS towards PostgreSQL (server_tls_*). TCP server connections with
// server_tls_sslmode prefer/require/verify-ca/verify-full send an SSLRequest first; 'S' wraps
// the socket with node:tls, 'N' continues in plain text for prefer and closes the connection
// for require and above. disable and allow (PgBouncer: "try plain") never ask; Unix-socket
// servers never use TLS.
import { isIP } from 'node:net';
import tls from 'node:tls';
import { log } from '../log/logger.js';
import { cf } from '../config/current.js';
import { SSL_ERROR, SSL_NO, SSL_YES } from '../protocol/constants.js';
import { SSL_REQUEST_MSG } from '../protocol/messages.js';
import type { Server } from '../pool/server.js';
import { serverEvents } from '../pool/server-events.js';
import { serverTls } from './context.js';
import { describeTls } from './client.js';


/** A TLS failure before the login: like a failed connect, the pool retries after server_login_retry. */
function tlsFailed(server: Server, reason: string): void {
  serverEvents.connectFailed(server, reason);
}

/**
 * A server connection is established: negotiate TLS per server_tls_sslmode if it applies, then
 * server.startLogin().
 */
export function beginServerLogin(server: Server): void {
  const conf = serverTls();
  if (conf === null || server.isUnix || conf.mode === 'allow' || conf.mode === 'disable') {
    server.startLogin();
    return;
  }
  server.rawData = (chunk: Buffer): void => {
    server.rawData = null;
    const answer = chunk[0];
    if (answer === SSL_YES && chunk.length === 1) {
      startTls(server);
    } else if (answer === SSL_NO && chunk.length === 1) {
      if (conf.mode === 'prefer') {
        server.startLogin();
      } else {
        tlsFailed(server, 'server refused SSL');
      }
    } else if (answer === SSL_ERROR /* a pre-SSLRequest server, or an error */) {
      tlsFailed(server, 'server does not support SSL');
    } else {
      // anything more than one byte would have been read as if it came through TLS
      tlsFailed(server, chunk.length > 1 ? 'received unencrypted data after SSL response' : 'bad SSL response');
    }
  };
  server.send(SSL_REQUEST_MSG);
}

/** node's codes for a peer certificate that failed verification (OpenSSL's X509_V_ERR_* names) */
const CERT_VERIFY_CODES = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID', 'CERT_UNTRUSTED', 'CERT_REJECTED', 'CERT_SIGNATURE_FAILURE', 'CERT_REVOKED',
  'INVALID_CA', 'PATH_LENGTH_EXCEEDED', 'INVALID_PURPOSE', 'HOSTNAME_MISMATCH', 'ERR_TLS_CERT_ALTNAME_INVALID',
]);

function startTls(server: Server): void {
  const conf = serverTls();
  if (conf === null) {
    tlsFailed(server, 'TLS disabled meanwhile');
    return;
  }
  const host = server.addr;
  const hostName = server.connectHost ?? host;
  const verify = conf.mode === 'verify-ca' || conf.mode === 'verify-full';
  const sock = tls.connect({
    socket: server.socket,
    secureContext: conf.context,
    // SNI only for names, never for IP literals (RFC 6066)
    servername: isIP(hostName) === 0 ? hostName : undefined,
    rejectUnauthorized: verify,
    checkServerIdentity: conf.mode === 'verify-full'
      ? (_name, cert) => tls.checkServerIdentity(hostName, cert)
      : () => undefined,
  });
  // a failed handshake reaches Server's error handler: logged as `connect failed: <reason>`,
  // retried after server_login_retry like any failed connect. A certificate that does not
  // verify says so in OpenSSL's words, which operators grep for, before node's detail.
  sock.prependOnceListener('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== undefined && CERT_VERIFY_CODES.has(err.code)) err.message = `certificate verify failed: ${err.message}`;
  });
  server.replaceSocket(sock);
  sock.once('secureConnect', () => {
    if (server.closed) return;
    server.tlsInfo = describeTls(sock);
    if (cf.log_connections) log.conn('log', server, `TLS connection established: ${server.tlsInfo}`);
    server.startLogin();
  });
}
