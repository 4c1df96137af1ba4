// `workers = N`: the main thread (worker 0) starts N-1 worker threads, each a whole pooler
// event loop that accepts on the same TCP listen addresses (the Unix socket and systemd's sockets
// are the main thread's alone: pool/listener.ts), and replaces one that dies. The loops
// share the pooler's limits through a SharedArrayBuffer (workers/shared.ts) and talk through
// the message bus (workers/bus.ts): the console's SHOW and control commands reach every loop,
// cancel requests reach the loop that issued the key. Only the main thread handles signals,
// the pidfile, systemd and the metrics endpoint. See ARCHITECTURE.md, "Workers".
import os from 'node:os';
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import { cf } from '../config/current.js';
import { log } from '../log/logger.js';
import { poolerState } from '../pool/pooler.js';
import { mainOnlyTcpAddresses } from '../pool/listener.js';
import { announceGone, connectPeer, dropPeer, introduce, request } from '../workers/bus.js';
import { workerSelf } from '../workers/identity.js';
import { SharedTable } from '../workers/shared.js';
import { MAX_WORKERS, type Settings } from '../config/settings.js';
import { workerScript } from '../runtime/entry.js';

/** What a worker thread is started with (process/worker.ts reads it). */
export interface WorkerStart {
  /** tells cli.ts, run again in the thread, to start the worker side */
  pgbunWorker: true;
  index: number;
  count: number;
  buffer: SharedArrayBuffer;
  settings: Settings;
  logStderr: boolean;
  /** host:port of the TCP sockets the main thread alone accepts on (systemd's) */
  mainOnlyTcp: string[];
  /** its ends of the channels to the other loops, by their index */
  ports: Array<[number, MessagePort]>;
}

/** The `workers` setting as a number: `auto` is the CPUs this process may run on, at most MAX_WORKERS. */
export function configuredWorkers(value: string): number {
  // beyond MAX_WORKERS the cancel keys could not name the loop (pool/cancel-key.ts)
  if (value === 'auto') return Math.min(MAX_WORKERS, Math.max(1, os.availableParallelism()));
  return Number(value);
}

const threads = new Map<number, Worker>();
/** a replacement is not started more often than this, so a worker that dies at start does not spin */
const RESPAWN_DELAY_MS = 1000;
/**
 * A worker thread that has not answered the main thread's ping for this long is stuck (an endless
 * loop, say): its event loop serves nobody and every console command waits for its answer, so it
 * is stopped and replaced like one that died. Far beyond any pause a working loop makes.
 */
const STUCK_MS = 10_000;
const PING_MS = 1000;
/** worker threads that are up, with when each last answered a ping */
const lastAnswer = new Map<Worker, number>();
let watchdog: NodeJS.Timeout | null = null;
let logStderr = true;

/** Before listening: how many loops there will be, and the table they share. */
export function prepareWorkers(count: number): void {
  workerSelf.count = count;
  workerSelf.index = 0;
  if (count > 1) workerSelf.table = SharedTable.create(count);
}

/** After listening: start worker threads 1..N-1; resolves when all accept connections. */
export async function startWorkers(stderr: boolean): Promise<void> {
  logStderr = stderr;
  const count = workerSelf.count;
  if (count <= 1) return;
  // the channels between worker threads are made up front; each thread's channel to the main
  // thread is made when it is spawned
  const mesh = new Map<number, Array<[number, MessagePort]>>();
  for (let i = 1; i < count; i++) mesh.set(i, []);
  for (let i = 1; i < count; i++) {
    for (let j = i + 1; j < count; j++) {
      const ch = new MessageChannel();
      mesh.get(i)!.push([j, ch.port1]);
      mesh.get(j)!.push([i, ch.port2]);
    }
  }
  await Promise.all([...mesh].map(([i, ports]) => spawn(i, ports)));
  watchdog = setInterval(watch, PING_MS);
  watchdog.unref();
}

function watch(): void {
  if (poolerState.shuttingDown) return;
  const now = Date.now();
  for (const [index, w] of threads) {
    const last = lastAnswer.get(w);
    if (last === undefined) continue; // still starting
    if (now - last > STUCK_MS) {
      lastAnswer.delete(w);
      log.error(`worker ${index} has not answered for ${Math.round((now - last) / 1000)} s: stopping it`);
      void w.terminate();
      continue;
    }
    void request(index, 'worker.ping').then((ok) => {
      if (ok === true && lastAnswer.has(w)) lastAnswer.set(w, Date.now());
    });
  }
}

function spawn(index: number, ports: Array<[number, MessagePort]>): Promise<void> {
  const toMain = new MessageChannel();
  connectPeer(index, toMain.port1);
  ports.push([0, toMain.port2]);
  const start: WorkerStart = {
    pgbunWorker: true, index, count: workerSelf.count, buffer: workerSelf.table!.buffer, settings: { ...cf },
    logStderr, mainOnlyTcp: mainOnlyTcpAddresses(), ports,
  };
  const { script, evaluate } = workerScript();
  const w = new Worker(script, {
    eval: evaluate,
    workerData: start,
    transferList: ports.map(([, p]) => p),
  });
  threads.set(index, w);
  return new Promise((resolve, reject) => {
    let up = false;
    w.on('message', (m: { ready?: boolean; error?: string }) => {
      if (m.ready) {
        up = true;
        lastAnswer.set(w, Date.now());
        resolve();
      } else if (m.error !== undefined) {
        reject(new Error(m.error));
      }
    });
    w.on('error', (e) => {
      log.error(`worker ${index} failed: ${e.stack ?? e.message}`);
      if (!up) reject(e);
    });
    w.on('exit', (code) => {
      lastAnswer.delete(w);
      if (threads.get(index) === w) threads.delete(index);
      // a thread that ends itself (process/worker.ts's crash path) before it is up
      if (!up) reject(new Error(`worker ${index} exited with code ${code} before it was up`));
      onWorkerExit(index, code);
    });
  });
}

/** A worker is gone: what it counted comes off the shared totals, the others forget it, a new one starts. */
function onWorkerExit(index: number, code: number): void {
  workerSelf.table?.releaseWorker(index);
  dropPeer(index);
  announceGone(index);
  if (poolerState.shuttingDown) return;
  log.error(`worker ${index} exited with code ${code}; starting a new one`);
  setTimeout(() => {
    if (poolerState.shuttingDown || threads.has(index)) return;
    const ports: Array<[number, MessagePort]> = [];
    for (const j of threads.keys()) {
      const ch = new MessageChannel();
      introduce(j, index, ch.port1);
      ports.push([j, ch.port2]);
    }
    spawn(index, ports).then(
      () => log.log(`worker ${index} replaced`),
      (e: unknown) => log.error(`worker ${index} could not start: ${(e as Error).message}`),
    );
  }, RESPAWN_DELAY_MS).unref();
}

/** Worker threads now running, by index (tests and SHOW read it). */
export function liveWorkers(): number[] {
  return [...threads.keys()].sort((a, b) => a - b);
}
