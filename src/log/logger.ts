// Logging in PgBouncer's line format
//   2026-11-26 14:52:50.123 UTC [12345] LOG C-0x7f0000000010: db/user@127.0.0.1:5432 message
// (operators and pgbadger grep these lines), or pino's JSON records when log_format=json. Text
// lines are formatted here directly, without pino: a JSON record built and parsed back for every
// line cost ~10 % of a login's CPU with log_connections on (bench/README.md).
// Lines are written synchronously to stderr and to `logfile` so that a log watcher sees each
// event as it happens and nothing is lost when the process exits.
import fs from 'node:fs';
import { pino, type Logger as PinoLogger } from 'pino';

const LEVELS = { fatal: 60, error: 50, warning: 40, log: 30, debug: 20, noise: 10 } as const;
type Level = keyof typeof LEVELS;
const LEVEL_TEXT: Record<number, string> = {
  60: 'FATAL', 50: 'ERROR', 40: 'WARNING', 30: 'LOG', 20: 'DEBUG', 10: 'NOISE',
};

/** Anything that can prefix a log line, e.g. `C-0x…: db/user@addr:port`. */
export interface LogSubject {
  logPrefix(): string;
}

function pad2(n: number): string {
  return n < 10 ? '0' + n : String(n);
}

// strftime's %Z: the zone abbreviation of the local time zone, computed once.
let zoneName = 'UTC';
try {
  const parts = new Intl.DateTimeFormat('en-US', { timeZoneName: 'short' }).formatToParts(new Date());
  zoneName = parts.find((p) => p.type === 'timeZoneName')?.value ?? 'UTC';
} catch {
  /* keep UTC */
}

// The `YYYY-MM-DD HH:MM:SS` part changes once a second; busy logs write many lines in one.
let cachedSecond = -1;
let cachedSecondText = '';

/** `YYYY-MM-DD HH:MM:SS.mmm TZ` in local time, as PgBouncer writes it. */
export function formatLogTime(time: number): string {
  const ms = Math.floor(time); // callers pass microsecond clocks / 1000
  const second = Math.floor(ms / 1000);
  if (second !== cachedSecond) {
    const d = new Date(second * 1000);
    cachedSecondText = `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${pad2(d.getHours())}:` +
      `${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
    cachedSecond = second;
  }
  const msec = ms - second * 1000;
  return `${cachedSecondText}.${msec < 10 ? '00' : msec < 100 ? '0' : ''}${msec} ${zoneName}`;
}

/** `YYYY-MM-DD HH:MM:SS TZ` (no milliseconds): the timestamp text of SHOW CLIENTS/SERVERS. */
export function formatShowTime(ms: number): string {
  const s = formatLogTime(ms);
  return s.slice(0, 19) + s.slice(23);
}

/** Where finished lines go: pino's destination for JSON records, and ours for text lines. */
class Sink {
  stderr = true;
  fileFd = -1;

  write(line: string): void {
    if (this.stderr) writeAll(2, line);
    if (this.fileFd >= 0) writeAll(this.fileFd, line);
  }
}

function writeAll(fd: number, s: string): void {
  try {
    fs.writeSync(fd, s);
  } catch {
    // a full disk or a closed stderr must not take the pooler down
  }
}

// Control characters (and the Unicode line breaks some viewers honour) in a log line would let a
// client forge lines: a user, database or application name is the client's to choose, and a
// server message may span lines. They are written as escapes instead, so one event is one line.
const UNSAFE = /[\x00-\x1f\x7f\x85\u2028\u2029]/;
const UNSAFE_ALL = /[\x00-\x1f\x7f\x85\u2028\u2029]/g;
const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

function escapeChar(c: string): string {
  const named = NAMED[c];
  if (named !== undefined) return named;
  const code = c.charCodeAt(0);
  return code > 0xff ? `\\u${code.toString(16).padStart(4, '0')}` : `\\x${code.toString(16).padStart(2, '0')}`;
}

/** `s` with control characters and line breaks escaped (`\n`, `\x1b`, `\u2028`). */
export function escapeLogText(s: string): string {
  return UNSAFE.test(s) ? s.replace(UNSAFE_ALL, escapeChar) : s;
}

export class Logger {
  private readonly sink = new Sink();
  private readonly p: PinoLogger<Level, true>;
  private logfilePath = '';
  private json = false;
  private pid = process.pid;
  private minLevel: number = LEVELS.log;
  /** cheap guards for call sites that would otherwise build a message for nothing */
  debugEnabled = false;
  noiseEnabled = false;
  /** inside quietly(): lines about the whole pooler are left to another event loop */
  private quiet = 0;

  constructor() {
    this.p = pino<Level, true>(
      {
        customLevels: LEVELS,
        useOnlyCustomLevels: true,
        level: 'log',
        base: { pid: process.pid },
      },
      this.sink,
    );
  }

  /** verbose = number of -v / the `verbose` setting: 1 adds DEBUG, 2 adds NOISE. */
  setVerbose(v: number): void {
    const level: Level = v >= 2 ? 'noise' : v === 1 ? 'debug' : 'log';
    this.p.level = level;
    this.minLevel = LEVELS[level];
    this.debugEnabled = v >= 1;
    this.noiseEnabled = v >= 2;
  }

  setStderr(on: boolean): void {
    this.sink.stderr = on;
  }

  setJson(on: boolean): void {
    this.json = on;
  }

  /** pino binds the pid at creation; a daemonized child has a new one. */
  setPid(pid: number): void {
    this.pid = pid;
    (this.p as unknown as { setBindings(b: object): void }).setBindings({ pid });
  }

  /** Open (or reopen, for log rotation on RELOAD/SIGHUP) the log file. '' closes it. */
  setLogfile(path: string): void {
    if (this.sink.fileFd >= 0) {
      try { fs.closeSync(this.sink.fileFd); } catch { /* ignore */ }
      this.sink.fileFd = -1;
    }
    this.logfilePath = path;
    if (path) {
      try {
        this.sink.fileFd = fs.openSync(path, 'a', 0o640);
      } catch (e) {
        this.error(`cannot open logfile: '${path}': ${(e as Error).message}`);
      }
    }
  }

  get logfile(): string {
    return this.logfilePath;
  }

  fatal(msg: string): void { this.emit('fatal', null, msg); }
  error(msg: string): void { this.emit('error', null, msg); }
  warning(msg: string): void { this.emit('warning', null, msg); }
  log(msg: string): void { this.emit('log', null, msg); }
  debug(msg: string): void { if (this.debugEnabled) this.emit('debug', null, msg); }
  noise(msg: string): void { if (this.noiseEnabled) this.emit('noise', null, msg); }

  /**
   * Run `fn` writing only the lines about connections (`workers` > 1: every loop applies a RELOAD
   * or SET, but the lines about the pooler as a whole, such as a config file's problems, are
   * written once, by the loop that was asked).
   */
  quietly<T>(fn: () => T): T {
    this.quiet++;
    try {
      return fn();
    } finally {
      this.quiet--;
    }
  }

  /** A line about one connection, prefixed like PgBouncer's slog_*() lines. */
  conn(level: Level, subject: LogSubject, msg: string): void {
    if (LEVELS[level] < this.minLevel) return; // before building the prefix
    this.emit(level, subject.logPrefix(), msg);
  }

  /** The level is already checked (LOG and above always pass: verbose only adds levels). */
  private emit(level: Level, conn: string | null, msg: string): void {
    if (conn === null && this.quiet > 0) return;
    if (this.json) {
      if (conn === null) this.p[level](msg);
      else this.p[level]({ conn }, msg);
      return;
    }
    this.sink.write(`${formatLogTime(Date.now())} [${this.pid}] ${LEVEL_TEXT[LEVELS[level]]} ${conn === null ? '' : escapeLogText(conn) + ' '}${escapeLogText(msg)}\n`);
  }
}

export const log = new Logger();
