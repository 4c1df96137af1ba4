// The floor of a Node.js proxy: how much CPU per transaction a proxy built on node:net costs
// when it does nothing but copy bytes (one client socket piped to one server socket, no
// protocol work at all), next to pgbun and PgBouncer in session mode, interleaved, same run.
// `npm run build && node dist/bench/floor.js [--duration=8] [--rounds=3]`.
//
// It answers "how much of pgbun's CPU is pgbun": the difference between pgbun and this pipe is
// what pgbun's pooling costs; the difference between the pipe and PgBouncer is what node:net's
// stream layer costs and no pooling code can win back.
import { spawn } from 'node:child_process';
import { pgbench } from '../test/lib/clients.js';
import { startPostgres } from '../test/lib/postgres.js';
import { freePort } from '../test/lib/procs.js';
import { ensurePgbouncer, startPooler, throughputIni, DB_FOR_MODE } from './poolers.js';
import { cpuTimes } from './sysinfo.js';

const PIPE = `
const net = require('node:net');
const [lport, tport] = [+process.argv[1], +process.argv[2]];
net.createServer({ noDelay: true }, (c) => {
  const up = net.connect({ host: '127.0.0.1', port: tport, noDelay: true });
  c.on('data', (d) => up.write(d));
  up.on('data', (d) => c.write(d));
  c.on('close', () => up.destroy()); up.on('close', () => c.destroy());
  c.on('error', () => {}); up.on('error', () => {});
}).listen(lport, '127.0.0.1', () => process.send && process.send('up'));
`;

function arg(name: string, dflt: number): number {
  const a = process.argv.find((x) => x.startsWith(`--${name}=`));
  return a ? Number(a.slice(name.length + 3)) : dflt;
}

async function main(): Promise<void> {
  const duration = arg('duration', 8);
  const rounds = arg('rounds', 3);
  const pgbouncerBin = '/usr/sbin/pgbouncer';
  ensurePgbouncer(pgbouncerBin);
  const pg = await startPostgres();
  const db = DB_FOR_MODE.session;
  await pg.query(`CREATE DATABASE ${db}`);
  await pg.query(`GRANT ALL ON DATABASE ${db} TO PUBLIC`);
  await pg.query('GRANT ALL ON SCHEMA public TO PUBLIC', db);
  const init = await pgbench({ host: pg.host, port: pg.port, user: 'scram_user', password: 'scram_pass', database: db }, ['-i', '-s', '1', '-q']);
  if (init.code !== 0) throw new Error(init.stderr);
  const userlist: Array<[string, string]> = [['scram_user', 'scram_pass']];
  const ini = throughputIni(pg, db, {}) as Record<string, Record<string, string | number>>;
  ini.pgbouncer = { ...ini.pgbouncer, pool_mode: 'session' };
  const pgbun = await startPooler('pgbun', pgbouncerBin, ini, userlist, 4096);
  const bouncer = await startPooler('pgbouncer', pgbouncerBin, ini, userlist, 4096);
  const pipePort = await freePort();
  const pipe = spawn(process.execPath, ['-e', PIPE, String(pipePort), String(pg.port)], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  await new Promise((r) => pipe.once('message', r));
  const targets = [
    { name: 'pgbun', port: pgbun.handle.port, pid: pgbun.pid },
    { name: 'PgBouncer', port: bouncer.handle.port, pid: bouncer.pid },
    { name: 'node pipe', port: pipePort, pid: pipe.pid! },
  ];
  const sums = new Map(targets.map((t) => [t.name, { tx: 0, user: 0, sys: 0 }]));
  for (let r = 0; r < rounds; r++) {
    for (const t of r % 2 === 0 ? targets : [...targets].reverse()) {
      const before = cpuTimes(t.pid)!;
      const res = await pgbench({ host: '127.0.0.1', port: t.port, user: 'scram_user', password: 'scram_pass', database: db },
        ['-n', '-S', '-c', '10', '-j', '2', '-T', String(duration)]);
      const after = cpuTimes(t.pid)!;
      const s = sums.get(t.name)!;
      s.tx += res.summary.transactions ?? 0;
      s.user += after.user - before.user;
      s.sys += after.sys - before.sys;
      process.stderr.write(`${t.name}: ${res.summary.tps?.toFixed(0)} tps\n`);
    }
  }
  process.stdout.write('\n| session -S c10 | TPS | user µs/tx | kernel µs/tx | total µs/tx |\n|---|--:|--:|--:|--:|\n');
  for (const t of targets) {
    const s = sums.get(t.name)!;
    const us = (x: number): string => ((x / s.tx) * 1e6).toFixed(1);
    process.stdout.write(`| ${t.name} | ${(s.tx / (rounds * duration)).toFixed(0)} | ${us(s.user)} | ${us(s.sys)} | ${us(s.user + s.sys)} |\n`);
  }
  pipe.kill();
  await pgbun.handle.stop();
  await bouncer.handle.stop();
  await pg.stop();
}

main().catch((e: unknown) => {
  process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
