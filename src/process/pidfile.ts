// pidfile handling, as PgBouncer does it: refuse to start if it names a live process, remove a
// stale one, create it exclusively once listening, remove it at exit.
import fs from 'node:fs';
import { log } from '../log/logger.js';

export class PidfileError extends Error {}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Before starting: an existing pidfile of a live (or unreadable) process stops us. */
export function checkPidfile(path: string): void {
  if (!path) return;
  let text: string;
  try {
    text = fs.readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new PidfileError(`pidfile '${path}' exists, another instance running?`);
  }
  const pid = Number.parseInt(text.trim(), 10);
  if (!Number.isInteger(pid) || pid <= 0 || alive(pid)) {
    throw new PidfileError(`pidfile '${path}' exists, another instance running?`);
  }
  log.log('stale pidfile, removing');
  fs.unlinkSync(path);
}

let written: string | null = null;

export function writePidfile(path: string): void {
  if (!path) return;
  const fd = fs.openSync(path, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o644);
  fs.writeSync(fd, `${process.pid}\n`);
  fs.closeSync(fd);
  written = path;
}

export function removePidfile(): void {
  if (written === null) return;
  try {
    fs.unlinkSync(written);
  } catch { /* gone */ }
  written = null;
}
