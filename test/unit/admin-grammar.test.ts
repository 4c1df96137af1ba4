// The console grammar (PgBouncer's admin.c regexes) and the statistics arithmetic (PgBouncer's
// calc_average and the `stats:` log line), without sockets.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseAdminQuery } from '../../src/admin/grammar.js';
import { PoolStats, calcAverage, statsLogLine } from '../../src/stats/counters.js';

describe('parseAdminQuery', () => {
  const cmd = (c: string, arg = ''): ReturnType<typeof parseAdminQuery> => ({ kind: 'command', cmd: c, arg });
  const set = (key: string, value: string): ReturnType<typeof parseAdminQuery> => ({ kind: 'set', key, value });

  test('WORD [WORD] [;], case kept, blanks and newlines around', () => {
    assert.deepEqual(parseAdminQuery('SHOW POOLS'), cmd('SHOW', 'POOLS'));
    assert.deepEqual(parseAdminQuery('show pools;'), cmd('show', 'pools'));
    assert.deepEqual(parseAdminQuery('  \n\tPause\r\n MyDb ; \n'), cmd('Pause', 'MyDb'));
    assert.deepEqual(parseAdminQuery('RELOAD'), cmd('RELOAD'));
    assert.deepEqual(parseAdminQuery('reload ;'), cmd('reload'));
    assert.deepEqual(parseAdminQuery('KILL_CLIENT 17'), cmd('KILL_CLIENT', '17'));
    assert.deepEqual(parseAdminQuery('select 1'), cmd('select', '1'));
    // grammatical, and then unknown commands at dispatch (no `set` command)
    assert.deepEqual(parseAdminQuery('SET'), cmd('SET'));
    assert.deepEqual(parseAdminQuery('SET x'), cmd('SET', 'x'));
  });

  test('double-quoted words: quotes removed, "" is one quote, anything inside', () => {
    assert.deepEqual(parseAdminQuery('PAUSE "my db"'), cmd('PAUSE', 'my db'));
    assert.deepEqual(parseAdminQuery('PAUSE "a""b"'), cmd('PAUSE', 'a"b'));
    assert.deepEqual(parseAdminQuery('"SHOW" "Pools"'), cmd('SHOW', 'Pools'));
    assert.deepEqual(parseAdminQuery('PAUSE "x;y"'), cmd('PAUSE', 'x;y'));
  });

  test('anything else is a syntax error', () => {
    for (const q of ['', ';', 'SHOW POOLS; SHOW STATS', 'show version;;', 'SHOW POOLS x', 'SHOW-POOLS', 'PAUSE "open',
      'SELECT 1 + 1', 'SET x =', 'SET = 1', "SET x = 'unterminated", 'SET x = 1 2', 'SHOW pööls']) {
      assert.deepEqual(parseAdminQuery(q), { kind: 'syntax-error' }, JSON.stringify(q));
    }
  });

  test('a long unterminated quote does not take exponential time', () => {
    const started = Date.now();
    assert.deepEqual(parseAdminQuery(`PAUSE "${'a'.repeat(50_000)}`), { kind: 'syntax-error' });
    assert.deepEqual(parseAdminQuery(`SET x = '${"a''".repeat(20_000)}`), { kind: 'syntax-error' });
    assert.ok(Date.now() - started < 2000);
  });

  test('SET key = value / TO value: word or single-quoted string', () => {
    assert.deepEqual(parseAdminQuery('SET verbose = 2'), set('verbose', '2'));
    assert.deepEqual(parseAdminQuery('set verbose to 2;'), set('verbose', '2'));
    assert.deepEqual(parseAdminQuery("SET server_reset_query = 'DISCARD ALL'"), set('server_reset_query', 'DISCARD ALL'));
    assert.deepEqual(parseAdminQuery("SET x='it''s'"), set('x', "it's"));
    assert.deepEqual(parseAdminQuery("SET x = ''"), set('x', ''));
    assert.deepEqual(parseAdminQuery('SET "Key" = "va""l"'), set('Key', 'va"l'));
    assert.deepEqual(parseAdminQuery('SET DateStyle TO ISO'), set('DateStyle', 'ISO'));
  });

  test('PgBouncer buffer sizes: command < 16, argument and key < 64, value < 256 bytes (as written)', () => {
    assert.deepEqual(parseAdminQuery(`${'a'.repeat(15)} x`), cmd('a'.repeat(15), 'x'));
    assert.deepEqual(parseAdminQuery(`${'a'.repeat(16)} x`), { kind: 'bad-arguments' });
    assert.deepEqual(parseAdminQuery(`PAUSE ${'d'.repeat(63)}`), cmd('PAUSE', 'd'.repeat(63)));
    assert.deepEqual(parseAdminQuery(`PAUSE ${'d'.repeat(64)}`), { kind: 'bad-arguments' });
    // quotes count: 62 characters + 2 quotes = 64 bytes
    assert.deepEqual(parseAdminQuery(`PAUSE "${'d'.repeat(62)}"`), { kind: 'bad-arguments' });
    assert.deepEqual(parseAdminQuery(`PAUSE "${'d'.repeat(61)}"`), cmd('PAUSE', 'd'.repeat(61)));
    assert.deepEqual(parseAdminQuery(`PAUSE ${'é'.repeat(32)}`), { kind: 'syntax-error' }, 'non-ASCII is not a WORD');
    assert.deepEqual(parseAdminQuery(`PAUSE "${'é'.repeat(31)}"`), { kind: 'bad-arguments' }, '62 bytes + quotes');
    assert.deepEqual(parseAdminQuery(`SET ${'k'.repeat(64)} = 1`), { kind: 'bad-arguments' });
    assert.deepEqual(parseAdminQuery(`SET k = '${'v'.repeat(253)}'`), set('k', 'v'.repeat(253)));
    assert.deepEqual(parseAdminQuery(`SET k = '${'v'.repeat(254)}'`), { kind: 'bad-arguments' });
    assert.deepEqual(parseAdminQuery('SET "" = 1'), { kind: 'bad-arguments' });
  });
});

describe('statistics arithmetic', () => {
  function stats(v: Partial<PoolStats>): PoolStats {
    return Object.assign(new PoolStats(), v);
  }

  test('calcAverage: rates per second over the period, times per xact/query/assignment, integers', () => {
    const old = stats({ xactCount: 100, queryCount: 200, serverAssignmentCount: 100, clientBytes: 1000, serverBytes: 5000,
      xactTime: 10_000, queryTime: 20_000, waitTime: 0, clientParseCount: 1, serverParseCount: 1, bindCount: 2,
      clientLoginCount: 3 });
    const cur = stats({ xactCount: 130, queryCount: 290, serverAssignmentCount: 160, clientBytes: 1000 + 6001,
      serverBytes: 5000 + 9000, xactTime: 10_000 + 30_000, queryTime: 20_000 + 90_001, waitTime: 600,
      clientParseCount: 31, serverParseCount: 7, bindCount: 62, clientLoginCount: 9 });
    const a = calcAverage(cur, old, 3_000_000); // 3 s
    assert.deepEqual({ ...a }, {
      serverAssignmentCount: 20, xactCount: 10, queryCount: 30, clientBytes: 2000, serverBytes: 3000,
      xactTime: 1000, queryTime: 1000, waitTime: 10, clientParseCount: 10, serverParseCount: 2, bindCount: 20,
      clientLoginCount: 2,
    });
  });

  test('calcAverage: no traffic or no period yet gives zeros', () => {
    const s = stats({ xactCount: 5, queryCount: 5, xactTime: 100 });
    assert.deepEqual({ ...calcAverage(s, s, 1_000_000) }, { ...new PoolStats() });
    assert.deepEqual({ ...calcAverage(s, new PoolStats(), 0) }, { ...new PoolStats() });
  });

  test('the stats log line', () => {
    const a = stats({ xactCount: 1, queryCount: 2, clientParseCount: 3, serverParseCount: 4, bindCount: 5,
      clientLoginCount: 6, clientBytes: 7, serverBytes: 8, xactTime: 9, queryTime: 10, waitTime: 11 });
    assert.equal(statsLogLine(a), 'stats: 1 xacts/s, 2 queries/s, 3 client parses/s, 4 server parses/s, 5 binds/s, ' +
      '6 client logins/s, in 7 B/s, out 8 B/s, xact 9 us, query 10 us, wait 11 us');
  });
});
