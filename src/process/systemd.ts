// systemd: readiness notification (Type=notify, sd_notify(3)) and socket activation
// (sd_listen_fds(3)), as PgBouncer built with systemd support does.
//
// sd_notify is one datagram on the Unix socket named by $NOTIFY_SOCKET. node:net has no Unix
// datagram sockets (and no native addons are allowed here), so the systemd-notify program
// (package systemd, present wherever systemd runs) sends it. It is spawned, never run
// synchronously: the event loop keeps serving while systemd answers. systemd-notify waits
// until systemd has read the message before it exits (no --no-block), and the unit needs
// NotifyAccess=all because the message comes from that helper's pid, not from pgbun's.
// Messages are sent one after the other, so that RELOADING=1 cannot overtake the READY=1 of
// the same reload.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { log } from '../log/logger.js';

const queue: string[][] = [];
let sending = false;
let broken = false;

function sendNext(): void {
  const args = queue.shift();
  if (args === undefined) {
    sending = false;
    return;
  }
  sending = true;
  const child = spawn('systemd-notify', args, { stdio: 'ignore' });
  child.once('error', (e) => {
    // no systemd-notify: say so once, then stop trying
    broken = true;
    queue.length = 0;
    sending = false;
    log.warning(`systemd notification failed: cannot run systemd-notify: ${e.message}`);
  });
  child.once('exit', (code) => {
    if (code !== 0 && code !== null) log.warning(`systemd notification failed: systemd-notify ${args.join(' ')} exited with ${code}`);
    sendNext();
  });
}

/** Send sd_notify assignments (`READY=1`, `RELOADING=1`, `STOPPING=1`) when systemd asked for them. */
export function sdNotify(...assignments: string[]): void {
  if (!process.env.NOTIFY_SOCKET || broken) return;
  // MAINPID: pgbun, not the helper (with NotifyAccess=all systemd would accept either)
  queue.push([`--pid=${process.pid}`, ...assignments]);
  if (!sending) sendNext();
}

/**
 * At exit: what is still queued (say STOPPING=1 behind a READY=1 whose helper has not finished)
 * would be lost with the process, so it is sent now, waiting for each helper: the event loop has
 * nothing left to serve.
 */
export function sdNotifyFlushAtExit(): void {
  if (broken) return;
  for (const args of queue.splice(0)) {
    try {
      spawnSync('systemd-notify', args, { stdio: 'ignore', timeout: 3000 });
    } catch {
      return;
    }
  }
}

let stopping = false;

/** STOPPING=1, once: at the start of a shutdown, or at exit when nothing announced one. */
export function sdNotifyStopping(): void {
  if (stopping) return;
  stopping = true;
  sdNotify('STOPPING=1');
}

/** A listening socket systemd handed over (LISTEN_FDS): its fd and, for a Unix socket, its path. */
export interface InheritedSocket {
  fd: number;
  /** the Unix socket's path (from /proc/net/unix), null for TCP or when unknown */
  unixPath: string | null;
}

const SD_LISTEN_FDS_START = 3;

/**
 * The sockets of socket activation: LISTEN_FDS fds from 3 on, when LISTEN_PID is this process
 * (sd_listen_fds). The variables are removed so that no child process takes them for its own.
 */
export function takeListenFds(): InheritedSocket[] {
  const pid = Number(process.env.LISTEN_PID);
  const n = Number(process.env.LISTEN_FDS);
  delete process.env.LISTEN_PID;
  delete process.env.LISTEN_FDS;
  delete process.env.LISTEN_FDNAMES;
  if (pid !== process.pid || !Number.isInteger(n) || n <= 0) return [];
  const out: InheritedSocket[] = [];
  for (let fd = SD_LISTEN_FDS_START; fd < SD_LISTEN_FDS_START + n; fd++) out.push({ fd, unixPath: unixPathOfFd(fd) });
  return out;
}

/**
 * node cannot tell the path of a Unix socket it did not bind (server.address() is null), so
 * it is read where ss(8) reads it: the socket's inode from /proc/self/fd, its path from
 * /proc/net/unix.
 */
function unixPathOfFd(fd: number): string | null {
  try {
    const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/self/fd/${fd}`));
    if (m === null) return null;
    for (const line of fs.readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      // abstract names are shown with a leading @
      if (f[6] === m[1]) return f[7] === undefined ? null : f[7].startsWith('@') ? `\0${f[7].slice(1)}` : f[7];
    }
  } catch { /* not Linux, or no such fd */ }
  return null;
}
