// The man pages and the sample configuration files are true to the code:
//  - man/pgbun.1 and man/pgbun.5 render without a warning (groff -ww, mandoc -T lint);
//  - pgbun.5 documents exactly the [pgbouncer] keys of SETTING_DEFS, each with its type,
//    default and reload rule, and exactly the keys the [databases]/[users]/[peers] parsers know;
//  - pgbun.1 documents every option of `pgbun --help` and every signal;
//  - etc/pgbun.ini loads without a problem, names every key with PgBouncer's default, and its
//    commented-out examples load too; etc/userlist.txt and etc/pgbun_hba.conf parse cleanly
//    and their examples are real (the sample secrets match the sample passwords).

import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { SETTING_DEFS, type SettingDef } from '../src/config/settings.js';
import { loadConfig } from '../src/config/load.js';
import { parseDatabase, parsePeer, parseUser } from '../src/config/connstr.js';
import { loadUserlist } from '../src/config/userlist.js';
import { parseHbaFile } from '../src/auth/hba.js';
import { REPO_ROOT, isRoot } from './lib/procs.js';
import { jsRuntime } from './lib/pgbun.js';

const MAN1 = path.join(REPO_ROOT, 'man', 'pgbun.1');
const MAN5 = path.join(REPO_ROOT, 'man', 'pgbun.5');
const INI = path.join(REPO_ROOT, 'etc', 'pgbun.ini');
const USERLIST = path.join(REPO_ROOT, 'etc', 'userlist.txt');
const HBA = path.join(REPO_ROOT, 'etc', 'pgbun_hba.conf');

const have = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;

/** The command, installing its Debian package first when missing and we are root. */
function ensureTool(cmd: string, pkg: string): string | null {
  if (have(cmd)) return null;
  if (!isRoot() || !have('apt-get')) return `${cmd} is missing and we cannot install ${pkg} (not root)`;
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = () => spawnSync('apt-get', ['-o', 'DPkg::Lock::Timeout=300', 'install', '-y', '-qq', '--no-install-recommends', pkg], { env, encoding: 'utf8' });
  if (install().status !== 0) {
    spawnSync('apt-get', ['update', '-qq'], { env });
    const r = install();
    if (r.status !== 0) return `apt-get install ${pkg} failed: ${r.stderr}`;
  }
  return have(cmd) ? null : `${cmd} still missing after installing ${pkg}`;
}

// --- roff helpers ----------------------------------------------------------------------------

/** Lines of a roff file with backslash-newline continuations joined. */
function roffLines(file: string): string[] {
  return fs.readFileSync(file, 'utf8').replace(/\\\n/g, '').split('\n');
}

/** The lines of section `.SH name` (up to the next .SH). */
function section(lines: string[], name: string): string[] {
  const start = lines.findIndex((l) => l === `.SH ${name}` || l === `.SH "${name}"`);
  assert.ok(start >= 0, `section ${name} exists`);
  const end = lines.findIndex((l, i) => i > start && l.startsWith('.SH '));
  return lines.slice(start + 1, end < 0 ? undefined : end);
}

/** Plain text of roff text lines: font escapes dropped, \- and friends resolved. */
function plain(s: string): string {
  return s
    .replace(/\\f[BIRP]/g, '')
    .replace(/\\-/g, '-')
    .replace(/\\\(dq/g, '"')
    .replace(/\\\(aq/g, "'")
    .replace(/\\&/g, '')
    .replace(/\\e/g, '\\');
}

/** Unquoted arguments of a macro line (`.BR a ", " b` → a, b). */
function macroWords(line: string): string[] {
  const words: string[] = [];
  const re = /"([^"]*)"|(\S+)/g;
  let m: RegExpExecArray | null;
  const rest = line.replace(/^\.\S+\s*/, '');
  while ((m = re.exec(rest))) if (m[2] !== undefined) words.push(plain(m[2]));
  return words;
}

interface TaggedEntry {
  names: string[];
  body: string;
}

/** `.TP` entries: the tag line's identifiers and the body text up to the next macro line. */
function taggedEntries(lines: string[]): TaggedEntry[] {
  const out: TaggedEntry[] = [];
  for (let i = 0; i < lines.length - 1; i++) {
    if (lines[i] !== '.TP' || !/^\.(B|BR|BI)\s/.test(lines[i + 1])) continue;
    const names = macroWords(lines[i + 1]).filter((w) => /^[a-z_][a-z0-9_]*$/.test(w));
    const body: string[] = [];
    for (let j = i + 2; j < lines.length && !lines[j].startsWith('.'); j++) body.push(lines[j]);
    out.push({ names, body: body.join(' ') });
  }
  return out;
}

// --- man pages -------------------------------------------------------------------------------

describe('man pages render cleanly', () => {
  for (const file of [MAN1, MAN5]) {
    test(`groff -ww -z: ${path.basename(file)}`, () => {
      const r = spawnSync('groff', ['-ww', '-z', '-man', file], { encoding: 'utf8' });
      assert.equal(r.error, undefined, 'groff runs (Debian package groff-base)');
      assert.equal(r.stderr, '');
      assert.equal(r.status, 0);
    });
    test(`mandoc -T lint: ${path.basename(file)}`, (t) => {
      const why = ensureTool('mandoc', 'mandoc');
      if (why) {
        // only without root on a machine lacking mandoc; CI installs it
        console.log(`# skipping mandoc -T lint: ${why}`);
        t.skip(why);
        return;
      }
      const r = spawnSync('mandoc', ['-T', 'lint', file], { encoding: 'utf8' });
      assert.equal(`${r.stdout}${r.stderr}`, '');
      assert.equal(r.status, 0);
    });
  }
});

const TYPE_WORD: Record<string, string> = {
  int: 'integer', uint: 'unsigned integer', time: 'seconds', string: 'string', list: 'list', enum: 'keyword',
};

function parseSettingEntries(): Map<string, { type: string; dflt: string | null; reload: string; body: string }> {
  const lines = section(roffLines(MAN5), 'SECTION [pgbouncer]');
  const entries = new Map<string, { type: string; dflt: string | null; reload: string; body: string }>();
  for (const e of taggedEntries(lines)) {
    assert.equal(e.names.length, 1, `one key per entry: ${e.names.join(', ')}`);
    const m = /^\\fI([a-z ]+)\\fR; default (\\fB(.*?)\\fR|empty|unset)(?: \([^)]*\))?; (reloadable|startup only)\. /.exec(e.body);
    assert.ok(m, `entry ${e.names[0]} starts with "\\fItype\\fR; default X; reloadable|startup only.": ${e.body.slice(0, 120)}`);
    const dflt = m[2] === 'empty' ? '' : m[2] === 'unset' ? null : plain(m[3]);
    assert.ok(!entries.has(e.names[0]), `${e.names[0]} documented once`);
    entries.set(e.names[0], { type: m[1], dflt, reload: m[4], body: e.body });
  }
  return entries;
}

describe('pgbun.5 documents every setting of the config loader', () => {
  const entries = parseSettingEntries();

  test('the same keys as SETTING_DEFS, both ways', () => {
    const documented = [...entries.keys()].sort();
    const known = SETTING_DEFS.map((d) => d.name).sort();
    assert.deepEqual(known.filter((k) => !entries.has(k)), [], 'keys of SETTING_DEFS missing from man/pgbun.5');
    assert.deepEqual(documented.filter((k) => !known.includes(k)), [], 'keys in man/pgbun.5 the loader does not know');
  });

  test('type, default and reload rule as in SETTING_DEFS', () => {
    const wrong: string[] = [];
    for (const def of SETTING_DEFS as readonly SettingDef[]) {
      const e = entries.get(def.name);
      if (!e) continue;
      if (e.type !== TYPE_WORD[def.kind]) wrong.push(`${def.name}: type ${e.type}, loader ${def.kind}`);
      if (e.dflt !== def.default) wrong.push(`${def.name}: default ${JSON.stringify(e.dflt)}, loader ${JSON.stringify(def.default)}`);
      const reload = def.reloadable ? 'reloadable' : 'startup only';
      if (e.reload !== reload) wrong.push(`${def.name}: "${e.reload}", loader ${reload}`);
      for (const v of def.values ?? []) {
        if (!plain(e.body).includes(v)) wrong.push(`${def.name}: value ${v} not named`);
      }
    }
    assert.deepEqual(wrong, []);
  });
});

/** Keys a connection-string parser knows: the fields of what it returns, minus bookkeeping. */
function parsedKeys(obj: object, skip: string[]): string[] {
  return Object.keys(obj).filter((k) => !skip.includes(k)).sort();
}

function documentedKeys(sectionName: string): string[] {
  const lines = section(roffLines(MAN5), sectionName);
  return [...new Set(taggedEntries(lines).flatMap((e) => e.names))].sort();
}

const SAMPLE_VALUE: Record<string, string> = { pool_mode: 'session', load_balance_hosts: 'disable', host: 'localhost' };

describe('pgbun.5 documents the [databases], [users] and [peers] keys', () => {
  test('[databases]: the keys parseDatabase knows, and each documented key is accepted', () => {
    const doc = documentedKeys('SECTION [databases]');
    const known = parsedKeys(parseDatabase('db', '', 'x.ini', 1), ['name', 'connstr', 'file', 'line']);
    assert.deepEqual(known.filter((k) => !doc.includes(k)), [], 'undocumented [databases] keys');
    for (const k of doc) {
      assert.doesNotThrow(() => parseDatabase('db', `${k}=${SAMPLE_VALUE[k] ?? '1'}`, 'x.ini', 1), `[databases] key ${k}`);
    }
    assert.ok(doc.includes('reserve_pool'), 'the alias reserve_pool is documented');
  });

  test('[users]: the keys parseUser knows, and each documented key is accepted', () => {
    const doc = documentedKeys('SECTION [users]');
    const known = parsedKeys(parseUser('u', '', 'x.ini', 1), ['name', 'file', 'line']);
    assert.deepEqual(doc, known);
    for (const k of doc) assert.doesNotThrow(() => parseUser('u', `${k}=${SAMPLE_VALUE[k] ?? '1'}`, 'x.ini', 1), `[users] key ${k}`);
  });

  test('[peers]: the keys parsePeer knows', () => {
    const doc = documentedKeys('SECTION [peers]');
    const known = parsedKeys(parsePeer('1', 'host=localhost', 'x.ini', 1), ['peer_id', 'file', 'line']);
    assert.deepEqual(doc, known);
    for (const k of doc) assert.doesNotThrow(() => parsePeer('1', `host=localhost ${k}=${SAMPLE_VALUE[k] ?? '1'}`, 'x.ini', 1));
  });
});

describe('pgbun.1 documents the command line', () => {
  const lines = roffLines(MAN1);

  test('every option of pgbun --help, and no other', () => {
    const cli = path.join(REPO_ROOT, 'dist', 'src', 'cli.js');
    const r = spawnSync(jsRuntime(), [cli, '--help'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const helpOpts = new Set<string>();
    for (const l of r.stdout.split('\n')) {
      if (!/^\s+-/.test(l)) continue;
      for (const m of l.trim().split(/\s{2,}/)[0].matchAll(/(--?[A-Za-z][A-Za-z-]*)/g)) helpOpts.add(m[1]);
    }
    assert.ok(helpOpts.has('--check') && helpOpts.has('-d'), `parsed --help: ${[...helpOpts].join(' ')}`);
    const optLines = section(lines, 'OPTIONS');
    const manOpts = new Set<string>();
    for (const e of optLines.filter((l, i) => optLines[i - 1] === '.TP')) {
      for (const m of plain(e).matchAll(/(?:^|[\s"])(--?[A-Za-z][A-Za-z-]*)/g)) manOpts.add(m[1]);
    }
    assert.deepEqual([...helpOpts].filter((o) => !manOpts.has(o)), [], 'options of --help missing from man/pgbun.1');
    assert.deepEqual([...manOpts].filter((o) => !helpOpts.has(o)), [], 'options in man/pgbun.1 that --help does not list');
  });

  test('signals, exit status and files', () => {
    const sigNames = section(lines, 'SIGNALS').filter((l) => /^\.B SIG[A-Z0-9]+$/.test(l)).map((l) => l.slice(3));
    for (const s of ['SIGHUP', 'SIGINT', 'SIGTERM', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2']) assert.ok(sigNames.includes(s), `${s} documented`);
    const exit = section(lines, 'EXIT STATUS');
    assert.ok(exit.includes('.B 0') && exit.includes('.B 1'), 'exit codes 0 and 1');
    const files = section(lines, 'FILES').join('\n');
    for (const f of ['/etc/pgbun/pgbun.ini', '/etc/pgbun/userlist.txt', '/run/pgbun/pgbun.pid', '/var/log/pgbun/pgbun.log']) {
      assert.ok(files.includes(`.I ${f}`), `${f} in FILES`);
    }
  });
});

// --- sample configuration files --------------------------------------------------------------

/** `;key = value` and `key = value` lines of [pgbouncer] in the sample, in order. */
function iniSettings(text: string): Array<{ key: string; value: string; commented: boolean }> {
  const out: Array<{ key: string; value: string; commented: boolean }> = [];
  let inMain = false;
  for (const line of text.split('\n')) {
    const sec = /^\[([^\]]+)\]/.exec(line);
    if (sec) inMain = sec[1] === 'pgbouncer';
    const m = /^(;?)([a-z_][a-z0-9_]*) = ?(.*)$/.exec(line);
    if (inMain && m) out.push({ key: m[2], value: m[3], commented: m[1] === ';' });
  }
  return out;
}

/** The sample with every `;key = value` example uncommented (prose uses ";;"). */
function uncommented(text: string): string {
  return text.split('\n').map((l) => l.replace(/^;(?=['A-Za-z0-9_.*-]+ *=)/, '')).join('\n');
}

function tempFile(name: string, content: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgbun-man-'));
  const f = path.join(dir, name);
  fs.writeFileSync(f, content);
  return f;
}

describe('etc/pgbun.ini', () => {
  const text = fs.readFileSync(INI, 'utf8');

  test('loads with the config loader without a problem', () => {
    const { config, problems } = loadConfig(INI, { startup: true });
    assert.deepEqual(problems, []);
    assert.ok(config);
    // what the packaged pgbun.service relies on
    assert.equal(config.settings.logfile, '/var/log/pgbun/pgbun.log');
    assert.equal(config.settings.pidfile, '/run/pgbun/pgbun.pid');
    assert.equal(config.settings.unix_socket_dir, '/run/pgbun');
    assert.equal(config.settings.auth_file, '/etc/pgbun/userlist.txt');
    assert.equal(config.settings.user, null, 'the service runs as pgbun already: no user switch');
  });

  test('has every section and names every key once, commented-out keys with their default', () => {
    for (const s of ['[databases]', '[users]', '[peers]', '[pgbouncer]']) assert.ok(text.split('\n').includes(s), `${s} section`);
    const settings = iniSettings(text);
    const seen = new Map<string, number>();
    for (const s of settings) seen.set(s.key, (seen.get(s.key) ?? 0) + 1);
    assert.deepEqual(SETTING_DEFS.map((d) => d.name).filter((k) => !seen.has(k)), [], 'keys missing from etc/pgbun.ini');
    assert.deepEqual([...seen].filter(([, n]) => n > 1).map(([k]) => k), [], 'keys named twice');
    const known = new Set(SETTING_DEFS.map((d) => d.name));
    assert.deepEqual([...seen.keys()].filter((k) => !known.has(k)), [], 'unknown keys');
    const wrong = settings
      .filter((s) => s.commented)
      .map((s) => ({ s, def: SETTING_DEFS.find((d) => d.name === s.key)! }))
      .filter(({ s, def }) => def.default !== null && s.value !== def.default)
      .map(({ s, def }) => `${s.key}: sample ${JSON.stringify(s.value)}, default ${JSON.stringify(def.default)}`);
    assert.deepEqual(wrong, [], 'commented-out keys show the default');
  });

  test('every commented-out example loads too', () => {
    const file = tempFile('all.ini', uncommented(text));
    try {
      const { config, problems } = loadConfig(file, { startup: true });
      assert.deepEqual(problems, []);
      assert.ok(config);
      assert.ok(config.databases.size >= 5, 'the [databases] examples');
      assert.ok(config.databases.has('*'));
      assert.ok(config.users.size >= 2, 'the [users] examples');
      assert.ok(config.peers.size >= 2, 'the [peers] examples');
    } finally {
      fs.rmSync(path.dirname(file), { recursive: true, force: true });
    }
  });
});

describe('etc/userlist.txt and etc/pgbun_hba.conf', () => {
  test('userlist.txt: no active user, and its examples are valid secrets of the passwords it names', () => {
    const plainList = loadUserlist(USERLIST);
    assert.deepEqual(plainList.problems, []);
    assert.equal(plainList.users.size, 0, 'the sample lets nobody in');

    const text = fs.readFileSync(USERLIST, 'utf8');
    const file = tempFile('userlist.txt', text.split('\n').map((l) => l.replace(/^;(?=")/, '')).join('\n'));
    try {
      const { users, problems } = loadUserlist(file);
      assert.deepEqual(problems, []);
      assert.deepEqual([...users.keys()].sort(), ['alice', 'bob', 'carol']);
      assert.equal(users.get('carol'), 'carol_password');
      const md5 = 'md5' + crypto.createHash('md5').update('bob_password' + 'bob').digest('hex');
      assert.equal(users.get('bob'), md5);
      const m = /^SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)$/.exec(users.get('alice')!);
      assert.ok(m, 'alice has a SCRAM secret');
      const salted = crypto.pbkdf2Sync('alice_password', Buffer.from(m[2], 'base64'), Number(m[1]), 32, 'sha256');
      const clientKey = crypto.createHmac('sha256', salted).update('Client Key').digest();
      assert.equal(crypto.createHash('sha256').update(clientKey).digest('base64'), m[3], 'StoredKey');
      assert.equal(crypto.createHmac('sha256', salted).update('Server Key').digest('base64'), m[4], 'ServerKey');
    } finally {
      fs.rmSync(path.dirname(file), { recursive: true, force: true });
    }
  });

  test('pgbun_hba.conf parses without a warning', () => {
    const { rules, problems } = parseHbaFile(HBA);
    assert.deepEqual(problems, []);
    const active = fs.readFileSync(HBA, 'utf8').split('\n').filter((l) => l.trim() && !l.trim().startsWith('#'));
    assert.equal(rules.length, active.length, 'one rule per non-comment line');
  });
});
