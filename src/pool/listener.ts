// Listening sockets: TCP on each listen_addr (`*` = every IPv4 and IPv6 address),
// with SO_REUSEPORT when so_reuseport = 1, and the Unix socket
// <unix_socket_dir>/.s.PGSQL.<listen_port>. Under systemd socket activation (pgbun.socket) the
// sockets systemd passes are used as they are, and pgbun opens its own only for the configured
// addresses that none of them covers, as PgBouncer does.
import fs from 'node:fs';
import net from 'node:net';
import dns from 'node:dns/promises';
import { socketFd } from '../runtime/handles.js';
import { runtimeName } from '../runtime/name.js';
import { cf } from '../config/current.js';
import { splitList } from '../config/settings.js';
import { log } from '../log/logger.js';
import { takeListenFds } from '../process/systemd.js';
import { Client } from './client.js';
import { applySocketOptions } from './sockopts.js';
import { multiWorker } from '../workers/identity.js';

export class StartupError extends Error {}

function unixSocketPath(): string | null {
  const dir = cf.unix_socket_dir;
  if (dir === '') return null;
  if (dir.startsWith('@')) return `\0${dir.slice(1)}/.s.PGSQL.${cf.listen_port}`;
  return `${dir}/.s.PGSQL.${cf.listen_port}`;
}

/** Does something already answer on our Unix socket? (`unix socket is in use, cannot continue`) */
export function unixSocketInUse(): Promise<boolean> {
  const path = unixSocketPath();
  // the socket systemd passed us answers, of course
  if (path === null || path === unixPath && unixInherited) return Promise.resolve(false);
  return new Promise((resolve) => {
    const s = net.connect({ path });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

const tcpServers: net.Server[] = [];
let unixServer: net.Server | null = null;
let unixPath: string | null = null;
/** unixServer came from systemd: its file belongs to pgbun.socket and stays at exit */
let unixInherited = false;
/** sockets from systemd that are not the configured Unix socket (other paths) */
const otherInherited: net.Server[] = [];
/** host:port of the TCP sockets from systemd */
const inheritedTcp = new Set<string>();
/**
 * Listening sockets the main thread alone accepts on when `workers` > 1: the Unix socket and
 * systemd's. A worker thread holds no handle on them: a thread's handles are closed when it ends,
 * and a handle on the same descriptor would close it for every loop when a worker dies (node has
 * no dup()), leaving the others with a number the kernel may hand to a new socket.
 */
const sharedFds = new Set<net.Server>();
/** SUSPEND stops accepting too */
let accepting = true;
/**
 * Connections that arrived during SUSPEND, not read until RESUME: PgBouncer stops accepting and
 * leaves them in the listen backlog; node cannot stop accepting on a listening socket, so they
 * wait here instead, as many as listen_backlog would hold (more are closed, as a full backlog
 * refuses them).
 */
const heldWhileSuspended: Array<{ sock: net.Socket; isUnix: boolean }> = [];

function onConnection(sock: net.Socket, isUnix: boolean): void {
  if (!accepting) {
    if (heldWhileSuspended.length >= cf.listen_backlog) {
      sock.destroy();
      return;
    }
    sock.pause();
    sock.on('error', () => { /* a held connection that goes away is dropped at RESUME */ });
    heldWhileSuspended.push({ sock, isUnix });
    return;
  }
  startClient(sock, isUnix);
}

function startClient(sock: net.Socket, isUnix: boolean): void {
  if (!isUnix) applySocketOptions(sock);
  sock.on('error', () => { /* handled by the client once attached */ });
  new Client(sock, isUnix, cf.listen_port);
}

function listenOne(srv: net.Server, opts: net.ListenOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    const onErr = (e: Error): void => reject(e);
    srv.once('error', onErr);
    srv.listen(opts, () => {
      srv.off('error', onErr);
      resolve();
    });
  });
}

async function tcpAddresses(): Promise<string[]> {
  const out: string[] = [];
  for (const a of splitList(cf.listen_addr)) {
    if (a === '*') {
      out.push('0.0.0.0', '::');
    } else if (net.isIP(a)) {
      out.push(a);
    } else {
      try {
        for (const r of await dns.lookup(a, { all: true })) out.push(r.address);
      } catch (e) {
        log.warning(`cannot resolve listen_addr ${a}: ${(e as Error).message}`);
      }
    }
  }
  return out;
}

/**
 * Does this runtime set SO_REUSEPORT for `reusePort` in listen() options (node 22.12+/23.1+)?
 * One that does not know the option ignores it silently, so this tries it: a second listener
 * with reusePort on the port of a first one (a fresh ephemeral loopback port, so that no client
 * lands on the probe) succeeds only where the option is applied. null: no loopback address to
 * try it on (the real listen() then tells).
 */
export async function reusePortWorks(): Promise<boolean | null> {
  for (const host of ['127.0.0.1', '::1']) {
    const opts = { host, ipv6Only: host.includes(':'), reusePort: true };
    const a = net.createServer();
    const b = net.createServer();
    try {
      try {
        await listenOne(a, { ...opts, port: 0 });
      } catch {
        continue; // no such loopback address here
      }
      const addr = a.address();
      if (addr === null || typeof addr !== 'object') continue;
      try {
        await listenOne(b, { ...opts, port: addr.port });
        return true;
      } catch {
        return false; // EADDRINUSE where reusePort was ignored; ENOTSUP where the OS lacks it
      }
    } finally {
      a.close();
      b.close();
    }
  }
  return null;
}

/**
 * Socket activation: listen on the sockets systemd passed (LISTEN_FDS), before the check for a
 * Unix socket in use and before startListening(), which then skips what they cover.
 */
export async function adoptSystemdSockets(): Promise<void> {
  await adoptSockets(takeListenFds());
}

/** host:port of the TCP sockets only the main thread accepts on (systemd's), for the worker threads. */
export function mainOnlyTcpAddresses(): string[] {
  const out: string[] = [];
  for (const srv of sharedFds) {
    const a = srv.address();
    if (a !== null && typeof a === 'object') out.push(`${a.address}:${a.port}`);
  }
  return out;
}

/**
 * A worker thread: leave the main thread's Unix socket and systemd's sockets to it (see
 * sharedFds), and do not make the socket file again nor listen on a TCP address systemd serves.
 */
export function leaveSharedSockets(tcpAddresses: string[]): void {
  for (const a of tcpAddresses) inheritedTcp.add(a);
  unixInherited = true;
}

async function adoptSockets(list: Array<{ fd: number; unixPath: string | null }>): Promise<void> {
  const configuredUnix = unixSocketPath();
  for (const { fd, unixPath: path } of list) {
    const isUnix = path !== null;
    const srv = net.createServer({ noDelay: true, pauseOnConnect: false }, (s) => onConnection(s, isUnix));
    try {
      // the handle form of listen(): { fd }
      await listenOne(srv, { fd } as unknown as net.ListenOptions);
    } catch (e) {
      throw new StartupError(`cannot use socket fd ${fd} from systemd: ${(e as Error).message}`);
    }
    sharedFds.add(srv);
    if (isUnix) {
      if (path === configuredUnix && unixServer === null) {
        unixServer = srv;
        unixPath = path;
        unixInherited = true;
      } else {
        otherInherited.push(srv);
      }
      log.log(`listening on unix:${path.startsWith('\0') ? '@' + path.slice(1) : path} (systemd socket)`);
    } else {
      const a = srv.address();
      if (a === null || typeof a !== 'object') throw new StartupError(`socket fd ${fd} from systemd is not a TCP or Unix stream socket`);
      tcpServers.push(srv);
      inheritedTcp.add(`${a.address}:${a.port}`);
      log.log(`listening on ${a.address.includes(':') ? `[${a.address}]` : a.address}:${a.port} (systemd socket)`);
    }
  }
}

/** Is host:port already served by a socket from systemd? `::` also takes IPv4 (not IPV6_V6ONLY). */
function coveredBySystemd(host: string, port: number): boolean {
  return inheritedTcp.has(`${host}:${port}`) || host === '0.0.0.0' && inheritedTcp.has(`:::${port}`);
}

/**
 * Open every listener; throws StartupError with PgBouncer's text when it cannot. A worker thread
 * (`quiet`) opens its own TCP sockets beside the main thread's (SO_REUSEPORT), so that the kernel
 * spreads connections over the threads and each can close its own; the Unix socket and systemd's
 * sockets are the main thread's alone (sharedFds).
 */
export async function startListening(quiet = false): Promise<void> {
  const addrs = (await tcpAddresses()).filter((h) => !coveredBySystemd(h, cf.listen_port));
  // so_reuseport = 1 for several processes on one port: refuse to start without it rather than
  // start a process whose second sibling then cannot listen
  const reusePort = cf.so_reuseport !== 0 || multiWorker();
  if (reusePort && addrs.length > 0 && (await reusePortWorks()) === false) {
    const why = cf.so_reuseport !== 0 ? 'so_reuseport' : 'workers > 1';
    throw new StartupError(`${why} is not supported by this runtime (${runtimeName()}): it needs reusePort in net.Server.listen(), Node.js 22.12 or newer`);
  }
  let ok = 0;
  for (const host of addrs) {
    const srv = net.createServer({ noDelay: true, pauseOnConnect: false }, (s) => onConnection(s, false));
    try {
      await listenOne(srv, { host, port: cf.listen_port, backlog: cf.listen_backlog, ipv6Only: host.includes(':'), ...(reusePort ? { reusePort } : {}) });
      tcpServers.push(srv);
      ok++;
      if (!quiet) log.log(`listening on ${host.includes(':') ? `[${host}]` : host}:${cf.listen_port}`);
    } catch (e) {
      log.warning(`cannot listen on ${host}:${cf.listen_port}: ${(e as Error).message}`);
    }
  }
  if (addrs.length > 0 && ok === 0 && inheritedTcp.size === 0) throw new StartupError('cannot listen on any TCP address');

  const path = unixSocketPath();
  if (path !== null && !unixInherited) {
    const abstract = path.startsWith('\0');
    if (!abstract) {
      if (fs.existsSync(`${path}.lock`)) throw new StartupError(`unix port ${cf.listen_port} is in use`);
      try {
        fs.unlinkSync(path); // a stale socket file of a dead process
      } catch { /* none */ }
    }
    const srv = net.createServer({ pauseOnConnect: false }, (s) => onConnection(s, true));
    try {
      await listenOne(srv, { path, backlog: cf.listen_backlog });
    } catch (e) {
      throw new StartupError(`cannot listen on unix socket ${path}: ${(e as Error).message}`);
    }
    if (!abstract) {
      try {
        fs.chmodSync(path, cf.unix_socket_mode);
      } catch (e) {
        log.warning(`chmod(${path}) failed: ${(e as Error).message}`);
      }
      if (cf.unix_socket_group !== '') chgrp(path, cf.unix_socket_group);
    }
    unixServer = srv;
    unixPath = path;
    if (multiWorker()) sharedFds.add(srv);
    log.log(`listening on unix:${abstract ? '@' + path.slice(1) : path}`);
  }
}

function chgrp(path: string, group: string): void {
  let gid = Number(group);
  if (!Number.isInteger(gid)) {
    const line = fs.readFileSync('/etc/group', 'utf8').split('\n').find((l) => l.split(':')[0] === group);
    if (!line) {
      log.warning(`unix_socket_group: no such group: ${group}`);
      return;
    }
    gid = Number(line.split(':')[2]);
  }
  try {
    fs.chownSync(path, -1, gid);
  } catch (e) {
    log.warning(`chown(${path}) failed: ${(e as Error).message}`);
  }
}

/** SHUTDOWN WAIT_FOR_*: stop taking TCP clients (the Unix socket stays for admins). */
export function closeTcpListeners(): void {
  for (const s of tcpServers) s.close();
  tcpServers.length = 0;
}

export function setAccepting(on: boolean): void {
  accepting = on;
  if (!on) return;
  for (const { sock, isUnix } of heldWhileSuspended.splice(0)) {
    if (sock.destroyed || !sock.readable) {
      sock.destroy();
      continue;
    }
    startClient(sock, isUnix);
    sock.resume();
  }
}

/** Close everything and remove the socket file (at exit). */
export function closeAllListeners(): void {
  closeTcpListeners();
  for (const s of otherInherited) s.close();
  otherInherited.length = 0;
  if (unixServer !== null) {
    unixServer.close();
    unixServer = null;
    if (unixPath !== null && !unixPath.startsWith('\0') && !unixInherited) {
      try { fs.unlinkSync(unixPath); } catch { /* already gone */ }
    }
  }
}

export function listenerCount(): { tcp: number; unix: boolean } {
  return { tcp: tcpServers.length, unix: unixServer !== null };
}

/** Listening sockets for SHOW FDS (task `pooler`): fd, address (`unix` for the socket), port. */
export function listenerSockets(): Array<{ fd: number; addr: string; port: number }> {
  const fdOf = (s: net.Server): number => socketFd(s) ?? -1;
  const out: Array<{ fd: number; addr: string; port: number }> = [];
  for (const s of tcpServers) {
    const a = s.address();
    if (a !== null && typeof a === 'object') out.push({ fd: fdOf(s), addr: a.address, port: a.port });
  }
  if (unixServer !== null) out.push({ fd: fdOf(unixServer), addr: 'unix', port: cf.listen_port });
  for (const s of otherInherited) out.push({ fd: fdOf(s), addr: 'unix', port: cf.listen_port });
  return out;
}
