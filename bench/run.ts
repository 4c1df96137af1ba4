// `npm run bench`: pgbun against PgBouncer on this machine, in the same run (see bench/README.md).
//
// 1. A private PostgreSQL 15 with a pgbench database, and both poolers with the same config.
// 2. Each case runs through both poolers in A/B pairs whose order alternates (A B, B A, ...), so
//    drift of a shared, noisy machine hits both alike; the same pgbench directly against
//    PostgreSQL gives the ceiling.
// 3. Memory: fresh poolers holding 1,000 and 10,000 idle clients.
// 4. Capacity: the pooler-bound case (many clients, a trivial query), pgbun with workers = 1, 2,
//    ... on node and on Bun next to each runtime's bare pipe and PgBouncer (bench/capacity.ts).
// 5. bench/results/<timestamp>.{json,md}; the Markdown is printed.

import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ConnOpts } from '../test/lib/clients.js';
import { pgBin, startPostgres, type TestPostgres } from '../test/lib/postgres.js';
import { REPO_ROOT } from '../test/lib/procs.js';
import { measureCapacity, type CapacityResult } from './capacity.js';
import { measureMemory, type MemoryResult } from './memory.js';
import { HELP, UsageError, parseOptions, selectCases, type BenchCase, type Options } from './options.js';
import { runPgbench, type RunResult, type RunTarget } from './pgbench-run.js';
import {
  DB_FOR_MODE,
  LABEL,
  POOL,
  POOLERS,
  ensurePgbouncer,
  pgbouncerVersion,
  pgbunRuntimeName,
  setPgbunRuntime,
  startPooler,
  throughputIni,
  type PoolerName,
  type Started,
} from './poolers.js';
import { checkGoals, markdown, summarizeCase, summarizeMemory, fmtRatio, threadShares, type Results } from './report.js';
import { machineInfo } from './sysinfo.js';

const ROLE = { user: 'scram_user', password: 'scram_pass' };
/** clients of the capacity part: enough that the pooler, not the clients, is the limit */
const CAPACITY_CLIENTS = 100;

const say = (s: string): void => void process.stderr.write(s + '\n');

function gitRevision(): string {
  try {
    const rev = execFileSync('git', ['-C', REPO_ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execFileSync('git', ['-C', REPO_ROOT, '--no-optional-locks', 'status', '--porcelain', '--', 'src'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
    return dirty ? `${rev} + uncommitted changes in src/` : rev;
  } catch {
    return 'unknown';
  }
}

function stamp(d: Date): string {
  const p = (n: number): string => String(n).padStart(2, '0');
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

/** The key of a direct run: the pool mode does not matter without a pooler. */
const directKey = (c: BenchCase): string => c.id.replace(/^(tx|session) /, '');

class Contestants {
  readonly started = new Map<PoolerName, Started>();
  readonly crashes: string[] = [];

  constructor(
    private readonly pg: TestPostgres,
    private readonly db: string,
    private readonly o: Options,
    private readonly secret: string,
    private readonly maxPreparedStatements: number,
  ) {}

  async start(name: PoolerName): Promise<Started> {
    const ini = throughputIni(this.pg, this.db, { maxPreparedStatements: this.maxPreparedStatements });
    const s = await startPooler(name, this.o.pgbouncer, ini, [[ROLE.user, this.secret]], POOL.maxClientConn + 200, this.o.pgbunNodeArgs);
    this.started.set(name, s);
    return s;
  }

  /** False (and the crash recorded) when the pooler has died since it was started. */
  alive(name: PoolerName): boolean {
    const s = this.started.get(name);
    if (!s) return false;
    if (s.handle.proc.exitCode === null && s.handle.proc.signalCode === null) return true;
    const why = `${LABEL[name]} (pid ${s.pid}) exited (code ${s.handle.proc.exitCode}, signal ${s.handle.proc.signalCode}); ` +
      `stderr: ${s.handle.stderr().slice(-1500)} log: ${s.handle.log().slice(-1500)}`;
    this.crashes.push(why);
    this.started.delete(name);
    say(`bench: ${why}`);
    return false;
  }

  /** The running pooler; restarted when it died. */
  async get(name: PoolerName): Promise<Started> {
    if (this.alive(name)) return this.started.get(name)!;
    return this.start(name);
  }

  target(s: Started, mode: BenchCase['mode']): RunTarget {
    return { name: s.name, conn: s.handle.conn(ROLE.user, ROLE.password, DB_FOR_MODE[mode]), pid: s.pid, log: () => s.handle.log() };
  }

  async stopAll(): Promise<void> {
    for (const s of this.started.values()) await s.handle.stop();
    this.started.clear();
  }
}

function line(r: RunResult): string {
  const f = (n: number | null, d = 0): string => (n === null ? '–' : n.toFixed(d));
  return `  ${LABEL[r.target as PoolerName | 'direct'].padEnd(10)} tps ${f(r.tps).padStart(7)}  avg ${f(r.latencyAvgMs, 2).padStart(7)} ms  ` +
    `p99 ${f(r.latencyP99Ms, 2).padStart(7)} ms` + (r.cpuSecPer1000Tx !== null ? `  cpu ${f(r.cpuSecPer1000Tx, 3)} s/1k tx` +
      (r.cpuSec && r.cpuSysSec !== null ? ` (sys ${Math.round((100 * r.cpuSysSec) / r.cpuSec)}%)` : '') : '') +
    (r.cpuByThread && r.cpuSec ? `  [${threadShares(r.cpuByThread, r.cpuSec)}]` : '') +
    (r.ok ? '' : `  FAILED: ${r.problems.join('; ')}`) + (r.poolerLogIssues.length ? `  log: ${r.poolerLogIssues[0]}` : '');
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2), REPO_ROOT);
  if (o.help) return void process.stdout.write(HELP);
  const wallStart = Date.now();

  if (o.pgbunRuntime !== null) {
    if (!fs.existsSync(o.pgbunRuntime)) throw new UsageError(`--pgbun-runtime: ${o.pgbunRuntime} not found`);
    setPgbunRuntime(o.pgbunRuntime);
  }
  ensurePgbouncer(o.pgbouncer);
  const [maj, min] = pgbouncerVersion(o.pgbouncer);
  const pgbouncerHasPrepared = maj > 1 || (maj === 1 && min >= 21);
  const txPrepared = o.txPrepared === 'auto' ? pgbouncerHasPrepared : o.txPrepared;
  if (txPrepared && !pgbouncerHasPrepared) throw new Error(`--tx-prepared=on: PgBouncer ${maj}.${min} has no max_prepared_statements (1.21+)`);
  const sel = selectCases(o, txPrepared);
  const directKeys = new Set(sel.cases.map(directKey));
  const pgRuns = sel.cases.length * o.rounds * 2 + (o.direct ? directKeys.size * o.rounds : 0);
  say(`bench: ${sel.cases.length} pgbench cases × ${o.rounds} pair(s) (${pgRuns} runs of ${o.duration} s)` +
    `${sel.memory ? `, memory with ${o.memoryClients.join(' and ')} idle clients` : ''}; ` +
    `${pgRuns * o.duration} s of pgbench, plus setup`);

  say('bench: starting PostgreSQL');
  const pg = await startPostgres({ conf: { shared_buffers: '256MB', max_connections: 400 } });
  const pgVersion = (await pg.query<{ server_version: string }>('SHOW server_version'))[0].server_version;
  const revision = gitRevision();
  const machine = machineInfo({ pgbouncer: o.pgbouncer, pgbench: pgBin('pgbench') }, pgVersion);
  machine.pgbunRuntime = pgbunRuntimeName();
  const runs: RunResult[] = [];
  const directRuns = new Map<string, RunResult[]>();
  let contestants: Contestants | null = null;
  let configShown: Record<string, unknown> = {};
  try {
    let db = '';
    let secret = '';
    if (sel.cases.length > 0 || sel.capacity) {
      say(`bench: pgbench -i -s ${o.scale}`);
      db = await pg.ensurePgbench(o.scale);
      secret = await pg.secretOf(ROLE.user);
    }
    if (sel.cases.length > 0) {
      const mps = txPrepared ? 200 : 0;
      contestants = new Contestants(pg, db, o, secret, mps);
      for (const name of POOLERS) await contestants.start(name);
      configShown = {
        throughput: throughputIni(pg, db, { maxPreparedStatements: mps }),
        userlist: `"${ROLE.user}" "<SCRAM secret from pg_authid>"`,
        poolers: Object.fromEntries([...contestants.started.values()].map((s) => [s.name, { command: s.handle.command.join(' '), comm: s.comm, nofile: s.nofile }])),
      };
      const direct: ConnOpts = { host: pg.host, port: pg.port, user: ROLE.user, password: ROLE.password, database: db };

      if (o.warmup > 0) {
        say(`bench: warm-up, ${o.warmup} s through each`);
        const w: BenchCase = { id: 'warm-up', mode: 'tx', script: 'select', proto: 'simple', clients: 10, connect: false };
        for (const name of POOLERS) await runPgbench(pg, db, contestants.target(await contestants.get(name), 'tx'), w, 0, o.warmup, false);
        await runPgbench(pg, db, { name: 'direct', conn: direct }, w, 0, o.warmup, false);
      }

      let pair = 0;
      for (const [i, c] of sel.cases.entries()) {
        say(`bench: [${i + 1}/${sel.cases.length}] ${c.id}`);
        const dk = directKey(c);
        // The ceiling runs with the first case that has this pgbench command line (the pool
        // mode does not matter without a pooler), inside its pairs: A B D, D B A, ...
        const withDirect = o.direct && !directRuns.has(dk);
        if (withDirect) directRuns.set(dk, []);
        for (let round = 0; round < o.rounds; round++) {
          const even = pair++ % 2 === 0;
          const order: Array<PoolerName | 'direct'> = even ? ['pgbun', 'pgbouncer'] : ['pgbouncer', 'pgbun'];
          if (withDirect) even ? order.push('direct') : order.unshift('direct');
          for (const name of order) {
            if (name === 'direct') {
              const r = await runPgbench(pg, db, { name: 'direct', conn: direct }, c, round, o.duration, o.verbose);
              directRuns.get(dk)!.push(r);
              say(line(r));
              continue;
            }
            const s = await contestants.get(name);
            const r = await runPgbench(pg, db, contestants.target(s, c.mode), c, round, o.duration, o.verbose);
            runs.push(r);
            say(line(r));
          }
        }
        const sum = summarizeCase(c, runs, directRuns.get(dk) ?? null);
        say(`  → TPS ratio ${fmtRatio(sum.ratio.tps)}, CPU ratio ${fmtRatio(sum.ratio.cpuPerTx)}`);
      }
      for (const name of POOLERS) contestants.alive(name); // record a crash in the last run, too
      await contestants.stopAll();
    }

    const memoryRuns: MemoryResult[] = [];
    if (sel.memory) {
      let k = 0;
      for (const n of o.memoryClients) {
        const order: PoolerName[] = k++ % 2 === 0 ? ['pgbun', 'pgbouncer'] : ['pgbouncer', 'pgbun'];
        for (const name of order) {
          say(`bench: memory, ${LABEL[name]} with ${n} idle clients`);
          const m = await measureMemory(pg, name, o.pgbouncer, n);
          memoryRuns.push(m);
          say(`  baseline ${m.baselineRss} B, with clients ${m.rss} B, ${m.bytesPerClient} B per client, logins took ${m.loginMs} ms` +
            (m.problems.length ? `  PROBLEMS: ${m.problems.join('; ')}` : ''));
        }
      }
    }

    let capacity: CapacityResult | null = null;
    if (sel.capacity) {
      const bun = path.join(REPO_ROOT, 'node_modules', '.bin', 'bun');
      say(`bench: capacity, pgbun on node${fs.existsSync(bun) ? ' and on Bun' : ''} with workers ${o.workers?.join(', ') ?? '1, 2, ...'}, ` +
        `the bare pipes and PgBouncer, -c ${CAPACITY_CLIENTS}`);
      capacity = await measureCapacity(pg, db, {
        // at least 10 s: the logins of 100 clients and a runtime's idle work must not dominate
        duration: Math.max(o.duration, 10), warmup: Math.max(o.warmup, 2), rounds: o.rounds, clients: CAPACITY_CLIENTS,
        poolSize: o.capacityPool, workers: o.workers, poolerCpus: o.poolerCpus, rate: o.capacityRate,
        pgbouncer: o.pgbouncer, bun: fs.existsSync(bun) ? bun : null,
        userlist: [[ROLE.user, secret]], user: ROLE.user, password: ROLE.password,
      }, say);
    }

    const cases = sel.cases.map((c) => summarizeCase(c, runs, directRuns.get(directKey(c)) ?? null));
    const memory = summarizeMemory(memoryRuns);
    const results: Results = {
      machine,
      options: { ...o, txPreparedEffective: txPrepared },
      config: { ...configShown, pgbunRevision: revision, pool: POOL },
      wallSeconds: (Date.now() - wallStart) / 1000,
      cases,
      memory,
      capacity,
      goals: checkGoals(cases, memory, capacity),
      runs: [...runs, ...[...directRuns.values()].flat()],
      memoryRuns,
      crashes: contestants?.crashes ?? [],
    };
    const md = markdown(results);
    fs.mkdirSync(o.outDir, { recursive: true });
    const base = path.join(o.outDir, stamp(new Date(wallStart)) + (o.quick ? '-quick' : ''));
    fs.writeFileSync(base + '.json', JSON.stringify(results, null, 2) + '\n');
    fs.writeFileSync(base + '.md', md + '\n');
    process.stdout.write('\n' + md + '\n');
    say(`bench: wrote ${base}.json and ${base}.md (${Math.round(results.wallSeconds)} s)`);
  } finally {
    if (contestants) await contestants.stopAll().catch(() => {});
    await pg.stop();
  }
}

main().catch((e) => {
  if (e instanceof UsageError) {
    process.stderr.write(`bench: ${e.message}\n`);
    process.exitCode = 2;
    return;
  }
  process.stderr.write(`bench: ${(e as Error).stack ?? e}\n`);
  process.exitCode = 1;
});
