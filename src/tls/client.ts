// TLS towards clients (client_tls_*). Until TLS lands, SSLRequest is answered 'N'.
import type { Client } from '../pool/client.js';

/** Answer an SSLRequest with 'S' and start TLS on the client socket; false = answer 'N'. */
export function acceptClientTls(_client: Client): boolean {
  return false;
}
