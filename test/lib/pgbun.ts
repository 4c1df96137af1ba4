// Start pgbun (or any PgBouncer-compatible binary, via PGBUN_BIN) as a child process with a
// generated pgbun.ini / userlist.txt / HBA file in a fresh temp dir, and drive it: wait until it
// listens, read its log, send signals, reload, stop.
//
// PGBUN_BIN: path of the program to run instead of `node <repo>/dist/src/cli.js` (a .js/.mjs
// path runs with node). Pointing it at /usr/sbin/pgbouncer runs a test against real PgBouncer.
//
// Placeholders `{{dir}}` (the temp dir) and `{{port}}` (the listen port) are replaced in every
// file written (ini, userlist, hba, ident, extra files), so string configs can refer to them.

import { ChildProcess, spawn } from 'node:child_process';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ConnOpts } from './clients.js';
import type { TestPostgres } from './postgres.js';
import {
  REPO_ROOT,
  canConnect,
  chownTo,
  freePort,
  isAlive,
  asUser,
  isRoot,
  makeTempDir,
  readTail,
  serverOsUser,
  sleep,
  tcpListening,
  trackChild,
  trackPid,
  unixListening,
  untrackPid,
  withTimeout,
} from './procs.js';

export type IniSpec = { [section: string]: { [key: string]: string | number } } | string;

export interface PgbunFiles {
  ini?: IniSpec;
  /** userlist.txt content, or [user, secret] pairs (quoted and escaped for you) */
  userlist?: string | Array<[string, string]>;
  /** HBA file content; sets auth_hba_file unless the ini does */
  hba?: string;
  /** ident map content; sets auth_ident_file unless the ini does */
  ident?: string;
  /** more files to write into the dir (name → content), e.g. %include targets or certificates */
  extraFiles?: Record<string, string | Buffer>;
}

export interface StartPgbunOptions extends PgbunFiles {
  ini: IniSpec;
  /** command-line arguments before the ini path (e.g. ['-v']) */
  args?: string[];
  /** the program to run (default: pgbunCommand()), e.g. ['/usr/sbin/pgbouncer'] */
  command?: string[];
  /** environment additions */
  env?: NodeJS.ProcessEnv;
  /** wait until it listens (default true); false returns right after spawning */
  waitReady?: boolean;
  /** readiness timeout, default 20 s */
  timeoutMs?: number;
  /** do not fill in test defaults (listen_*, unix_socket_dir, logfile, pidfile, auth_file, user) */
  noDefaults?: boolean;
  /** pass the ini path as written relative to the dir (default: absolute) */
  relativeIniPath?: boolean;
  /**
   * when the tests run as root: start pgbun as the server's OS user itself, as systemd's `User=`
   * does, instead of letting it switch with the `user` setting (the default)
   */
  spawnAsUser?: boolean;
}

export interface PgbunExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface TestPgbun {
  /** address to connect to (first listen_addr, 127.0.0.1 for `*`) */
  host: string;
  port: number;
  /** unix_socket_dir ('' when disabled) */
  socketDir: string;
  /** full Unix socket path (socketDir/.s.PGSQL.port), '' when disabled */
  socketPath: string;
  dir: string;
  iniPath: string;
  userlistPath: string;
  hbaPath: string;
  identPath: string;
  /** logfile path ('' when logging to a file is disabled) */
  logfile: string;
  pidfile: string;
  proc: ChildProcess;
  /** the command line used */
  command: string[];
  stdout(): string;
  stderr(): string;
  /** the log file's content ('' until it exists); stderr when no logfile is configured */
  log(): string;
  /** current length of log(): pass to waitForLog to match only lines written after now */
  logOffset(): number;
  /** Wait for a log line matching re (from offset `from` on); resolves to the whole line. */
  waitForLog(re: RegExp, timeoutMs?: number, from?: number): Promise<string>;
  /** Wait until the listen socket accepts connections (used by startPgbun itself). */
  waitReady(timeoutMs?: number): Promise<void>;
  signal(sig: NodeJS.Signals): void;
  /** SIGQUIT (immediate shutdown), SIGKILL after timeoutMs (default 5 s); resolves to the exit code. */
  stop(timeoutMs?: number): Promise<number | null>;
  /** resolves when the process exits (awaiting it keeps the test process alive) */
  readonly exited: Promise<PgbunExit>;
  /** Wait for exit for at most timeoutMs; null if still running. */
  waitExit(timeoutMs?: number): Promise<PgbunExit | null>;
  /** Rewrite config files (same defaults: same port, dir, logfile ...). */
  writeFiles(files: PgbunFiles): void;
  /** writeFiles(files) then SIGHUP. */
  reload(files?: PgbunFiles): void;
  /** Connection options for clients.ts helpers. */
  conn(user: string, password?: string, database?: string): ConnOpts;
}

/** `[databases]` connection string pointing at a test PostgreSQL: `host=127.0.0.1 port=N ...`. */
export function pgConnstr(pg: Pick<TestPostgres, 'host' | 'port'>, extra: Record<string, string | number> = {}): string {
  return [`host=${pg.host}`, `port=${pg.port}`, ...Object.entries(extra).map(([k, v]) => `${k}=${v}`)].join(' ');
}

/** userlist.txt text from [user, secret] pairs ("" escapes a quote). */
export function formatUserlist(entries: Array<[string, string]>): string {
  const q = (s: string): string => `"${s.replace(/"/g, '""')}"`;
  return entries.map(([u, s]) => `${q(u)} ${q(s)}`).join('\n') + '\n';
}

/**
 * The runtime that runs pgbun's JavaScript: node (this process's), or Bun when the run was
 * started with `--runtime=bun` (PGBUN_TEST_RUNTIME holds the path of the bun executable).
 */
export function jsRuntime(): string {
  return process.env.PGBUN_TEST_RUNTIME || process.execPath;
}

/** The command that runs pgbun: PGBUN_BIN or `<runtime> <repo>/dist/src/cli.js`. */
export function pgbunCommand(): string[] {
  const bin = process.env.PGBUN_BIN;
  if (bin) return /\.[cm]?js$/.test(bin) ? [jsRuntime(), bin] : [bin];
  return [jsRuntime(), path.join(REPO_ROOT, 'dist', 'src', 'cli.js')];
}

// ---------------------------------------------------------------------------------------------
// ini rendering

type Sections = { [section: string]: { [key: string]: string | number } };

function renderIni(s: Sections): string {
  const out: string[] = ['; written by pgbun\'s test harness'];
  for (const [name, kv] of Object.entries(s)) {
    out.push(`[${name}]`);
    for (const [k, v] of Object.entries(kv)) out.push(`${k} = ${v}`);
    out.push('');
  }
  return out.join('\n');
}

/** Value of a [pgbouncer] key in a string ini (last occurrence wins, as in PgBouncer). */
function iniStringValue(text: string, key: string): string | undefined {
  let val: string | undefined;
  let inMain = false;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const sec = /^\[([^\]]*)\]/.exec(line);
    if (sec) inMain = sec[1].trim() === 'pgbouncer';
    else if (inMain) {
      const m = /^([A-Za-z0-9_.*-]+)\s*=\s*(.*)$/.exec(line);
      if (m && m[1] === key) val = m[2].trim();
    }
  }
  return val;
}

/** Insert `defaults` (only keys the text does not set) right after the first [pgbouncer] header. */
function addDefaultsToString(text: string, defaults: Record<string, string | number>): string {
  const missing = Object.entries(defaults).filter(([k]) => iniStringValue(text, k) === undefined);
  if (missing.length === 0) return text;
  const lines = text.split('\n');
  const idx = lines.findIndex((l) => /^\s*\[\s*pgbouncer\s*\]/.test(l));
  if (idx < 0) return text; // no main section: the caller tests exactly that
  lines.splice(idx + 1, 0, ...missing.map(([k, v]) => `${k} = ${v}`));
  return lines.join('\n');
}

function parsePort(v: string | number | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = typeof v === 'number' ? v : Number(String(v).trim());
  return Number.isFinite(n) ? n : undefined;
}

// ---------------------------------------------------------------------------------------------

/** Start pgbun with the given config (see the file comment and StartPgbunOptions). */
export async function startPgbun(opts: StartPgbunOptions): Promise<TestPgbun> {
  const runAs = isRoot() ? serverOsUser() : null;
  const dir = makeTempDir('pgbun-', runAs);
  const p = (name: string): string => path.join(dir, name);
  const files = { ini: p('pgbun.ini'), userlist: p('userlist.txt'), hba: p('hba.conf'), ident: p('ident.conf') };

  // Fixed once, so that rewrites for a reload keep the same listener and files.
  const get = (key: string): string | number | undefined =>
    typeof opts.ini === 'string' ? iniStringValue(opts.ini, key) : opts.ini.pgbouncer?.[key];
  const port = parsePort(get('listen_port')) ?? (opts.noDefaults ? 6432 : await freePort());
  const defaults: Record<string, string | number> = opts.noDefaults
    ? {}
    : {
        listen_addr: '127.0.0.1',
        listen_port: port,
        unix_socket_dir: dir,
        logfile: p('pgbun.log'),
        pidfile: p('pgbun.pid'),
        auth_file: files.userlist,
        ...(runAs && !opts.spawnAsUser ? { user: runAs.name } : {}),
      };

  const subst = (s: string): string => s.replace(/\{\{dir\}\}/g, dir).replace(/\{\{port\}\}/g, String(port));
  const writeFile = (file: string, content: string | Buffer): void => {
    fs.writeFileSync(file, typeof content === 'string' ? subst(content) : content, { mode: 0o644 });
    chownTo(file, runAs);
  };

  let iniText = '';
  const writeFiles = (f: PgbunFiles): void => {
    if (f.userlist !== undefined) writeFile(files.userlist, typeof f.userlist === 'string' ? f.userlist : formatUserlist(f.userlist));
    if (f.hba !== undefined) writeFile(files.hba, f.hba);
    if (f.ident !== undefined) writeFile(files.ident, f.ident);
    for (const [name, content] of Object.entries(f.extraFiles ?? {})) writeFile(path.isAbsolute(name) ? name : p(name), content);
    if (f.ini !== undefined) {
      const extra: Record<string, string> = {};
      if (!opts.noDefaults && (f.hba !== undefined || fs.existsSync(files.hba))) extra.auth_hba_file = files.hba;
      if (!opts.noDefaults && (f.ident !== undefined || fs.existsSync(files.ident))) extra.auth_ident_file = files.ident;
      const defs = { ...defaults, ...extra };
      if (typeof f.ini === 'string') iniText = addDefaultsToString(f.ini, defs);
      else {
        const sections: Sections = {};
        // [pgbouncer] first, as operators write it; defaults only where the caller set nothing
        if (!opts.noDefaults || f.ini.pgbouncer) sections.pgbouncer = { ...defs, ...(f.ini.pgbouncer ?? {}) };
        for (const [name, kv] of Object.entries(f.ini)) if (name !== 'pgbouncer') sections[name] = kv;
        iniText = renderIni(sections);
      }
      writeFile(files.ini, iniText);
    }
  };
  if (!opts.noDefaults && opts.userlist === undefined) writeFile(files.userlist, '');
  writeFiles(opts);

  const setting = (key: string): string | undefined => {
    const v = iniStringValue(subst(iniText), key);
    return v === undefined ? undefined : String(v);
  };
  const abs = (f: string): string => (path.isAbsolute(f) ? f : path.join(dir, f));
  const logfileSetting = setting('logfile') ?? '';
  const logfile = logfileSetting ? abs(logfileSetting) : '';
  const pidfileSetting = setting('pidfile') ?? '';
  const pidfile = pidfileSetting ? abs(pidfileSetting) : '';
  const listenAddr = (setting('listen_addr') ?? '').split(/[\s,]+/).filter(Boolean);
  const host = listenAddr.length === 0 || listenAddr[0] === '*' || listenAddr[0] === '0.0.0.0' ? '127.0.0.1' : listenAddr[0] === '::' ? '::1' : listenAddr[0];
  const socketDir = setting('unix_socket_dir') ?? '/tmp';
  const socketPath = socketDir && !socketDir.startsWith('@') ? path.join(socketDir, `.s.PGSQL.${port}`) : '';

  const command = [...(opts.command ?? pgbunCommand()), ...(opts.args ?? []), opts.relativeIniPath ? 'pgbun.ini' : files.ini];
  const proc = spawn(command[0], command.slice(1), {
    cwd: dir, // %include paths are relative to the working directory, as in PgBouncer
    env: { ...process.env, ...(opts.env ?? {}) },
    detached: true, // Ctrl-C in a terminal reaches the test, which stops pgbun in order
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(opts.spawnAsUser ? asUser(runAs) : {}),
  });
  trackChild(proc, 'pgbun', 'SIGKILL');
  let stdout = '';
  let stderr = '';
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  let exitInfo: PgbunExit | null = null;
  let spawnError: Error | null = null;
  const exitPromise = new Promise<PgbunExit>((resolve) => {
    proc.once('exit', (code, signal) => {
      exitInfo = { code, signal };
      // a daemonized (-d) pgbun lives on under the pid in its pidfile: make sure it is cleaned up
      const dpid = readPid(pidfile);
      if (dpid && dpid !== proc.pid && isAlive(dpid)) trackPid(dpid, 'pgbun (daemon)', 'SIGKILL');
      resolve(exitInfo);
    });
    proc.once('error', (e) => {
      spawnError = e;
      exitInfo = { code: null, signal: null };
      resolve(exitInfo);
    });
  });

  const log = (): string => (logfile ? readTail(logfile, 4 * 1024 * 1024) : stderr);
  const diagnostics = (): string =>
    `command: ${command.join(' ')}\n--- stderr ---\n${stderr.slice(-8000)}\n--- stdout ---\n${stdout.slice(-2000)}\n` +
    `--- log (${logfile || 'stderr'}) ---\n${log().slice(-8000)}\n--- ${files.ini} ---\n${iniText}`;

  // ready = every configured listener is up: pgbun opens the Unix socket right after the TCP
  // ones, and a test that uses the socket at once must not race it
  const listening = async (): Promise<boolean> => {
    if (listenAddr.length > 0) {
      const l = tcpListening(port);
      if (!(l ?? (await canConnect({ host, port })))) return false;
    }
    if (socketPath) return unixListening(socketPath) ?? (await canConnect({ path: socketPath }));
    return listenAddr.length > 0;
  };

  const handle: TestPgbun = {
    host,
    port,
    socketDir,
    socketPath,
    dir,
    iniPath: files.ini,
    userlistPath: files.userlist,
    hbaPath: files.hba,
    identPath: files.ident,
    logfile,
    pidfile,
    proc,
    command,
    stdout: () => stdout,
    stderr: () => stderr,
    log,
    logOffset: () => log().length,
    async waitForLog(re, timeoutMs = 5000, from = 0) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const text = log().slice(from);
        for (const line of text.split('\n')) if (re.test(line)) return line;
        if (Date.now() > deadline) throw new Error(`no log line matching ${re} within ${timeoutMs}ms\n${diagnostics()}`);
        await sleep(25);
      }
    },
    async waitReady(timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        if (spawnError) throw new Error(`cannot start pgbun: ${(spawnError as Error).message}\n${diagnostics()}`);
        if (await listening()) {
          if (exitInfo) break; // something else listens there and ours has died
          return;
        }
        if (exitInfo || Date.now() > deadline) break;
        await sleep(25);
      }
      if (exitInfo) {
        await sleep(50); // let the last stderr chunks arrive
        const e = exitInfo as PgbunExit;
        throw new Error(`pgbun exited (code ${e.code}, signal ${e.signal}) before listening on ${host}:${port}\n${diagnostics()}`);
      }
      throw new Error(`pgbun did not listen on ${listenAddr.length ? `${host}:${port}` : socketPath} within ${timeoutMs}ms\n${diagnostics()}`);
    },
    signal(sig) {
      if (!exitInfo) proc.kill(sig);
    },
    async stop(timeoutMs = 5000) {
      if (!exitInfo) {
        proc.ref();
        try {
          proc.kill('SIGQUIT');
        } catch {
          /* already gone */
        }
        if (!(await withTimeout(exitPromise, timeoutMs))) {
          proc.kill('SIGKILL');
          await exitPromise;
        }
      }
      const dpid = readPid(pidfile);
      if (dpid && dpid !== proc.pid && isAlive(dpid)) {
        process.kill(dpid, 'SIGKILL');
        untrackPid(dpid);
      }
      await sleep(0);
      return (exitInfo as PgbunExit | null)?.code ?? null;
    },
    get exited() {
      if (!exitInfo) proc.ref(); // whoever awaits the exit must keep the process alive meanwhile
      return exitPromise;
    },
    async waitExit(timeoutMs = 5000) {
      if (exitInfo) return exitInfo;
      proc.ref();
      const r = await withTimeout(exitPromise, timeoutMs);
      if (!exitInfo) proc.unref();
      return r ? r.value : null;
    },
    writeFiles,
    reload(f = {}) {
      writeFiles(f);
      if (!exitInfo) proc.kill('SIGHUP');
    },
    conn: (user, password, database) => ({ host, port, user, password, database: database ?? user }),
  };

  if (opts.waitReady !== false) {
    try {
      await handle.waitReady(opts.timeoutMs ?? 20_000);
    } catch (e) {
      if (!exitInfo) {
        proc.kill('SIGKILL');
        proc.ref();
        await exitPromise;
      }
      throw e;
    }
  }
  return handle;
}

/** The pid in a pidfile, if that process runs and is one of ours (its command line names pgbun.ini). */
function readPid(pidfile: string): number | null {
  if (!pidfile) return null;
  try {
    const n = Number(fs.readFileSync(pidfile, 'utf8').trim());
    if (!Number.isInteger(n) || n <= 0) return null;
    return fs.readFileSync(`/proc/${n}/cmdline`, 'utf8').includes('pgbun.ini') ? n : null;
  } catch {
    return null;
  }
}

/**
 * Start pgbun with a configuration it must refuse: it exits with status 1 within 10 s, and its
 * log says `TLS setup failed` (or `headline`) and matches `reason`.
 */
export async function expectRefusedAtStart(opts: StartPgbunOptions, reason: RegExp, headline = /TLS setup failed/): Promise<void> {
  const b = await startPgbun({ ...opts, waitReady: false });
  try {
    const exit = await b.waitExit(10_000);
    assert.ok(exit, `pgbun kept running with ${JSON.stringify(opts.ini)}`);
    assert.equal(exit.code, 1, b.log() + b.stderr());
    assert.match(b.log() + b.stderr(), headline);
    assert.match(b.log() + b.stderr(), reason);
  } finally {
    await b.stop();
  }
}
