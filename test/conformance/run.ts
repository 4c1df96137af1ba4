// `npm run conformance`: run PgBouncer's own pytest suite (../shared/conformance/pgbouncer, see
// its README.md) against this build of pgbun, and compare the outcome with known-failures.txt.
//
//   node dist/test/conformance/run.js [SUITE_DIR] [test_x.py | test_x.py::test_y | -k EXPR ...]
//
// SUITE_DIR is the folder holding run.sh (default: ../shared/conformance/pgbouncer next to the
// repo). Other arguments select tests as run.sh takes them; without any, the whole suite runs.
//
// The suite runs the pooler as the unprivileged user `pgbt`, so pgbun is staged into a 755
// folder under /tmp: dist/src, package.json, the runtime node_modules (the non-dev entries of
// package-lock.json) and a `pgbouncer` shell wrapper that execs node on cli.js. node is copied
// in too when pgbt cannot reach the one running this script (e.g. under /root).
//
// The suite folder is copied too, with write permission added: run.sh copies its test/ with
// `cp -r`, which keeps the modes, and the suite writes next to itself (certificates), so a
// read-only suite folder would fail every test in its session fixture.
//
// Outcome: every test that fails or errors and is not listed in known-failures.txt is run once
// more alone (run.sh with that one id); only if it fails again does it count. A listed test that
// passes fails the run too (the list can only shrink). Skips are fine. Exit 0 only if the
// outcome matches the list exactly (for a partial run: for the tests that ran).
//
// Environment: PGBUN_CONFORMANCE_DEADLINE (seconds for everything, default 2000: CI bounds the
// step at 35 minutes), PGBUN_CONFORMANCE_MAX_RETRIES (default 20), PGBUN_CONFORMANCE_KEEP=1
// (keep the staging folder), JOBS (xdist workers, passed on to run.sh, default 2).

import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseJunit, readKnownFailures, type Outcome, type TestResult } from './results.js';

const here = path.dirname(fileURLToPath(import.meta.url));
// dist/test/conformance → the repository
const REPO = path.resolve(here, '..', '..', '..');
const KNOWN_FILE = path.join(REPO, 'test', 'conformance', 'known-failures.txt');
// run.sh always works in this folder; runs of it on one machine must not overlap
const SUITE_ROOT = '/tmp/pgbouncer-suite';
const LOCK_FILE = '/tmp/pgbouncer-suite.lock';
const TEST_USER = 'pgbt';

const started = Date.now();
const deadlineSec = Number(process.env.PGBUN_CONFORMANCE_DEADLINE ?? 2000);
const maxRetries = Number(process.env.PGBUN_CONFORMANCE_MAX_RETRIES ?? 20);
const secondsLeft = (): number => deadlineSec - (Date.now() - started) / 1000;

function say(msg: string): void {
  const t = ((Date.now() - started) / 1000).toFixed(0).padStart(5);
  process.stdout.write(`[conformance ${t}s] ${msg}\n`);
}

// --- staging pgbun where the test user can run it ------------------------------------------

/** true when every folder above p is searchable and p is readable + executable by others */
function reachableByOthers(p: string): boolean {
  try {
    if ((fs.statSync(p).mode & 0o005) !== 0o005) return false;
    for (let d = path.dirname(p); ; d = path.dirname(d)) {
      if ((fs.statSync(d).mode & 0o001) === 0) return false;
      if (d === path.dirname(d)) return true;
    }
  } catch {
    return false;
  }
}

/** chmod a+rX and u+w below dir (the copies keep their sources' modes) */
function openUp(dir: string): void {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isSymbolicLink()) continue;
    const mode = fs.statSync(p).mode & 0o7777;
    if (e.isDirectory()) {
      fs.chmodSync(p, mode | 0o755);
      openUp(p);
    } else {
      fs.chmodSync(p, mode | 0o644 | (mode & 0o100 ? 0o055 : 0));
    }
  }
}

/** The runtime packages: package-lock.json entries that are not dev-only. */
function runtimePackages(): string[] {
  const lock = JSON.parse(fs.readFileSync(path.join(REPO, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { dev?: boolean; link?: boolean }>;
  };
  return Object.entries(lock.packages)
    .filter(([k, v]) => k.startsWith('node_modules/') && !v.dev && !v.link)
    .map(([k]) => k);
}

function stage(suiteDir: string): { stageDir: string; bin: string; suite: string } {
  const stageDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgbun-conformance-'));
  const app = path.join(stageDir, 'app');
  fs.cpSync(path.join(REPO, 'dist', 'src'), path.join(app, 'dist', 'src'), { recursive: true });
  fs.copyFileSync(path.join(REPO, 'package.json'), path.join(app, 'package.json'));
  for (const pkg of runtimePackages()) {
    const from = path.join(REPO, pkg);
    if (fs.existsSync(from)) fs.cpSync(from, path.join(app, pkg), { recursive: true });
  }
  let node = process.execPath;
  if (!reachableByOthers(node)) {
    node = path.join(stageDir, 'node');
    fs.copyFileSync(process.execPath, node);
    fs.chmodSync(node, 0o755);
  }
  const bin = path.join(stageDir, 'pgbouncer');
  // exec -a: the process keeps the wrapper's path in its command line, so that run.sh's
  // cleanup (`pgrep -f BIN`) finds the poolers a crashed test worker leaves running
  fs.writeFileSync(bin, `#!/bin/bash\nexec -a "$0" ${node} ${path.join(app, 'dist', 'src', 'cli.js')} "$@"\n`);
  const suite = path.join(stageDir, 'suite');
  fs.cpSync(suiteDir, suite, { recursive: true });
  openUp(stageDir);
  fs.chmodSync(stageDir, 0o755);
  fs.chmodSync(bin, 0o755);
  return { stageDir, bin, suite };
}

// --- running run.sh ----------------------------------------------------------------------------

let current: ReturnType<typeof spawn> | null = null;

interface RunOutcome {
  code: number | null;
  results: string;
  junit: TestResult[] | null;
}

/**
 * run.sh BIN ARGS under `flock` (run.sh always uses /tmp/pgbouncer-suite), with its results in a
 * fresh folder. quiet: its output goes to a file instead of ours. While it runs, the progress
 * line of pytest.log is echoed now and then: a long run should not look hung.
 */
async function runSuite(suite: string, bin: string, args: string[], opts: { quiet: boolean; timeoutSec: number; jobs?: string; tag: string }): Promise<RunOutcome> {
  const results = path.join(SUITE_ROOT, 'results', `pgbun-${new Date().toISOString().replace(/[:.]/g, '-')}-${opts.tag}`);
  const env: NodeJS.ProcessEnv = { ...process.env, RESULTS: results, SUITE_TIMEOUT: String(Math.max(60, Math.floor(opts.timeoutSec))) };
  if (opts.jobs) env.JOBS = opts.jobs;
  fs.mkdirSync(results, { recursive: true });
  const out = opts.quiet ? fs.openSync(path.join(results, 'run.out'), 'w') : 'inherit';
  const child = spawn('flock', [LOCK_FILE, path.join(suite, 'run.sh'), bin, ...args], { env, stdio: ['ignore', out, out], detached: true });
  current = child;
  const log = path.join(results, 'pytest.log');
  let lastProgress = '';
  const ticker = opts.quiet
    ? null
    : setInterval(() => {
        let text = '';
        try {
          text = fs.readFileSync(log, 'utf8');
        } catch {
          return;
        }
        const lines = text.split('\n').filter((l) => /^[.FEsxX]+\s*(\[\s*\d+%\])?\s*$/.test(l.trimEnd()));
        const done = lines.join('').replace(/[^.FEsxX]/g, '').length;
        const failed = lines.join('').replace(/[^FE]/g, '').length;
        const progress = `${done} tests done, ${failed} failed or errored so far`;
        if (progress !== lastProgress) say(progress);
        lastProgress = progress;
      }, 60_000);
  const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
  current = null;
  if (ticker) clearInterval(ticker);
  if (typeof out === 'number') fs.closeSync(out);
  const junitFile = path.join(results, 'junit.xml');
  const junit = fs.existsSync(junitFile) ? parseJunit(fs.readFileSync(junitFile, 'utf8')) : null;
  return { code, results, junit };
}

function stopCurrent(sig: NodeJS.Signals): void {
  if (current?.pid) {
    try {
      process.kill(-current.pid, sig);
    } catch {
      /* gone */
    }
  }
}

// --- main --------------------------------------------------------------------------------------

function list(title: string, items: string[]): void {
  if (items.length === 0) return;
  console.log(`\n${title}:`);
  for (const i of items) console.log(`  ${i}`);
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  let suiteDir = path.resolve(REPO, '..', 'shared', 'conformance', 'pgbouncer');
  const selection: string[] = [];
  for (const a of argv) {
    if (!a.startsWith('-') && !a.startsWith('test_') && fs.existsSync(path.join(a, 'run.sh'))) suiteDir = path.resolve(a);
    else selection.push(a);
  }
  if (!fs.existsSync(path.join(suiteDir, 'run.sh'))) {
    console.error(`conformance: no PgBouncer test suite at ${suiteDir} (give the folder holding run.sh as an argument)`);
    return 2;
  }
  if (process.getuid?.() !== 0) {
    console.error('conformance: run.sh needs root (it installs Debian packages and runs the tests as the user pgbt)');
    return 2;
  }
  const known = readKnownFailures(fs.existsSync(KNOWN_FILE) ? fs.readFileSync(KNOWN_FILE, 'utf8') : '', KNOWN_FILE);
  const { stageDir, bin, suite } = stage(suiteDir);
  say(`pgbun staged in ${stageDir}; suite: ${suiteDir}${selection.length ? `; selection: ${selection.join(' ')}` : ''}`);
  say(`${known.size} known failures listed in ${path.relative(REPO, KNOWN_FILE)}`);
  const cleanup = (): void => {
    if (process.env.PGBUN_CONFORMANCE_KEEP !== '1') fs.rmSync(stageDir, { recursive: true, force: true });
  };
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      stopCurrent(sig);
      cleanup();
      process.exit(sig === 'SIGINT' ? 130 : 143);
    });
  }

  // run.sh creates the test user on its first run; when it exists, check pgbun starts as it
  if (spawnSync('id', [TEST_USER], { stdio: 'ignore' }).status === 0) {
    const v = spawnSync('runuser', ['-u', TEST_USER, '--', bin, '--version'], { encoding: 'utf8' });
    if (v.status !== 0) {
      console.error(`conformance: the user ${TEST_USER} cannot run ${bin}: ${v.stderr || v.stdout}`);
      cleanup();
      return 2;
    }
  }
  try {
    // the full run gets what is left but 5 minutes for the retries
    const run = await runSuite(suite, bin, selection, { quiet: false, timeoutSec: Math.min(1800, secondsLeft() - 300), tag: 'run' });
    if (!run.junit) {
      console.error(`\nconformance: run.sh exited ${run.code} without a junit.xml; see ${run.results}/pytest.log`);
      return 1;
    }
    const ran = run.junit;
    const count = (o: Outcome): number => ran.filter((t) => t.outcome === o).length;
    const bad = ran.filter((t) => t.outcome === 'failed' || t.outcome === 'error');
    const listedFailing = bad.filter((t) => known.has(t.id));
    const unlisted = bad.filter((t) => !known.has(t.id));
    const newlyPassing = ran.filter((t) => t.outcome === 'passed' && known.has(t.id));

    // an unlisted failure counts only if it fails again when run alone (the machine may be busy)
    const retried: string[] = [];
    const unexpected: string[] = [];
    for (const t of unlisted) {
      const why = `${t.outcome}${t.message ? `: ${t.message.slice(0, 160)}` : ''}`;
      if (retried.length >= maxRetries || secondsLeft() < 150) {
        unexpected.push(`${t.id}  (${why}; not retried: ${retried.length >= maxRetries ? 'retry limit' : 'out of time'})`);
        continue;
      }
      say(`retrying alone: ${t.id}`);
      // `-n 1` (one xdist worker, JOBS=1 keeps run.sh from adding its own): a test that hangs
      // past pytest's timeout kills its process; a worker's crash is reported in junit.xml,
      // a lone pytest's would leave no junit.xml at all
      const again = await runSuite(suite, bin, ['-n', '1', t.id], { quiet: true, timeoutSec: Math.min(300, secondsLeft() - 60), jobs: '1', tag: 'retry' });
      const r = again.junit?.find((x) => x.id === t.id);
      const outcome = r ? r.outcome : `no result (run.sh exit ${again.code})`;
      if (r && (r.outcome === 'passed' || r.outcome === 'skipped')) {
        retried.push(`${t.id}  ${why}; alone: ${outcome} (not counted: flaky under load)`);
      } else {
        retried.push(`${t.id}  ${why}; alone: ${outcome}${r?.message ? `: ${r.message.slice(0, 160)}` : ''}`);
        unexpected.push(`${t.id}  (${why})`);
      }
    }

    const notRun = selection.length === 0 ? [...known.keys()].filter((id) => !ran.some((t) => t.id === id)) : [];
    console.log(`\n=== pgbun against PgBouncer's test suite (${ran.length} tests; results in ${run.results}) ===`);
    console.log(`passed ${count('passed')}, failed ${count('failed')}, errors ${count('error')}, skipped ${count('skipped')}`);
    console.log(`listed in known-failures.txt: ${known.size} (${listedFailing.length} failed as listed, ${newlyPassing.length} now pass)`);
    console.log(`retried alone: ${retried.length}; unexpected failures: ${unexpected.length}; newly passing: ${newlyPassing.length}`);
    list('Retried alone', retried);
    list('Unexpected failures (fix them, or list them in test/conformance/known-failures.txt with the reason)', unexpected);
    list('Newly passing (remove them from test/conformance/known-failures.txt)', newlyPassing.map((t) => t.id));
    list('Listed but not in this run (renamed or removed upstream?)', notRun);
    const ok = unexpected.length === 0 && newlyPassing.length === 0;
    console.log(`\nconformance: ${ok ? 'OK, the outcome matches known-failures.txt' : 'FAILED'}`);
    return ok ? 0 : 1;
  } finally {
    cleanup();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err instanceof Error ? err.stack ?? err.message : err);
    process.exit(1);
  },
);
