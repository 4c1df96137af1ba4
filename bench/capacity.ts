// The capacity part of `npm run bench`: how many transactions one pooler core carries when the
// pooler is the bottleneck (many clients, a trivial query), for pgbun on each runtime, the bare
// byte pipe of each runtime (the floor: what any proxy on that runtime's sockets costs) and
// PgBouncer, in the same run, interleaved. Where the machine has more than one CPU, each
// contestant is pinned to the last one and pgbench to the others (taskset), so that the pooler
// does not share its core with the load generator; what it could carry on a whole core is
// then TPS / (its CPU use in cores).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pgbench, type ConnOpts } from '../test/lib/clients.js';
import type { TestPostgres } from '../test/lib/postgres.js';
import { freePort } from '../test/lib/procs.js';
import { DB_FOR_MODE, POOL, setPgbunRuntime, startPooler, throughputIni } from './poolers.js';
import { cpuTimes } from './sysinfo.js';

/** The bare pipe: each client connection copied byte for byte to its own PostgreSQL connection. */
export const PIPE = `
const net = require('node:net');
const [lport, tport] = [+process.argv[2], +process.argv[3]];
net.createServer({ noDelay: true }, (c) => {
  const up = net.connect({ host: '127.0.0.1', port: tport, noDelay: true });
  c.on('data', (d) => up.write(d));
  up.on('data', (d) => c.write(d));
  c.on('close', () => up.destroy()); up.on('close', () => c.destroy());
  c.on('error', () => {}); up.on('error', () => {});
}).listen(lport, '127.0.0.1', () => process.stdout.write('up\\n'));
`;

/** Start the pipe (a file, not -e, so that node and Bun run the very same thing) under `runtime`. */
export async function startPipe(runtime: string, script: string, port: number, target: number): Promise<ChildProcess> {
  const p = spawn(runtime, [script, String(port), String(target)], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    p.once('exit', (code) => reject(new Error(`${runtime} pipe exited (${code})`)));
    p.stdout!.once('data', () => resolve());
  });
  return p;
}

export interface CapacityRow {
  name: string;
  runtime: string;
  kind: 'pgbun' | 'pipe' | 'pgbouncer';
  transactions: number;
  seconds: number;
  cpuSec: number;
  tps: number;
  /** the pooler's CPU use, in cores (1.0 = one core busy all the time) */
  cores: number;
  /** TPS / cores: what one pooler core carries */
  tpsPerCore: number;
  usPerTx: number;
  /** pgbun only: usPerTx over the bare pipe's of the same runtime */
  vsPipe: number | null;
  failed: number;
}

export interface CapacityResult {
  clients: number;
  /** e.g. "pooler on CPU 1, pgbench on CPU 0", or why nothing was pinned */
  pinning: string;
  rows: CapacityRow[];
}

function taskset(args: string[]): boolean {
  return spawnSync('taskset', args, { stdio: 'ignore' }).status === 0;
}

/**
 * Measure: pgbun (node, and Bun when `bun` is given), each runtime's pipe and PgBouncer, `rounds`
 * times each in alternating order, pgbench -c `clients` of `SELECT 1` in transaction mode.
 */
export async function measureCapacity(
  pg: TestPostgres,
  db: string,
  o: { duration: number; rounds: number; clients: number; pgbouncer: string; bun: string | null; userlist: Array<[string, string]>; password: string; user: string },
  say: (s: string) => void,
): Promise<CapacityResult> {
  const cpus = os.availableParallelism();
  const hasTaskset = spawnSync('taskset', ['-V'], { stdio: 'ignore' }).status === 0;
  const pin = cpus >= 2 && hasTaskset;
  const poolerCpu = String(cpus - 1);
  const loadCpus = cpus === 2 ? '0' : `0-${cpus - 2}`;
  const pinning = pin ? `pooler on CPU ${poolerCpu}, pgbench (and this process) on CPU ${loadCpus}` : cpus < 2 ? 'none: one CPU' : 'none: no taskset';

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgbun-capacity-'));
  const script = path.join(dir, 'pipe.cjs');
  fs.writeFileSync(script, PIPE);
  const sql = path.join(dir, 'select1.sql');
  fs.writeFileSync(sql, 'SELECT 1;\n');
  const ini = throughputIni(pg, db, {});
  const stops: Array<() => unknown> = [() => fs.rmSync(dir, { recursive: true, force: true })];
  const targets: Array<{ name: string; runtime: string; kind: CapacityRow['kind']; conn: ConnOpts; pid: number }> = [];
  const pooled = (port: number): ConnOpts => ({ host: '127.0.0.1', port, user: o.user, password: o.password, database: DB_FOR_MODE.tx });
  try {
    const runtimes: Array<[string, string | null]> = [['node', null], ...(o.bun !== null ? [['Bun', o.bun] as [string, string]] : [])];
    for (const [label, runtime] of runtimes) {
      setPgbunRuntime(runtime);
      const s = await startPooler('pgbun', o.pgbouncer, ini, o.userlist, 4096);
      stops.push(() => s.handle.stop());
      targets.push({ name: `pgbun on ${label}`, runtime: label, kind: 'pgbun', conn: pooled(s.handle.port), pid: s.pid });
      const port = await freePort();
      const p = await startPipe(runtime ?? process.execPath, script, port, pg.port);
      stops.push(() => p.kill());
      targets.push({ name: `${label} pipe`, runtime: label, kind: 'pipe', conn: { ...pooled(port), database: db }, pid: p.pid! });
    }
    setPgbunRuntime(null);
    const b = await startPooler('pgbouncer', o.pgbouncer, ini, o.userlist, 4096);
    stops.push(() => b.handle.stop());
    targets.push({ name: 'PgBouncer', runtime: 'C', kind: 'pgbouncer', conn: pooled(b.handle.port), pid: b.pid });

    if (pin) {
      for (const t of targets) taskset(['-a', '-p', '-c', poolerCpu, String(t.pid)]);
      // pgbench inherits this process's CPUs
      taskset(['-a', '-p', '-c', loadCpus, String(process.pid)]);
      stops.push(() => taskset(['-a', '-p', '-c', `0-${cpus - 1}`, String(process.pid)]));
    }
    const sums = new Map(targets.map((t) => [t.name, { tx: 0, seconds: 0, cpu: 0, failed: 0 }]));
    // a pipe gives each client a PostgreSQL backend of its own: it gets as many clients as the
    // poolers have servers, so that PostgreSQL does the same work behind each contestant
    const args = (t: { kind: CapacityRow['kind'] }): string[] =>
      ['-n', '-f', sql, '-c', String(t.kind === 'pipe' ? POOL.txPoolSize : o.clients), '-j', '2', '-T', String(o.duration)];
    for (let r = 0; r < o.rounds; r++) {
      for (const t of r % 2 === 0 ? targets : [...targets].reverse()) {
        const before = cpuTimes(t.pid);
        const t0 = Date.now();
        const res = await pgbench(t.conn, args(t));
        const seconds = (Date.now() - t0) / 1000;
        const after = cpuTimes(t.pid);
        const s = sums.get(t.name)!;
        const tx = res.summary.transactions ?? 0;
        s.tx += tx;
        s.seconds += seconds;
        s.cpu += before && after ? after.user + after.sys - before.user - before.sys : 0;
        const ok = res.code === 0 && tx > 0;
        s.failed += ok ? res.summary.failed ?? 0 : 1;
        say(`  ${t.name.padEnd(14)} tps ${(tx / seconds).toFixed(0).padStart(7)}  cpu ${((after?.user ?? 0) + (after?.sys ?? 0) - (before?.user ?? 0) - (before?.sys ?? 0)).toFixed(2)} s` +
          (ok ? '' : `  FAILED: ${(res.stderr + res.stdout).trim().split('\n').slice(-3).join(' / ')}`));
      }
    }
    const rows: CapacityRow[] = targets.map((t) => {
      const s = sums.get(t.name)!;
      const cores = s.seconds > 0 ? s.cpu / s.seconds : 0;
      const tps = s.seconds > 0 ? s.tx / s.seconds : 0;
      return {
        name: t.name, runtime: t.runtime, kind: t.kind, transactions: s.tx, seconds: s.seconds, cpuSec: s.cpu, tps, cores,
        tpsPerCore: cores > 0 ? tps / cores : 0, usPerTx: s.tx > 0 ? (s.cpu / s.tx) * 1e6 : 0, vsPipe: null, failed: s.failed,
      };
    });
    for (const r of rows) {
      const pipe = rows.find((p) => p.kind === 'pipe' && p.runtime === r.runtime);
      if (r.kind === 'pgbun' && pipe && pipe.usPerTx > 0) r.vsPipe = r.usPerTx / pipe.usPerTx;
    }
    return { clients: o.clients, pinning, rows };
  } finally {
    setPgbunRuntime(null);
    for (const stop of stops.reverse()) await stop();
  }
}

/** The Markdown section for a capacity result. */
export function capacityMarkdown(c: CapacityResult): string[] {
  const f = (n: number, d = 0): string => n.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d });
  const out = [
    '## Capacity: one pooler core',
    '',
    `pgbench -c ${c.clients} -j 2 of \`SELECT 1\` in transaction mode (pool_size ${POOL.txPoolSize}); the pipes, straight to PostgreSQL, with ` +
      `-c ${POOL.txPoolSize} (a backend per client: as many as the poolers use). Pinning: ${c.pinning}. ` +
      `Cores = the pooler's CPU seconds over the run's seconds; TPS per core = TPS / cores. ` +
      'The pipe of a runtime copies bytes and does nothing else: pgbun\'s CPU per transaction over its runtime\'s pipe is what pooling costs.',
    '',
    '| contestant | TPS | cores used | **TPS per core** | CPU µs per tx | **× its runtime\'s pipe** | failed |',
    '|---|--:|--:|--:|--:|--:|--:|',
  ];
  for (const r of c.rows) {
    out.push(`| ${r.name} | ${f(r.tps)} | ${f(r.cores, 2)} | **${f(r.tpsPerCore)}** | ${f(r.usPerTx, 1)} | ${r.vsPipe === null ? '' : `**${f(r.vsPipe, 2)}**`} | ${r.failed} |`);
  }
  return out;
}
