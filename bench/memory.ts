// Memory per idle client: a fresh pooler, a few warm-up logins and queries (so the pool, its
// server connection and the code paths exist), the baseline RSS, then N idle logged-in clients
// from a helper process (idle-clients.ts), and the RSS again once it has settled.

import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestPostgres } from '../test/lib/postgres.js';
import { sleep, trackChild, withTimeout } from '../test/lib/procs.js';
import { wireLogin } from '../test/lib/wire.js';
import { memoryIni, startPooler, type PoolerName } from './poolers.js';
import { rssBytes, withNofile } from './sysinfo.js';

export interface MemoryResult {
  pooler: PoolerName;
  clients: number;
  /** clients actually held open (less than `clients` when the run failed part-way) */
  opened: number;
  ok: boolean;
  baselineRss: number | null;
  rss: number | null;
  bytesPerClient: number | null;
  loginMs: number | null;
  /** fd limit the pooler ran with */
  nofile: number;
  problems: string[];
}

const ROLE = { user: 'md5_user', password: 'md5_pass' };
const DATABASE = 'testdb';
const HELPER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'idle-clients.js');

/** Median of a few RSS samples taken `gapMs` apart (allocator and GC settle in the meantime). */
async function settledRss(pid: number, samples = 5, gapMs = 400): Promise<number | null> {
  const v: number[] = [];
  for (let i = 0; i < samples; i++) {
    if (i > 0) await sleep(gapMs);
    const r = rssBytes(pid);
    if (r === null) return null;
    v.push(r);
  }
  v.sort((a, b) => a - b);
  return v[Math.floor(v.length / 2)];
}

interface Helper {
  ready: Promise<{ opened: number; ms: number } | { error: string }>;
  stop(): Promise<void>;
}

function startHelper(host: string, port: number, count: number): Helper {
  const { command } = withNofile(count + 200, [process.execPath, HELPER]);
  const spec = JSON.stringify({ host, port, ...ROLE, database: DATABASE, count });
  const p = spawn(command[0], [...command.slice(1), spec], { stdio: ['pipe', 'pipe', 'pipe'] });
  trackChild(p, 'idle-clients', 'SIGKILL', false);
  let out = '';
  let err = '';
  p.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<void>((r) => p.once('exit', () => r()));
  const ready = new Promise<{ opened: number; ms: number } | { error: string }>((resolve) => {
    p.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const m = /^ready (\d+) (\d+)$/m.exec(out);
      if (m) resolve({ opened: Number(m[1]), ms: Number(m[2]) });
      const e = /^error (.*)$/m.exec(out);
      if (e) resolve({ error: e[1] });
    });
    p.once('exit', (code) => resolve({ error: `helper exited (code ${code}) ${err.slice(-500)}` }));
  });
  return {
    ready,
    async stop() {
      p.stdin!.end();
      p.kill('SIGTERM');
      if (!(await withTimeout(exited, 10_000))) p.kill('SIGKILL');
      await exited;
    },
  };
}

export async function measureMemory(pg: TestPostgres, pooler: PoolerName, pgbouncerBin: string, clients: number): Promise<MemoryResult> {
  const problems: string[] = [];
  const res: MemoryResult = { pooler, clients, opened: 0, ok: false, baselineRss: null, rss: null, bytesPerClient: null, loginMs: null, nofile: 0, problems };
  const s = await startPooler(pooler, pgbouncerBin, memoryIni(pg, DATABASE, clients), [[ROLE.user, ROLE.password]], clients + 500);
  res.nofile = s.nofile;
  if (s.nofile < clients + 50) problems.push(`open-files limit ${s.nofile} is below ${clients} clients + margin (hard limit too low)`);
  try {
    // warm-up: a server connection in the pool, the login and query paths run
    for (let i = 0; i < 20; i++) {
      const { client } = await wireLogin({ host: s.handle.host, port: s.handle.port }, { ...ROLE, database: DATABASE });
      await client.query('SELECT 1');
      await client.terminate();
    }
    await sleep(1000);
    res.baselineRss = await settledRss(s.pid);
    const helper = startHelper(s.handle.host, s.handle.port, clients);
    try {
      const w = await withTimeout(helper.ready, 180_000);
      const r = w ? w.value : { error: 'helper did not finish logging in within 180 s' };
      if ('error' in r) {
        problems.push(r.error);
      } else {
        res.opened = r.opened;
        res.loginMs = r.ms;
        await sleep(2000);
        res.rss = await settledRss(s.pid);
        if (res.rss !== null && res.baselineRss !== null) {
          res.bytesPerClient = Math.round((res.rss - res.baselineRss) / r.opened);
          res.ok = r.opened === clients;
        } else problems.push(`${pooler} is gone`);
      }
    } finally {
      await helper.stop();
    }
    const issues = s.handle.log().split('\n').filter((l) => /\b(ERROR|FATAL|PANIC)\b|Uncaught/.test(l));
    for (const l of issues.slice(0, 3)) problems.push(`log: ${l}`);
  } catch (e) {
    problems.push((e as Error).message.split('\n')[0]);
  } finally {
    await s.handle.stop();
  }
  if (problems.length) res.ok = false;
  return res;
}
