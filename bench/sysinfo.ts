// What the benchmark reads off the machine and off the processes it measures: CPU time and RSS
// from /proc, the fd limits, and a description of the machine for the results' header.

import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';

/** Clock ticks per second, the unit of utime/stime in /proc/PID/stat. */
export const CLK_TCK: number = (() => {
  try {
    const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    return n > 0 ? n : 100;
  } catch {
    return 100;
  }
})();

/** utime and stime of a process (all its threads) in seconds, null when it is gone. */
export function cpuTimes(pid: number): { user: number; sys: number } | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // fields after "pid (comm) ": index 0 is field 3 (state), so utime (14) is 11, stime (15) 12
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { user: Number(f[11]) / CLK_TCK, sys: Number(f[12]) / CLK_TCK };
  } catch {
    return null;
  }
}

/**
 * utime + stime per thread name (/proc/PID/task/TID/comm) in seconds: shows where a process's CPU
 * goes beyond its main thread (V8's GC helpers, libuv's pool for crypto and fs, log workers).
 * Threads that exit between two readings are lost; for long-lived pools that does not matter.
 */
export function cpuByThread(pid: number): Record<string, number> {
  const out: Record<string, number> = {};
  let tids: string[];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const comm = tid === String(pid) ? 'main' : fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out[comm] = (out[comm] ?? 0) + (Number(f[11]) + Number(f[12])) / CLK_TCK;
    } catch {
      /* the thread just exited */
    }
  }
  return out;
}

/** after − before per thread name (names only in `after` count from zero). */
export function diffThreads(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) {
    const d = Math.round((v - (before[k] ?? 0)) * 1000) / 1000;
    if (d > 0) out[k] = d;
  }
  return out;
}

/** A "kB" line of /proc/PID/status (VmRSS, VmHWM, ...) in bytes, null when unknown. */
export function procStatusBytes(pid: number, key: string): number | null {
  try {
    const m = new RegExp(`^${key}:\\s*(\\d+) kB`, 'm').exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

export const rssBytes = (pid: number): number | null => procStatusBytes(pid, 'VmRSS');

/** The hard limit on open files this process (and so its children) may raise the soft one to. */
export function hardNofile(): number {
  try {
    const v = execFileSync('sh', ['-c', 'ulimit -Hn'], { encoding: 'utf8' }).trim();
    return v === 'unlimited' ? 1 << 20 : Number(v);
  } catch {
    return 1024;
  }
}

/**
 * A command prefix that runs `cmd` with the open-files limit raised to `want` (capped at the hard
 * limit: raising the hard limit needs CAP_SYS_RESOURCE). `exec` keeps the pid, so the pid we
 * spawn is the pid we measure.
 */
export function withNofile(want: number, cmd: string[]): { command: string[]; limit: number } {
  const limit = Math.min(want, hardNofile());
  return { command: ['sh', '-c', `ulimit -n ${limit} && exec "$0" "$@"`, ...cmd], limit };
}

export interface MachineInfo {
  date: string;
  hostname: string;
  nproc: number;
  cpuModel: string;
  memTotalGiB: number;
  kernel: string;
  os: string;
  node: string;
  /** what pgbun ran on (absent in results from before --pgbun-runtime: Node.js) */
  pgbunRuntime?: string;
  pgbouncer: string;
  postgres: string;
  pgbench: string;
  nofileHard: number;
  loadavgAtStart: number[];
}

function firstLine(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).split('\n')[0].trim();
  } catch (e) {
    return `unknown (${(e as Error).message.split('\n')[0]})`;
  }
}

export function machineInfo(bins: { pgbouncer: string; pgbench: string }, postgresVersion: string): MachineInfo {
  let cpuModel = 'unknown';
  try {
    cpuModel = /^model name\s*:\s*(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown';
  } catch {
    cpuModel = os.cpus()[0]?.model ?? 'unknown';
  }
  let osName = `${os.type()} ${os.release()}`;
  try {
    osName = /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(fs.readFileSync('/etc/os-release', 'utf8'))?.[1] ?? osName;
  } catch {
    /* keep uname */
  }
  return {
    date: new Date().toISOString(),
    hostname: os.hostname(),
    nproc: os.availableParallelism?.() ?? os.cpus().length,
    cpuModel,
    memTotalGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: os.release(),
    os: osName,
    node: process.version,
    pgbouncer: firstLine(bins.pgbouncer, ['--version']),
    postgres: postgresVersion,
    pgbench: firstLine(bins.pgbench, ['--version']),
    nofileHard: hardNofile(),
    loadavgAtStart: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}
