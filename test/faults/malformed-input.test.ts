// Malformed input from clients: before login (random bytes, bad length fields, truncated and
// oversized startup packets, unknown protocol versions, repeated SSLRequest, 10,000 startup
// parameters, half a packet then silence) and after login (a seeded stream of valid messages
// with mutations: wrong type bytes, wrong lengths, invalid UTF-8, Bind with wrong counts, bit
// flips, garbage): at least 100,000 messages (1,000,000 with --long) over many connections.
// Throughout, pgbun stays up, a normal client keeps working, a concurrent pgbench loses no
// transaction, every connection pgbun closes gets an ErrorResponse first, and afterwards its
// fds and RSS come back near the baseline.
// Replay a failure with PGBUN_FAULTS_SEED=<the printed seed>.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { assertPgbenchClean, pgbench, type PgbenchResult } from '../lib/clients.js';
import { drainUntilClose, ensureBenchDatabase, faultSeed, fdCount, Rng, rssKb } from '../lib/faults.js';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres } from '../lib/postgres.js';
import { isAlive, sleep, withTimeout } from '../lib/procs.js';
import { login, roleUserlist, waitUntil } from '../lib/pool-helpers.js';
import {
  bindMessage, executeMessage, message, parseErrorFields, parseMessage, PROTOCOL_3, query, sslRequest, startupMessage, startupPacket, sync,
  WireClient, WireClosedError, WireTimeoutError,
} from '../lib/wire.js';
import { LONG } from './options.js';

const pg = await sharedPostgres();
const DB = 'fault_malformed';
const LOGIN_TIMEOUT = 2;
const MAX_PACKET = 65536;
const MESSAGES = LONG ? 1_000_000 : 100_000;
const seed = faultSeed();
let B: TestPgbun;
let baseline: { fds: number; rssKb: number };

before(async () => {
  console.log(`# malformed-input seed ${seed} (PGBUN_FAULTS_SEED=${seed} replays it), ${MESSAGES} messages`);
  await ensureBenchDatabase(pg, DB);
  B = await startPgbun({
    ini: {
      pgbouncer: {
        auth_type: 'trust', pool_mode: 'transaction', client_login_timeout: LOGIN_TIMEOUT, max_packet_size: MAX_PACKET,
        max_client_conn: 1000, query_wait_timeout: 60,
      },
      databases: {
        fuzz: pgConnstr(pg, { dbname: DB, pool_size: 8 }),
        bench: pgConnstr(pg, { dbname: DB, pool_size: 4 }),
      },
    },
    userlist: roleUserlist(),
  });
  // warm up (code paths, pools, buffers) before the baseline is taken
  assertPgbenchClean(await pgbench(B.conn('trust_user', undefined, 'bench'), ['-n', '-S', '-c', '3', '-T', '2']), 10);
  for (let i = 0; i < 20; i++) {
    const { client } = await login(B, 'trust_user', 'fuzz');
    await client.query('SELECT 1');
    await client.terminate();
  }
  await sleep(500);
  baseline = { fds: fdCount(B.proc.pid!), rssKb: rssKb(B.proc.pid!) };
  console.log(`# baseline: ${baseline.fds} fds, RSS ${(baseline.rssKb / 1024).toFixed(1)} MB`);
});

after(async () => {
  await B?.stop();
});

/** pgbun is alive and a fresh client's query works. */
async function assertUp(what: string): Promise<void> {
  assert.ok(isAlive(B.proc.pid!), `${what}: the pooler process must be alive`);
  const { client } = await login(B, 'trust_user', 'fuzz');
  try {
    const r = await client.query('SELECT 4242', 15_000);
    assert.equal(r.error, null, `${what}: ${JSON.stringify(r.error)}`);
    assert.deepEqual(r.rows, [['4242']], what);
  } finally {
    client.destroy();
  }
}

interface PreLoginOutcome {
  errors: Array<{ S: string; C: string; M: string }>;
  raw: string;
  closed: boolean;
  ms: number;
}

/**
 * Send bytes before login, then wait until the connection closes (bounded) and parse what came
 * back: leading one-byte SSLRequest answers ('N'/'S'), then messages.
 */
async function preLogin(bytes: Buffer | Buffer[], boundMs = (LOGIN_TIMEOUT + 8) * 1000): Promise<PreLoginOutcome> {
  const c = await WireClient.connect({ host: B.host, port: B.port });
  const t0 = Date.now();
  try {
    await c.write(bytes).catch(() => {}); // pgbun may close while we still write
    const closed = !!(await withTimeout(c.closedPromise, boundMs));
    const ms = Date.now() - t0;
    const data = c.pending;
    let raw = '';
    let i = 0;
    while (i < data.length && (data[i] === 0x4e || data[i] === 0x53) && (data.length - i < 5 || data.readInt32BE(i + 1) > 0x10000 || data.readInt32BE(i + 1) < 4)) {
      raw += String.fromCharCode(data[i++]);
    }
    const errors: PreLoginOutcome['errors'] = [];
    while (i + 5 <= data.length) {
      const len = data.readInt32BE(i + 1);
      if (len < 4 || i + 1 + len > data.length) break;
      if (data[i] === 0x45) errors.push(parseErrorFields(data.subarray(i + 5, i + 1 + len)));
      else raw += String.fromCharCode(data[i]);
      i += 1 + len;
    }
    if (i < data.length) raw += `+${data.length - i} unparsed bytes`;
    return { errors, raw, closed, ms };
  } finally {
    c.destroy();
  }
}

function i32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n | 0, 0);
  return b;
}

function expectFatal(o: PreLoginOutcome, re: RegExp, what: string): void {
  const ctx = `${what}: ${JSON.stringify(o)}`;
  assert.equal(o.closed, true, `${ctx}: closed in time`);
  assert.ok(o.errors.length > 0, `${ctx}: an ErrorResponse before the close`);
  const e = o.errors.at(-1)!;
  assert.equal(e.S, 'FATAL', ctx);
  assert.equal(e.C, '08P01', ctx);
  assert.match(e.M, re, ctx);
}

describe('malformed input before login', () => {
  test('startup length fields 0, 3, 4, negative and above the limit: FATAL bad packet header at once', async () => {
    for (const len of [0, 3, 4, -1, -2147483648, 10_000_000, 0x7fffffff]) {
      const o = await preLogin(Buffer.concat([i32(len), i32(PROTOCOL_3), Buffer.from('user\0trust_user\0\0')]));
      expectFatal(o, /^bad packet header/, `startup length ${len}`);
      assert.ok(o.ms < LOGIN_TIMEOUT * 1000, `startup length ${len}: rejected at once, not after ${o.ms} ms`);
    }
    await assertUp('after bad startup lengths');
  });

  test('unknown protocol versions: protocol 2 gets "old V2 protocol not supported", others an error or close', async () => {
    expectFatal(await preLogin(startupMessage({ user: 'trust_user', database: 'fuzz' }, 0x00020000)), /^old V2 protocol not supported$/, 'protocol 2.0');
    for (const v of [0, 0x00010000, 0x00040000, 0x00ff0000, 0x7fffffff, (1234 << 16) | 9999, -1]) {
      const o = await preLogin(startupMessage({ user: 'trust_user', database: 'fuzz' }, v));
      assert.equal(o.closed, true, `version ${v}: ${JSON.stringify(o)}`);
      assert.ok(o.errors.length > 0, `version 0x${(v >>> 0).toString(16)}: an ErrorResponse before the close: ${JSON.stringify(o)}`);
    }
    await assertUp('after unknown protocol versions');
  });

  test('truncated startup packet, then silence: closed by client_login_timeout', async () => {
    const full = startupMessage({ user: 'trust_user', database: 'fuzz', application_name: 'x'.repeat(50) });
    // half a header: only client_login_timeout can end it
    const halves = await Promise.all([1, 3, 4, 7].map(async (cut) => [cut, await preLogin(full.subarray(0, cut))] as const));
    for (const [cut, o] of halves) {
      const ctx = `${cut} of ${full.length} bytes: ${JSON.stringify(o)}`;
      assert.equal(o.closed, true, ctx);
      assert.ok(o.ms >= (LOGIN_TIMEOUT - 1) * 1000, `${ctx}: not before client_login_timeout`);
      assert.ok(o.errors.length > 0 && o.errors.at(-1)!.M === 'client_login_timeout', `${ctx}: FATAL client_login_timeout`);
    }
    // a whole header and part of the body: PgBouncer (1.18 too) refuses a partial startup
    // packet at once; waiting for client_login_timeout would do as well
    for (const cut of [8, 12, full.length - 1]) {
      const o = await preLogin(full.subarray(0, cut));
      const ctx = `${cut} of ${full.length} bytes: ${JSON.stringify(o)}`;
      assert.equal(o.closed, true, ctx);
      const m = o.errors.at(-1)?.M;
      assert.ok(m === 'client sent partial pkt in startup phase' || (m === 'client_login_timeout' && o.ms >= (LOGIN_TIMEOUT - 1) * 1000), ctx);
    }
    // the same after an SSLRequest answered N: half a startup packet header, then silence
    const c = await WireClient.connect({ host: B.host, port: B.port });
    await c.write(sslRequest());
    assert.equal((await c.readBytes(1)).toString(), 'N');
    await c.write(full.subarray(0, 6));
    const o = await drainUntilClose(c, (LOGIN_TIMEOUT + 8) * 1000);
    c.destroy();
    assert.equal(o.closed, true, JSON.stringify(o));
    assert.equal(o.errors.at(-1)?.M, 'client_login_timeout', JSON.stringify(o));
  });

  test('oversized startup packets and 10,000 startup parameters: an error, no crash', async () => {
    const big = startupPacket(PROTOCOL_3, Buffer.concat([Buffer.from('user\0trust_user\0application_name\0'), Buffer.alloc(200_000, 0x61), Buffer.from('\0\0')]));
    const o1 = await preLogin(big);
    assert.equal(o1.closed, true, JSON.stringify(o1));
    assert.ok(o1.errors.length > 0, `oversized startup packet: ${JSON.stringify(o1)}`);
    const params: Record<string, string> = { user: 'trust_user', database: 'fuzz' };
    for (let i = 0; i < 10_000; i++) params[`p${i}`] = `v${i}`;
    const o2 = await preLogin(startupMessage(params));
    assert.equal(o2.closed, true, JSON.stringify(o2));
    assert.ok(o2.errors.length > 0, `10,000 startup parameters: ${JSON.stringify(o2)}`);
    assert.match(o2.errors.at(-1)!.M, /bad packet header|unsupported startup parameter|too long/, JSON.stringify(o2));
    await assertUp('after oversized startup packets');
  });

  test('repeated SSLRequest: answered or refused, never a hang or a crash', async () => {
    const o1 = await preLogin([sslRequest(), sslRequest()]);
    assert.equal(o1.closed, true, JSON.stringify(o1));
    // answered N then refused, or (PgBouncer 1.18) refused at once: plaintext already queued
    // behind an SSLRequest is not trusted
    assert.ok(/^N/.test(o1.raw) || o1.errors.at(-1)?.M === 'received unencrypted data after SSL request', JSON.stringify(o1));
    assert.ok(o1.errors.length > 0, `an ErrorResponse before the close: ${JSON.stringify(o1)}`);
    const o2 = await preLogin(Array.from({ length: 1000 }, () => sslRequest()));
    assert.equal(o2.closed, true, JSON.stringify(o2));
    await assertUp('after repeated SSLRequests');
  });

  test('random bytes on 300 connections: each is closed within client_login_timeout + 8 s', async () => {
    const rng = new Rng(seed);
    const outcomes: PreLoginOutcome[] = [];
    for (let round = 0; round < 5; round++) {
      outcomes.push(...(await Promise.all(Array.from({ length: 60 }, () => preLogin(rng.bytes(rng.int(1, 300)))))));
    }
    const open = outcomes.filter((o) => !o.closed);
    assert.deepEqual(open, [], 'every connection closed');
    for (const o of outcomes) {
      for (const e of o.errors) assert.equal(e.S, 'FATAL', JSON.stringify(o));
    }
    await assertUp('after random bytes');
  });
});

// ---------------------------------------------------------------------------------------------
// after login: a stream of valid messages with mutations

const TERMINATE = Buffer.from([0x58, 0, 0, 0, 4]);

type Kind = 'typeByte' | 'lenSmall' | 'lenHuge' | 'lenOff' | 'badUtf8' | 'bindCounts' | 'bitflip' | 'garbage' | 'truncate';
const KINDS: Kind[] = ['typeByte', 'lenSmall', 'lenHuge', 'lenOff', 'badUtf8', 'bindCounts', 'bindCounts', 'badUtf8', 'bitflip', 'garbage', 'truncate'];

function validMessages(rng: Rng): Buffer[] {
  switch (rng.int(0, 3)) {
    case 0:
      return [query(`SELECT ${rng.int(0, 1000)}`)];
    case 1:
      return [parseMessage('', 'SELECT $1::int'), bindMessage('', '', [String(rng.int(0, 1000))]), executeMessage(), sync()];
    case 2:
      return [query(`SELECT 'é${rng.int(0, 9)}'`)];
    default:
      return [parseMessage('', 'SELECT 1'), bindMessage('', ''), executeMessage(), sync()];
  }
}

function mutate(rng: Rng, kind: Kind): Buffer {
  const m = Buffer.from(validMessages(rng)[0]);
  switch (kind) {
    case 'typeByte': {
      const t = rng.pick([0x00, 0x41, 0x47, 0x4b, 0x52, 0x5a, 0x61, 0x70, 0x7a, 0xff, rng.int(0, 255)]);
      m[0] = t === 0x58 ? 0x59 : t; // not 'X': a Terminate legitimately closes without a word
      return m;
    }
    case 'lenSmall':
      m.writeInt32BE(rng.pick([0, 1, 2, 3, -1, -100, -2147483648]), 1);
      return m;
    case 'lenHuge':
      m.writeInt32BE(rng.pick([MAX_PACKET + 1, 1_000_000, 0x7fffffff]), 1);
      return m;
    case 'lenOff':
      m.writeInt32BE(m.readInt32BE(1) + rng.pick([-3, -2, -1, 1, 2, 7]), 1);
      return m;
    case 'badUtf8':
      return query(`SELECT '${Buffer.from([0xc3, 0x28, 0xff, 0xfe, 0xed, 0xa0, 0x80]).toString('latin1')}'`.replace(/[^\x00-\xff]/g, '?')).fill(0xff, 9, 10);
    case 'bindCounts': {
      // Bind to the unnamed statement with counts that do not match what follows
      const body = Buffer.concat([Buffer.from('\0\0'), Buffer.from([0, rng.int(0, 5)]), Buffer.alloc(2 * rng.int(0, 2), 1),
        Buffer.from([0xff & rng.int(0, 9), rng.int(0, 9)]), i32(rng.pick([-1, 0, 3, 1000])), Buffer.from('12'), Buffer.from([0, rng.int(0, 3)])]);
      return Buffer.concat([parseMessage('', 'SELECT $1::int'), message('B', body), executeMessage(), sync()]);
    }
    case 'bitflip': {
      for (let i = 0; i < rng.int(1, 3); i++) {
        const at = rng.int(5, m.length - 1);
        m[at] ^= 1 << rng.int(0, 7);
      }
      return m;
    }
    case 'garbage':
      return rng.bytes(rng.int(1, 40));
    case 'truncate':
      return m.subarray(0, rng.int(1, m.length - 1));
  }
}

interface FuzzStats {
  messages: number;
  batches: number;
  connections: number;
  closedWithError: number;
  closedBare: number;
  stalls: number;
  errors: Map<string, number>;
  /** how each connection closed without an ErrorResponse ended, and the batch's mutations */
  bare: string[];
}

/** One batch on an open connection; returns false when the connection is finished with. */
async function runBatch(c: WireClient, rng: Rng, stats: FuzzStats, marker: string, mutationRate: number): Promise<boolean> {
  const parts: Buffer[] = [];
  const kinds: string[] = [];
  let n = 0;
  while (n < 100) {
    if (rng.next() < mutationRate) {
      const kind = rng.pick(KINDS);
      kinds.push(`${kind}@${n}`);
      parts.push(mutate(rng, kind));
      n++;
    } else {
      const v = validMessages(rng);
      parts.push(...v);
      n += v.length;
    }
  }
  parts.push(query(`SELECT '${marker}'`));
  n++;
  try {
    await c.write(parts);
  } catch (e) {
    stats.closedBare++; // reset while we wrote: counted like a bare close, then checked below
    stats.bare.push(`write: ${(e as Error).message}; mutations ${kinds.join(',')}`);
    return false;
  }
  stats.messages += n;
  stats.batches++;
  let sawMarker = false;
  for (;;) {
    let m;
    try {
      m = await c.readMessageOrClose(2000);
    } catch (e) {
      if (e instanceof WireTimeoutError) {
        stats.stalls++; // waiting for the rest of a message whose length we inflated
        return false;
      }
      if (e instanceof WireClosedError) {
        stats.closedBare++;
        stats.bare.push(`read: ${(e as Error).message}; mutations ${kinds.join(',')}`);
        return false;
      }
      throw e;
    }
    if (m === null) {
      if (Buffer.concat(parts).includes(TERMINATE)) return false; // garbage that spelled a Terminate
      stats.closedBare++;
      stats.bare.push(`clean close without an error; mutations ${kinds.join(',')}`);
      return false;
    }
    if (m.type === 'E') {
      const e = parseErrorFields(m.body);
      const key = `${e.S} ${e.C} ${e.M.replace(/'[^']*'/g, "'…'").replace(/\d+/g, 'N').slice(0, 80)}`;
      stats.errors.set(key, (stats.errors.get(key) ?? 0) + 1);
      if (e.S === 'FATAL') {
        const rest = await drainUntilClose(c, 10_000);
        if (rest.closed) stats.closedWithError++;
        else stats.bare.push(`FATAL ${JSON.stringify(e)} but the connection stayed open for 10 s; mutations ${kinds.join(',')}`);
        return false;
      }
    } else if (m.type === 'D' && m.body.includes(Buffer.from(marker))) sawMarker = true;
    else if (m.type === 'Z' && sawMarker) return true;
  }
}

describe('malformed messages after login', () => {
  test(`${MESSAGES} valid and mutated messages: pgbun stays up, pgbench loses nothing, fds and RSS return near baseline`, { timeout: LONG ? 3_600_000 : 400_000 }, async () => {
    const rng = new Rng(seed ^ 0x5eed);
    const stats: FuzzStats = { messages: 0, batches: 0, connections: 0, closedWithError: 0, closedBare: 0, stalls: 0, errors: new Map(), bare: [] };
    let done = false;
    // pgbench in short runs for as long as the fuzzing lasts: every run must be clean
    const benchRuns: PgbenchResult[] = [];
    const bench = (async () => {
      while (!done) benchRuns.push(await pgbench(B.conn('trust_user', undefined, 'bench'), ['-n', '-c', '3', '-j', '1', '-T', '5'], { timeoutMs: 120_000 }));
    })();
    // a normal client, already connected, answers throughout
    const { client: normal } = await login(B, 'trust_user', 'fuzz');
    let normalChecks = 0;
    const watcher = (async () => {
      while (!done) {
        const r = await normal.query('SELECT 1', 15_000);
        assert.equal(r.error, null, `the normal client: ${JSON.stringify(r.error)}`);
        normalChecks++;
        await sleep(500);
      }
    })();
    const t0 = Date.now();
    const worker = async (w: number): Promise<void> => {
      const wr = new Rng(rng.int(0, 2 ** 31) ^ w);
      while (stats.messages < MESSAGES) {
        let c: WireClient;
        try {
          c = (await login(B, 'trust_user', 'fuzz')).client;
        } catch (e) {
          assert.fail(`a fuzzing client could not log in: ${(e as Error).message}`);
        }
        stats.connections++;
        try {
          let k = 0;
          while (stats.messages < MESSAGES && (await runBatch(c, wr, stats, `m-${w}-${k++}`, 0.01))) { /* next batch */ }
        } finally {
          c.destroy();
        }
      }
    };
    try {
      await Promise.all(Array.from({ length: 8 }, (_, w) => worker(w)));
    } finally {
      done = true;
      await watcher.catch((e) => {
        throw e;
      });
      await bench;
      normal.destroy();
    }
    const secs = (Date.now() - t0) / 1000;
    console.log(`# ${stats.messages} messages in ${stats.batches} batches over ${stats.connections} connections in ${secs.toFixed(1)} s ` +
      `(${Math.round(stats.messages / secs)}/s); closed with an error: ${stats.closedWithError}, without: ${stats.closedBare}, stalled: ${stats.stalls}; ` +
      `normal client checks: ${normalChecks}; pgbench runs: ${benchRuns.length}`);
    for (const [k, n] of [...stats.errors].sort((a, b) => b[1] - a[1]).slice(0, 20)) console.log(`#   ${n} × ${k}`);
    assert.ok(stats.messages >= MESSAGES);
    for (const r of benchRuns) assertPgbenchClean(r, 1);
    assert.deepEqual(stats.bare, [], 'every connection pgbun closed got an ErrorResponse first');
    await assertUp('after the fuzzing');
    // resources come back: fds at once-ish, RSS after a settle (GC is lazy)
    const pid = B.proc.pid!;
    await waitUntil(`fds back near the baseline ${baseline.fds}`, () => fdCount(pid), (n) => n <= baseline.fds + 5, 30_000, 500);
    const rss = await waitUntil(`RSS under baseline ${baseline.rssKb} kB + 50 MB`, () => rssKb(pid), (kb) => kb <= baseline.rssKb + 50 * 1024, 30_000, 1000);
    console.log(`# after: ${fdCount(pid)} fds, RSS ${(rss / 1024).toFixed(1)} MB (baseline ${baseline.fds} fds, ${(baseline.rssKb / 1024).toFixed(1)} MB)`);
  });
});
