import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../lib/procs.js';
import { matchHba, parseHbaFile, parseHbaText, parseIp, type HbaConn, type HbaRule } from '../../src/auth/hba.js';

// PgBouncer's own test data, copied with its licence (see test/fixtures/pgbouncer-hba/README.md).
const TESTDATA = join(REPO_ROOT, 'test', 'fixtures', 'pgbouncer-hba');

const conn = (c: Partial<HbaConn>): HbaConn => ({
  unix: false,
  tls: false,
  database: 'db',
  user: 'user',
  addr: '127.0.0.1',
  replication: 'none',
  ...c,
});
const method = (rules: HbaRule[], c: Partial<HbaConn>): string => matchHba(rules, conn(c))?.method ?? 'reject';

test("PgBouncer's own HBA cases (hba_test.rules / hba_test.eval)", () => {
  const { rules, problems } = parseHbaFile(join(TESTDATA, 'hba_test.rules'));
  assert.deepEqual(problems, [], 'hba_test.rules parses cleanly');
  const lines = readFileSync(join(TESTDATA, 'hba_test.eval'), 'utf8').split('\n');
  let cases = 0;
  lines.forEach((text, i) => {
    if (text.trim() === '' || text.startsWith('#')) return;
    // Columns are separated by runs of tabs, as PgBouncer's hba_test.c reads them: a user name
    // in the file (`a , b`) contains spaces.
    const [expected, database, user, addr, modifier] = text.split(/\t+/) as [string, string, string, string, string?];
    const c: HbaConn = {
      unix: addr === 'unix',
      tls: modifier === 'tls',
      database,
      user,
      addr: addr === 'unix' ? '' : addr,
      replication: modifier === 'replication' ? 'physical' : 'none',
    };
    const got = matchHba(rules, c)?.method ?? 'reject';
    assert.equal(got, expected, `hba_test.eval line ${i + 1}: ${JSON.stringify(text)}`);
    cases++;
  });
  assert.ok(cases > 50, `only ${cases} cases found`);
});

function withDir(fn: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'pgbun-hba-'));
  try {
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('@file lists, relative to the HBA file directory', () => {
  withDir((dir) => {
    mkdirSync(join(dir, 'conf'));
    writeFileSync(join(dir, 'conf', 'dbs.txt'), 'sales, "hr dept"\n# comment line\nall   ops # all is literal here\n');
    writeFileSync(join(dir, 'conf', 'admins'), 'alice\nbob,carol\n');
    writeFileSync(join(dir, 'conf', 'hba.conf'), 'host @dbs.txt @admins 0.0.0.0/0 md5\nhost all all 0.0.0.0/0 reject\n');
    const { rules, problems } = parseHbaFile(join(dir, 'conf', 'hba.conf'));
    assert.deepEqual(problems, []);
    assert.equal(method(rules, { database: 'sales', user: 'alice' }), 'md5');
    assert.equal(method(rules, { database: 'hr dept', user: 'carol' }), 'md5');
    assert.equal(method(rules, { database: 'ops', user: 'bob' }), 'md5');
    assert.equal(method(rules, { database: 'all', user: 'bob' }), 'md5');
    assert.equal(method(rules, { database: 'other', user: 'bob' }), 'reject');
    assert.equal(method(rules, { database: 'sales', user: 'dave' }), 'reject');
    assert.equal(matchHba(rules, conn({ database: 'other', user: 'bob' }))?.line, 2);
  });
});

test('a missing @file skips the line with a warning, the rest loads', () => {
  withDir((dir) => {
    writeFileSync(join(dir, 'hba.conf'), 'host @nope all 0.0.0.0/0 trust\nhost all all 0.0.0.0/0 md5\n');
    const { rules, problems } = parseHbaFile(join(dir, 'hba.conf'));
    assert.equal(rules.length, 1);
    assert.ok(problems.every((p) => p.warning && p.line === 1 && p.file === join(dir, 'hba.conf')));
    assert.ok(problems.some((p) => p.message === 'could not parse hba config line 1'));
    assert.equal(method(rules, { database: 'x' }), 'md5');
  });
});

test('address with a separate mask column, IPv4 and IPv6', () => {
  const { rules, problems } = parseHbaText(
    [
      'host all all 10.1.0.0 255.255.0.0 trust',
      'host all all fe80:: ffff:ffff:ffff:ffff:: password',
      'host all all 192.168.1.0 255.255.255.0 md5',
      'host all all 0.0.0.0/0 reject',
    ].join('\n'),
    '/etc/hba.conf',
  );
  assert.deepEqual(problems, []);
  assert.equal(method(rules, { addr: '10.1.200.3' }), 'trust');
  assert.equal(method(rules, { addr: '10.2.0.1' }), 'reject');
  assert.equal(method(rules, { addr: 'fe80::1:2' }), 'password');
  assert.equal(method(rules, { addr: 'fe80::1%eth0' }), 'password', 'zone id ignored');
  assert.equal(method(rules, { addr: 'fe81::1' }), 'reject', 'no IPv4 rule matches IPv6, no IPv6 rule here either');
  assert.equal(method(rules, { addr: '192.168.1.77' }), 'md5');
  assert.equal(method(rules, { addr: '::ffff:192.168.1.77' }), 'md5', 'IPv4-mapped IPv6 client matches IPv4 rules');
});

test('quoted names, "" escapes, keywords only when unquoted', () => {
  const { rules, problems } = parseHbaText(
    [
      'host "my db","sameuser" "o\'brien","x""y" all trust',
      'host "replication" all all password',
      'host sameuser all all md5',
      'host all all all reject',
    ].join('\n'),
    'hba',
  );
  assert.deepEqual(problems, []);
  assert.equal(method(rules, { database: 'my db', user: "o'brien" }), 'trust');
  assert.equal(method(rules, { database: 'sameuser', user: 'x"y' }), 'trust');
  assert.equal(method(rules, { database: 'replication', user: 'u' }), 'password');
  assert.equal(method(rules, { database: 'bob', user: 'bob' }), 'md5');
  assert.equal(method(rules, { database: 'bob', user: 'alice' }), 'reject');
  assert.equal(method(rules, { database: 'x', user: 'y', replication: 'physical' }), 'reject');
  assert.equal(method(rules, { database: 'bob', user: 'bob', replication: 'logical' }), 'md5', 'logical = normal db match');
});

test('line types: local only for Unix sockets, hostssl/hostnossl by TLS', () => {
  const { rules } = parseHbaText(
    ['local all all peer map=unixmap', 'hostssl all all all cert map=certmap', 'hostnossl all all all md5'].join('\n'),
    'hba',
  );
  assert.deepEqual(matchHba(rules, conn({ unix: true, addr: '' })), rules[0]);
  assert.equal(rules[0]!.map, 'unixmap');
  assert.equal(method(rules, { tls: true }), 'cert');
  assert.equal(rules[1]!.map, 'certmap');
  assert.equal(method(rules, { tls: false }), 'md5');
});

test('malformed lines are skipped with a warning, the rest still loads', () => {
  const text = [
    '# comment',
    'host all all 10.0.0.0/8 trust', // 2 ok
    'hots all all 10.0.0.0/8 trust', // 3 unknown type
    'host all all 10.0.0.0/33 trust', // 4 bad prefix
    'host all all 10.0.0.0 trust', // 5 mask missing ("trust" is no mask)
    'host all all example.com trust', // 6 host names unsupported
    'host all all samenet trust', // 7
    'host samerole all all trust', // 8
    'host all +group all trust', // 9
    'host all all all ident', // 10 unsupported method
    'host all all all pam', // 11
    'host all all all md5 extra', // 12 unknown option
    'host all all all md5 map=x', // 13 map only for cert/peer
    'host "unterminated all all trust', // 14
    'host all all', // 15 truncated
    'local all', // 16
    'host db, all all trust', // 17 comma list runs into the user column: "trust" is no address
    'host all all 10.0.0.0 255.0.0 trust', // 18 bad mask
    'host all all ::1/129 trust', // 19
    'local all all md5', // 20 ok
  ].join('\r\n');
  const { rules, problems } = parseHbaText(text, '/etc/pgbouncer/hba.conf');
  assert.deepEqual(
    rules.map((r) => r.line),
    [2, 20],
  );
  const skipped = problems.filter((p) => p.message.startsWith('could not parse hba config line')).map((p) => p.line);
  assert.deepEqual(skipped, [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
  for (const p of problems) {
    assert.equal(p.warning, true);
    assert.equal(p.file, '/etc/pgbouncer/hba.conf');
  }
  assert.ok(problems.some((p) => p.message === 'could not parse hba config line 10'));
});

test('ldap keeps its options; trailing comments are ignored', () => {
  const { rules, problems } = parseHbaText(
    'host all all 0.0.0.0/0 ldap ldapserver=ldap.example.net ldapprefix="cn=" ldapsuffix=", dc=example" # comment\n' +
      'host all all ::/0 scram-sha-256 # comment',
    'hba',
  );
  assert.deepEqual(problems, []);
  assert.equal(rules[0]!.method, 'ldap');
  assert.equal(rules[0]!.options, 'ldapserver=ldap.example.net ldapprefix="cn=" ldapsuffix=", dc=example"');
  assert.equal(rules[1]!.method, 'scram-sha-256');
  assert.equal(rules[1]!.options, null);
});

test('an unreadable HBA file is an error, not a crash', () => {
  const { rules, problems } = parseHbaFile('/nonexistent/pgbun/hba.conf');
  assert.deepEqual(rules, []);
  assert.equal(problems.length, 1);
  assert.equal(problems[0]!.warning, undefined);
  assert.match(problems[0]!.message, /^could not open hba config file \/nonexistent\/pgbun\/hba\.conf: /);
});

test('parseIp', () => {
  assert.deepEqual(parseIp('1.2.3.4'), Uint8Array.from([1, 2, 3, 4]));
  assert.deepEqual(parseIp('::1'), Uint8Array.from([...new Array(15).fill(0), 1]));
  assert.deepEqual(parseIp('2001:db8::ff00:42:8329'), Uint8Array.from([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0xff, 0, 0, 0x42, 0x83, 0x29]));
  assert.deepEqual(parseIp('::ffff:1.2.3.4'), Uint8Array.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4]));
  assert.deepEqual(parseIp('1:2:3:4:5:6:7:8'), Uint8Array.from([0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 8]));
  assert.deepEqual(parseIp('fe80::'), Uint8Array.from([0xfe, 0x80, ...new Array(14).fill(0)]));
  for (const bad of ['1.2.3', '256.1.1.1', 'fe80::1%eth0', 'example.com', '', '1::2::3']) assert.equal(parseIp(bad), null, bad);
});
