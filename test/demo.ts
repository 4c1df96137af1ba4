// `npm run demo`: a private PostgreSQL 15 in a temp dir, pgbun in front of it (session pooling,
// SCRAM authentication from a userlist.txt), a few queries through pgbun, then instructions to
// connect yourself. Runs until Ctrl-C, then stops pgbun and PostgreSQL and removes the temp dirs.
//
// PGBUN_BIN runs another binary in pgbun's place (e.g. /usr/sbin/pgbouncer, to compare).

import { pgClient } from './lib/clients.js';
import { pgbunCommand, pgConnstr, startPgbun, type TestPgbun } from './lib/pgbun.js';
import { startPostgres, TEST_DB, type TestPostgres } from './lib/postgres.js';

const USER = 'scram_user';
const PASSWORD = 'scram_pass';

function section(title: string): void {
  console.log(`\n== ${title}`);
}

async function main(): Promise<void> {
  let pg: TestPostgres | null = null;
  let bun: TestPgbun | null = null;
  let stopping = false;
  const shutdown = async (why: string, code: number): Promise<void> => {
    if (stopping) return; // a second Ctrl-C (npm forwards one too) must not cut the teardown short
    stopping = true;
    console.log(`\n${why}: stopping pgbun and PostgreSQL...`);
    if (bun) {
      await bun.stop();
      console.log('pgbun stopped');
    }
    if (pg) {
      await pg.stop();
      console.log('PostgreSQL stopped');
    }
    console.log('done.');
    process.exit(code); // the exit hook of test/lib removes the temp dirs
  };
  process.on('SIGINT', () => void shutdown('Ctrl-C', 0));
  process.on('SIGTERM', () => void shutdown('SIGTERM', 0));
  process.on('SIGHUP', () => void shutdown('SIGHUP', 0));

  try {
    section('starting a private PostgreSQL 15');
    pg = await startPostgres();
    console.log(`PostgreSQL listens on ${pg.host}:${pg.port}, data dir ${pg.dataDir}`);
    const secret = await pg.secretOf(USER);

    section(`starting pgbun (${pgbunCommand().join(' ')})`);
    bun = await startPgbun({
      ini: {
        databases: {
          [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB }),
          '*': pgConnstr(pg),
        },
        pgbouncer: {
          pool_mode: 'session',
          auth_type: 'scram-sha-256',
          default_pool_size: 5,
          admin_users: USER,
        },
      },
      userlist: [[USER, secret]],
    });
    console.log(`pgbun listens on ${bun.host}:${bun.port} (pid ${bun.proc.pid})`);
    console.log(`config: ${bun.iniPath}\nuserlist: ${bun.userlistPath}\nlog: ${bun.logfile}`);
    bun.exited.then((e) => {
      if (!stopping) {
        console.error(`\npgbun exited unexpectedly (code ${e.code}, signal ${e.signal})\n${bun!.stderr().slice(-4000)}`);
        void shutdown('pgbun died', 1);
      }
    });

    section('a client going through pgbun (the pg driver, SCRAM login)');
    const client = await pgClient(bun.conn(USER, PASSWORD, TEST_DB));
    const show = async (sql: string, params: unknown[] = []): Promise<void> => {
      const r = await client.query(sql, params);
      console.log(`> ${sql}${params.length ? `   -- $1 = ${JSON.stringify(params[0])}` : ''}`);
      for (const row of r.rows) console.log('  ', JSON.stringify(row));
    };
    await show('SELECT version()');
    await show('SELECT current_user, current_database(), inet_server_port() AS server_port');
    await show('CREATE TEMP TABLE demo (id int, note text)');
    await show("INSERT INTO demo VALUES (1, 'through pgbun'), (2, 'session mode')");
    await show('SELECT * FROM demo WHERE id >= $1 ORDER BY id', [1]);
    await client.end();

    section('connect yourself');
    console.log(`  PGPASSWORD=${PASSWORD} psql -h ${bun.host} -p ${bun.port} -U ${USER} ${TEST_DB}`);
    console.log(`  postgres://${USER}:${PASSWORD}@${bun.host}:${bun.port}/${TEST_DB}`);
    console.log(`  admin console: PGPASSWORD=${PASSWORD} psql -h ${bun.host} -p ${bun.port} -U ${USER} pgbouncer -c 'SHOW POOLS'`);
    console.log(`  log: tail -f ${bun.logfile}`);
    console.log('\npgbun is running. Press Ctrl-C to stop.');
    setInterval(() => {}, 1 << 30); // stay up until a signal
  } catch (e) {
    console.error(`\ndemo failed: ${e instanceof Error ? e.message : String(e)}`);
    await shutdown('error', 1);
  }
}

void main();
