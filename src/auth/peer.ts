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
// What is used, two ways, both asking the kernel (getsockopt(SOL_SOCKET, SO_PEERCRED) on the
// accepted socket: exact and race-free, the credentials are those of the connecting process at
// connect() time) from a tiny Perl program, plus getpwuid() for the user name, which honours
// NSS like PgBouncer's getpwuid() does. Perl is part of every Debian/Ubuntu system (perl-base is
// Essential) and of the rpm's dependencies.
//  * The helper: one long-lived Perl process per event loop that has Unix-socket clients. It
//    opens a pidfd of pgbun (pidfd_open) and takes its own copy of each client's socket with
//    pidfd_getfd(2) (Linux 5.6+), given the descriptor number on its stdin: about 0.1 ms per
//    lookup. This is what gives every Unix-socket client its pid for `unix(<pid>)` in log lines
//    and SHOW CLIENTS' remote_pid, as PgBouncer has them from getpeereid(). pidfd_getfd needs
//    ptrace access to pgbun, which the same uid has, except when Yama's ptrace_scope is 1 or
//    more (Ubuntu's default: the helper is pgbun's child, not its parent), and when pgbun
//    switched to `user` after being started by root (a process that changed its uids is not
//    dumpable, and node cannot make it so again). Run as the user itself (systemd's User=).
//  * Where the helper cannot work: one short child process per lookup with the socket as its
//    stdin (the child gets a dup of the same socket), ~10 ms each. Used only for connections
//    whose authentication needs the peer (HBA `peer` rules, the `pgbouncer` user on the
//    console); other Unix-socket clients then show as unix(0).
// Results are cached per connection. Without Perl, or off Linux, there is no answer: peer
// authentication fails (logged) and clients show as unix(0).
import { spawn, type ChildProcess } from 'node:child_process';
import { log } from '../log/logger.js';
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
/** helper lookups started when the client connected (startPeerLookup) */
const inFlight = new WeakMap<Client, Promise<PeerCredentials | null>>();

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

/** One child per lookup: the socket is its stdin. */
function spawnLookup(client: Client, fd: number): Promise<PeerCredentials | null> {
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

// ------------------------------------------------------------------ the helper

// Request: `<id> <fd>`; answer: `<id> <pid> <uid> <gid> <name>`, or `<id> ! <errno>`; a first
// line `! <errno>` when pidfd_open fails. 434 and 438 are pidfd_open and pidfd_getfd on every
// architecture (the syscall numbers are shared from 424 on). Names are cached per uid.
const HELPER = [
  'use Socket qw(SOL_SOCKET SO_PEERCRED);',
  'my $p = syscall(434, $ARGV[0] + 0, 0);',
  'if ($p < 0) { syswrite(STDOUT, "! " . ($! + 0) . "\\n"); exit 0 }',
  'my (%n, $in);',
  // what one read brings is answered with one write: a burst of logins costs a wake-up or two
  'while (sysread(STDIN, $in, 65536, length($in // ""))) {',
  '  my $out = "";',
  '  while ($in =~ s/^(\\d+) (\\d+)\\n//) {',
  '    my ($id, $f) = ($1, syscall(438, $p, $2 + 0, 0));',
  '    if ($f < 0) { $out .= "$id ! " . ($! + 0) . "\\n"; next }',
  '    my $c;',
  "    if (open(my $s, '+<&=', $f)) { $c = getsockopt($s, SOL_SOCKET, SO_PEERCRED); close($s) }",
  '    if (!defined $c) { $out .= "$id ! " . ($! + 0) . "\\n"; next }',
  "    my ($pid, $uid, $gid) = unpack('iII', $c);",
  "    $n{$uid} = (getpwuid($uid))[0] // '' unless exists $n{$uid};",
  '    $out .= "$id $pid $uid $gid $n{$uid}\\n";',
  '  }',
  '  syswrite(STDOUT, $out) if length($out);',
  '}',
].join(' ');

const EPERM = 1;
const ENOSYS = 38;
/** a lookup the helper has not answered by then gets none (the client shows as unix(0)) */
const HELPER_TIMEOUT_MS = 1000;

interface Helper {
  child: ChildProcess;
  /** by request id, in the order asked: resolve, and when it was asked (ms) */
  pending: Map<number, { resolve: (c: PeerCredentials | null) => void; at: number }>;
  partial: string;
  /** answers none for the lookups older than HELPER_TIMEOUT_MS (one timer, not one per lookup) */
  sweep: NodeJS.Timeout;
}

let helper: Helper | null = null;
/** unknown until the helper's first answer; off for good once it cannot work here */
let helperState: 'unknown' | 'ok' | 'off' = process.platform === 'linux' ? 'unknown' : 'off';
let helperExits = 0;
let nextRequest = 1;

function helperOff(why: string): void {
  if (helperState !== 'off') {
    log.log(`Unix-socket peer lookup helper unavailable (${why}): clients show as unix(0); peer authentication uses one process per login`);
  }
  helperState = 'off';
  stopHelper();
}

function stopHelper(): void {
  const h = helper;
  if (h === null) return;
  helper = null;
  clearInterval(h.sweep);
  for (const { resolve } of h.pending.values()) resolve(null);
  h.pending.clear();
  h.child.kill();
}

/** Why perl did not start, said alike by every runtime (their messages differ). */
function cannotStart(e: unknown): string {
  return `cannot start perl: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;
}

function startHelper(): Helper | null {
  let child: ChildProcess;
  try {
    child = spawn(PERL, ['-e', HELPER, String(process.pid)], { stdio: ['pipe', 'pipe', 'ignore'] });
  } catch (e) {
    helperOff(cannotStart(e));
    return null;
  }
  const h: Helper = { child, pending: new Map(), partial: '', sweep: setInterval(() => sweepHelper(h), HELPER_TIMEOUT_MS / 4) };
  h.sweep.unref();
  // the helper must not keep pgbun running; it exits when its stdin closes with pgbun
  child.unref();
  (child.stdin as unknown as { unref?: () => void }).unref?.();
  (child.stdout as unknown as { unref?: () => void }).unref?.();
  child.stdin!.on('error', () => {});
  child.stdout!.setEncoding('utf8').on('data', (d: string) => onHelperOutput(h, d));
  child.once('error', (e) => { if (helper === h) helperOff(cannotStart(e)); });
  child.once('exit', () => {
    if (helper !== h) return;
    // answered before: replace it at the next lookup (an unexpected death, e.g. a signal
    // meant for the process group); never answered, or dying over and over: give up
    if (helperState !== 'ok' || ++helperExits >= 3) helperOff('it exited');
    else stopHelper();
  });
  return h;
}

function onHelperOutput(h: Helper, d: string): void {
  h.partial += d;
  let nl: number;
  while ((nl = h.partial.indexOf('\n')) >= 0) {
    const line = h.partial.slice(0, nl);
    h.partial = h.partial.slice(nl + 1);
    const [id, ...rest] = line.split(' ');
    if (id === '!') {
      helperOff(`pidfd_open: errno ${rest[0]}`);
      return;
    }
    const req = h.pending.get(Number(id));
    if (req === undefined) continue; // timed out
    h.pending.delete(Number(id));
    if (rest[0] === '!') {
      const errno = Number(rest[1]);
      // not allowed or not there: the same for every socket; else this socket's own trouble
      if (errno === EPERM || errno === ENOSYS) helperOff(`pidfd_getfd: ${errno === EPERM ? 'EPERM' : 'ENOSYS'}`);
      req.resolve(null);
      continue;
    }
    helperState = 'ok';
    req.resolve(parse(rest.join(' ')));
  }
}

/** The credentials of the socket `fd` from the helper; null when it has none to give. */
function helperLookup(fd: number): Promise<PeerCredentials | null> {
  if (helperState === 'off') return Promise.resolve(null);
  helper ??= startHelper();
  const h = helper;
  if (h === null) return Promise.resolve(null);
  const id = nextRequest++;
  return new Promise((resolve) => {
    h.pending.set(id, { resolve, at: Date.now() });
    h.child.stdin!.write(`${id} ${fd}\n`);
  });
}

function sweepHelper(h: Helper): void {
  const old = Date.now() - HELPER_TIMEOUT_MS;
  for (const [id, req] of h.pending) {
    if (req.at > old) break; // the rest were asked later
    h.pending.delete(id);
    req.resolve(null);
  }
}

/**
 * A Unix-socket client has connected: look its peer up with the helper now, so that its pid is
 * known for its log lines (Client.startLogin waits for peerLookupPending). Nothing is started
 * where the helper cannot work.
 */
export function startPeerLookup(client: Client): void {
  if (helperState === 'off' || cache.has(client) || inFlight.has(client)) return;
  const fd = socketFd(client);
  if (fd === null) return;
  const p = helperLookup(fd).then((cred) => {
    inFlight.delete(client);
    if (cred !== null) remember(client, cred);
    return cred;
  });
  inFlight.set(client, p);
}

/** The helper lookup startPeerLookup began for this client, while it has not answered. */
export function peerLookupPending(client: Client): Promise<unknown> | null {
  return inFlight.get(client) ?? null;
}

/** Peer credentials of a Unix-socket client (async; null when they cannot be determined). */
export function peerCredentials(client: Client): Promise<PeerCredentials | null> {
  if (cache.has(client)) return Promise.resolve(cache.get(client)!);
  const fd = socketFd(client);
  if (fd === null) return Promise.resolve(remember(client, null));
  // the helper first (started at connect, or now); a process of its own where it cannot answer
  const viaHelper = inFlight.get(client) ?? (helperState !== 'off' ? helperLookup(fd) : Promise.resolve(null));
  return viaHelper.then((cred) => {
    if (cache.has(client)) return cache.get(client)!;
    return cred !== null ? remember(client, cred) : client.closed ? null : spawnLookup(client, fd);
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
