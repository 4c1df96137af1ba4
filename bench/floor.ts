// The floor of a JavaScript proxy: how much CPU per transaction a proxy built on node:net costs
// when it does nothing but copy bytes (one client socket piped to one server socket, no
// protocol work at all), next to pgbun and PgBouncer in session mode, interleaved, same run.
//
//   npm run build && node dist/bench/floor.js [--duration=8] [--rounds=3] [--connect] [--bun=PATH]
//
// It answers "how much of pgbun's CPU is pgbun": the difference between pgbun and this pipe is
// what pgbun's pooling costs; the difference between the pipe and PgBouncer is what the
// runtime's socket layer costs and no pooling code can win back.
//   --connect   pgbench -C (a new login per transaction): the floor of a connection's set-up and
//               tear-down instead of a transaction's forwarding (the pipes open a new PostgreSQL
//               connection per login, the poolers reuse theirs: compare the CPU, not the TPS)
//   --bun=PATH  also run pgbun and the same pipe on Bun (e.g. --bun=node_modules/.bin/bun:
//               bun is a dev dependency), the other runtime pgbun's code runs on
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pgbench } from '../test/lib/clients.js';
import { startPostgres } from '../test/lib/postgres.js';
import { freePort } from '../test/lib/procs.js';
import { ensurePgbouncer, setPgbunRuntime, startPooler, throughputIni, DB_FOR_MODE } from './poolers.js';
import { cpuTimes } from './sysinfo.js';
import { PIPE, startPipe } from './capacity.js';

function arg(name: string): string | undefined {
  const a = process.argv.find((x) => x === `--${name}` || x.startsWith(`--${name}=`));
  return a === undefined ? undefined : a.slice(name.length + 3);
}

async function main(): Promise<void> {
  const duration = Number(arg('duration') ?? 8);
  const rounds = Number(arg('rounds') ?? 3);
  const connect = arg('connect') !== undefined;
  const bun = arg('bun') ? path.resolve(arg('bun')!) : null;
  if (bun !== null && !fs.existsSync(bun)) throw new Error(`--bun: ${bun} not found`);
  const pgbouncerBin = '/usr/sbin/pgbouncer';
  ensurePgbouncer(pgbouncerBin);
  const pg = await startPostgres();
  const db = DB_FOR_MODE.session;
  await pg.query(`CREATE DATABASE ${db}`);
  await pg.query(`GRANT ALL ON DATABASE ${db} TO PUBLIC`);
  await pg.query('GRANT ALL ON SCHEMA public TO PUBLIC', db);
  const init = await pgbench({ host: pg.host, port: pg.port, user: 'scram_user', password: 'scram_pass', database: db }, ['-i', '-s', '1', '-q']);
  if (init.code !== 0) throw new Error(init.stderr);
  // the role's SCRAM secret, as the bench uses it: no PBKDF2 per login in either pooler
  const userlist: Array<[string, string]> = [['scram_user', await pg.secretOf('scram_user')]];
  const ini = throughputIni(pg, db, {}) as Record<string, Record<string, string | number>>;
  ini.pgbouncer = { ...ini.pgbouncer, pool_mode: 'session' };
  const stops: Array<() => unknown> = [];
  const targets: Array<{ name: string; port: number; pid: number }> = [];

  const pgbun = await startPooler('pgbun', pgbouncerBin, ini, userlist, 4096);
  stops.push(() => pgbun.handle.stop());
  targets.push({ name: 'pgbun', port: pgbun.handle.port, pid: pgbun.pid });
  const bouncer = await startPooler('pgbouncer', pgbouncerBin, ini, userlist, 4096);
  stops.push(() => bouncer.handle.stop());
  targets.push({ name: 'PgBouncer', port: bouncer.handle.port, pid: bouncer.pid });

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgbun-floor-'));
  const script = path.join(dir, 'pipe.cjs');
  fs.writeFileSync(script, PIPE);
  stops.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  const runtimes: Array<[string, string]> = [['node', process.execPath], ...(bun !== null ? [['Bun', bun] as [string, string]] : [])];
  for (const [label, runtime] of runtimes) {
    const port = await freePort();
    const pipe = await startPipe(runtime, script, port, pg.port);
    stops.push(() => { pipe.kill(); });
    targets.push({ name: `${label} pipe`, port, pid: pipe.pid! });
  }
  if (bun !== null) {
    setPgbunRuntime(bun);
    const onBun = await startPooler('pgbun', pgbouncerBin, ini, userlist, 4096);
    setPgbunRuntime(null);
    stops.push(() => onBun.handle.stop());
    targets.push({ name: 'pgbun on Bun', port: onBun.handle.port, pid: onBun.pid });
  }

  const args = ['-n', '-S', '-c', '10', '-j', '2', '-T', String(duration), ...(connect ? ['-C'] : [])];
  const sums = new Map(targets.map((t) => [t.name, { tx: 0, user: 0, sys: 0 }]));
  for (let r = 0; r < rounds; r++) {
    for (const t of r % 2 === 0 ? targets : [...targets].reverse()) {
      const before = cpuTimes(t.pid)!;
      const res = await pgbench({ host: '127.0.0.1', port: t.port, user: 'scram_user', password: 'scram_pass', database: db }, args);
      const after = cpuTimes(t.pid)!;
      const s = sums.get(t.name)!;
      s.tx += res.summary.transactions ?? 0;
      s.user += after.user - before.user;
      s.sys += after.sys - before.sys;
      process.stderr.write(`${t.name}: ${res.summary.tps?.toFixed(0)} tps\n`);
    }
  }
  const what = connect ? 'session -S c10 -C (µs per login)' : 'session -S c10';
  process.stdout.write(`\n| ${what} | TPS | user µs/tx | kernel µs/tx | total µs/tx |\n|---|--:|--:|--:|--:|\n`);
  for (const t of targets) {
    const s = sums.get(t.name)!;
    const us = (x: number): string => ((x / s.tx) * 1e6).toFixed(1);
    process.stdout.write(`| ${t.name} | ${(s.tx / (rounds * duration)).toFixed(0)} | ${us(s.user)} | ${us(s.sys)} | ${us(s.user + s.sys)} |\n`);
  }
  for (const stop of stops.reverse()) await stop();
  await pg.stop();
}

main().catch((e: unknown) => {
  process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
