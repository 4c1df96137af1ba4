// `npm test`: start one PostgreSQL for the whole run, hand it to every test file through
// $PGBUN_TEST_PG, run `node --test` over every compiled *.test.js under dist/test, then stop
// PostgreSQL, kill whatever a test left running, and exit with the tests' status.
//
//   node dist/test/run.js                  all tests
//   node dist/test/run.js config auth      only files whose path contains "config" or "auth"
//   node dist/test/run.js --test-name-pattern=cancel   extra flags go to `node --test`
//   node dist/test/run.js --runtime=bun   the same tests with pgbun on Bun: the unit tests
//                                          under `bun test`, every pgbun started on Bun
//   node dist/test/run.js --faults [--long] [--soak=SECONDS] [--pooler=PATH]
//                                          the fault suite (test/faults, `npm run test:faults`)
//
// Environment: PGBUN_TEST_CONCURRENCY (test files run at once, default 2: this machine has
// 2 cores and most integration time is spent waiting), PGBUN_TEST_TIMEOUT (whole run, seconds,
// default 900), PGBUN_TEST_TEST_TIMEOUT (seconds, default 300: it bounds each test; node 24,
// unlike node 20, no longer applies it to a test file as a whole, so a file's total time is
// bounded only by the run's PGBUN_TEST_TIMEOUT), PGBUN_TEST_KEEP=1
// (keep temp dirs), PGBUN_BIN (run the tests against another binary, e.g. /usr/sbin/pgbouncer).

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startPostgres, type TestPostgres } from './lib/postgres.js';
import { killRecorded, withTimeout } from './lib/procs.js';

const here = path.dirname(fileURLToPath(import.meta.url));

function findTests(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory() && e.name !== 'node_modules') out.push(...findTests(p));
    else if (e.isFile() && e.name.endsWith('.test.js')) out.push(p);
  }
  return out.sort();
}


/** Bun for --runtime=bun: $PGBUN_BUN, else the dev dependency's node_modules/.bin/bun. */
function findBun(): string | null {
  const candidates = [process.env.PGBUN_BUN, path.join(here, '..', '..', 'node_modules', '.bin', 'bun')];
  for (const c of candidates) {
    if (c && fs.existsSync(c)) return fs.realpathSync(c);
  }
  return null;
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  // --faults: the fault suite (test/faults) instead of the unit and integration tests; its own
  // options become environment variables that its files read (test/faults/options.ts)
  const ownFlags = /^--(faults|long|soak=\d+|pooler=.+|runtime=.+)$/;
  const faults = args.includes('--faults');
  const extraEnv: NodeJS.ProcessEnv = {};
  for (const a of args) {
    if (a === '--long') extraEnv.PGBUN_FAULTS_LONG = '1';
    else if (a.startsWith('--soak=')) extraEnv.PGBUN_FAULTS_SOAK = a.slice(7);
    else if (a.startsWith('--pooler=')) extraEnv.PGBUN_BIN = a.slice(9);
  }
  const runtime = args.find((a) => a.startsWith('--runtime='))?.slice(10) ?? 'node';
  let bun: string | null = null;
  if (runtime === 'bun') {
    bun = findBun();
    if (bun === null) {
      console.error('--runtime=bun: no bun executable (npm ci installs it under node_modules/.bin, or set PGBUN_BUN)');
      return 1;
    }
  } else if (runtime !== 'node') {
    console.error(`--runtime=${runtime}: node or bun`);
    return 1;
  }
  const nodeFlags = args.filter((a) => a.startsWith('-') && !ownFlags.test(a));
  const filters = args.filter((a) => !a.startsWith('-'));
  const faultsDir = path.join(here, 'faults');
  let files = faults ? findTests(faultsDir) : findTests(here).filter((f) => !f.startsWith(faultsDir + path.sep));
  if (filters.length) files = files.filter((f) => filters.some((s) => path.relative(here, f).includes(s)));
  if (files.length === 0) {
    console.error(`no test files${filters.length ? ` matching ${filters.join(' ')}` : ''} under ${here}`);
    return 1;
  }

  const started = Date.now();
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'pgbun-run-'));
  const pidDir = path.join(work, 'pids');
  fs.mkdirSync(pidDir, { mode: 0o777 });
  fs.chmodSync(pidDir, 0o777);
  const countsFile = path.join(work, 'counts.json');

  let pg: TestPostgres | null = null;
  let child: ReturnType<typeof spawn> | null = null;
  let status = 1;
  let interrupted: NodeJS.Signals | null = null;

  const killGroup = (sig: NodeJS.Signals): void => {
    if (child?.pid && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(-child.pid, sig); // the runner and its per-file test processes
      } catch {
        /* gone */
      }
    }
  };
  const onSignal = (sig: NodeJS.Signals): void => {
    if (interrupted) return;
    interrupted = sig;
    console.error(`\n${sig}: stopping the tests`);
    killGroup('SIGTERM');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    pg = await startPostgres();
    console.log(`# PostgreSQL on ${pg.host}:${pg.port} (socket dir ${pg.socketDir}), started in ${Date.now() - started} ms`);
    if (interrupted) return 130;

    const concurrency = Number(process.env.PGBUN_TEST_CONCURRENCY || 2);
    const perTest = Number(process.env.PGBUN_TEST_TEST_TIMEOUT || 300) * 1000;
    const runArgs = [
      '--test',
      `--test-concurrency=${concurrency}`,
      `--test-timeout=${perTest}`,
      '--test-force-exit', // a test that leaves a socket open must not hang the run
      '--test-reporter=spec',
      '--test-reporter-destination=stdout',
      `--test-reporter=${path.join(here, 'lib', 'count-reporter.js')}`,
      '--test-reporter-destination=stdout',
      ...nodeFlags,
    ];
    const env: NodeJS.ProcessEnv = { ...process.env, ...extraEnv, PGBUN_TEST_PG: JSON.stringify(pg.info()), PGBUN_TEST_PIDDIR: pidDir, PGBUN_TEST_COUNTS: countsFile };
    const limit = Number(process.env.PGBUN_TEST_TIMEOUT || 900) * 1000;
    const deadline = Date.now() + limit;
    /** Run one phase of the tests in its own process group; its exit status, null on timeout. */
    const phase = async (cmd: string, cmdArgs: string[], onOutput?: (text: string) => void): Promise<number | null> => {
      child = spawn(cmd, cmdArgs, { stdio: ['ignore', onOutput ? 'pipe' : 'inherit', onOutput ? 'pipe' : 'inherit'], detached: true, env });
      if (onOutput) {
        child.stdout!.on('data', (d: Buffer) => (process.stdout.write(d), onOutput(d.toString())));
        child.stderr!.on('data', (d: Buffer) => (process.stdout.write(d), onOutput(d.toString())));
      }
      const exited = new Promise<number | null>((resolve) => child!.once('close', (code) => resolve(code)));
      const res = await withTimeout(exited, Math.max(deadline - Date.now(), 1000));
      if (res) return res.value ?? 1;
      console.error(`\n# the test run exceeded ${limit / 1000}s: stopping it`);
      killGroup('SIGTERM');
      if (!(await withTimeout(exited, 10_000))) killGroup('SIGKILL');
      await exited;
      return null;
    };

    // --runtime=bun: the unit tests run in Bun itself (`bun test` runs node:test files), and
    // every pgbun the other tests start runs on Bun
    const bunCounts = { pass: 0, fail: 0, skipped: 0 };
    let timedOut = false;
    let nodeFiles = files;
    if (bun !== null) {
      env.PGBUN_TEST_RUNTIME = bun;
      const unitDir = path.join(here, 'unit') + path.sep;
      const unitFiles = files.filter((f) => f.startsWith(unitDir));
      nodeFiles = files.filter((f) => !f.startsWith(unitDir));
      if (unitFiles.length > 0) {
        console.log(`# running ${unitFiles.length} unit test file(s) with ${bun} test`);
        let tail = '';
        const code = await phase(bun, ['test', `--timeout=${perTest}`, ...unitFiles], (t) => {
          tail = (tail + t).slice(-4000);
        });
        for (const [k, re] of [['pass', /^\s*(\d+) pass$/m], ['fail', /^\s*(\d+) fail$/m], ['skipped', /^\s*(\d+) skip$/m]] as const) {
          bunCounts[k] = Number(re.exec(tail)?.[1] ?? 0);
        }
        if (code === null) timedOut = true;
        else if (code !== 0 && bunCounts.fail === 0) bunCounts.fail = 1; // it stopped without a count
      }
    }
    let nodeCode = 0;
    if (nodeFiles.length > 0 && !timedOut && !interrupted) {
      console.log(`# running ${nodeFiles.length} test file(s), ${concurrency} at a time${bun !== null ? ', pgbun on Bun' : ''}`);
      const code = await phase(process.execPath, [...runArgs, ...nodeFiles]);
      if (code === null) timedOut = true;
      else nodeCode = code;
    }
    status = interrupted ? 130 : timedOut || nodeCode !== 0 || bunCounts.fail > 0 ? 1 : 0;

    let c: { pass: number; fail: number; cancelled: number; skipped: number; todo: number } | null = null;
    try {
      c = JSON.parse(fs.readFileSync(countsFile, 'utf8'));
    } catch {
      /* no test reported a result */
    }
    if (bun !== null) {
      c ??= { pass: 0, fail: 0, cancelled: 0, skipped: 0, todo: 0 };
      c.pass += bunCounts.pass;
      c.fail += bunCounts.fail;
      c.skipped += bunCounts.skipped;
    }
    if (!c || c.pass + c.fail + c.cancelled + c.skipped + c.todo === 0) {
      console.error('\n# no test ran');
      status = status || 1;
    } else {
      const skipped = c.skipped + c.todo;
      console.log(`\ntests: ${c.pass} passed, ${c.fail + c.cancelled} failed${skipped ? `, ${skipped} skipped` : ''}`);
      if (c.fail + c.cancelled > 0) status = status || 1;
    }
    console.log(`# test run took ${((Date.now() - started) / 1000).toFixed(1)} s, exit status ${status}`);
    return status;
  } finally {
    // test files' leftovers first (they may hold connections to the shared server)
    for (const line of killRecorded(pidDir)) console.error(`# ${line}`);
    await pg?.stop().catch((e) => console.error(`# stopping PostgreSQL: ${(e as Error).message}`));
    for (const line of killRecorded(pidDir)) console.error(`# ${line}`);
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(e instanceof Error ? (e.stack ?? e.message) : e);
    process.exit(1);
  },
);
