// Process plumbing shared by the test harness: who PostgreSQL (and pgbun, when we are root) run
// as, free ports outside the ephemeral range, temp dirs, and the guarantee that no child
// outlives the test process. Children are spawned detached and unref'd, so a test that forgets to
// stop one never keeps its file alive; every child is killed when the process exits (normally, on
// an uncaught error, or on SIGINT/SIGTERM/SIGHUP), and is also recorded in $PGBUN_TEST_PIDDIR so
// that test/run.ts can kill what a SIGKILLed test file left behind.

import { ChildProcess, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** `p`, or false after `ms` (the timer is cleared either way, so it never holds the loop). */
export async function withTimeout<T>(p: Promise<T>, ms: number): Promise<{ value: T } | false> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<false>((r) => (timer = setTimeout(() => r(false), ms)));
  try {
    return await Promise.race([p.then((value) => ({ value })), t]);
  } finally {
    clearTimeout(timer);
  }
}

/** Blocking sleep, for exit handlers where the event loop no longer runs. */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

export const isRoot = (): boolean => typeof process.getuid === 'function' && process.getuid() === 0;

export interface OsUser {
  name: string;
  uid: number;
  gid: number;
}

let pgUserCache: OsUser | null | undefined;

/**
 * The OS user PostgreSQL runs as: `postgres` when we are root (PostgreSQL refuses root), else
 * null, meaning "the current user". Throws when root and no `postgres` user exists.
 */
export function serverOsUser(): OsUser | null {
  if (pgUserCache !== undefined) return pgUserCache;
  if (!isRoot()) return (pgUserCache = null);
  let line = '';
  try {
    line = execFileSync('getent', ['passwd', 'postgres'], { encoding: 'utf8' }).trim();
  } catch {
    line = fs.readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith('postgres:')) ?? '';
  }
  const parts = line.split(':');
  if (parts.length < 4) {
    throw new Error(
      'running as root, but there is no "postgres" OS user to run PostgreSQL and pgbun as ' +
        '(install postgresql-15, or run .ci/run)',
    );
  }
  return (pgUserCache = { name: 'postgres', uid: Number(parts[2]), gid: Number(parts[3]) });
}

/** spawn() options that run a child as `user` (nothing when user is null). */
export function asUser(user: OsUser | null): { uid?: number; gid?: number } {
  return user ? { uid: user.uid, gid: user.gid } : {};
}

/** chown when we are root and a target user is given; no-op otherwise. */
export function chownTo(p: string, user: OsUser | null): void {
  if (user && isRoot()) fs.chownSync(p, user.uid, user.gid);
}

/** The repository root (the directory whose package.json is named "pgbun"). */
export const REPO_ROOT: string = (() => {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pj = path.join(dir, 'package.json');
    if (fs.existsSync(pj)) {
      try {
        if (JSON.parse(fs.readFileSync(pj, 'utf8')).name === 'pgbun') return dir;
      } catch {
        /* keep looking */
      }
    }
    const up = path.dirname(dir);
    if (up === dir) return process.cwd();
    dir = up;
  }
})();

export const keepTempFiles = (): boolean => !!process.env.PGBUN_TEST_KEEP && process.env.PGBUN_TEST_KEEP !== '0';

/**
 * A fresh temp dir (mode 0755, owned by `owner` when root so PostgreSQL or a user-switched pgbun
 * can write into it). Removed when the process exits unless PGBUN_TEST_KEEP=1.
 */
export function makeTempDir(prefix: string, owner: OsUser | null): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(dir, 0o755);
  chownTo(dir, owner);
  tempDirs.add(dir);
  recordInPidDir({ dir });
  return dir;
}

export function removeTempDir(dir: string): void {
  tempDirs.delete(dir);
  if (keepTempFiles()) return;
  try {
    fs.rmSync(dir, { recursive: true, force: true, maxRetries: 3, retryDelay: 50 });
  } catch {
    /* best effort */
  }
  forgetInPidDir({ dir });
}

// ---------------------------------------------------------------------------------------------
// Ports

/** The kernel's ephemeral range (never hand those out: outgoing connections may grab them). */
function ephemeralRange(): [number, number] {
  try {
    const [lo, hi] = fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (lo > 0 && hi >= lo) return [lo, hi];
  } catch {
    /* not Linux */
  }
  return [32768, 60999];
}

const PORT_LO = 20000;
const PORT_HI = 32000;
const reservedPorts = new Set<number>();
let portDirCache: string | null = null;

/**
 * The folder of port reservations. One for all users of the machine, so that their test runs
 * (the demo too) never pick the same port: $TMPDIR/pgbun-test-ports, sticky and writable by all.
 * mkdir's mode goes through the umask (a root-made folder used to end up 1755, and every other
 * user's freePort then found "no free port"), so the mode is set with chmod, and a folder of
 * ours with other bits (left by an older harness) is set right. When the shared folder cannot
 * be used (someone else's folder without those bits, or not a plain folder: a symlink would
 * send our files elsewhere), this user's own $TMPDIR/pgbun-test-ports-<uid> (0700) serves
 * instead; two users can then pick the same port at the same moment, and the bind check in
 * freePort is what keeps a port that is in use out.
 */
export function portReservationDir(): string {
  if (portDirCache !== null) return portDirCache;
  const uid = process.getuid?.() ?? -1;
  const shared = path.join(os.tmpdir(), 'pgbun-test-ports');
  const own = `${shared}-${uid}`;
  const ready = (dir: string, mode: number): boolean => {
    try {
      fs.mkdirSync(dir, { mode });
      fs.chmodSync(dir, mode);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') return false;
    }
    try {
      let st = fs.lstatSync(dir);
      if (!st.isDirectory()) return false;
      if (st.uid === uid && (st.mode & 0o7777) !== mode) {
        fs.chmodSync(dir, mode);
        st = fs.lstatSync(dir);
      }
      if (mode === 0o1777) return (st.mode & 0o7777) === 0o1777; // whoever made it: O_EXCL files in it are safe
      return st.uid === uid && (st.mode & 0o777) === 0o700;
    } catch {
      return false;
    }
  };
  if (ready(shared, 0o1777)) return (portDirCache = shared);
  if (ready(own, 0o700)) return (portDirCache = own);
  throw new Error(`cannot reserve test ports: neither ${shared} (mode 1777) nor ${own} (mode 0700, ours) is usable`);
}

/** Reserve `port` across concurrently running test processes (a file per port, O_EXCL). */
function reservePort(port: number): boolean {
  const f = path.join(portReservationDir(), String(port));
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(f, String(process.pid), { flag: 'wx' });
      reservedPorts.add(port);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') return false;
      let owner = 0;
      try {
        owner = Number(fs.readFileSync(f, 'utf8').trim());
      } catch {
        return false; // another user's file that we may not read (their umask): theirs
      }
      // no pid yet: just created by a process that is about to write it
      if (!(owner > 0) || isAlive(owner)) return false;
      try {
        fs.unlinkSync(f); // stale: its owner is gone
      } catch {
        return false;
      }
    }
  }
  return false;
}

function canBind(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', (e: NodeJS.ErrnoException) => {
      // no IPv6 on this host: fall back to checking IPv4 only
      if (host === '::' && (e.code === 'EAFNOSUPPORT' || e.code === 'EADDRNOTAVAIL')) {
        resolve(canBind(port, '0.0.0.0'));
      } else resolve(false);
    });
    srv.listen({ port, host, exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

/**
 * A random free TCP port in 20000–32000 (below the ephemeral range), verified by binding the
 * wildcard address and reserved against other test processes on this machine.
 */
export async function freePort(): Promise<number> {
  const [elo, ehi] = ephemeralRange();
  for (let i = 0; i < 500; i++) {
    const port = PORT_LO + Math.floor(Math.random() * (PORT_HI - PORT_LO));
    if (port >= elo && port <= ehi) continue;
    if (reservedPorts.has(port) || !reservePort(port)) continue;
    if (await canBind(port, '::')) return port;
    releasePort(port);
  }
  throw new Error(`no free port found in ${PORT_LO}-${PORT_HI}`);
}

function releasePort(port: number): void {
  reservedPorts.delete(port);
  try {
    fs.unlinkSync(path.join(portReservationDir(), String(port)));
  } catch {
    /* already gone */
  }
}

// ---------------------------------------------------------------------------------------------
// Process liveness

/** Field 22 of /proc/<pid>/stat (start time in clock ticks): tells a pid from its reuse. */
export function procStartTime(pid: number): string | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

/** True while `pid` runs. A zombie (exited, not yet reaped by us) counts as dead. */
export function isAlive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    try {
      process.kill(pid, 0); // no /proc: fall back to kill(0)
      return true;
    } catch (e2) {
      return (e2 as NodeJS.ErrnoException).code === 'EPERM';
    }
  }
}

function trySignal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* gone */
  }
}

// ---------------------------------------------------------------------------------------------
// Child registry

interface Tracked {
  pid: number;
  name: string;
  /** signal for a quick stop at exit; SIGKILL follows after a grace period */
  exitSignal: NodeJS.Signals;
  start: string | null;
}

const tracked = new Map<number, Tracked>();
const tempDirs = new Set<string>();

function pidDirFile(key: { pid?: number; dir?: string }): string | null {
  const pd = process.env.PGBUN_TEST_PIDDIR;
  if (!pd) return null;
  const name = key.pid !== undefined ? `pid-${key.pid}` : `dir-${Buffer.from(key.dir!).toString('hex')}`;
  return path.join(pd, name);
}

function recordInPidDir(entry: { pid?: number; dir?: string; name?: string; start?: string | null; exitSignal?: string }): void {
  const f = pidDirFile(entry);
  if (!f) return;
  try {
    fs.writeFileSync(f, JSON.stringify({ ...entry, owner: process.pid }));
  } catch {
    /* run.ts' dir vanished: nothing to record into */
  }
}

function forgetInPidDir(key: { pid?: number; dir?: string }): void {
  const f = pidDirFile(key);
  if (!f) return;
  try {
    fs.unlinkSync(f);
  } catch {
    /* not there */
  }
}

/**
 * Track a spawned child: killed (exitSignal, then SIGKILL) when this process exits. With
 * `unref` (default) the child and its stdio never keep the event loop alive on their own.
 */
export function trackChild(proc: ChildProcess, name: string, exitSignal: NodeJS.Signals = 'SIGKILL', unref = true): void {
  if (proc.pid === undefined) return;
  const t: Tracked = { pid: proc.pid, name, exitSignal, start: procStartTime(proc.pid) };
  tracked.set(proc.pid, t);
  recordInPidDir({ pid: t.pid, name, start: t.start, exitSignal });
  if (unref) {
    proc.unref();
    for (const s of [proc.stdin, proc.stdout, proc.stderr]) (s as unknown as net.Socket | null)?.unref?.();
  }
  proc.once('exit', () => untrackPid(t.pid));
}

/** Track a process we did not spawn ourselves (e.g. a daemonized pgbun found via its pidfile). */
export function trackPid(pid: number, name: string, exitSignal: NodeJS.Signals = 'SIGKILL'): void {
  const t: Tracked = { pid, name, exitSignal, start: procStartTime(pid) };
  tracked.set(pid, t);
  recordInPidDir({ pid, name, start: t.start, exitSignal });
}

export function untrackPid(pid: number): void {
  tracked.delete(pid);
  forgetInPidDir({ pid });
}

/** Synchronously stop every tracked child and remove temp dirs. Safe to call more than once. */
export function cleanupSync(graceMs = 3000): void {
  const live = [...tracked.values()].filter((t) => procStartTime(t.pid) === t.start && isAlive(t.pid));
  for (const t of live) trySignal(t.pid, t.exitSignal);
  const deadline = Date.now() + graceMs;
  while (live.some((t) => isAlive(t.pid)) && Date.now() < deadline) sleepSync(20);
  for (const t of live) if (isAlive(t.pid)) trySignal(t.pid, 'SIGKILL');
  for (const t of live) untrackPid(t.pid);
  for (const d of [...tempDirs]) removeTempDir(d);
  for (const p of [...reservedPorts]) releasePort(p);
}

process.on('exit', () => cleanupSync());
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  const handler = (): void => {
    // Someone else (e.g. the demo) handles this signal and will exit cleanly: leave it to them;
    // the 'exit' hook still runs then.
    if (process.listenerCount(sig) > 1) return;
    cleanupSync();
    process.removeListener(sig, handler);
    process.kill(process.pid, sig); // default action: die by this signal as we would have
  };
  process.on(sig, handler);
}

/**
 * For test/run.ts: kill whatever test files recorded in `pidDir` and left running (pid and start
 * time must both match, so a reused pid is never hit), and remove recorded temp dirs.
 * Returns a description of what was cleaned up.
 */
export function killRecorded(pidDir: string): string[] {
  const done: string[] = [];
  let names: string[] = [];
  try {
    names = fs.readdirSync(pidDir);
  } catch {
    return done;
  }
  const procs: Array<{ pid: number; name: string }> = [];
  const dirs: string[] = [];
  for (const n of names) {
    try {
      const e = JSON.parse(fs.readFileSync(path.join(pidDir, n), 'utf8'));
      if (typeof e.pid === 'number') {
        if (procStartTime(e.pid) === e.start && isAlive(e.pid)) {
          trySignal(e.pid, e.exitSignal ?? 'SIGKILL');
          procs.push({ pid: e.pid, name: e.name });
        }
      } else if (typeof e.dir === 'string') dirs.push(e.dir);
    } catch {
      /* half-written entry */
    }
  }
  const deadline = Date.now() + 3000;
  while (procs.some((p) => isAlive(p.pid)) && Date.now() < deadline) sleepSync(20);
  for (const p of procs) {
    if (isAlive(p.pid)) trySignal(p.pid, 'SIGKILL');
    done.push(`killed stray ${p.name} (pid ${p.pid})`);
  }
  if (!keepTempFiles()) {
    for (const d of dirs) {
      if (!fs.existsSync(d)) continue;
      fs.rmSync(d, { recursive: true, force: true, maxRetries: 3, retryDelay: 50 });
      done.push(`removed leftover ${d}`);
    }
  }
  return done;
}

// ---------------------------------------------------------------------------------------------
// Listening checks without connecting (a probe connection would show up in pgbun's log)

function hexPort(port: number): string {
  return port.toString(16).toUpperCase().padStart(4, '0');
}

/**
 * Whether something listens on TCP `port` (any address), read from /proc/net/tcp{,6}; null when
 * /proc is not available (callers then probe with a connection).
 */
export function tcpListening(port: number): boolean | null {
  let any = false;
  const want = ':' + hexPort(port);
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = fs.readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    any = true;
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length > 3 && cols[1].endsWith(want) && cols[3] === '0A') return true;
    }
  }
  return any ? false : null;
}

/** Whether a listening Unix socket exists at `sockPath` (from /proc/net/unix); null if unknown. */
export function unixListening(sockPath: string): boolean | null {
  let text: string;
  try {
    text = fs.readFileSync('/proc/net/unix', 'utf8');
  } catch {
    return null;
  }
  for (const line of text.split('\n').slice(1)) {
    const cols = line.trim().split(/\s+/);
    // Num RefCount Protocol Flags Type St Inode Path; Flags 00010000 = accepting connections
    if (cols.length >= 8 && cols[7] === sockPath && (parseInt(cols[3], 16) & 0x10000) !== 0) return true;
  }
  return false;
}

/** Connection probe used where /proc is not available. */
export function canConnect(opts: { host?: string; port?: number; path?: string }, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = opts.path ? net.connect(opts.path) : net.connect(opts.port!, opts.host ?? '127.0.0.1');
    const done = (ok: boolean): void => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(timeoutMs, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

/** Last `maxBytes` of a file, '' when missing. */
export function readTail(file: string, maxBytes = 64 * 1024): string {
  try {
    const st = fs.statSync(file);
    const fd = fs.openSync(file, 'r');
    try {
      const len = Math.min(st.size, maxBytes);
      const buf = Buffer.alloc(len);
      fs.readSync(fd, buf, 0, len, st.size - len);
      return (st.size > len ? '[...]\n' : '') + buf.toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return '';
  }
}

/**
 * Whether pgbun, run as its own user, can read the pid of a Unix-socket client (its peer lookup
 * helper uses pidfd_getfd, which Yama's ptrace_scope >= 1 forbids a child doing to its parent;
 * src/auth/peer.ts). Where it cannot, clients show as unix(0), which the tests then expect.
 */
export function peerPidLookupWorks(): boolean {
  if (process.platform !== 'linux') return false;
  try {
    return fs.readFileSync('/proc/sys/kernel/yama/ptrace_scope', 'utf8').trim() === '0';
  } catch {
    return true; // no Yama
  }
}
