// From runs to the tables: per case and target the mean over rounds, pgbun/PgBouncer ratios (and
// their spread over the A/B pairs), the memory table, the performance goals, and the Markdown.

import { capacityGoals, capacityMarkdown, type CapacityResult } from './capacity.js';
import type { MemoryResult } from './memory.js';
import type { BenchCase, Options } from './options.js';
import type { RunResult } from './pgbench-run.js';
import type { MachineInfo } from './sysinfo.js';

export interface Aggregate {
  runs: number;
  okRuns: number;
  tps: number | null;
  latencyAvgMs: number | null;
  latencyP99Ms: number | null;
  cpuSecPer1000Tx: number | null;
}

export interface CaseSummary {
  case: BenchCase;
  direct: Aggregate | null;
  pgbouncer: Aggregate;
  pgbun: Aggregate;
  ratio: {
    tps: number | null;
    latencyAvg: number | null;
    latencyP99: number | null;
    cpuPerTx: number | null;
    /** min and max of the per-pair TPS ratios */
    tpsRange: [number, number] | null;
  };
  problems: string[];
}

export interface MemorySummary {
  clients: number;
  pgbouncer: MemoryResult | null;
  pgbun: MemoryResult | null;
  ratio: number | null;
}

export interface Goal {
  goal: string;
  value: string;
  met: boolean | null;
}

export interface Results {
  machine: MachineInfo;
  options: Options & { txPreparedEffective: boolean };
  config: Record<string, unknown>;
  wallSeconds: number;
  cases: CaseSummary[];
  memory: MemorySummary[];
  capacity: CapacityResult | null;
  goals: Goal[];
  runs: RunResult[];
  memoryRuns: MemoryResult[];
  /** poolers that died during the throughput runs (they were restarted) */
  crashes: string[];
}

const mean = (xs: number[]): number | null => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);
const div = (a: number | null, b: number | null): number | null => (a !== null && b !== null && b > 0 ? a / b : null);

export function aggregate(runs: RunResult[]): Aggregate {
  const ok = runs.filter((r) => r.ok);
  const vals = (f: (r: RunResult) => number | null): number[] => ok.map(f).filter((x): x is number => x !== null);
  const cpu = ok.filter((r) => r.cpuSec !== null && r.transactions);
  const tx = cpu.reduce((a, r) => a + (r.transactions ?? 0), 0);
  return {
    runs: runs.length,
    okRuns: ok.length,
    tps: mean(vals((r) => r.tps)),
    latencyAvgMs: mean(vals((r) => r.latencyAvgMs)),
    latencyP99Ms: mean(vals((r) => r.latencyP99Ms)),
    cpuSecPer1000Tx: tx > 0 ? (cpu.reduce((a, r) => a + (r.cpuSec ?? 0), 0) / tx) * 1000 : null,
  };
}

export function summarizeCase(c: BenchCase, runs: RunResult[], directRuns: RunResult[] | null): CaseSummary {
  const mine = runs.filter((r) => r.caseId === c.id);
  const b = mine.filter((r) => r.target === 'pgbouncer');
  const u = mine.filter((r) => r.target === 'pgbun');
  const pgbouncer = aggregate(b);
  const pgbun = aggregate(u);
  const pairRatios: number[] = [];
  for (const ur of u) {
    const br = b.find((x) => x.round === ur.round);
    if (ur.ok && br?.ok && ur.tps && br.tps) pairRatios.push(ur.tps / br.tps);
  }
  const problems: string[] = [];
  for (const r of [...mine, ...(directRuns ?? [])]) {
    for (const p of r.problems) problems.push(`${r.target} round ${r.round}: ${p}`);
    for (const l of r.poolerLogIssues) problems.push(`${r.target} round ${r.round} log: ${l}`);
  }
  return {
    case: c,
    direct: directRuns ? aggregate(directRuns) : null,
    pgbouncer,
    pgbun,
    ratio: {
      tps: div(pgbun.tps, pgbouncer.tps),
      latencyAvg: div(pgbun.latencyAvgMs, pgbouncer.latencyAvgMs),
      latencyP99: div(pgbun.latencyP99Ms, pgbouncer.latencyP99Ms),
      cpuPerTx: div(pgbun.cpuSecPer1000Tx, pgbouncer.cpuSecPer1000Tx),
      tpsRange: pairRatios.length > 1 ? [Math.min(...pairRatios), Math.max(...pairRatios)] : null,
    },
    problems,
  };
}

export function summarizeMemory(runs: MemoryResult[]): MemorySummary[] {
  const counts = [...new Set(runs.map((r) => r.clients))].sort((a, b) => a - b);
  return counts.map((n) => {
    const b = runs.find((r) => r.clients === n && r.pooler === 'pgbouncer') ?? null;
    const u = runs.find((r) => r.clients === n && r.pooler === 'pgbun') ?? null;
    return { clients: n, pgbouncer: b, pgbun: u, ratio: div(u?.bytesPerClient ?? null, b?.bytesPerClient ?? null) };
  });
}

/** pgbun's performance goals, checked against this run (null: not measured in this run). */
export function checkGoals(cases: CaseSummary[], memory: MemorySummary[], capacity: CapacityResult | null): Goal[] {
  const goals: Goal[] = [];
  const tpsGoal = (ids: string[], label: string): void => {
    const got = cases.filter((c) => ids.includes(c.case.id) && c.ratio.tps !== null);
    if (got.length === 0) return void goals.push({ goal: label, value: 'not measured', met: null });
    const worst = got.reduce((a, c) => (c.ratio.tps! < a.ratio.tps! ? c : a));
    goals.push({ goal: label, value: `lowest ${fmtRatio(worst.ratio.tps)} (${worst.case.id})`, met: worst.ratio.tps! >= 1.0 });
  };
  tpsGoal(['tx -S simple c10', 'tx -S simple c100', 'tx -S extended c10', 'tx -S extended c100'], 'TPS pgbun/PgBouncer ≥ 1.0: -S, c10 and c100, simple and extended, transaction mode');
  tpsGoal(cases.filter((c) => c.case.connect).map((c) => c.case.id), 'TPS pgbun/PgBouncer ≥ 1.0 with -C');
  const cpu = cases.filter((c) => c.ratio.cpuPerTx !== null);
  if (cpu.length === 0) goals.push({ goal: 'CPU per transaction pgbun/PgBouncer ≤ 1.5', value: 'not measured', met: null });
  else {
    const worst = cpu.reduce((a, c) => (c.ratio.cpuPerTx! > a.ratio.cpuPerTx! ? c : a));
    const med = [...cpu.map((c) => c.ratio.cpuPerTx!)].sort((a, b) => a - b)[Math.floor(cpu.length / 2)];
    goals.push({
      goal: 'CPU per transaction pgbun/PgBouncer ≤ 1.5',
      value: `highest ${fmtRatio(worst.ratio.cpuPerTx)} (${worst.case.id}), median ${fmtRatio(med)}`,
      met: worst.ratio.cpuPerTx! <= 1.5,
    });
  }
  const m10k = memory.find((m) => m.clients === 10_000)?.pgbun;
  goals.push({
    goal: '≤ 10 KiB RSS per idle client at 10,000 clients',
    value: m10k?.bytesPerClient != null ? `${fmtBytes(m10k.bytesPerClient)} per client` : 'not measured',
    met: m10k?.bytesPerClient != null ? m10k.ok && m10k.bytesPerClient <= 10 * 1024 : null,
  });
  if (capacity) goals.push(...capacityGoals(capacity));
  return goals;
}

/** "main 62% · V8 DefaultWorke 30% · ..." (top 4) */
export function threadShares(byThread: Record<string, number>, total: number): string {
  return Object.entries(byThread)
    .sort((a, b) => b[1] - a[1])
    .slice(0, 4)
    .map(([k, v]) => `${k} ${Math.round((100 * v) / total)}%`)
    .join(' · ');
}

/** Each pooler's CPU over all its pgbench runs, by thread name. */
export function cpuByThreadTotals(runs: RunResult[]): Record<string, { total: number; sys: number; byThread: Record<string, number> }> {
  const out: Record<string, { total: number; sys: number; byThread: Record<string, number> }> = {};
  for (const r of runs) {
    if (!r.cpuByThread || r.cpuSec === null) continue;
    const t = (out[r.target] ??= { total: 0, sys: 0, byThread: {} });
    t.total += r.cpuSec;
    t.sys += r.cpuSysSec ?? 0;
    for (const [k, v] of Object.entries(r.cpuByThread)) t.byThread[k] = (t.byThread[k] ?? 0) + v;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Formatting

export function fmtRatio(r: number | null): string {
  return r === null ? '–' : r.toFixed(2);
}

function fmtNum(n: number | null, digits = 0): string {
  if (n === null) return '–';
  return digits === 0 ? Math.round(n).toLocaleString('en-US') : n.toFixed(digits);
}

function fmtMs(n: number | null): string {
  if (n === null) return '–';
  return n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2);
}

export function fmtBytes(n: number | null): string {
  if (n === null) return '–';
  const a = Math.abs(n);
  if (a >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  if (a >= 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${n} B`;
}

function failMark(a: Aggregate | null): string {
  return a && a.okRuns < a.runs ? ` (${a.runs - a.okRuns}/${a.runs} failed)` : '';
}

export function markdown(res: Results): string {
  const m = res.machine;
  const o = res.options;
  const L: string[] = [];
  L.push(`# pgbun vs PgBouncer: ${m.date.replace('T', ' ').replace(/\.\d+Z$/, ' UTC')}`);
  L.push('');
  L.push(`Machine: ${m.nproc} CPUs (${m.cpuModel}), ${m.memTotalGiB} GiB, Linux ${m.kernel}, ${m.os}; ` +
    `Node.js ${m.node} (pgbun on ${m.pgbunRuntime ?? `Node.js ${m.node}`}); ${m.pgbouncer.split('\n')[0]}; PostgreSQL ${m.postgres}; ${m.pgbench}. ` +
    `Load average at start: ${m.loadavgAtStart.join(' ')}. pgbun revision: ${String(res.config.pgbunRevision ?? 'unknown')}.`);
  L.push('');
  L.push(`Run: ${o.quick ? '--quick' : 'full'}, ${o.duration} s per pgbench run, ${o.rounds} A/B pair(s) per case ` +
    `(order alternating), pgbench scale ${o.scale}${o.only.length ? `, --only=${o.only.join(',')}` : ''}; ` +
    `${Math.round(res.wallSeconds)} s in all. All processes share the same ${m.nproc} cores: ` +
    `compare the ratios, not the absolute numbers.`);
  L.push('');
  if (res.cases.length > 0) {
    L.push('## Throughput (pgbench)');
    L.push('');
    L.push('Ratios are pgbun / PgBouncer: TPS above 1.0 is better for pgbun, latency and CPU below 1.0 are.');
    L.push('CPU is the pooler process\'s utime + stime per 1000 transactions (seconds). Latency is per transaction, from pgbench --log.');
    L.push('');
    L.push('| case | PostgreSQL TPS | PgBouncer TPS | pgbun TPS | **TPS ratio** | avg lat ratio | p99 lat ratio | PgBouncer avg / p99 ms | pgbun avg / p99 ms | PgBouncer CPU s/1k tx | pgbun CPU s/1k tx | **CPU ratio** |');
    L.push('|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|');
    for (const c of res.cases) {
      const range = c.ratio.tpsRange ? ` (${fmtRatio(c.ratio.tpsRange[0])}–${fmtRatio(c.ratio.tpsRange[1])})` : '';
      L.push(
        `| ${c.case.id} | ${fmtNum(c.direct?.tps ?? null)}${failMark(c.direct)} | ${fmtNum(c.pgbouncer.tps)}${failMark(c.pgbouncer)} | ` +
          `${fmtNum(c.pgbun.tps)}${failMark(c.pgbun)} | **${fmtRatio(c.ratio.tps)}**${range} | ${fmtRatio(c.ratio.latencyAvg)} | ` +
          `${fmtRatio(c.ratio.latencyP99)} | ${fmtMs(c.pgbouncer.latencyAvgMs)} / ${fmtMs(c.pgbouncer.latencyP99Ms)} | ` +
          `${fmtMs(c.pgbun.latencyAvgMs)} / ${fmtMs(c.pgbun.latencyP99Ms)} | ${fmtNum(c.pgbouncer.cpuSecPer1000Tx, 3)} | ` +
          `${fmtNum(c.pgbun.cpuSecPer1000Tx, 3)} | **${fmtRatio(c.ratio.cpuPerTx)}** |`,
      );
    }
    L.push('');
    L.push('Case names: pool mode (tx = transaction), -S = select-only or TPC-B (pgbench\'s default script), ' +
      '-M protocol, cN = N clients (-j 2, or 1 for one client), -C = a new login per transaction. ' +
      'A ratio in parentheses is the range over the A/B pairs.');
    L.push('');
  }
  const threads = cpuByThreadTotals(res.runs);
  if (Object.keys(threads).length > 0) {
    L.push('Where each pooler\'s CPU went, over all its pgbench runs (kernel = stime; per thread name from ' +
      '/proc/PID/task, "main" is the event-loop thread):');
    L.push('');
    for (const [name, t] of Object.entries(threads)) {
      L.push(`- ${name === 'pgbun' ? 'pgbun' : 'PgBouncer'}: ${t.total.toFixed(1)} s, ${Math.round((100 * t.sys) / t.total)}% of it in the kernel; ` +
        `by thread: ${threadShares(t.byThread, t.total)}`);
    }
    L.push('');
  }
  if (res.memory.length > 0) {
    L.push('## Memory per idle client');
    L.push('');
    L.push('RSS (/proc/PID/status VmRSS) of a fresh pooler after warm-up, then with N idle logged-in clients (md5 login, ' +
      'transaction mode, held open by a helper process); bytes per client = (RSS with N − baseline) / N.');
    L.push('');
    L.push('| idle clients | PgBouncer baseline | PgBouncer RSS | PgBouncer per client | pgbun baseline | pgbun RSS | pgbun per client | **ratio** |');
    L.push('|--:|--:|--:|--:|--:|--:|--:|--:|');
    for (const s of res.memory) {
      const cell = (r: MemoryResult | null): string[] =>
        r ? [fmtBytes(r.baselineRss), fmtBytes(r.rss) + (r.ok ? '' : ` (failed: ${r.opened} opened)`), fmtBytes(r.bytesPerClient)] : ['–', '–', '–'];
      L.push(`| ${s.clients.toLocaleString('en-US')} | ${cell(s.pgbouncer).join(' | ')} | ${cell(s.pgbun).join(' | ')} | **${fmtRatio(s.ratio)}** |`);
    }
    L.push('');
  }
  if (res.capacity) {
    L.push(...capacityMarkdown(res.capacity));
    L.push('');
  }
  L.push('## Performance goals');
  L.push('');
  for (const g of res.goals) L.push(`- ${g.met === null ? '–' : g.met ? 'met' : '**not met**'}: ${g.goal}: ${g.value}`);
  L.push('');
  const problems = [
    ...res.crashes.map((c) => `crash: ${c.replace(/\s+/g, ' ').slice(0, 600)}`),
    ...res.cases.flatMap((c) => c.problems.map((p) => `${c.case.id}: ${p}`)),
    ...res.memoryRuns.flatMap((r) => r.problems.map((p) => `memory ${r.pooler} ${r.clients}: ${p}`)),
  ];
  if (problems.length) {
    L.push('## Problems seen');
    L.push('');
    for (const p of problems.slice(0, 60)) L.push(`- ${p.replace(/\|/g, '\\|')}`);
    if (problems.length > 60) L.push(`- ... and ${problems.length - 60} more (see the JSON)`);
    L.push('');
  }
  return L.join('\n');
}
