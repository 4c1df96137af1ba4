import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { identMapMatches, parseIdentFile, parseIdentText } from '../../src/auth/ident.js';

test('maps: exact names, all, several lines per map, comments', () => {
  const { maps, problems } = parseIdentText(
    [
      '# MAPNAME  SYSTEM-USERNAME  PG-USERNAME',
      'certmap   client.example.com   app    # trailing comment',
      'certmap   client.example.com   report',
      '  unixmap root all',
      'unixmap   "svc user"  "all"',
      '',
      '\t',
    ].join('\n'),
    'ident.conf',
  );
  assert.deepEqual(problems, []);
  assert.deepEqual([...maps.keys()], ['certmap', 'unixmap']);
  const cert = maps.get('certmap');
  assert.equal(identMapMatches(cert, 'client.example.com', 'app'), true);
  assert.equal(identMapMatches(cert, 'client.example.com', 'report'), true);
  assert.equal(identMapMatches(cert, 'client.example.com', 'postgres'), false);
  assert.equal(identMapMatches(cert, 'CLIENT.example.com', 'app'), false, 'case-sensitive');
  const unix = maps.get('unixmap');
  assert.equal(identMapMatches(unix, 'root', 'anyone'), true, 'all = any db user');
  assert.equal(identMapMatches(unix, 'svc user', 'all'), true, 'quoted "all" is a user named all');
  assert.equal(identMapMatches(unix, 'svc user', 'app'), false);
  assert.equal(identMapMatches(maps.get('nomap'), 'root', 'root'), false);
});

test('unsupported and malformed lines are skipped with warnings', () => {
  const { maps, problems } = parseIdentText(
    [
      'm1 /^(.*)@example\\.com$ \\1', // 1 regex
      'm1 bob +admins', // 2 group
      'include other.conf', // 3 include
      'm1 a, b c', // 4 comma list
      'm1 a b c', // 5 too many
      'm1 "open b', // 6 unterminated quote
      'm1 alice alice', // 7 ok
    ].join('\n'),
    'ident.conf',
  );
  assert.deepEqual(
    problems.map((p) => [p.line, p.warning, p.file]),
    [1, 2, 3, 4, 5, 6].map((l) => [l, true, 'ident.conf']),
  );
  assert.match(problems[0]!.message, /^could not parse ident config line 1: regular expressions are not supported$/);
  assert.equal(identMapMatches(maps.get('m1'), 'alice', 'alice'), true);
  assert.equal(identMapMatches(maps.get('m1'), 'bob', '+admins'), false);
  assert.equal(maps.get('m1')!.length, 1);
});

test('parseIdentFile reads a file and reports a missing one', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgbun-ident-'));
  try {
    writeFileSync(join(dir, 'ident.conf'), 'm postgres app\r\n');
    const { maps, problems } = parseIdentFile(join(dir, 'ident.conf'));
    assert.deepEqual(problems, []);
    assert.equal(identMapMatches(maps.get('m'), 'postgres', 'app'), true);
    const missing = parseIdentFile(join(dir, 'nope.conf'));
    assert.equal(missing.maps.size, 0);
    assert.equal(missing.problems.length, 1);
    assert.equal(missing.problems[0]!.warning, undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
