// Peering (PgBouncer 1.19+, `peer_id` and `[peers]`): several processes share one listen_port
// through so_reuseport, so a CancelRequest can reach a process that did not issue its key. Keys
// carry the issuing process's peer_id (cancel-key.ts); a request for another peer's key is
// forwarded to that peer, as a CancelRequest on a new connection to its host/port, and the
// requester's connection is closed once the peer has closed that connection (the peer has sent
// its own cancel to PostgreSQL by then, or found nothing to cancel).
//
// Each peer that has had a request forwarded to it gets a peer pool, PgBouncer's peer_pool_list:
// the requests waiting for a connection to the peer (cl_waiting_cancel_req) or being sent
// (cl_active_cancel_req), and the connections being made (sv_login) or carrying a request
// (sv_active_cancel). A peer's pool_size bounds its connections; the rest wait, at most
// cancel_wait_timeout. SHOW PEER_POOLS prints these counts.
import net from 'node:net';
import { cf } from '../config/current.js';
import type { PeerDef } from '../config/types.js';
import { log, type LogSubject } from '../log/logger.js';
import * as msg from '../protocol/messages.js';
import { StateList, type ListNode } from './list.js';
import type { Client } from './client.js';
import { ClientState } from './state.js';
import { nowUs } from './clock.js';
import { connIds } from './ids.js';
import { applySocketOptions } from './sockopts.js';
import { disconnectClient } from './pooler.js';
import { onJanitorTick } from './janitor.js';
import { cancelKeyPeerId, cancelKeyTtl, withCancelKeyTtl } from './cancel-key.js';

/** `[peers]` of the config in force, by peer_id; set at startup and on reload. */
let peers = new Map<number, PeerDef>();

/** peer pools by peer_id, made on the first request forwarded to that peer */
export const peerPools = new Map<number, PeerPool>();

export function setPeers(p: Map<number, PeerDef>): void {
  peers = new Map(p);
}

/** The configured peers in peer_id order (SHOW PEERS). */
export function peerList(): PeerDef[] {
  return [...peers.values()].sort((a, c) => a.peer_id - c.peer_id);
}

export function peerCount(): number {
  return peers.size;
}

/** The peer pools in peer_id order (SHOW PEER_POOLS, SHOW CLIENTS). */
export function sortedPeerPools(): PeerPool[] {
  return [...peerPools.values()].sort((a, c) => a.peerId - c.peerId);
}

export class PeerPool {
  readonly activeCancelReqs = new StateList<Client>('cl_active_cancel_req');
  readonly waitingCancelReqs = new StateList<Client>('cl_waiting_cancel_req');
  readonly activeCancelServers = new StateList<PeerConnection>('sv_active_cancel');
  readonly loginServers = new StateList<PeerConnection>('sv_login');

  constructor(readonly peerId: number) {}

  get def(): PeerDef | undefined {
    return peers.get(this.peerId);
  }

  get poolSize(): number {
    return this.def?.pool_size ?? cf.default_pool_size;
  }

  /** The list of a forwarded request in state `st` (Client.changeState). */
  clientList(st: ClientState): StateList<Client> | null {
    if (st === ClientState.WAITING_CANCEL) return this.waitingCancelReqs;
    if (st === ClientState.ACTIVE_CANCEL) return this.activeCancelReqs;
    return null;
  }

  get inUse(): boolean {
    return this.activeCancelReqs.count + this.waitingCancelReqs.count + this.activeCancelServers.count +
      this.loginServers.count > 0;
  }
}

/** A connection to a peer that carries one forwarded CancelRequest. */
export class PeerConnection implements ListNode, LogSubject {
  listPrev: ListNode | null = null;
  listNext: ListNode | null = null;
  list: StateList<ListNode> | null = null;

  readonly id = connIds.next();
  readonly ptr = connIds.ptr(this.id);
  readonly socket = new net.Socket();
  readonly connectTimeUs = nowUs();
  addr: string;
  port: number;
  isUnix: boolean;
  /** the request it carries, once connected */
  client: Client | null = null;
  sent = false;
  closed = false;
  private connectError: Error | null = null;

  constructor(readonly pool: PeerPool, def: PeerDef) {
    const host = def.host;
    this.port = def.port;
    this.isUnix = host.startsWith('/') || host.startsWith('@');
    this.addr = this.isUnix ? 'unix' : host;
    const sock = this.socket;
    sock.once('connect', () => this.onConnect());
    sock.on('data', () => { /* a peer answers a CancelRequest with nothing but closing */ });
    sock.on('error', (err) => {
      this.connectError = err;
    });
    sock.on('close', () => this.onClose());
    this.moveTo(pool.loginServers);
    if (this.isUnix) {
      sock.connect({ path: host.startsWith('@') ? `\0${host.slice(1)}/.s.PGSQL.${def.port}` : `${host}/.s.PGSQL.${def.port}` });
    } else {
      sock.connect({ host, port: def.port });
    }
  }

  logPrefix(): string {
    const a = this.isUnix ? `unix:${this.port}` : this.addr.includes(':') ? `[${this.addr}]:${this.port}` : `${this.addr}:${this.port}`;
    return `S-${this.ptr}: peer-${this.pool.peerId}@${a}`;
  }

  private moveTo(list: StateList<PeerConnection> | null): void {
    if (this.list !== null) (this.list as unknown as StateList<PeerConnection>).remove(this);
    if (list !== null) list.append(this);
  }

  private onConnect(): void {
    if (this.closed) return;
    if (!this.isUnix) {
      this.addr = this.socket.remoteAddress ?? this.addr;
      applySocketOptions(this.socket);
    }
    const req = this.pool.waitingCancelReqs.first();
    if (req === null) {
      this.close('no cancel request waiting');
      return;
    }
    this.client = req;
    req.changeState(ClientState.ACTIVE_CANCEL);
    this.moveTo(this.pool.activeCancelServers);
    if (log.debugEnabled) log.conn('debug', this, `forwarding cancel request of C-${req.ptr}`);
    // no half-close: a peer that reads EOF would drop the request before its cancel is done
    this.sent = true;
    this.socket.write(msg.cancelRequest(req.forwardKey!));
  }

  private onClose(): void {
    if (this.closed) return;
    if (this.sent) this.close('successfully sent cancel request');
    else this.connectFailed(`connect failed: ${this.connectError?.message ?? 'connection closed'}`, 'cancel connection failed');
  }

  /**
   * The peer cannot be reached: the oldest request for it fails rather than waiting for a peer
   * that may be gone (and its clients with it); the others get connections of their own.
   */
  connectFailed(warning: string, reason: string): void {
    log.conn('warning', this, warning);
    const first = this.pool.waitingCancelReqs.first();
    if (first !== null) disconnectClient(first, false, reason);
    this.close(reason);
  }

  /** Close (or note the peer closed) and finish the request it carried. */
  close(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    if (cf.log_disconnections) {
      log.conn('log', this, `closing because: ${reason} (age=${Math.floor((nowUs() - this.connectTimeUs) / 1e6)}s)`);
    }
    this.socket.destroy();
    this.moveTo(null);
    const req = this.client;
    this.client = null;
    if (req !== null) disconnectClient(req, false, reason);
    launchPeerCancels(this.pool);
  }
}

/**
 * A CancelRequest whose key no client of this process has: forward it when the key names
 * another configured peer and its TTL allows one more hop. False: not forwarded (the caller
 * drops it as a failed cancel request).
 */
export function forwardCancel(req: Client, key: Buffer): boolean {
  if (cf.peer_id === 0) return false;
  const peerId = cancelKeyPeerId(key);
  // our own id (listed in [peers] or not): the client has gone, there is nobody to ask
  if (peerId === cf.peer_id) return false;
  if (!peers.has(peerId)) {
    if (log.debugEnabled) log.conn('debug', req, `cancel request for unknown peer ${peerId}`);
    return false;
  }
  const ttl = cancelKeyTtl(key);
  if (ttl === 0) {
    log.conn('log', req, `cancel request for peer ${peerId} has been forwarded too often`);
    return false;
  }
  let pool = peerPools.get(peerId);
  if (pool === undefined) {
    pool = new PeerPool(peerId);
    peerPools.set(peerId, pool);
  }
  req.peerPool = pool;
  req.forwardKey = withCancelKeyTtl(key, ttl - 1);
  req.changeState(ClientState.WAITING_CANCEL);
  launchPeerCancels(pool);
  return true;
}

/** Open connections to the peer for waiting requests, within the peer's pool_size. */
function launchPeerCancels(pool: PeerPool): void {
  const def = pool.def;
  if (def === undefined) {
    // the peer left [peers] on a reload: nobody to forward to any more
    for (const c of pool.waitingCancelReqs.toArray()) disconnectClient(c, false, 'failed cancel request');
    return;
  }
  const size = pool.poolSize;
  while (pool.waitingCancelReqs.count > pool.loginServers.count) {
    if (size > 0 && pool.loginServers.count + pool.activeCancelServers.count >= size) return;
    new PeerConnection(pool, def);
  }
}

onJanitorTick((now) => {
  for (const pool of [...peerPools.values()]) {
    if (cf.cancel_wait_timeout > 0) {
      const limit = cf.cancel_wait_timeout * 1e6;
      for (const c of pool.waitingCancelReqs.toArray()) {
        if (now - c.connectTimeUs > limit) disconnectClient(c, false, 'cancel_wait_timeout');
      }
    }
    if (cf.server_connect_timeout > 0) {
      const limit = cf.server_connect_timeout * 1e6;
      for (const conn of pool.loginServers.toArray()) {
        if (now - conn.connectTimeUs > limit) conn.connectFailed('connect timeout', 'connect timeout');
      }
    }
    // waiting requests beyond the connections being made: a connection may have closed
    launchPeerCancels(pool);
    if (!pool.inUse && pool.def === undefined) peerPools.delete(pool.peerId);
  }
});
