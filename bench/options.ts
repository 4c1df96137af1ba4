// Command line of `npm run bench` and the matrix of pgbench cases it selects.

export type Mode = 'tx' | 'session';
export type Script = 'select' | 'tpcb';
export type Proto = 'simple' | 'extended' | 'prepared';

/** One pgbench configuration, run through each pooler (and directly, as the ceiling). */
export interface BenchCase {
  /** e.g. "tx -S simple c10", "session TPC-B prepared c100", "tx -S simple c10 -C" */
  id: string;
  mode: Mode;
  script: Script;
  proto: Proto;
  clients: number;
  /** -C: a new connection (login) per transaction */
  connect: boolean;
}

export interface Options {
  quick: boolean;
  /** seconds per pgbench run */
  duration: number;
  /** A/B pairs per case (each pair runs both poolers; the order alternates: A B, B A, ...) */
  rounds: number;
  /** pgbench scale factor */
  scale: number;
  /** filter tokens (see HELP) */
  only: string[];
  direct: boolean;
  /** idle-client counts for the memory measurement */
  memoryClients: number[];
  warmup: number;
  pgbouncer: string;
  outDir: string;
  /** also write pgbench's per-run stderr of failed runs into the results */
  verbose: boolean;
  /** include transaction-mode -M prepared (needs max_prepared_statements in both poolers) */
  txPrepared: boolean | 'auto';
  /** extra node flags for pgbun (e.g. --cpu-prof), split on spaces */
  pgbunNodeArgs: string[];
  /** run pgbun's dist/src/cli.js with this program instead of node (e.g. a Bun binary) */
  pgbunRuntime: string | null;
  /** capacity part: pgbun's `workers` values (null: 1, 2, 4, ... up to the pooler's CPUs) */
  workers: number[] | null;
  /** capacity part: CPUs the pooler is pinned to (null: half of them) */
  poolerCpus: number | null;
  /** capacity part: pool_size (null: one server per client) */
  capacityPool: number | null;
  /** capacity part: pgbench -R for every contestant (null: no rate limit) */
  capacityRate: number | null;
  help: boolean;
}

export const HELP = `npm run bench -- [options]     (or: node dist/bench/run.js [options] after npm run build)

Runs pgbench through pgbun and PgBouncer (interleaved) and directly against PostgreSQL, then
measures each pooler's RSS with idle clients. Writes bench/results/<timestamp>.{json,md}.

  --quick              a few seconds per case, a subset of the cases (about 3-4 minutes)
  --duration=SECONDS   per pgbench run (default 10, quick 3)
  --rounds=N           A/B pairs per case, order alternating (default 2, quick 1)
  --scale=N            pgbench scale factor (default 10, quick 1)
  --only=TOKENS        comma-separated filter; tokens of one kind are OR'ed, kinds are AND'ed:
                         mode:     tx session
                         script:   select tpcb
                         protocol: simple extended prepared
                         clients:  c1 c10 c100
                         connect:  connect (only -C cases) noconnect
                         memory    the idle-client memory measurement (alone: memory only)
                         capacity  the pooler-bound case: pgbun with workers = 1, 2, ... on node
                                   and on Bun, each runtime's bare pipe, PgBouncer (alone:
                                   capacity only)
                         pgbench   every pgbench case (with no other pgbench token)
                       e.g. --only=tx,select,c10,c100   --only=memory   --only=connect
  --no-direct          skip the direct-to-PostgreSQL ceiling runs
  --memory-clients=N,M idle clients for the memory measurement (default 1000,10000)
  --warmup=SECONDS     warm-up run through each pooler before measuring (default 5, quick 2)
  --tx-prepared=on|off transaction-mode -M prepared (default: on when PgBouncer >= 1.21, which
                       has max_prepared_statements; Debian's 1.18 does not)
  --pgbun-node-args="FLAGS"  node flags for pgbun, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"
                       (a profile is written when pgbun exits at the end of the throughput runs)
  --pgbun-runtime=PATH run pgbun with this program instead of node, e.g. Bun (pgbun's runtime code
                       only uses node: APIs; bun is a dev dependency):
                       --pgbun-runtime=node_modules/.bin/bun
  --workers=1,2,4      capacity: pgbun's workers values (default 1, 2, 4, ... up to the pooler's
                       CPUs, at least 1 and 2)
  --pooler-cpus=N      capacity: pin the poolers to the last N CPUs, pgbench and PostgreSQL to
                       the others (default half of the CPUs; needs 2 or more and taskset)
  --capacity-pool=N    capacity: pool_size (default: as many as pgbench clients)
  --capacity-rate=TPS  capacity: pgbench -R TPS for every contestant, so that their CPU per
                       transaction is compared at the same load (where the pooler cannot be
                       the bottleneck, e.g. on a small or busy machine)
  --pgbouncer=PATH     PgBouncer binary (default /usr/sbin/pgbouncer; installed with apt if missing)
  --out=DIR            results directory (default bench/results)
  --verbose            keep the output of failed pgbench runs in the JSON
  -h, --help
`;

/** A bad command line: reported as its message alone, with exit code 2. */
export class UsageError extends Error {}

export function parseOptions(argv: string[], repoRoot: string): Options {
  const get = (name: string): string | undefined => {
    let v: string | undefined;
    for (let i = 0; i < argv.length; i++) {
      const a = argv[i];
      if (a.startsWith(`--${name}=`)) v = a.slice(name.length + 3);
      else if (a === `--${name}` && i + 1 < argv.length && !argv[i + 1].startsWith('--')) v = argv[i + 1];
    }
    return v;
  };
  const has = (name: string): boolean => argv.includes(`--${name}`);
  const known = /^--(quick|duration|rounds|scale|only|no-direct|memory-clients|warmup|tx-prepared|pgbun-node-args|pgbun-runtime|workers|pooler-cpus|capacity-pool|capacity-rate|pgbouncer|out|verbose|help)(=|$)|^-h$/;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('-')) {
      if (i > 0 && /^--(duration|rounds|scale|only|memory-clients|warmup|tx-prepared|pgbun-node-args|pgbun-runtime|workers|pooler-cpus|capacity-pool|capacity-rate|pgbouncer|out)$/.test(argv[i - 1])) continue;
      throw new UsageError(`unexpected argument ${a}\n\n${HELP}`);
    }
    if (!known.test(a)) throw new UsageError(`unknown option ${a}\n\n${HELP}`);
  }
  const quick = has('quick');
  const num = (name: string, dflt: number, min: number): number => {
    const v = get(name);
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!Number.isFinite(n) || n < min) throw new UsageError(`--${name}: expected a number >= ${min}, got ${v}`);
    return n;
  };
  const only = (get('only') ?? '').split(',').map((s) => s.trim().toLowerCase()).filter(Boolean);
  for (const t of only) if (!ALL_TOKENS.has(t)) throw new UsageError(`--only: unknown token ${t} (known: ${[...ALL_TOKENS].join(' ')})`);
  const txp = get('tx-prepared');
  if (txp !== undefined && !['on', 'off', 'auto'].includes(txp)) throw new UsageError('--tx-prepared: on, off or auto');
  const mem = (get('memory-clients') ?? '1000,10000').split(',').map((s) => Number(s.trim()));
  if (mem.some((n) => !Number.isInteger(n) || n < 1)) throw new UsageError('--memory-clients: comma-separated positive integers');
  const wk = get('workers');
  const workers = wk === undefined ? null : wk.split(',').map((s) => Number(s.trim()));
  if (workers !== null && (workers.length === 0 || workers.some((n) => !Number.isInteger(n) || n < 1))) {
    throw new UsageError('--workers: comma-separated positive integers');
  }
  if (workers !== null && !workers.includes(1)) workers.unshift(1); // the scaling factor's base
  const int = (name: string): number | null => (get(name) === undefined ? null : Math.floor(num(name, 1, 1)));
  return {
    quick,
    duration: num('duration', quick ? 3 : 10, 1),
    rounds: Math.floor(num('rounds', quick ? 1 : 2, 1)),
    scale: Math.floor(num('scale', quick ? 1 : 10, 1)),
    only,
    direct: !has('no-direct'),
    memoryClients: mem,
    warmup: num('warmup', quick ? 2 : 5, 0),
    txPrepared: txp === undefined || txp === 'auto' ? 'auto' : txp === 'on',
    pgbunNodeArgs: (get('pgbun-node-args') ?? '').split(/\s+/).filter(Boolean),
    pgbunRuntime: get('pgbun-runtime') ?? null,
    workers,
    poolerCpus: int('pooler-cpus'),
    capacityPool: int('capacity-pool'),
    capacityRate: int('capacity-rate'),
    pgbouncer: get('pgbouncer') ?? process.env.PGBOUNCER_BIN ?? '/usr/sbin/pgbouncer',
    outDir: get('out') ?? `${repoRoot}/bench/results`,
    verbose: has('verbose'),
    help: has('help') || argv.includes('-h'),
  };
}

// ---------------------------------------------------------------------------------------------
// The matrix

const DIMENSIONS: Record<string, string[]> = {
  mode: ['tx', 'session'],
  script: ['select', 'tpcb'],
  proto: ['simple', 'extended', 'prepared'],
  clients: ['c1', 'c10', 'c100'],
  connect: ['connect', 'noconnect'],
};
const ALL_TOKENS = new Set([...Object.values(DIMENSIONS).flat(), 'memory', 'capacity', 'pgbench']);

export function caseId(c: Omit<BenchCase, 'id'>): string {
  return `${c.mode} ${c.script === 'select' ? '-S' : 'TPC-B'} ${c.proto} c${c.clients}${c.connect ? ' -C' : ''}`;
}

function tagsOf(c: BenchCase): Record<string, string> {
  return { mode: c.mode, script: c.script, proto: c.proto, clients: `c${c.clients}`, connect: c.connect ? 'connect' : 'noconnect' };
}

/** The full matrix: every mode × script × protocol × client count, plus -C cases. */
function fullMatrix(txPrepared: boolean): BenchCase[] {
  const out: BenchCase[] = [];
  const add = (c: Omit<BenchCase, 'id'>): void => void out.push({ ...c, id: caseId(c) });
  for (const mode of ['tx', 'session'] as Mode[]) {
    for (const script of ['select', 'tpcb'] as Script[]) {
      for (const proto of ['simple', 'extended', 'prepared'] as Proto[]) {
        if (proto === 'prepared' && mode === 'tx' && !txPrepared) continue;
        for (const clients of [1, 10, 100]) add({ mode, script, proto, clients, connect: false });
      }
    }
    // -C: a login per transaction; what matters is the login path, so one client count
    for (const script of ['select', 'tpcb'] as Script[]) add({ mode, script, proto: 'simple', clients: 10, connect: true });
  }
  return out;
}

/** The --quick subset: the cases the performance goals name, and one of each other kind. */
const QUICK = new Set([
  'tx -S simple c10',
  'tx -S extended c10',
  'tx -S simple c100',
  'tx -S extended c100',
  'tx TPC-B simple c10',
  'tx -S simple c10 -C',
  'session -S prepared c10',
  'session -S simple c1',
]);

export interface Selection {
  cases: BenchCase[];
  memory: boolean;
  capacity: boolean;
}

export function selectCases(o: Options, txPrepared: boolean): Selection {
  let cases = fullMatrix(txPrepared);
  if (o.quick) cases = cases.filter((c) => QUICK.has(c.id) || (txPrepared && c.id === 'tx -S prepared c10'));
  const pgbenchTokens = o.only.filter((t) => t !== 'memory' && t !== 'capacity');
  if (o.only.length > 0) {
    if (pgbenchTokens.length === 0) cases = [];
    for (const [dim, values] of Object.entries(DIMENSIONS)) {
      const want = pgbenchTokens.filter((t) => values.includes(t));
      if (want.length > 0) cases = cases.filter((c) => want.includes(tagsOf(c)[dim]));
    }
  }
  return { cases, memory: o.only.length === 0 || o.only.includes('memory'), capacity: o.only.length === 0 || o.only.includes('capacity') };
}
