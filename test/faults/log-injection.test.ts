// A client chooses its user, database and application name, and may put newlines and terminal
// escapes in them. Every line pgbun writes about it must stay one line that a log watcher cannot
// mistake for another event.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { startupMessage, WireClient } from '../lib/wire.js';
import { roleUserlist } from '../lib/pool-helpers.js';

const pg = await sharedPostgres();
let B: TestPgbun;

before(async () => {
  B = await startPgbun({
    ini: {
      pgbouncer: { auth_type: 'trust', log_connections: 1, log_disconnections: 1 },
      databases: { [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB }) },
    },
    userlist: roleUserlist(),
  });
});

after(async () => {
  await B?.stop();
});

const FORGED = '2026-01-01 00:00:00.000 UTC [1] LOG C-0x1: postgres/postgres@127.0.0.1:1 login attempt: db=postgres user=postgres tls=no replication=no';
/** short enough for a user name (PgBouncer's limit is 127 bytes) */
const FORGED_SHORT = '2026-01-01 00:00:00.000 UTC [1] LOG forged';
/** every line pgbun writes starts with a timestamp, [pid] and a level word */
const LINE_START = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \S+ \[\d+\] [A-Z]+ /;

test('newlines and escapes in user, database and application names are escaped in the log', async () => {
  const from = B.logOffset();
  const names: Array<Record<string, string>> = [
    { user: `trust_user\n${FORGED_SHORT}`, database: TEST_DB },
    { user: 'trust_user', database: `${TEST_DB}\r\n${FORGED}` },
    { user: 'trust_user', database: TEST_DB, application_name: `app\n${FORGED}\x1b[2J` },
  ];
  for (const params of names) {
    const c = await WireClient.connect({ host: B.host, port: B.port });
    await c.write(startupMessage(params));
    // whatever the answer (welcome, or no such user/database), read until it is given
    await c.readUntil(['Z', 'E'], 5000);
    c.destroy();
  }
  await B.waitForLog(/closing because: client unexpected eof/, 5000, from);
  const text = B.log().slice(from);
  const lines = text.split('\n').filter((l) => l !== '');
  for (const l of lines) assert.match(l, LINE_START, `a line that pgbun did not start: ${JSON.stringify(l)}`);
  assert.ok(!lines.some((l) => l.startsWith(FORGED) || l.startsWith(FORGED_SHORT)), 'a forged line');
  assert.ok(!text.includes('\x1b'), 'a raw escape character');
  assert.ok(text.includes(`trust_user\\n${FORGED_SHORT}`), `the user name, escaped: ${text}`);
  assert.ok(text.includes(`${TEST_DB}\\r\\n${FORGED}`), 'the database name, escaped');
});
