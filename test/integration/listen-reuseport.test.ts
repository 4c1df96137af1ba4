// so_reuseport: several pgbun processes on one listen_port, each with its
// own unix_socket_dir, pidfile and logfile, the kernel spreading new connections over them. On a
// runtime whose net.Server.listen() does not apply `reusePort`, so_reuseport = 1 stops pgbun at
// startup with a FATAL instead of being ignored.

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { jsRuntime, pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { onBun } from '../lib/runtime.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { REPO_ROOT, tcpListening } from '../lib/procs.js';
import { waitUntil } from '../lib/pool-helpers.js';
import { wireLogin } from '../lib/wire.js';
import { reusePortWorks } from '../../src/pool/listener.js';

const pg = await sharedPostgres();
const databases = { [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB }) };
const started: TestPgbun[] = [];

after(async () => {
  for (const b of started) await b.stop();
});

async function start(pgbouncer: Record<string, string | number>, more: Partial<Parameters<typeof startPgbun>[0]> = {}): Promise<TestPgbun> {
  const b = await startPgbun({ ini: { databases, pgbouncer: { auth_type: 'trust', so_reuseport: 1, ...pgbouncer } }, userlist: [['trust_user', '']], ...more });
  started.push(b);
  return b;
}

const LOGIN = new RegExp(`login attempt: db=${TEST_DB} user=trust_user`, 'g');
const logins = (b: TestPgbun): number => b.log().match(LOGIN)?.length ?? 0;

describe('so_reuseport', () => {
  test('this runtime applies reusePort (the startup probe says so)', async () => {
    assert.equal(await reusePortWorks(), true);
  });

  test('two pgbun processes with so_reuseport = 1 on one port both start and both take clients', async () => {
    const a = await start({});
    const b = await start({ listen_port: a.port });
    // b's readiness check sees a's listener: wait for b's own word
    await b.waitForLog(/LOG process up:/, 10_000);
    await b.waitForLog(new RegExp(`LOG listening on 127\\.0\\.0\\.1:${a.port}$`), 1000);
    assert.equal(a.proc.exitCode, null, a.stderr());
    assert.equal(b.proc.exitCode, null, b.stderr());
    assert.equal(tcpListening(a.port), true);

    // the kernel picks a listener per connection by a hash of the addresses: of 40 logins, both
    // processes get some (all on one side: a chance of 2^-39)
    for (let i = 0; i < 40; i++) {
      const { client } = await wireLogin({ host: '127.0.0.1', port: a.port }, { user: 'trust_user', database: TEST_DB });
      assert.deepEqual((await client.query('SELECT 1')).rows, [['1']]);
      await client.terminate();
    }
    await waitUntil('40 logins logged', () => logins(a) + logins(b), (n) => n === 40, 5000);
    assert.ok(logins(a) > 0 && logins(b) > 0, `logins: ${logins(a)} and ${logins(b)}`);

    // either one stopping leaves the port served by the other
    await a.stop();
    const { client } = await wireLogin({ host: '127.0.0.1', port: b.port }, { user: 'trust_user', database: TEST_DB });
    await client.terminate();
  });

  test('without so_reuseport the second process on the port cannot listen', async () => {
    const a = await start({ so_reuseport: 0 });
    const b = await start({ so_reuseport: 0, listen_port: a.port }, { waitReady: false });
    const exit = await b.waitExit(10_000);
    assert.deepEqual(exit, { code: 1, signal: null }, b.log());
    assert.match(b.log(), /FATAL cannot listen on any TCP address/);
  });

  test('a runtime without reusePort: so_reuseport = 1 is a FATAL at startup, not ignored', async () => {
    // this runtime, with listen() made to ignore reusePort as such a runtime does
    const preload = path.join(REPO_ROOT, 'test', 'fixtures', 'no-reuseport.mjs');
    const cli = path.join(REPO_ROOT, 'dist', 'src', 'cli.js');
    const b = await start({}, { command: onBun ? [jsRuntime(), '--preload', preload, cli] : [jsRuntime(), '--import', preload, cli], waitReady: false });
    const exit = await b.waitExit(15_000);
    assert.deepEqual(exit, { code: 1, signal: null }, b.log());
    assert.match(b.log(), /FATAL so_reuseport is not supported by this runtime \((node v|Bun )\d+\.\d+\.\d+\): it needs reusePort in net\.Server\.listen\(\), Node\.js 22\.12 or newer$/m);
    assert.equal(tcpListening(b.port), false);
  });
});
