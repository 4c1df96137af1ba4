// The end of an event loop whose thread failed (`workers` > 1, process/worker.ts): every
// connection of this loop is closed at once, the clients told why as PgBouncer tells them of a
// lost server (FATAL, 08P01), the server connections ended with Terminate where logged in, so
// that PostgreSQL ends their backends now (and rolls back their transactions) instead of when the
// thread's sockets are torn down. The other loops are not touched: their clients, servers and
// shares of the shared counters are their own.
import type net from 'node:net';
import { closeTcpListeners } from './listener.js';
import { registry } from './objects.js';
import { disconnectClient, disconnectServer, poolerState } from './pooler.js';
import { peerPools } from './peering.js';
import { SERVER_STATES_SHOWN } from './state.js';
import type { Client } from './client.js';

/**
 * Close every connection of this loop with `reason`; nothing new is accepted or opened. Returns
 * the sockets still sending their last bytes (FATAL, Terminate), for the caller to wait for.
 * Each close is tried alone: the loop is in an unknown state, and one that throws must not
 * spare the others.
 */
export function abandonLoop(reason: string): net.Socket[] {
  poolerState.shuttingDown = true;
  poolerState.paused = true;
  const sockets: net.Socket[] = [];
  const attempt = (fn: () => void): void => {
    try {
      fn();
    } catch {
      // the next connection still gets its close
    }
  };
  attempt(closeTcpListeners);
  const closeClient = (c: Client): void => attempt(() => {
    sockets.push(c.socket);
    disconnectClient(c, true, reason);
  });
  // waiting clients first, so that no closed server is replaced for them; a server's close tells
  // its linked client the same reason
  for (const p of registry.pools) for (const c of p.waitingClients.toArray()) closeClient(c);
  for (const p of registry.pools) {
    p.forEachServer((s) => attempt(() => {
      sockets.push(s.socket);
      if (s.link !== null) sockets.push(s.link.socket);
      disconnectServer(s, true, reason);
    }), SERVER_STATES_SHOWN);
  }
  for (const p of registry.pools) {
    for (const list of [p.activeClients, p.waitingCancelReqs, p.activeCancelReqs]) for (const c of list.toArray()) closeClient(c);
  }
  for (const c of registry.loginClients.toArray()) closeClient(c);
  for (const pp of peerPools.values()) {
    for (const list of [pp.waitingCancelReqs, pp.activeCancelReqs]) for (const c of list.toArray()) closeClient(c);
    for (const list of [pp.loginServers, pp.activeCancelServers]) for (const conn of list.toArray()) attempt(() => conn.close(reason));
  }
  return sockets.filter((s) => !s.destroyed);
}
