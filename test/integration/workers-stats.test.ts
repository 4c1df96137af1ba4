// workers = N: the stats_period log line is one line per period for the whole pooler, written by
// the main thread, and counts the traffic of every loop.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { wireLogin, type WireClient } from '../lib/wire.js';

const pg = await sharedPostgres();
const started: TestPgbun[] = [];
const open: WireClient[] = [];

after(async () => {
  for (const c of open) await c.terminate().catch(() => {});
  for (const b of started) await b.stop();
});

const WORKERS = 2;
const STATS_LINE = /^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) \S+ \[\d+\] LOG stats: (\d+) xacts\/s, (\d+) queries\/s, .*$/gm;

interface StatsLine {
  /** ms, from the line's timestamp (only differences are used) */
  at: number;
  xacts: number;
  queries: number;
}

function statsLines(text: string): StatsLine[] {
  return [...text.matchAll(STATS_LINE)].map((m) => ({
    at: Date.parse(m[1]!.replace(' ', 'T') + 'Z'),
    xacts: Number(m[2]),
    queries: Number(m[3]),
  }));
}

/** Which loop owns each client, by its local port: SHOW CLIENTS `id % N` from several admin connections. */
async function loopsOf(b: TestPgbun, clients: WireClient[]): Promise<Map<WireClient, number>> {
  const idByPort = new Map<number, number>();
  // an admin connection may see only its own loop's clients or every loop's: ask from several,
  // so that each loop is asked either way
  for (let i = 0; i < 8; i++) {
    const { client: admin } = await wireLogin({ host: '127.0.0.1', port: b.port }, { user: 'admin', database: 'pgbouncer' });
    const r = await admin.query('SHOW CLIENTS');
    const col = (name: string): number => r.columns.indexOf(name);
    for (const row of r.rows) {
      if (row[col('user')] !== 'trust_user') continue;
      idByPort.set(Number(row[col('port')]), Number(row[col('id')]));
    }
    await admin.terminate();
  }
  const out = new Map<WireClient, number>();
  for (const c of clients) {
    const id = idByPort.get(c.socket.localPort!);
    if (id !== undefined) out.set(c, id % WORKERS);
  }
  return out;
}

describe('workers: the stats log line', () => {
  test('one line per period, counting the transactions of every loop', async () => {
    const b = await startPgbun({
      ini: {
        databases: { [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB }) },
        pgbouncer: { auth_type: 'trust', admin_users: 'admin', pool_mode: 'transaction', workers: WORKERS, stats_period: 1, default_pool_size: 20 },
      },
      userlist: [['trust_user', ''], ['admin', '']],
    });
    started.push(b);
    // the main thread accepts before the worker threads are up; it logs this once they are
    await b.waitForLog(/LOG process up/, 20_000);

    const clients: WireClient[] = [];
    for (let i = 0; i < 16; i++) {
      const { client } = await wireLogin({ host: '127.0.0.1', port: b.port }, { user: 'trust_user', database: TEST_DB });
      clients.push(client);
      open.push(client);
    }
    const loops = await loopsOf(b, clients);
    const onLoop = (w: number): WireClient[] => clients.filter((c) => loops.get(c) === w);
    assert.ok(onLoop(0).length > 0 && onLoop(1).length > 0,
      `16 TCP clients should land on both loops (main: ${onLoop(0).length}, worker: ${onLoop(1).length}, unknown: ${clients.length - loops.size})`);

    // a line before the traffic: the window starts there
    const from = b.logOffset();
    await b.waitForLog(/LOG stats: /, 10_000, from);
    const start = from + b.log().slice(from).search(/^.*LOG stats: /m);

    // three quarters of the transactions on the worker thread's clients: a line of the main
    // thread's loop alone would show a quarter of them
    const perLoop = [200, 600];
    await Promise.all([0, 1].map(async (w) => {
      const mine = onLoop(w);
      const each = Math.ceil(perLoop[w]! / mine.length);
      perLoop[w] = each * mine.length;
      await Promise.all(mine.map(async (c) => {
        for (let i = 0; i < each; i++) assert.deepEqual((await c.query('SELECT 1')).rows, [['1']]);
      }));
    }));
    const sent = perLoop[0]! + perLoop[1]!;

    // wait for the period with the last transaction and one more (an answer that missed its
    // line counts in the next), and for a window of at least 3 s to count the lines in
    let lines: StatsLine[] = [];
    const afterTraffic = b.logOffset();
    await b.waitForLog(/LOG stats: /, 10_000, afterTraffic);
    for (let tries = 0; tries < 30; tries++) {
      lines = statsLines(b.log().slice(start));
      const later = statsLines(b.log().slice(afterTraffic)).length;
      if (later >= 2 && lines.length >= 2 && lines.at(-1)!.at - lines[0]!.at >= 3000) break;
      await b.waitForLog(/LOG stats: /, 10_000, b.logOffset());
    }

    // one line per period: every period is at least stats_period long (1 s), so n lines after
    // the first span at least about n seconds; a line from each loop would be twice as many
    const spanSec = (lines.at(-1)!.at - lines[0]!.at) / 1000;
    assert.ok(lines.length - 1 <= spanSec + 1, `${lines.length - 1} stats lines in ${spanSec} s:\n${lines.map((l) => JSON.stringify(l)).join('\n')}`);

    // rate × period summed over the window gives back the transactions of both loops
    let xacts = 0;
    let queries = 0;
    for (let i = 1; i < lines.length; i++) {
      const sec = (lines[i]!.at - lines[i - 1]!.at) / 1000;
      xacts += lines[i]!.xacts * sec;
      queries += lines[i]!.queries * sec;
    }
    const detail = `sent ${sent} (main ${perLoop[0]}, worker ${perLoop[1]}), lines: ${lines.map((l) => `${l.xacts}`).join(' ')}`;
    assert.ok(xacts >= 0.7 * sent && xacts <= 1.3 * sent, `xacts counted ${Math.round(xacts)}; ${detail}`);
    assert.ok(queries >= 0.7 * sent && queries <= 1.3 * sent, `queries counted ${Math.round(queries)}; ${detail}`);
    assert.equal(b.proc.exitCode, null, b.stderr());
  });
});
