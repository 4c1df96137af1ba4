// -d / --daemon. Node cannot fork(), so the parent starts a detached copy of itself (new session,
// stdio to /dev/null, like PgBouncer's double fork + setsid) and waits on a pipe until the child
// is listening: unlike PgBouncer, a daemon that fails to start still makes `pgbun -d` exit 1
// with the reason.
import { spawn } from 'node:child_process';
import fs from 'node:fs';

const CHILD_ENV = 'PGBUN_DAEMON_CHILD';
const NOTIFY_FD = 3;

export function isDaemonChild(): boolean {
  return process.env[CHILD_ENV] === '1';
}

/** Start the daemon child and exit with its startup result. */
export function daemonize(args: string[]): Promise<never> {
  // a single executable has no script path to pass: node's SEA puts its own path in argv[1],
  // Bun's (`bun build --compile`) a path inside its embedded file system, /$bunfs/
  const a1 = process.argv[1];
  const script = a1 !== undefined && a1 !== process.execPath && !a1.startsWith('/$bunfs/') ? [a1] : [];
  const child = spawn(process.execPath, [...process.execArgv, ...script, ...args], {
    detached: true,
    stdio: ['ignore', 'ignore', 'ignore', 'pipe'],
    env: { ...process.env, [CHILD_ENV]: '1' },
  });
  return new Promise(() => {
    let out = '';
    const pipe = child.stdio[NOTIFY_FD] as NodeJS.ReadableStream;
    pipe.setEncoding('utf8');
    pipe.on('data', (d: string) => {
      out += d;
    });
    pipe.on('end', () => {
      if (out.startsWith('OK')) {
        child.unref();
        process.exit(0);
      }
      const reason = out.startsWith('ERR ') ? out.slice(4).trim() : 'daemon exited during startup';
      process.stderr.write(`pgbun: ${reason}\n`);
      process.exit(1);
    });
  });
}

/** In the daemon child: report the startup result to the waiting parent. */
export function notifyParent(ok: boolean, message = ''): void {
  if (!isDaemonChild()) return;
  try {
    fs.writeSync(NOTIFY_FD, ok ? 'OK\n' : `ERR ${message}\n`);
    fs.closeSync(NOTIFY_FD);
  } catch { /* parent gone */ }
}
