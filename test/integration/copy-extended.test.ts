// COPY FROM STDIN over the extended protocol, pipelined the way libpq's pipeline mode sends it:
// Parse/Bind/Describe/Execute and a Sync, the data, CopyDone (or a bad row) and another Sync.
// PostgreSQL ignores a Sync that reaches it in COPY mode, so fewer ReadyForQuery come back than
// Syncs went out. pgbun must count exactly what PostgreSQL answers: the client sees the same
// messages as directly, the server goes back to the pool (transaction mode, pool_size 1: the next
// client gets the same backend) and nobody is closed "with query in progress". With and without
// pgbun's prepared-statement handling.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres, ROLES } from '../lib/postgres.js';
import { sleep } from '../lib/procs.js';
import {
  bindMessage, describeMessage, executeMessage, message, parseMessage, sync, wireLogin, type WireClient,
} from '../lib/wire.js';
import { ensureDatabase, login, roleUserlist } from '../lib/pool-helpers.js';

const pg = await sharedPostgres();
const DB = 'copy_ext';
const bouncers = new Map<number, TestPgbun>();

before(async () => {
  await ensureDatabase(pg, DB);
  await pg.query('CREATE TABLE IF NOT EXISTS copy_ext_t (i int)', DB);
  await pg.query('GRANT ALL ON copy_ext_t TO PUBLIC', DB);
  for (const mps of [200, 0]) {
    bouncers.set(mps, await startPgbun({
      ini: {
        pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', max_prepared_statements: mps },
        databases: { [DB]: pgConnstr(pg, { dbname: DB, pool_size: 1 }) },
      },
      userlist: roleUserlist(),
    }));
  }
});

after(async () => {
  for (const b of bouncers.values()) await b.stop();
});

const copyStart = (): Buffer[] => [
  parseMessage('', 'COPY copy_ext_t (i) FROM STDIN'), bindMessage('', ''), describeMessage('P', ''), executeMessage(), sync(),
];

type Case = { name: string; rows: string };
const CASES: Case[] = [
  { name: 'success', rows: '1\n2\n' },
  { name: 'a bad row before CopyDone', rows: 'not a number\n' },
];

/** Run the pipeline; the message types received, in order, once the answers stop. */
async function pipeline(c: WireClient, rows: string): Promise<string> {
  await c.write(copyStart());
  const head = await c.readUntil('G', 5000);
  await c.write(message('d', rows));
  await sleep(300); // a bad row: PostgreSQL answers while the client is still in COPY
  await c.write([message('c'), sync()]);
  const rest = await c.readUntil('Z', 5000);
  await sleep(300);
  const more: string[] = [];
  while (c.pending.length >= 5) more.push((await c.readMessage(100)).type);
  return [...head, ...rest].map((m) => m.type).join('') + more.join('');
}

async function directTypes(rows: string): Promise<string> {
  const { client } = await wireLogin({ host: pg.host, port: pg.port }, { user: 'trust_user', database: DB, password: ROLES.trust_user.password });
  try {
    return await pipeline(client, rows);
  } finally {
    client.destroy();
  }
}

async function backendPid(c: WireClient): Promise<string> {
  const r = await c.query('SELECT pg_backend_pid()');
  assert.equal(r.error, null);
  return r.rows[0]![0]!;
}

for (const mps of [200, 0]) {
  describe(`COPY FROM STDIN, extended protocol, transaction mode (max_prepared_statements = ${mps})`, () => {
    for (const k of CASES) {
      test(`${k.name}: the same answers as directly, and the server goes back to the pool`, async () => {
        const B = bouncers.get(mps)!;
        const db = DB;
        const from = B.logOffset();
        const expected = await directTypes(k.rows);
        const { client } = await login(B, 'trust_user', db);
        const pidBefore = await backendPid(client);
        const got = await pipeline(client, k.rows);
        assert.equal(got, expected);
        // the client goes on, the server was released between its transactions
        const pidAfter = await backendPid(client);
        client.destroy();
        const { client: next } = await login(B, 'trust_user', db);
        assert.equal(await backendPid(next), pidBefore, 'the same backend serves the next client');
        assert.equal(pidAfter, pidBefore);
        next.destroy();
        await sleep(200);
        assert.doesNotMatch(B.log().slice(from), /query in progress|not ready/);
      });
    }
  });
}
