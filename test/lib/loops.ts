// `workers = N`: which event loop holds a connection. Connection ids are `seq * N + loop`
// (src/pool/ids.ts), and the `C-0x…`/`S-0x…` pointer of a log line is 0x7f0000000000 + id * 16,
// so a log line names the loop that wrote it. A TCP client is found by its source port in its
// `login attempt` line; the kernel spreads TCP connections over the loops (SO_REUSEPORT), so a
// test opens several to get clients on every loop.
import { waitUntil } from './pool-helpers.js';
import { wireLogin, type LoginResult, type WireClient, type WireTarget } from './wire.js';
import type { TestPgbun } from './pgbun.js';

/** The loop of the connection whose log pointer is `ptr` (`0x7f…`). */
export function loopOfPtr(ptr: string, workers: number): number {
  const id = (Number.parseInt(ptr, 16) - 0x7f0000000000) / 16;
  return id % workers;
}

/** The pointer of the TCP client with source port `port` in b's log (its `login attempt` line). */
export function ptrOfTcpClient(b: TestPgbun, port: number): string | null {
  const re = new RegExp(`LOG C-(0x[0-9a-f]+): \\S+@127\\.0\\.0\\.1:${port} login attempt: `);
  for (const line of b.log().split('\n')) {
    const m = re.exec(line);
    if (m !== null) return m[1]!;
  }
  return null;
}

/** The loop a logged-in TCP client is on (its login is in b's log), or null if not in b's log. */
export function loopOfClient(b: TestPgbun, c: WireClient, workers: number): number | null {
  const ptr = ptrOfTcpClient(b, c.socket.localPort!);
  return ptr === null ? null : loopOfPtr(ptr, workers);
}

export interface LoopClient {
  client: WireClient;
  login: LoginResult;
  loop: number;
}

/**
 * Log in over TCP until every loop of b has `perLoop` clients (the others are closed); the
 * clients by loop. Fails the test if the kernel never spreads them (hundreds of tries).
 */
export async function clientsOnEveryLoop(
  b: TestPgbun, workers: number, login: { user: string; database: string }, perLoop = 1,
): Promise<LoopClient[][]> {
  const byLoop: LoopClient[][] = Array.from({ length: workers }, () => []);
  const target: WireTarget = { host: '127.0.0.1', port: b.port };
  for (let tries = 0; byLoop.some((l) => l.length < perLoop); tries++) {
    if (tries > 300) throw new Error(`clients did not reach every loop: ${byLoop.map((l) => l.length).join(',')}`);
    const { client, login: result } = await wireLogin(target, login);
    const loop = await waitUntil('its login attempt line', () => loopOfClient(b, client, workers), (l) => l !== null);
    if (byLoop[loop!]!.length < perLoop) byLoop[loop!]!.push({ client, login: result, loop: loop! });
    else await client.terminate();
  }
  return byLoop;
}

/** The `closing because` line of the connection from TCP source port `port`, if logged. */
export function closingLineOfPort(b: TestPgbun, port: number, from = 0): string | undefined {
  const re = new RegExp(`LOG C-0x[0-9a-f]+: \\S+@127\\.0\\.0\\.1:${port} closing because: `);
  return b.log().slice(from).split('\n').find((l) => re.test(l));
}

/** The loop that wrote a `C-0x…`/`S-0x…` log line. */
export function loopOfLine(line: string, workers: number): number {
  const m = /[CS]-(0x[0-9a-f]+): /.exec(line);
  if (m === null) throw new Error(`no connection pointer in ${line}`);
  return loopOfPtr(m[1]!, workers);
}
