// The logger's text lines are built by hand (not through pino) and its timestamps come from a
// per-second cache: both must still give PgBouncer's exact line format.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Logger, escapeLogText, formatLogTime, formatShowTime, type LogSubject } from '../../src/log/logger.js';

const pad = (n: number, w = 2): string => String(n).padStart(w, '0');

/** The reference: strftime("%Y-%m-%d %H:%M:%S") + ".mmm" + " %Z", computed with no cache. */
function reference(ms: number, zone: string): string {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:` +
    `${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)} ${zone}`;
}

test('formatLogTime matches an uncached formatting across second, day and year boundaries', () => {
  const zone = formatLogTime(0).split(' ')[2]!;
  assert.match(zone, /^\S+$/);
  const starts = [Date.UTC(2026, 11, 31, 23, 59, 58), Date.UTC(2026, 1, 28, 12, 0, 0), Date.now()];
  for (const start of starts) {
    // every millisecond value once in a while, and back and forth across seconds
    for (let ms = start; ms < start + 3000; ms += 7) assert.equal(formatLogTime(ms), reference(ms, zone));
    for (let ms = start + 3000; ms > start; ms -= 501) assert.equal(formatLogTime(ms), reference(ms, zone));
  }
  assert.equal(formatLogTime(Date.UTC(2026, 0, 1) + 5).slice(-4 - zone.length, -zone.length - 1), '005');
  // microsecond clocks divided by 1000 come in with fractions: cut, as Date does
  const t = Date.UTC(2026, 10, 26, 20, 24, 47, 726);
  assert.equal(formatLogTime(t + 0.07421875), reference(t, zone));
  assert.equal(formatLogTime(t + 0.999), reference(t, zone));
});

test('formatShowTime drops the milliseconds', () => {
  const ms = Date.UTC(2026, 10, 26, 14, 52, 50, 123);
  const zone = formatLogTime(0).split(' ')[2]!;
  assert.equal(formatShowTime(ms), reference(ms, zone).replace('.123', ''));
});

function withLogger(fn: (l: Logger, read: () => string[]) => void): void {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgbun-log-'));
  const file = path.join(dir, 'pgbun.log');
  const l = new Logger();
  l.setStderr(false);
  l.setLogfile(file);
  try {
    fn(l, () => fs.readFileSync(file, 'utf8').split('\n').filter((x) => x !== ''));
  } finally {
    l.setLogfile('');
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const subject: LogSubject = { logPrefix: () => 'C-0x7f0000000010: db/user@127.0.0.1:5432' };
const LINE = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \S+ \[(\d+)\] ([A-Z]+) (.*)$/;

test('text lines: timestamp, [pid], level word, connection prefix, message', () => {
  withLogger((l, read) => {
    l.log('listening on 127.0.0.1:6432');
    l.conn('log', subject, 'login attempt: db=db user=user tls=no replication=no');
    l.warning('w');
    l.error('e');
    l.setPid(4242);
    l.conn('warning', subject, 'pooler error: x');
    const lines = read();
    assert.equal(lines.length, 5);
    const parsed = lines.map((x) => LINE.exec(x));
    assert.ok(parsed.every((m) => m !== null), lines.join('\n'));
    assert.deepEqual(parsed.map((m) => [m![2], m![3]]), [
      ['LOG', 'listening on 127.0.0.1:6432'],
      ['LOG', 'C-0x7f0000000010: db/user@127.0.0.1:5432 login attempt: db=db user=user tls=no replication=no'],
      ['WARNING', 'w'],
      ['ERROR', 'e'],
      ['WARNING', 'C-0x7f0000000010: db/user@127.0.0.1:5432 pooler error: x'],
    ]);
    assert.equal(parsed[0]![1], String(process.pid));
    assert.equal(parsed[4]![1], '4242');
  });
});

test('verbose decides whether DEBUG and NOISE lines are written', () => {
  withLogger((l, read) => {
    l.debug('d0');
    l.conn('debug', subject, 'cd0');
    l.setVerbose(1);
    l.debug('d1');
    l.noise('n1');
    l.setVerbose(2);
    l.conn('noise', subject, 'cn2');
    l.setVerbose(0);
    l.debug('d3');
    l.log('l3');
    assert.deepEqual(read().map((x) => LINE.exec(x)![2] + ' ' + LINE.exec(x)![3]), [
      'DEBUG d1',
      'NOISE C-0x7f0000000010: db/user@127.0.0.1:5432 cn2',
      'LOG l3',
    ]);
  });
});

test('log_format = json: one pino record per line with level, time, pid, msg and conn', () => {
  withLogger((l, read) => {
    l.setJson(true);
    l.log('plain');
    l.conn('warning', subject, 'about a connection');
    l.setVerbose(1);
    l.debug('dbg');
    const recs = read().map((x) => JSON.parse(x) as Record<string, unknown>);
    assert.equal(recs.length, 3);
    assert.deepEqual(recs.map((r) => [r.level, r.msg, r.conn]), [
      [30, 'plain', undefined],
      [40, 'about a connection', 'C-0x7f0000000010: db/user@127.0.0.1:5432'],
      [20, 'dbg', undefined],
    ]);
    for (const r of recs) {
      assert.equal(r.pid, process.pid);
      assert.equal(typeof r.time, 'number');
    }
  });
});

test('control characters and line breaks from names and messages are escaped: one event, one line', () => {
  assert.equal(escapeLogText('plain text'), 'plain text');
  assert.equal(escapeLogText('a\nb\rc\td'), 'a\\nb\\rc\\td');
  assert.equal(escapeLogText('\x00\x1b[31m\x7f\x85'), '\\x00\\x1b[31m\\x7f\\x85');
  assert.equal(escapeLogText('x\u2028y\u2029z'), 'x\\u2028y\\u2029z');
  assert.equal(escapeLogText('héllo → ok'), 'héllo → ok');
  withLogger((l, read) => {
    const forged = '2026-01-01 00:00:00.000 UTC [1] LOG C-0x1: db/admin@127.0.0.1:1 login attempt';
    const evil: LogSubject = { logPrefix: () => `C-0x7f0000000010: db/user\n${forged}@127.0.0.1:5432` };
    l.conn('log', evil, `login attempt: db=db user=user\n${forged}`);
    l.log(`server said: first line\nsecond line`);
    l.setJson(true);
    l.conn('log', evil, `json\n${forged}`);
    const lines = read();
    assert.equal(lines.length, 3, lines.join('\n'));
    assert.ok(LINE.test(lines[0]!) && LINE.test(lines[1]!));
    assert.ok(lines[0]!.includes(`db/user\\n${forged}@`));
    assert.ok(lines[1]!.endsWith('server said: first line\\nsecond line'));
    assert.equal((JSON.parse(lines[2]!) as { msg: string }).msg, `json\n${forged}`);
  });
});

test('quietly() keeps the lines about connections and drops the others, text and JSON alike', () => {
  for (const json of [false, true]) {
    withLogger((l, read) => {
      l.setJson(json);
      const out = l.quietly(() => {
        l.warning('config problem');
        l.conn('log', subject, 'closing because: database removed');
        return 7;
      });
      assert.equal(out, 7);
      l.log('after');
      const lines = read();
      assert.equal(lines.length, 2, lines.join('\n'));
      assert.match(lines[0]!, /closing because: database removed/);
      assert.match(lines[1]!, /after/);
    });
  }
});
