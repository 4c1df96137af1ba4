// Helper process for the memory measurement: opens N logged-in, idle client connections to a
// pooler (raw protocol, see test/lib/wire.ts) and holds them until stdin closes or SIGTERM.
// It runs apart from the bench process so that 10,000 sockets use neither the bench's fds nor
// its event loop, and it is started with a raised open-files limit.
//
//   node dist/bench/idle-clients.js '{"host":..,"port":..,"user":..,"password":..,"database":..,"count":N}'
//
// stdout, one line each: "progress <n>" now and then, then "ready <n> <ms>", or "error <text>".

import { wireLogin, type WireClient } from '../test/lib/wire.js';

interface Spec {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
  count: number;
  /** logins in flight at once (default 64: stays under a listen backlog of 128) */
  concurrency?: number;
}

const spec = JSON.parse(process.argv[2] ?? '{}') as Spec;
const clients: WireClient[] = [];
const started = Date.now();
let next = 0;
let failed: Error | null = null;

async function worker(): Promise<void> {
  while (next < spec.count && !failed) {
    next++;
    let attempt = 0;
    for (;;) {
      try {
        const { client } = await wireLogin({ host: spec.host, port: spec.port }, { user: spec.user, password: spec.password, database: spec.database, timeoutMs: 30_000 });
        client.socket.on('error', () => {}); // the pooler going away later is not our business
        clients.push(client);
        if (clients.length % 1000 === 0) process.stdout.write(`progress ${clients.length}\n`);
        break;
      } catch (e) {
        // a full accept queue shows up as a reset or timeout: retry a few times, then give up
        if (++attempt >= 5) {
          failed = e as Error;
          return;
        }
        await new Promise((r) => setTimeout(r, 100 * attempt));
      }
    }
  }
}

const n = Math.max(1, Math.min(spec.concurrency ?? 64, spec.count));
await Promise.all(Array.from({ length: n }, () => worker()));
if (failed) {
  process.stdout.write(`error after ${clients.length} clients: ${(failed as Error).message.split('\n')[0]}\n`);
  process.exit(1);
}
process.stdout.write(`ready ${clients.length} ${Date.now() - started}\n`);

const quit = (): void => {
  for (const c of clients) c.socket.destroy();
  process.exit(0);
};
process.on('SIGTERM', quit);
process.stdin.on('end', quit);
process.stdin.on('close', quit);
process.stdin.resume();
