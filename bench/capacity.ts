// The capacity part of `npm run bench`: how many transactions pgbun carries when the pooler is
// the bottleneck (many clients, a trivial query, transaction pooling), and how that grows with
// `workers`: pgbun with workers = 1, 2, 4, ... on each runtime (node and Bun), the bare byte pipe
// of each runtime (the floor: what any proxy on that runtime's sockets costs) and one PgBouncer
// process, in the same run, interleaved. Where the machine has more than one CPU, the poolers are
// pinned to the last CPUs and pgbench and PostgreSQL to the others (taskset), so that the pooler
// does not share its cores with the load; what it could carry on a whole core is then
// TPS / (its CPU use in cores).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pgbench, type ConnOpts } from '../test/lib/clients.js';
import { pgConnstr, type IniSpec } from '../test/lib/pgbun.js';
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
  /** pgbun's `workers` (null for the others) */
  workers: number | null;
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
  /** PostgreSQL backends open to the database at the end of the runs (most over the rounds) */
  servers: number;
  /** pgbun only: TPS over the same runtime's pgbun with workers = 1 (the scaling factor) */
  scaling: number | null;
  /** TPS over PgBouncer's (one process) */
  vsPgbouncer: number | null;
  failed: number;
}

export interface CapacityResult {
  clients: number;
  poolSize: number;
  /** pgbench -c of the pipes */
  pipeClients: number;
  /** pgbench -j */
  threads: number;
  /** pgbench -R, when every contestant got the same rate */
  rate: number | null;
  cpus: number;
  /** CPUs the poolers had to themselves (0: not pinned, they shared every CPU with the load) */
  poolerCpus: number;
  /** e.g. "pooler on CPU 1, pgbench and PostgreSQL on CPU 0", or why nothing was pinned */
  pinning: string;
  loadavgAtStart: number[];
  rows: CapacityRow[];
}

export interface CapacityOptions {
  duration: number;
  /** seconds of unmeasured pgbench through each freshly started contestant first */
  warmup: number;
  rounds: number;
  clients: number;
  /** pool_size of the one pool (null: as many as there are clients) */
  poolSize: number | null;
  /** pgbun's `workers` values (null: defaultWorkers of the pooler's CPUs) */
  workers: number[] | null;
  /** CPUs for the pooler (null: half of them) */
  poolerCpus: number | null;
  /** pgbench -R: the same transaction rate for every contestant (null: as fast as it goes) */
  rate: number | null;
  pgbouncer: string;
  bun: string | null;
  userlist: Array<[string, string]>;
  password: string;
  user: string;
}

/** How the CPUs are split: the last ones for the pooler, the others for pgbench and PostgreSQL. */
export interface CpuSplit {
  pin: boolean;
  pooler: string;
  load: string;
  poolerCpus: number;
  loadCpus: number;
  why: string;
}

export function splitCpus(cpus: number, want: number | null, hasTaskset: boolean): CpuSplit {
  const all = cpus > 1 ? `0-${cpus - 1}` : '0';
  if (cpus < 2 || !hasTaskset) {
    return { pin: false, pooler: all, load: all, poolerCpus: 0, loadCpus: cpus, why: cpus < 2 ? 'none: one CPU' : 'none: no taskset' };
  }
  const k = Math.min(cpus - 1, Math.max(1, want ?? Math.floor(cpus / 2)));
  const range = (a: number, b: number): string => (a === b ? String(a) : `${a}-${b}`);
  const pooler = range(cpus - k, cpus - 1);
  const load = range(0, cpus - k - 1);
  return { pin: true, pooler, load, poolerCpus: k, loadCpus: cpus - k, why: `pooler on CPU ${pooler}, pgbench and PostgreSQL on CPU ${load}` };
}

/**
 * 1, 2, 4, ... and the pooler's CPUs themselves; always 1 and 2, so that a machine with one free
 * core still shows what a second event loop costs.
 */
export function defaultWorkers(poolerCpus: number): number[] {
  const top = Math.max(2, poolerCpus);
  const out: number[] = [];
  for (let n = 1; n < top; n *= 2) out.push(n);
  out.push(top);
  return out;
}

function taskset(args: string[]): boolean {
  return spawnSync('taskset', args, { stdio: 'ignore' }).status === 0;
}

/** A process and its children (PostgreSQL's postmaster and its backends), from /proc. */
function processTree(pid: number): number[] {
  const out = [pid];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) out.push(Number(d));
    } catch {
      /* gone */
    }
  }
  return out;
}

/** The one pool every pooler serves: transaction mode, `poolSize` servers, `workers` for pgbun. */
function capacityIni(pg: TestPostgres, db: string, poolSize: number, workers: number | null): IniSpec {
  const base = throughputIni(pg, db, {}) as Record<string, Record<string, string | number>>;
  return {
    databases: { [DB_FOR_MODE.tx]: pgConnstr(pg, { dbname: db, pool_mode: 'transaction', pool_size: poolSize }) },
    pgbouncer: { ...base.pgbouncer, default_pool_size: poolSize, ...(workers !== null ? { workers } : {}) },
  };
}

interface Running {
  pid: number;
  port: number;
  database: string;
  stop: () => Promise<unknown>;
}

interface Contestant {
  name: string;
  runtime: string;
  kind: CapacityRow['kind'];
  workers: number | null;
  start: () => Promise<Running>;
}

/**
 * Measure: pgbun (node, and Bun when `bun` is given) with each `workers` value, each runtime's
 * pipe and PgBouncer, `rounds` times each in alternating order, pgbench -c `clients` of
 * `SELECT 1` in transaction mode. Each run gets a freshly started contestant (no servers left
 * over from another run, and no idle pooler holding PostgreSQL backends), a warm-up, then the
 * measured pgbench.
 */
export async function measureCapacity(pg: TestPostgres, db: string, o: CapacityOptions, say: (s: string) => void): Promise<CapacityResult> {
  const cpus = os.availableParallelism();
  const split = splitCpus(cpus, o.poolerCpus, spawnSync('taskset', ['-V'], { stdio: 'ignore' }).status === 0);
  const workers = o.workers ?? defaultWorkers(split.poolerCpus);
  const poolSize = o.poolSize ?? o.clients;
  const pipeClients = Math.min(o.clients, POOL.txPoolSize);
  const threads = Math.min(o.clients, Math.max(2, split.loadCpus));
  const loadavgAtStart = os.loadavg().map((x) => Math.round(x * 100) / 100);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgbun-capacity-'));
  const script = path.join(dir, 'pipe.cjs');
  fs.writeFileSync(script, PIPE);
  const sql = path.join(dir, 'select1.sql');
  fs.writeFileSync(sql, 'SELECT 1;\n');
  const cleanup: Array<() => unknown> = [() => fs.rmSync(dir, { recursive: true, force: true })];

  const contestants: Contestant[] = [];
  const runtimes: Array<[string, string | null]> = [['node', null], ...(o.bun !== null ? [['Bun', o.bun] as [string, string]] : [])];
  for (const [label, runtime] of runtimes) {
    for (const n of workers) {
      contestants.push({
        name: n === 1 ? `pgbun on ${label}` : `pgbun on ${label}, ${n} workers`, runtime: label, kind: 'pgbun', workers: n,
        start: async () => {
          setPgbunRuntime(runtime);
          try {
            const s = await startPooler('pgbun', o.pgbouncer, capacityIni(pg, db, poolSize, n), o.userlist, 4096);
            // the main thread accepts before the worker threads are up; it says so once they are
            await s.handle.waitForLog(/LOG process up/, 60_000);
            return { pid: s.pid, port: s.handle.port, database: DB_FOR_MODE.tx, stop: () => s.handle.stop() };
          } finally {
            setPgbunRuntime(null);
          }
        },
      });
    }
    contestants.push({
      name: `${label} pipe`, runtime: label, kind: 'pipe', workers: null,
      start: async () => {
        const port = await freePort();
        const p = await startPipe(runtime ?? process.execPath, script, port, pg.port);
        const gone = new Promise((resolve) => p.once('exit', resolve));
        return { pid: p.pid!, port, database: db, stop: () => { p.kill(); return gone; } };
      },
    });
  }
  contestants.push({
    name: 'PgBouncer', runtime: 'C', kind: 'pgbouncer', workers: null,
    start: async () => {
      const s = await startPooler('pgbouncer', o.pgbouncer, capacityIni(pg, db, poolSize, null), o.userlist, 4096);
      return { pid: s.pid, port: s.handle.port, database: DB_FOR_MODE.tx, stop: () => s.handle.stop() };
    },
  });

  try {
    if (split.pin) {
      // pgbench inherits this process's CPUs; new PostgreSQL backends their postmaster's
      const all = `0-${cpus - 1}`;
      taskset(['-a', '-p', '-c', split.load, String(process.pid)]);
      cleanup.push(() => taskset(['-a', '-p', '-c', all, String(process.pid)]));
      for (const pid of processTree(pg.pid)) taskset(['-a', '-p', '-c', split.load, String(pid)]);
      cleanup.push(() => { for (const pid of processTree(pg.pid)) taskset(['-a', '-p', '-c', all, String(pid)]); });
    }
    const sums = new Map(contestants.map((c) => [c.name, { tx: 0, seconds: 0, cpu: 0, failed: 0, servers: 0 }]));
    // a pipe cannot multiplex: it gets as many clients as the bench's usual pool (each one a
    // backend), not 100 backends whose contention on shared cores would measure PostgreSQL
    // rather than the runtime's sockets
    const clients = (c: Contestant): number => (c.kind === 'pipe' ? pipeClients : o.clients);
    const args = (c: Contestant, seconds: number): string[] =>
      ['-n', '-f', sql, '-c', String(clients(c)), '-j', String(Math.min(threads, clients(c))), '-T', String(seconds),
        ...(o.rate !== null ? ['-R', String(o.rate)] : [])];
    const backends = async (): Promise<number> =>
      Number((await pg.query<{ n: string }>("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", 'postgres', [db]))[0]?.n ?? 0);
    for (let r = 0; r < o.rounds; r++) {
      for (const c of r % 2 === 0 ? contestants : [...contestants].reverse()) {
        const t = await c.start();
        try {
          if (split.pin) taskset(['-a', '-p', '-c', split.pooler, String(t.pid)]);
          const conn: ConnOpts = { host: '127.0.0.1', port: t.port, user: o.user, password: o.password, database: t.database };
          if (o.warmup > 0) await pgbench(conn, args(c, o.warmup));
          const before = cpuTimes(t.pid);
          const t0 = Date.now();
          const res = await pgbench(conn, args(c, o.duration));
          const seconds = (Date.now() - t0) / 1000;
          const after = cpuTimes(t.pid);
          const s = sums.get(c.name)!;
          s.servers = c.kind === 'pipe' ? clients(c) : Math.max(s.servers, await backends());
          const tx = res.summary.transactions ?? 0;
          const cpu = before && after ? after.user + after.sys - before.user - before.sys : 0;
          s.tx += tx;
          s.seconds += seconds;
          s.cpu += cpu;
          const ok = res.code === 0 && tx > 0;
          s.failed += ok ? res.summary.failed ?? 0 : 1;
          say(`  ${c.name.padEnd(26)} tps ${(tx / seconds).toFixed(0).padStart(7)}  cpu ${cpu.toFixed(2)} s` +
            `  ${tx > 0 ? ((cpu / tx) * 1e6).toFixed(1) : '–'} µs/tx` +
            (ok ? '' : `  FAILED: ${(res.stderr + res.stdout).trim().split('\n').slice(-3).join(' / ')}`));
        } finally {
          await t.stop();
        }
      }
    }
    const rows: CapacityRow[] = contestants.map((c) => {
      const s = sums.get(c.name)!;
      const cores = s.seconds > 0 ? s.cpu / s.seconds : 0;
      const tps = s.seconds > 0 ? s.tx / s.seconds : 0;
      return {
        name: c.name, runtime: c.runtime, kind: c.kind, workers: c.workers, transactions: s.tx, seconds: s.seconds, cpuSec: s.cpu, tps, cores,
        tpsPerCore: cores > 0 ? tps / cores : 0, usPerTx: s.tx > 0 ? (s.cpu / s.tx) * 1e6 : 0,
        servers: s.servers, vsPipe: null, scaling: null, vsPgbouncer: null, failed: s.failed,
      };
    });
    const bouncer = rows.find((x) => x.kind === 'pgbouncer');
    for (const r of rows) {
      if (bouncer && bouncer.tps > 0) r.vsPgbouncer = r.tps / bouncer.tps;
      if (r.kind !== 'pgbun') continue;
      const pipe = rows.find((p) => p.kind === 'pipe' && p.runtime === r.runtime);
      if (pipe && pipe.usPerTx > 0) r.vsPipe = r.usPerTx / pipe.usPerTx;
      const one = rows.find((p) => p.kind === 'pgbun' && p.runtime === r.runtime && p.workers === 1);
      if (one && one.tps > 0) r.scaling = r.tps / one.tps;
    }
    return { clients: o.clients, poolSize, pipeClients, threads, rate: o.rate, cpus, poolerCpus: split.poolerCpus, pinning: split.why, loadavgAtStart, rows };
  } finally {
    for (const f of cleanup.reverse()) await f();
  }
}

export interface CapacityGoal {
  goal: string;
  value: string;
  met: boolean | null;
}

const ratio = (x: number | null): string => (x === null ? '–' : x.toFixed(2));

/**
 * The capacity goals: CPU per transaction ≤ 1.15× the runtime's pipe; with N workers on N free
 * cores ≥ 0.8 × N × one worker's TPS; on ≥ 4 free cores a peak above one PgBouncer process.
 * What the machine cannot show (more workers than free cores) is reported, not judged.
 */
export function capacityGoals(c: CapacityResult): CapacityGoal[] {
  const goals: CapacityGoal[] = [];
  const free = c.poolerCpus;
  const pgbun = c.rows.filter((x) => x.kind === 'pgbun');
  for (const r of pgbun) {
    if (r.workers !== 1 && r.workers! > free) continue;
    goals.push({
      goal: `CPU per transaction of ${r.name} ≤ 1.15× its runtime's bare pipe (capacity part)`,
      value: r.vsPipe === null ? 'not measured' : `${ratio(r.vsPipe)}× (${r.usPerTx.toFixed(1)} µs per transaction)`,
      met: r.vsPipe === null ? null : r.failed === 0 && r.vsPipe <= 1.15,
    });
  }
  for (const r of pgbun) {
    if (r.workers === 1 || r.workers === null) continue;
    const n = r.workers;
    const goal = `${r.runtime}: TPS with ${n} workers ≥ 0.8 × ${n} × one worker's, on ${n} free cores`;
    if (r.scaling === null || c.rate !== null) goals.push({ goal, value: c.rate !== null ? `not measured: every contestant ran at -R ${c.rate}` : 'not measured', met: null });
    else if (n > free) {
      goals.push({
        goal, met: null,
        value: `not measurable here: ${free} free core(s) for the pooler; ${n} workers on them gave ${ratio(r.scaling)}× one worker's TPS (the cost of the extra loops on shared cores, not scaling)`,
      });
    } else goals.push({ goal, value: `${ratio(r.scaling)}× (target ${(0.8 * n).toFixed(1)}×)`, met: r.failed === 0 && r.scaling >= 0.8 * n });
  }
  const best = pgbun.reduce<CapacityRow | null>((a, r) => (a === null || r.tps > a.tps ? r : a), null);
  const goal = 'peak TPS of pgbun (any workers) above one PgBouncer process, on ≥ 4 free cores';
  if (best === null || best.vsPgbouncer === null || c.rate !== null) goals.push({ goal, value: 'not measured', met: null });
  else {
    const value = `${ratio(best.vsPgbouncer)}× PgBouncer (${best.name})`;
    goals.push(free >= 4 ? { goal, value, met: best.failed === 0 && best.vsPgbouncer > 1 } : { goal, value: `not measurable here (${free} free core(s) for the pooler): ${value}`, met: null });
  }
  return goals;
}

/** The Markdown section for a capacity result. */
export function capacityMarkdown(c: CapacityResult): string[] {
  const f = (n: number, d = 0): string => n.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d });
  const x = (v: number | null): string => (v === null ? '' : f(v, 2));
  const most = Math.max(0, ...c.rows.map((r) => r.workers ?? 0));
  const out = [
    '## Capacity: the pooler-bound case, and workers',
    '',
    `pgbench -c ${c.clients} -j ${c.threads}${c.rate !== null ? ` -R ${c.rate} (every contestant at the same rate: compare CPU, not TPS)` : ''} of \`SELECT 1\` in transaction mode, pool_size ${c.poolSize} (as many servers as clients: ` +
      'no pool limit, per loop or over all loops, is what bounds; the servers column is what each pooler opened), ' +
      `the pipes with -c ${c.pipeClients} (a backend per client: a pipe cannot multiplex). Every contestant is started afresh for each run and warmed up first. ${c.cpus} CPUs; pinning: ${c.pinning}; ` +
      `load average at the start ${c.loadavgAtStart.join(', ')}. ` +
      'Cores = the pooler\'s CPU seconds over the run\'s seconds; TPS per core = TPS / cores. The pipe of a runtime copies bytes and ' +
      'does nothing else: pgbun\'s CPU per transaction over its runtime\'s pipe is what pooling costs. × 1 worker = TPS over the same ' +
      'runtime\'s pgbun with workers = 1 (the scaling factor); × PgBouncer = TPS over one PgBouncer process.',
    '',
  ];
  if (most > c.poolerCpus) {
    out.push(`The pooler had ${c.poolerCpus === 0 ? 'no CPU of its own' : `${c.poolerCpus} CPU(s) of its own`}: rows with more workers ` +
      'than that run their loops on shared cores, so their × 1 worker is what the extra loops cost, not how pgbun scales.', '');
  }
  out.push(
    '| contestant | workers | TPS | cores used | **TPS per core** | CPU µs per tx | **× its runtime\'s pipe** | **× 1 worker** | × PgBouncer | servers | failed |',
    '|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|',
  );
  for (const r of c.rows) {
    out.push(`| ${r.name} | ${r.workers ?? ''} | ${f(r.tps)} | ${f(r.cores, 2)} | **${f(r.tpsPerCore)}** | ${f(r.usPerTx, 1)} | ` +
      `${r.vsPipe === null ? '' : `**${x(r.vsPipe)}**`} | ${r.scaling === null ? '' : `**${x(r.scaling)}**`} | ${x(r.vsPgbouncer)} | ${r.servers} | ${r.failed} |`);
  }
  return out;
}
