// The pgbouncer.ini reader: libusual's cfparser, not a generic ini. Notably
// `;`/`#` start a comment only at the start of a line, `%include` paths are relative to the
// current working directory, and there is no quoting of values. Texts of every message are
// PgBouncer's (checked against 1.18; quoted keys are 1.25).
import { readFileSync } from 'node:fs';
import type { ConfigProblem } from './types.js';
import { isCSpace, strerror } from './cvalues.js';

/** libusual MAX_INCLUDE: the main file is level 0, an include from level 10 is refused */
const MAX_INCLUDE = 10;

export interface IniKeyEvent {
  section: string;
  key: string;
  value: string;
  file: string;
  line: number;
}

export interface IniHandler {
  /** A valid section header was read. */
  section(name: string, file: string, line: number): void;
  /** A key in a valid section. Throw IniValueError to reject it. */
  key(ev: IniKeyEvent): void;
}

/**
 * A rejected key. PgBouncer logs `reason` (when there is one, e.g. `syntax error in connection
 * string`) and then `invalid value "V" for parameter K in configuration (file:line)`.
 */
export class IniValueError extends Error {
  constructor(readonly reason: string | null) {
    super(reason ?? 'invalid value');
    this.name = 'IniValueError';
  }
}

export interface IniParseOptions {
  /** section names the file may use; others are `invalid section` */
  sections: readonly string[];
  /** false (PgBouncer): stop at the first problem. true (`pgbun --check`): report all. */
  collectAll?: boolean;
}

/** `text (file:line)` unless the text already names the place. */
export function located(text: string, file: string, line: number): string {
  if (line > 0) return `${text} (${file}:${line})`;
  return text.includes(file) ? text : `${text} (${file})`;
}

export function problem(file: string, line: number, message: string, log?: string[]): ConfigProblem {
  return log ? { file, line, message, log } : { file, line, message };
}

const isBlank = (c: string | undefined): boolean => c === ' ' || c === '\t';
const isKeyChar = (c: string | undefined): boolean => c !== undefined && /[A-Za-z0-9_.*-]/.test(c);

// Files are read byte for byte (latin1) so that character classes are C's, then names and
// values are decoded as UTF-8.
const utf8 = (bytes: string): string => Buffer.from(bytes, 'latin1').toString('utf8');

interface ParseState {
  handler: IniHandler;
  opts: IniParseOptions;
  problems: ConfigProblem[];
  /** current section; '' before any; null after an invalid one (collect mode skips its keys) */
  section: string | null;
}

/**
 * Reads `path` (and its includes), calling `handler` for each section and key in file order.
 * Returns the problems found; PgBouncer mode returns at most one (loading stopped there).
 */
export function parseIniFile(path: string, handler: IniHandler, opts: IniParseOptions): ConfigProblem[] {
  const st: ParseState = { handler, opts, problems: [], section: '' };
  parseFile(st, path, 0);
  return st.problems;
}

/** Parses one file; false = PgBouncer would stop loading here. */
function parseFile(st: ParseState, file: string, level: number): boolean {
  let buf: string;
  try {
    buf = readFileSync(file).toString('latin1');
  } catch (err) {
    const text = `could not load file "${file}": ${strerror(err)}`;
    st.problems.push(problem(file, 0, text, [text]));
    return false;
  }
  // C string functions end at a NUL byte
  const nul = buf.indexOf('\0');
  if (nul >= 0) buf = buf.slice(0, nul);
  return parseText(st, file, buf, level);
}

function parseText(st: ParseState, file: string, buf: string, level: number): boolean {
  const collect = st.opts.collectAll === true;
  let p = 0;
  // line numbers counted incrementally: positions only move forward
  let lineAtPos = 0;
  let lineNo = 1;
  const lineOf = (pos: number): number => {
    for (; lineAtPos < pos; lineAtPos++) if (buf[lineAtPos] === '\n') lineNo++;
    return lineNo;
  };
  const skipToEol = (): void => {
    while (p < buf.length && buf[p] !== '\n') p++;
  };
  const syntaxError = (pos: number): boolean => {
    const line = lineOf(pos);
    const text = `syntax error in configuration (${file}:${line}), stopping loading`;
    st.problems.push(problem(file, line, text, [text]));
    if (!collect) return false;
    skipToEol();
    return true;
  };

  while (p < buf.length) {
    while (p < buf.length && isCSpace(buf[p])) p++;
    if (p >= buf.length) break;

    if (buf.startsWith('%include', p) && isBlank(buf[p + 8])) {
      const line = lineOf(p);
      p += 8;
      while (isBlank(buf[p])) p++;
      const start = p;
      skipToEol();
      let end = p;
      while (end > start && isCSpace(buf[end - 1])) end--;
      const target = utf8(buf.slice(start, end));
      if (level >= MAX_INCLUDE) {
        const text = `include nesting level too deep (${file}:${line}), stopping loading`;
        st.problems.push(problem(file, line, text, [text]));
        if (!collect) return false;
        continue;
      }
      const before = st.problems.length;
      // relative to the working directory, not to the including file (as PgBouncer does)
      const ok = parseFile(st, target, level + 1);
      const chain = `error processing include file in configuration (${file}:${line}), stopping loading`;
      if (st.problems.length > before) {
        const first = st.problems[before]!;
        if (first.line === 0 && first.file === target) {
          // the include target itself could not be read: point at the %include line
          st.problems[before] = problem(file, line, located(first.message, file, line), first.log);
        }
      }
      if (!ok) {
        const last = st.problems[st.problems.length - 1];
        if (last) last.log = [...(last.log ?? [last.message]), chain];
        if (!collect) return false;
      }
      continue;
    }

    if (buf[p] === '#' || buf[p] === ';') {
      skipToEol();
      continue;
    }

    if (buf[p] === '[') {
      const line = lineOf(p);
      const start = ++p;
      while (p < buf.length && buf[p] !== ']' && buf[p] !== '\n') p++;
      if (buf[p] !== ']') {
        if (!syntaxError(p)) return false;
        continue;
      }
      const name = utf8(buf.slice(start, p));
      p++;
      // the rest of the line is not skipped: `[databases] foo = x` defines foo (as in C)
      if (!st.opts.sections.includes(name)) {
        const text = `invalid section "${name}" in configuration (${file}:${line})`;
        st.problems.push(problem(file, line, text, [text]));
        if (!collect) return false;
        st.section = null;
        continue;
      }
      st.section = name;
      st.handler.section(name, file, line);
      continue;
    }

    // key: an unquoted run of [A-Za-z0-9_.*-], or (since 1.25) anything between single quotes
    const keyPos = p;
    let key: string;
    if (buf[p] === "'") {
      const start = ++p;
      while (p < buf.length && buf[p] !== "'") p++;
      if (p >= buf.length) {
        if (!syntaxError(p)) return false;
        continue;
      }
      key = utf8(buf.slice(start, p));
      p++;
    } else {
      while (isKeyChar(buf[p])) p++;
      key = utf8(buf.slice(keyPos, p));
    }
    while (isBlank(buf[p])) p++;
    if (buf[p] !== '=') {
      if (!syntaxError(p)) return false;
      continue;
    }
    p++;
    while (isBlank(buf[p])) p++;
    const valStart = p;
    skipToEol();
    let valEnd = p;
    while (valEnd > valStart && isCSpace(buf[valEnd - 1])) valEnd--;
    const value = utf8(buf.slice(valStart, valEnd));
    const line = lineOf(keyPos);
    if (!handleKey(st, file, line, key, value) && !collect) return false;
  }
  return true;
}

function handleKey(st: ParseState, file: string, line: number, key: string, value: string): boolean {
  const invalid = `invalid value "${value}" for parameter ${key} in configuration (${file}:${line})`;
  if (st.section === null) return true; // keys of an invalid section (already reported)
  if (st.section === '') {
    const reason = `load_init_file: value without section: ${key}`;
    st.problems.push(problem(file, line, located(reason, file, line), [reason, invalid]));
    return false;
  }
  try {
    st.handler.key({ section: st.section, key, value, file, line });
    return true;
  } catch (err) {
    if (!(err instanceof IniValueError)) throw err;
    const message = err.reason === null ? invalid : located(err.reason, file, line);
    st.problems.push(problem(file, line, message, err.reason === null ? [invalid] : [err.reason, invalid]));
    return false;
  }
}
