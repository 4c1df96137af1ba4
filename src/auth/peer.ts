// The credentials of the process at the other end of a Unix-socket connection (SO_PEERCRED),
// needed by HBA `peer` and by the same-uid `pgbouncer` console login.
//
// How, and why this way: node:net has no getsockopt(), and only `node:` APIs may be used (no
// native addon). The alternatives were looked at:
//  * /proc: /proc/net/unix lists every Unix socket with its inode, and /proc/<pid>/fd tells which
//    process holds which inode, but nothing in /proc links a socket to its *peer*. The kernel
//    only reveals the peer through getsockopt(SO_PEERCRED) or the sock_diag netlink interface
//    (UNIX_DIAG_PEER, which is what `ss -x` uses), and node cannot open netlink sockets either.
//    Guessing (e.g. "the newest connected socket of some other process") is unsafe for an
//    authentication decision.
//  * `ss -xp`: sock_diag through a program from iproute2 (not always installed), then matching
//    the peer inode against every process's fds; racy and slow on a busy host.
// What is used: the accepted socket's file descriptor is handed to a tiny Perl program as its
// stdin (the child gets a dup of the same socket) and that program calls
// getsockopt(SOL_SOCKET, SO_PEERCRED) on it - the real kernel answer, exact and race-free
// (the credentials are those of the connecting process at connect() time), plus getpwuid() for
// the user name, which honours NSS like PgBouncer's getpwuid() does. Perl is part of every
// Debian/Ubuntu system (perl-base is Essential) and of the rpm's dependencies. It costs one
// short child process (~10 ms) per lookup, only for connections that need it (HBA `peer`
// rules, the `pgbouncer` user on the console); the result is cached per connection. Without
// Perl, or off Linux, the lookup returns null and peer authentication fails (logged).
import { spawn } from 'node:child_process';
import type { Client } from '../pool/client.js';
import { socketFd as handleFd } from '../runtime/handles.js';

export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
  /** the uid's user name (getpwuid), null when it has none */
  userName: string | null;
}

const PERL = 'perl';
const SCRIPT = [
  'use Socket qw(SOL_SOCKET SO_PEERCRED);',
  "open(my $s, '+<&=', 0) or exit 2;",
  'my $c = getsockopt($s, SOL_SOCKET, SO_PEERCRED) or exit 3;',
  "my ($pid, $uid, $gid) = unpack('iII', $c);",
  'my $n = getpwuid($uid);',
  "$n = '' unless defined $n;",
  'print "$pid $uid $gid $n\\n";',
].join(' ');

const cache = new WeakMap<Client, PeerCredentials | null>();

function socketFd(client: Client): number | null {
  if (!client.isUnix || process.platform !== 'linux') return null;
  return handleFd(client.socket);
}

function parse(out: string): PeerCredentials | null {
  const m = /^(-?\d+) (\d+) (\d+) ?(.*)$/.exec(out.trim());
  if (!m) return null;
  return { pid: Number(m[1]), uid: Number(m[2]), gid: Number(m[3]), userName: m[4] === '' || m[4] === undefined ? null : m[4] };
}

function remember(client: Client, cred: PeerCredentials | null): PeerCredentials | null {
  cache.set(client, cred);
  if (cred !== null && cred.pid > 0) client.remotePid = cred.pid;
  return cred;
}

/** Peer credentials of a Unix-socket client (async; null when they cannot be determined). */
export function peerCredentials(client: Client): Promise<PeerCredentials | null> {
  if (cache.has(client)) return Promise.resolve(cache.get(client)!);
  const fd = socketFd(client);
  if (fd === null) return Promise.resolve(remember(client, null));
  return new Promise((resolve) => {
    let out = '';
    let child;
    try {
      child = spawn(PERL, ['-e', SCRIPT], { stdio: [fd, 'pipe', 'ignore'] });
    } catch {
      resolve(remember(client, null));
      return;
    }
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.once('error', () => resolve(remember(client, null)));
    child.once('close', (code) => resolve(remember(client, code === 0 ? parse(out) : null)));
  });
}

/** Whether peerCredentials() has answered for this client already (peerUid can be used). */
export function hasPeerCredentials(client: Client): boolean {
  return cache.has(client);
}

/**
 * Peer uid of a Unix-socket client as peerCredentials() found it, or null (not determined, or not
 * asked yet: ask with peerCredentials() first; nothing here blocks the event loop).
 */
export function peerUid(client: Client): number | null {
  return cache.get(client)?.uid ?? null;
}
