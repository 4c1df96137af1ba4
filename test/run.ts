// `npm test`: start one PostgreSQL for the whole run, hand it to every test file through
// $PGBUN_TEST_PG, run `node --test` over every compiled *.test.js under dist/test, then stop
// PostgreSQL, kill whatever a test left running, and exit with the tests' status.
//
//   node dist/test/run.js                  all tests
//   node dist/test/run.js config auth      only files whose path contains "config" or "auth"
//   node dist/test/run.js --test-name-pattern=cancel   extra flags go to `node --test`
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


async function main(): Promise<number> {
  const args = process.argv.slice(2);
  // --faults: the fault suite (test/faults) instead of the unit and integration tests; its own
  // options become environment variables that its files read (test/faults/options.ts)
  const ownFlags = /^--(faults|long|soak=\d+|pooler=.+)$/;
  const faults = args.includes('--faults');
  const extraEnv: NodeJS.ProcessEnv = {};
  for (const a of args) {
    if (a === '--long') extraEnv.PGBUN_FAULTS_LONG = '1';
    else if (a.startsWith('--soak=')) extraEnv.PGBUN_FAULTS_SOAK = a.slice(7);
    else if (a.startsWith('--pooler=')) extraEnv.PGBUN_BIN = a.slice(9);
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
      ...files,
    ];
    console.log(`# running ${files.length} test file(s), ${concurrency} at a time`);
    child = spawn(process.execPath, runArgs, {
      stdio: ['ignore', 'inherit', 'inherit'],
      detached: true, // own process group: on timeout or Ctrl-C we stop all of it
      env: { ...process.env, ...extraEnv, PGBUN_TEST_PG: JSON.stringify(pg.info()), PGBUN_TEST_PIDDIR: pidDir, PGBUN_TEST_COUNTS: countsFile },
    });
    const exited = new Promise<number | null>((resolve) => child!.once('exit', (code) => resolve(code)));
    const limit = Number(process.env.PGBUN_TEST_TIMEOUT || 900) * 1000;
    const res = await withTimeout(exited, limit);
    if (!res) {
      console.error(`\n# the test run exceeded ${limit / 1000}s: stopping it`);
      killGroup('SIGTERM');
      if (!(await withTimeout(exited, 10_000))) killGroup('SIGKILL');
      await exited;
      status = 1;
    } else status = res.value ?? 1;
    if (interrupted) status = 130;

    let c: { pass: number; fail: number; cancelled: number; skipped: number; todo: number } | null = null;
    try {
      c = JSON.parse(fs.readFileSync(countsFile, 'utf8'));
    } catch {
      /* no test reported a result */
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
