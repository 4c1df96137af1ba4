// COPY in every pool mode (session, transaction, statement): COPY
// FROM STDIN and TO STDOUT with the raw protocol, psql's \copy and the `postgres` driver; a
// server in COPY is never released (another client waits); CopyFail; a COPY that fails on bad
// data while the client is still sending, whose late CopyData/CopyDone after the server was
// released are discarded without disturbing the client or the next user of that server.

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { psql, postgresJs } from '../lib/clients.js';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres } from '../lib/postgres.js';
import { sleep } from '../lib/procs.js';
import { message, query, type WireClient } from '../lib/wire.js';
import { ensureDatabase, login, roleUserlist, settlesWithin } from '../lib/pool-helpers.js';

const pg = await sharedPostgres();
const DB = 'txp_copy';
const MODES = ['session', 'transaction', 'statement'] as const;
let B: TestPgbun;
const open: WireClient[] = [];

before(async () => {
  await ensureDatabase(pg, DB);
  await pg.query('CREATE TABLE IF NOT EXISTS copy_t (mode text, id int, v text)', DB);
  await pg.query('GRANT ALL ON copy_t TO PUBLIC', DB);
  await pg.query('TRUNCATE copy_t', DB);
  B = await startPgbun({
    ini: {
      pgbouncer: { auth_type: 'trust', pool_mode: 'session' },
      databases: Object.fromEntries(MODES.map((m) => [`c_${m}`, pgConnstr(pg, { dbname: DB, pool_size: 1, pool_mode: m })])),
    },
    userlist: roleUserlist(),
  });
});

// session mode: a client keeps the pool's only server until it leaves
afterEach(async () => {
  for (const c of open.splice(0)) await c.terminate();
  await sleep(50);
});

after(async () => {
  for (const c of open) c.destroy();
  await B?.stop();
});

async function cl(mode: string): Promise<WireClient> {
  const { client } = await login(B, 'trust_user', `c_${mode}`);
  open.push(client);
  return client;
}

const copyData = (s: string): Buffer => message('d', s);
const copyDone = (): Buffer => message('c');
const copyFail = (why: string): Buffer => message('f', why + '\0');

async function count(mode: string, extra = ''): Promise<number> {
  const [r] = await pg.query<{ n: string }>(`SELECT count(*) AS n FROM copy_t WHERE mode = $1 ${extra}`, DB, [mode]);
  return Number(r.n);
}

const types = (ms: Array<{ type: string }>): string => ms.map((m) => m.type).join('');

for (const mode of MODES) {
  describe(`COPY in ${mode} mode`, () => {
    test('COPY FROM STDIN (raw protocol): rows arrive; the server is not given away during the COPY', async () => {
      const a = await cl(mode);
      const b = await cl(mode);
      await a.write(query(`COPY copy_t (mode, id, v) FROM STDIN`));
      const start = await a.readMessage();
      assert.equal(start.type, 'G', 'CopyInResponse');
      // b wants the pool's only server now: it must wait until a's COPY is over
      const rb = mode === 'session' ? null : b.query('SELECT 42', 10_000);
      await a.write(copyData(`${mode}\t1\tone\n${mode}\t2\ttwo\n`));
      await sleep(200);
      await a.write(copyData(`${mode}\t3\tthree\n`));
      if (rb) assert.equal(await settlesWithin(rb, 300), false, 'b waits while a is in COPY');
      await a.write(copyDone());
      const r = await a.collect();
      assert.equal(r.error, null, JSON.stringify(r.error));
      assert.deepEqual(r.tags, ['COPY 3']);
      assert.equal(r.status, 'I');
      if (rb) assert.deepEqual((await rb).rows, [['42']]);
      assert.equal(await count(mode, 'AND id <= 3'), 3);
    });

    test('COPY TO STDOUT (raw protocol)', async () => {
      const a = await cl(mode);
      await a.write(query(`COPY (SELECT id, v FROM copy_t WHERE mode = '${mode}' AND id <= 3 ORDER BY id) TO STDOUT`));
      const ms = await a.readUntil('Z');
      assert.equal(types(ms), 'HdddcCZ');
      assert.deepEqual(
        ms.filter((m) => m.type === 'd').map((m) => m.body.toString()),
        ['1\tone\n', '2\ttwo\n', '3\tthree\n'],
      );
      assert.equal(ms[5].body.toString(), 'COPY 3\0');
      assert.deepEqual((await a.query('SELECT 1')).rows, [['1']]);
    });

    test('CopyFail: the server reports 57014, the client carries on', async () => {
      const a = await cl(mode);
      await a.write(query(`COPY copy_t (mode, id, v) FROM STDIN`));
      assert.equal((await a.readMessage()).type, 'G');
      await a.write([copyData(`${mode}\t50\tnever\n`), copyFail('client gave up')]);
      const r = await a.collect();
      assert.equal(r.error?.C, '57014');
      assert.equal(r.error?.M, 'COPY from stdin failed: client gave up');
      assert.equal(r.status, 'I');
      assert.equal(await count(mode, 'AND id = 50'), 0);
      assert.deepEqual((await a.query('SELECT 2')).rows, [['2']]);
    });

    test('a COPY error on bad data; CopyData and CopyDone sent after it are discarded; nobody is disturbed', async () => {
      const off = B.logOffset();
      const a = await cl(mode);
      await a.write(query(`COPY copy_t (mode, id, v) FROM STDIN`));
      assert.equal((await a.readMessage()).type, 'G');
      await a.write(copyData(`${mode}\tnot-a-number\tbad\n`));
      const r = await a.collect();
      assert.equal(r.error?.C, '22P02');
      assert.equal(r.error?.S, 'ERROR');
      assert.equal(r.status, 'I');
      // the client did not notice yet and keeps streaming: late CopyData and CopyDone
      let bq: Promise<unknown> | null = null;
      let b: WireClient | null = null;
      if (mode !== 'session') {
        // in transaction/statement mode the server is free now: b takes it
        b = await cl(mode);
        bq = b.query("SELECT 'b ok'", 10_000);
      }
      await a.write([copyData(`${mode}\t60\tlate\n`), copyData(`${mode}\t61\tlate\n`), copyDone()]);
      await sleep(200);
      // nothing comes back for the late messages
      assert.equal(a.pending.length, 0, `unexpected answer: ${JSON.stringify(a.pending.toString('latin1'))}`);
      if (bq) {
        const rb = (await bq) as { rows: string[][]; error: unknown };
        assert.equal(rb.error, null, JSON.stringify(rb.error));
        assert.deepEqual(rb.rows, [['b ok']]);
      }
      const after = await a.query('SELECT 3');
      assert.equal(after.error, null, JSON.stringify(after.error));
      assert.deepEqual(after.rows, [['3']]);
      assert.equal(after.status, 'I');
      assert.equal(await count(mode, 'AND id >= 60'), 0);
      if (b) assert.deepEqual((await b.query('SELECT 4')).rows, [['4']]);
      const bad = B.log().slice(off).split('\n').filter((l) => /(WARNING|ERROR|FATAL) |closing because/.test(l));
      assert.deepEqual(bad, [], 'no pgbun error and no closed connection');
    });

    test('psql \\copy in and out', async () => {
      const conn = B.conn('trust_user', undefined, `c_${mode}`);
      const rows = Array.from({ length: 500 }, (_, i) => `${mode}\t${1000 + i}\tpsql row ${i}`).join('\n') + '\n';
      const inp = await psql(conn, '\\copy copy_t (mode, id, v) from stdin', { input: rows });
      assert.equal(inp.code, 0, inp.stderr);
      assert.equal(await count(mode, 'AND id >= 1000'), 500);
      const out = await psql(conn, `\\copy (SELECT id, v FROM copy_t WHERE mode = '${mode}' AND id >= 1000 ORDER BY id) to stdout`);
      assert.equal(out.code, 0, out.stderr);
      const lines = out.stdout.trimEnd().split('\n');
      assert.equal(lines.length, 500);
      assert.equal(lines[0], '1000\tpsql row 0');
      assert.equal(lines[499], '1499\tpsql row 499');
    });

    test('postgres driver: COPY FROM STDIN (writable) and TO STDOUT (readable)', async () => {
      const sql = postgresJs({ host: B.host, port: B.port, user: 'trust_user', database: `c_${mode}` });
      try {
        const w = await sql`COPY copy_t (mode, id, v) FROM STDIN`.writable();
        await new Promise<void>((resolve, reject) => {
          w.on('error', reject);
          w.on('finish', resolve);
          for (let i = 0; i < 200; i++) w.write(`${mode}\t${5000 + i}\tjs ${i}\n`);
          w.end();
        });
        assert.equal(await count(mode, 'AND id >= 5000'), 200);
        // COPY takes no parameters: the mode goes in as a literal
        const rd = await sql.unsafe(`COPY (SELECT id FROM copy_t WHERE mode = '${mode}' AND id >= 5000 ORDER BY id) TO STDOUT`).readable();
        let text = '';
        for await (const chunk of rd) text += chunk.toString();
        const ids = text.trimEnd().split('\n');
        assert.equal(ids.length, 200);
        assert.equal(ids[0], '5000');
        const [{ n }] = await sql`SELECT count(*)::int AS n FROM copy_t WHERE mode = ${mode}`;
        assert.ok(n >= 700);
      } finally {
        await sql.end();
      }
    });
  });
}
