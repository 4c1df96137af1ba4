// TLS towards clients (client_tls_*). Until TLS lands, SSLRequest is answered 'N'.
import type { Client } from '../pool/client.js';

/**
 * An SSLRequest arrived: answer 'S' and start TLS on the client socket (then
 * client.replaceSocket(tlsSocket) and client.resumeLogin() when the handshake is done), or
 * return false to have 'N' answered.
 */
export function acceptClientTls(_client: Client): boolean {
  return false;
}

/**
 * The connection starts with a TLS ClientHello (direct TLS, ALPN `postgresql`). `hello` holds
 * the bytes read so far. Return false if direct TLS is not possible (the client is failed).
 */
export function acceptDirectTls(_client: Client, _hello: Buffer): boolean {
  return false;
}
