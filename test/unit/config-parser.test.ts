// pgbouncer.ini tokenising rules of PgBouncer (libusual's cfparser). Error texts were checked
// against PgBouncer 1.18; single-quoted keys are 1.25.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IniValueError, parseIniFile, type IniHandler } from '../../src/config/parser.js';
import type { ConfigProblem } from '../../src/config/types.js';

const dir = mkdtempSync(join(tmpdir(), 'pgbun-config-parser-'));
let n = 0;
function fixture(content: string | Buffer, name = `f${++n}.ini`): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

type Ev = ['section', string, number] | ['key', string, string, string, number];
const SECTIONS = ['pgbouncer', 'databases', 'users', 'peers'];

function parse(path: string, opts: { collectAll?: boolean; reject?: (key: string) => string | null | undefined } = {}):
  { events: Ev[]; problems: ConfigProblem[]; files: string[] } {
  const events: Ev[] = [];
  const files: string[] = [];
  const handler: IniHandler = {
    section(name, _file, line) { events.push(['section', name, line]); },
    key(ev) {
      files.push(ev.file);
      const reason = opts.reject?.(ev.key);
      if (reason !== undefined) throw new IniValueError(reason);
      events.push(['key', ev.section, ev.key, ev.value, ev.line]);
    },
  };
  const problems = parseIniFile(path, handler, { sections: SECTIONS, collectAll: opts.collectAll });
  return { events, problems, files };
}
const keys = (r: { events: Ev[] }): Array<[string, string, string]> =>
  r.events.filter((e): e is ['key', string, string, string, number] => e[0] === 'key').map((e) => [e[1], e[2], e[3]]);

test('sections and keys are reported in file order with their lines', () => {
  const f = fixture('[pgbouncer]\nlisten_port = 6432\n\n[databases]\nfoo = host=x\n');
  const r = parse(f);
  assert.deepEqual(r.problems, []);
  assert.deepEqual(r.events, [
    ['section', 'pgbouncer', 1], ['key', 'pgbouncer', 'listen_port', '6432', 2],
    ['section', 'databases', 4], ['key', 'databases', 'foo', 'host=x', 5],
  ]);
});

test('comments only at line start: `;` and `#`, after optional blanks', () => {
  const r = parse(fixture('; a comment\n# another\n   ; indented\n\t# tab\n[pgbouncer]\na = 1\n'));
  assert.deepEqual(r.problems, []);
  assert.deepEqual(keys(r), [['pgbouncer', 'a', '1']]);
});

test('`;` and `#` later in a line are data, not comments', () => {
  const r = parse(fixture('[databases]\np0 = host=x dbname=p0 ; c\np1 = host=y # not a comment\n'));
  assert.deepEqual(keys(r), [['databases', 'p0', 'host=x dbname=p0 ; c'], ['databases', 'p1', 'host=y # not a comment']]);
});

test('unknown section: `invalid section "X" in configuration (file:line)`, loading stops', () => {
  const f = fixture('[pgbouncer]\na = 1\n[foo]\nx = 1\n[databases]\nb = 2\n');
  const r = parse(f);
  assert.deepEqual(r.problems.map((p) => [p.message, p.line]), [[`invalid section "foo" in configuration (${f}:3)`, 3]]);
  assert.deepEqual(keys(r), [['pgbouncer', 'a', '1']]);
});

test('section names are exact: case and blanks matter (1.18)', () => {
  const f1 = fixture('[PgBouncer]\n');
  assert.equal(parse(f1).problems[0]?.message, `invalid section "PgBouncer" in configuration (${f1}:1)`);
  const f2 = fixture('[ pgbouncer ]\n');
  assert.equal(parse(f2).problems[0]?.message, `invalid section " pgbouncer " in configuration (${f2}:1)`);
});

test('a section header without `]` on its line is a syntax error', () => {
  const f = fixture('[pgbouncer\nlisten_port = 1\n');
  assert.deepEqual(parse(f).problems.map((p) => p.message), [`syntax error in configuration (${f}:1), stopping loading`]);
});

test('after `]` parsing goes on on the same line: junk is a syntax error, a key is a key', () => {
  const f = fixture('[pgbouncer] junk\n');
  assert.equal(parse(f).problems[0]?.message, `syntax error in configuration (${f}:1), stopping loading`);
  const r = parse(fixture('[pgbouncer] ; comment\n[databases] foo = bar\n'));
  assert.deepEqual(r.problems, []);
  assert.deepEqual(keys(r), [['databases', 'foo', 'bar']]);
});

test('a key before any section: `load_init_file: value without section: KEY`', () => {
  const f = fixture('x = 1\n[pgbouncer]\n');
  const r = parse(f);
  assert.equal(r.problems.length, 1);
  assert.equal(r.problems[0]!.message, `load_init_file: value without section: x (${f}:1)`);
  assert.deepEqual(r.problems[0]!.log, ['load_init_file: value without section: x',
    `invalid value "1" for parameter x in configuration (${f}:1)`]);
});

test('unquoted keys are runs of [A-Za-z0-9_.*-]; `*` is a key', () => {
  const r = parse(fixture('[databases]\nfoo.bar-baz*x_1 = a\n* = host=fallback\nABC = b\n'));
  assert.deepEqual(keys(r), [['databases', 'foo.bar-baz*x_1', 'a'], ['databases', '*', 'host=fallback'], ['databases', 'ABC', 'b']]);
});

test('any other character in a key is a syntax error', () => {
  for (const line of ['foo/bar = x', 'foo bar = x', 'bäz = x', '"foo" = 1', '%foo = 1']) {
    const f = fixture(`[databases]\n${line}\n`);
    assert.deepEqual(parse(f).problems.map((p) => p.message), [`syntax error in configuration (${f}:2), stopping loading`], line);
  }
});

test('single-quoted keys (1.25): any chars but a quote, no escaping', () => {
  const r = parse(fixture("[databases]\n'my db' = dbname=x\n'a=b;c#\"d' = y\n'bäz'=z\n'' = e\n"));
  assert.deepEqual(r.problems, []);
  assert.deepEqual(keys(r), [['databases', 'my db', 'dbname=x'], ['databases', 'a=b;c#"d', 'y'],
    ['databases', 'bäz', 'z'], ['databases', '', 'e']]);
});

test('an unterminated single-quoted key is a syntax error', () => {
  const f = fixture("[databases]\n'my db = x\n");
  assert.match(parse(f).problems[0]!.message, /^syntax error in configuration \(.*\), stopping loading$/);
});

test('double-quoted keys are a syntax error (the documented "ident" quoting does not exist)', () => {
  const f = fixture('[databases]\n"my db" = dbname=x\n');
  assert.equal(parse(f).problems[0]?.message, `syntax error in configuration (${f}:2), stopping loading`);
});

test('blanks around `=` are optional', () => {
  const r = parse(fixture('[pgbouncer]\na=1\nb =2\nc= 3\nd \t=\t 4\n'));
  assert.deepEqual(keys(r).map((k) => [k[1], k[2]]), [['a', '1'], ['b', '2'], ['c', '3'], ['d', '4']]);
});

test('missing `=`: `syntax error in configuration (file:line), stopping loading`', () => {
  const f = fixture('[pgbouncer]\n\n; c\nlisten_port\nmore = 1\n');
  const r = parse(f);
  assert.deepEqual(r.problems, [{ file: f, line: 4, message: `syntax error in configuration (${f}:4), stopping loading`,
    log: [`syntax error in configuration (${f}:4), stopping loading`] }]);
  assert.deepEqual(keys(r), []);
  // `=` must be on the key's line
  const f2 = fixture('[pgbouncer]\nlisten_port\n= 1\n');
  assert.equal(parse(f2).problems[0]?.line, 2);
});

test('the value runs to the end of the line, trailing blanks trimmed, no quoting', () => {
  const r = parse(fixture("[pgbouncer]\na = x y  z \t \nb = 'quoted' \"too\"\nc = a=b\n"));
  assert.deepEqual(keys(r).map((k) => k[2]), ['x y  z', "'quoted' \"too\"", 'a=b']);
});

test('empty values are allowed', () => {
  const r = parse(fixture('[pgbouncer]\npidfile =\n[databases]\nfoodb =   \n[users]\nu=\n'));
  assert.deepEqual(r.problems, []);
  assert.deepEqual(keys(r), [['pgbouncer', 'pidfile', ''], ['databases', 'foodb', ''], ['users', 'u', '']]);
});

test('duplicate keys are all passed on, in order (the last one wins)', () => {
  const r = parse(fixture('[pgbouncer]\npool_mode = session\npool_mode = transaction\n'));
  assert.deepEqual(keys(r).map((k) => k[2]), ['session', 'transaction']);
});

test('CRLF line ends are tolerated', () => {
  const r = parse(fixture('[pgbouncer]\r\nlisten_port = 7777\r\n\r\n; c\r\n[databases]\r\nfoo = host=x\r\n'));
  assert.deepEqual(r.problems, []);
  assert.deepEqual(keys(r), [['pgbouncer', 'listen_port', '7777'], ['databases', 'foo', 'host=x']]);
});

test('line numbers count blank lines and comments', () => {
  const f = fixture('\n\n; x\n[pgbouncer]\n\n\n   a = 1\n\n# y\nbad line\n');
  assert.equal(parse(f).problems[0]?.line, 10);
  assert.deepEqual(parse(fixture('\n\n; x\n[pgbouncer]\n\n\n   a = 1\n')).events, [['section', 'pgbouncer', 4], ['key', 'pgbouncer', 'a', '1', 7]]);
});

test('UTF-8 values pass through; a NUL byte ends the file as in C', () => {
  const r = parse(fixture(Buffer.concat([Buffer.from('[pgbouncer]\nlogin_notify_message = héllo ✓\n'),
    Buffer.from([0]), Buffer.from('garbage without equals\n')])));
  assert.deepEqual(r.problems, []);
  assert.deepEqual(keys(r), [['pgbouncer', 'login_notify_message', 'héllo ✓']]);
});

test('a rejected key: reason then `invalid value "V" for parameter K in configuration (file:line)`', () => {
  const f = fixture('[databases]\nfoo = host=x dbname=p0 ; c\nbar = x\n');
  const r = parse(f, { reject: (k) => (k === 'foo' ? 'syntax error in connection string' : undefined) });
  assert.deepEqual(r.problems, [{
    file: f, line: 2, message: `syntax error in connection string (${f}:2)`,
    log: ['syntax error in connection string', `invalid value "host=x dbname=p0 ; c" for parameter foo in configuration (${f}:2)`],
  }]);
  assert.deepEqual(keys(r), []); // stopped: bar never seen
});

test('a rejected key without a reason only has the `invalid value` line', () => {
  const f = fixture('[pgbouncer]\nlisten_port = abc\n');
  const r = parse(f, { reject: () => null });
  assert.deepEqual(r.problems.map((p) => [p.message, p.log]), [[
    `invalid value "abc" for parameter listen_port in configuration (${f}:2)`,
    [`invalid value "abc" for parameter listen_port in configuration (${f}:2)`]]]);
});

test('a missing file: `could not load file "F": No such file or directory`', () => {
  const f = join(dir, 'does-not-exist.ini');
  assert.deepEqual(parse(f).problems.map((p) => [p.message, p.file, p.line]),
    [[`could not load file "${f}": No such file or directory`, f, 0]]);
});

function inDir<T>(cwd: string, fn: () => T): T {
  const old = process.cwd();
  process.chdir(cwd);
  try {
    return fn();
  } finally {
    process.chdir(old);
  }
}

test('%include is processed inline and may contain sections', () => {
  const inc = fixture('[databases]\nincdb = host=i\n', 'inline-inc.ini');
  const main = fixture(`[pgbouncer]\na = 1\n%include ${inc}\nb = 2\n`);
  const r = parse(main);
  assert.deepEqual(r.problems, []);
  assert.deepEqual(keys(r), [['pgbouncer', 'a', '1'], ['databases', 'incdb', 'host=i'], ['databases', 'b', '2']]);
  assert.deepEqual(r.files, [main, inc, main]);
});

test('%include paths are relative to the working directory, not to the including file', () => {
  const conf = join(dir, 'conf');
  const cwd = join(dir, 'cwd');
  mkdirSync(join(conf, 'sub'), { recursive: true });
  mkdirSync(join(cwd, 'sub'), { recursive: true });
  writeFileSync(join(conf, 'sub', 'extra.ini'), 'which = beside-the-file\n');
  writeFileSync(join(cwd, 'sub', 'extra.ini'), 'which = working-dir\n');
  const main = join(conf, 'main.ini');
  writeFileSync(main, '[pgbouncer]\n   %include sub/extra.ini   \n');
  const r = inDir(cwd, () => parse(main));
  assert.deepEqual(r.problems, []);
  assert.deepEqual(keys(r), [['pgbouncer', 'which', 'working-dir']]);
  assert.deepEqual(r.files, ['sub/extra.ini']);
});

test('a missing include names the %include line and logs the include chain', () => {
  const f = fixture('[pgbouncer]\n%include nonexist.ini\n');
  const r = inDir(dir, () => parse(f));
  assert.deepEqual(r.problems, [{
    file: f, line: 2, message: `could not load file "nonexist.ini": No such file or directory (${f}:2)`,
    log: ['could not load file "nonexist.ini": No such file or directory',
      `error processing include file in configuration (${f}:2), stopping loading`],
  }]);
});

test('an error inside an include is reported with the included file and line', () => {
  const inc = fixture('[pgbouncer]\n\nbroken\n', 'broken-inc.ini');
  const f = fixture(`%include ${inc}\nafter = 1\n`);
  const r = parse(f);
  assert.equal(r.problems.length, 1);
  assert.deepEqual([r.problems[0]!.file, r.problems[0]!.line, r.problems[0]!.message],
    [inc, 3, `syntax error in configuration (${inc}:3), stopping loading`]);
  assert.deepEqual(r.problems[0]!.log, [`syntax error in configuration (${inc}:3), stopping loading`,
    `error processing include file in configuration (${f}:1), stopping loading`]);
  assert.deepEqual(keys(r), []);
});

test('%include nesting: 10 levels load, the 11th is `include nesting level too deep`', () => {
  const chain = (depth: number): string => {
    const tag = `nest${depth}-${++n}`;
    // file i includes file i+1; the last one holds a key
    writeFileSync(join(dir, `${tag}-${depth}.ini`), '[pgbouncer]\ndeep = yes\n');
    for (let i = depth - 1; i >= 0; i--) writeFileSync(join(dir, `${tag}-${i}.ini`), `%include ${join(dir, `${tag}-${i + 1}.ini`)}\n`);
    return join(dir, `${tag}-0.ini`);
  };
  const ok = parse(chain(10));
  assert.deepEqual(ok.problems, []);
  assert.deepEqual(keys(ok), [['pgbouncer', 'deep', 'yes']]);
  const tooDeep = parse(chain(11));
  assert.equal(tooDeep.problems.length, 1);
  const p = tooDeep.problems[0]!;
  assert.match(p.message, /^include nesting level too deep \(.*-10\.ini:1\), stopping loading$/);
  assert.equal(p.log?.length, 11); // the message + one `error processing include file` per level
});

test('a file including itself stops at the nesting limit', () => {
  const self = join(dir, 'self.ini');
  writeFileSync(self, `%include ${self}\n`);
  const r = parse(self);
  assert.deepEqual(r.problems.map((p) => p.message), [`include nesting level too deep (${self}:1), stopping loading`]);
});

test('%include needs a blank and a name: bare `%include` and `%includex` are syntax errors', () => {
  const f1 = fixture('[pgbouncer]\n%include\n');
  assert.equal(parse(f1).problems[0]?.message, `syntax error in configuration (${f1}:2), stopping loading`);
  const f2 = fixture('[pgbouncer]\n%includex foo\n');
  assert.equal(parse(f2).problems[0]?.message, `syntax error in configuration (${f2}:2), stopping loading`);
  const f3 = fixture('[pgbouncer]\n%include   \n');
  assert.equal(parse(f3).problems[0]?.message, `could not load file "": No such file or directory (${f3}:2)`);
});

test('collect mode reports every problem and keeps going', () => {
  const f = fixture([
    '[pgbouncer]', 'bad1', 'ok1 = 1', '[nope]', 'ignored = 1', '[databases]', 'rej = x',
    '"quoted" = 1', '%include missing.ini', 'ok2 = 2', '[pgbouncer', 'ok3 = 3',
  ].join('\n') + '\n');
  const r = inDir(dir, () => parse(f, { collectAll: true, reject: (k) => (k === 'rej' ? 'nope' : undefined) }));
  assert.deepEqual(r.problems.map((p) => [p.line, p.message]), [
    [2, `syntax error in configuration (${f}:2), stopping loading`],
    [4, `invalid section "nope" in configuration (${f}:4)`],
    [7, `nope (${f}:7)`],
    [8, `syntax error in configuration (${f}:8), stopping loading`],
    [9, `could not load file "missing.ini": No such file or directory (${f}:9)`],
    [11, `syntax error in configuration (${f}:11), stopping loading`],
  ]);
  // keys of the invalid section are skipped, the rest is read
  assert.deepEqual(keys(r), [['pgbouncer', 'ok1', '1'], ['databases', 'ok2', '2'], ['databases', 'ok3', '3']]);
});

test('PgBouncer mode stops at the first problem', () => {
  const f = fixture('[pgbouncer]\nbad1\nbad2\n[nope]\n');
  assert.equal(parse(f).problems.length, 1);
});
