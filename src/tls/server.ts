// TLS towards PostgreSQL (server_tls_*). Until TLS lands, server connections are plain.
import type { Server } from '../pool/server.js';

/**
 * A server connection is established: negotiate TLS per server_tls_sslmode if it applies (TCP
 * only; send SSLRequest, read the one-byte answer through server.rawData, wrap with tls.connect
 * and server.replaceSocket), then server.startLogin(); on failure pooler.disconnectServer.
 */
export function beginServerLogin(server: Server): void {
  server.startLogin();
}
