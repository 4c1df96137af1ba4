// auth_file rules of PgBouncer's load_auth_file; the odd cases were observed on PgBouncer 1.18.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MAX_PASSWORD, MAX_USERNAME, loadUserlist, parseUserlist } from '../../src/config/userlist.js';

const F = 'userlist.txt';
const users = (text: string): Array<[string, string]> => [...parseUserlist(text, F).users];

test('one "user" "secret" record per line; the rest of the line is ignored', () => {
  assert.deepEqual(users('"u1" "p1" trailing junk\n"u2" "p2"\n'), [['u1', 'p1'], ['u2', 'p2']]);
  assert.deepEqual(parseUserlist('"u1" "p1"\n', F).problems, []);
});

test('leading blanks, blank lines, tabs and CRLF are fine', () => {
  assert.deepEqual(users('\n   "u2"   "p2"\r\n\t"u9"\t"p9"\r\n\n'), [['u2', 'p2'], ['u9', 'p9']]);
});

test('`""` inside quotes is one quote, in names and secrets', () => {
  assert.deepEqual(users('"u""6" "p""6"\n"u7""x" "p7"\n'), [['u"6', 'p"6'], ['u7"x', 'p7']]);
});

test('`;` lines are comments', () => {
  assert.deepEqual(users('; "u3" "p3"\n   ;x\n"u4" "p4"\n'), [['u4', 'p4']]);
});

test('`#` is not a comment: `broken auth file`, reading stops, earlier users stay', () => {
  const r = parseUserlist('"u1" "p1"\n#"u10" "p10"\n"u11" "p11"\n', F);
  assert.deepEqual([...r.users], [['u1', 'p1']]);
  assert.deepEqual(r.problems, [{ file: F, line: 2, message: `broken auth file (${F}:2)`, log: ['broken auth file'] }]);
});

test('any other malformed record is `broken auth file` too', () => {
  for (const bad of ['user "p"', "'u' 'p'", 'u:p', '-']) {
    const r = parseUserlist(`"ok" "1"\n${bad}\n"after" "2"\n`, F);
    assert.deepEqual([...r.users], [['ok', '1']], bad);
    assert.deepEqual(r.problems.map((p) => [p.line, p.message]), [[2, `broken auth file (${F}:2)`]], bad);
  }
  // a missing closing quote runs on to the next quote in the file; at the end it is broken
  for (const bad of ['"unterminated', '"u"', '"u" "unterminated', '"u" ']) {
    const r = parseUserlist(`"ok" "1"\n${bad}\n`, F);
    assert.deepEqual([...r.users], [['ok', '1']], bad);
    assert.deepEqual(r.problems.map((p) => [p.line, p.message]), [[2, `broken auth file (${F}:2)`]], bad);
  }
});

test('the secret may follow junk or even sit on the next line, as the C code finds it (1.18)', () => {
  assert.deepEqual(users('"u4" junk "p4"\n"u5"\n"p5"\n"u6" "p6"\n'), [['u4', 'p4'], ['u5', 'p5'], ['u6', 'p6']]);
});

test('an empty secret is a user without password', () => {
  assert.deepEqual(users('"u8" ""\n'), [['u8', '']]);
});

test('secrets are kept as written (plain, md5, SCRAM are told apart elsewhere)', () => {
  const md5 = 'md53175bce1d3201d16594cebf9d7eb3f9d';
  const scram = 'SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy';
  assert.deepEqual(users(`"a" "${md5}"\n"b" "${scram}"\n"c" "plain pass"\n`),
    [['a', md5], ['b', scram], ['c', 'plain pass']]);
});

test('a repeated user: the last secret wins', () => {
  assert.deepEqual(users('"u" "1"\n"u" "2"\n'), [['u', '2']]);
});

test('username: 127 bytes ok, 128 → `username too long in auth file`, raw bytes counted', () => {
  assert.equal(MAX_USERNAME, 128);
  assert.deepEqual(users(`"${'a'.repeat(127)}" "x"\n`).length, 1);
  const r = parseUserlist(`"ok" "1"\n"${'a'.repeat(128)}" "x"\n"zz" "zz"\n`, F);
  assert.deepEqual([...r.users.keys()], ['ok']);
  assert.deepEqual(r.problems.map((p) => p.message), [`username too long in auth file (${F}:2)`]);
  // `""` counts as two bytes (1.18: 126 chars + an escaped quote is too long)
  assert.equal(parseUserlist(`"a""${'a'.repeat(125)}" "x"\n`, F).problems[0]?.message, `username too long in auth file (${F}:1)`);
  // multi-byte characters count in bytes: 64 × 2 bytes
  assert.equal(parseUserlist(`"${'é'.repeat(64)}" "x"\n`, F).problems[0]?.message, `username too long in auth file (${F}:1)`);
});

test('secret: 65530 bytes ok, 65531 → `password too long in auth file` (PgBouncer after 1.25.2)', () => {
  assert.equal(MAX_PASSWORD, 65531);
  assert.deepEqual(users(`"u" "${'p'.repeat(65530)}"\n`)[0]?.[1].length, 65530);
  const r = parseUserlist(`"u" "${'p'.repeat(65531)}"\n"zz" "zz"\n`, F);
  assert.deepEqual(r.users.size, 0);
  assert.deepEqual(r.problems.map((p) => p.message), [`password too long in auth file (${F}:1)`]);
});

test('UTF-8 names and secrets are decoded', () => {
  assert.deepEqual(users('"jürgen" "pässwörd"\n'), [['jürgen', 'pässwörd']]);
  assert.deepEqual([...parseUserlist(Buffer.from('"jürgen" "x"\n'), F).users.keys()], ['jürgen']);
});

test('loadUserlist reads the file; a missing one is `could not open auth_file F: ...`', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgbun-userlist-'));
  const path = join(dir, 'userlist.txt');
  writeFileSync(path, '"a" "b"\n#stop\n');
  const r = loadUserlist(path);
  assert.deepEqual([...r.users], [['a', 'b']]);
  assert.deepEqual(r.problems.map((p) => [p.file, p.line, p.message]), [[path, 2, `broken auth file (${path}:2)`]]);
  const missing = join(dir, 'nope.txt');
  const m = loadUserlist(missing);
  assert.equal(m.users.size, 0);
  assert.deepEqual(m.problems.map((p) => p.message), [`could not open auth_file ${missing}: No such file or directory`]);
});
