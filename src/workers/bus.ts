// Messages between the event loops of `workers = N`: every pair is joined by a MessageChannel
// (a full mesh, made by the main thread, which replaces a dead worker's ports). A message is a
// request of some kind, answered by the handler registered for that kind in the receiving loop;
// a request to a worker that is gone, or goes while it is asked, is answered with undefined.
import type { MessagePort } from 'node:worker_threads';

type Handler = (data: unknown, from: number) => unknown;

interface Pending {
  worker: number;
  resolve: (v: unknown) => void;
}

/** The wire form: a request (k), its answer (r), or the bus's own notices (sys). */
interface Envelope {
  /** the main thread joins a new worker to this loop (port), or says one is gone */
  sys?: 'peer' | 'gone';
  w?: number;
  port?: MessagePort;
  k?: string;
  id?: number;
  d?: unknown;
  r?: number;
  e?: string;
}

const ports = new Map<number, MessagePort>();
const handlers = new Map<string, Handler>();
const pending = new Map<number, Pending>();
let nextId = 1;

/** Register what answers requests of one kind (a handler may return a promise). */
export function onRequest(kind: string, fn: Handler): void {
  handlers.set(kind, fn);
}

/** Join the loop `worker` through `port` (its other end is in that loop). */
export function connectPeer(worker: number, port: MessagePort): void {
  dropPeer(worker);
  ports.set(worker, port);
  port.on('message', (m: Envelope) => { onMessage(worker, port, m); });
}

/** `worker` is gone: forget its port and answer what was asked of it with undefined. */
export function dropPeer(worker: number): void {
  const port = ports.get(worker);
  if (port === undefined) return;
  ports.delete(worker);
  port.close();
  for (const [id, p] of pending) {
    if (p.worker !== worker) continue;
    pending.delete(id);
    p.resolve(undefined);
  }
}

/** The other loops this one is joined to, in index order. */
export function peers(): number[] {
  return [...ports.keys()].sort((a, b) => a - b);
}

function onMessage(from: number, port: MessagePort, m: Envelope): void {
  if (m.sys === 'peer') {
    connectPeer(m.w!, m.port!);
    return;
  }
  if (m.sys === 'gone') {
    dropPeer(m.w!);
    return;
  }
  if (m.r !== undefined) {
    const p = pending.get(m.r);
    if (p === undefined) return;
    pending.delete(m.r);
    p.resolve(m.e !== undefined ? undefined : m.d);
    return;
  }
  const handler = handlers.get(m.k!);
  const id = m.id ?? 0;
  let out: unknown;
  try {
    if (handler === undefined) throw new Error(`no handler for ${m.k}`);
    out = handler(m.d, from);
  } catch (e) {
    if (id !== 0) port.postMessage({ r: id, e: (e as Error).message });
    return;
  }
  if (id === 0) return;
  Promise.resolve(out).then(
    (d) => { if (ports.get(from) === port) port.postMessage({ r: id, d }); },
    (e: unknown) => { if (ports.get(from) === port) port.postMessage({ r: id, e: String(e) }); },
  );
}

/** Ask one loop; undefined when it is gone or its handler failed. */
export function request<T>(worker: number, kind: string, data?: unknown): Promise<T | undefined> {
  const port = ports.get(worker);
  if (port === undefined) return Promise.resolve(undefined);
  const id = nextId++;
  return new Promise((resolve) => {
    pending.set(id, { worker, resolve: resolve as (v: unknown) => void });
    port.postMessage({ k: kind, id, d: data } satisfies Envelope);
  });
}

/** Ask every other loop; the answers of those that gave one, with their index. */
export async function requestAll<T>(kind: string, data?: unknown): Promise<Array<{ worker: number; reply: T }>> {
  const asked = peers();
  const replies = await Promise.all(asked.map((w) => request<T>(w, kind, data)));
  const out: Array<{ worker: number; reply: T }> = [];
  replies.forEach((reply, i) => { if (reply !== undefined) out.push({ worker: asked[i]!, reply }); });
  return out;
}

/** Tell one loop, without waiting for an answer. */
export function tell(worker: number, kind: string, data?: unknown): void {
  ports.get(worker)?.postMessage({ k: kind, d: data } satisfies Envelope);
}

/** Tell every other loop. */
export function tellAll(kind: string, data?: unknown): void {
  for (const port of ports.values()) port.postMessage({ k: kind, d: data } satisfies Envelope);
}

/** Main thread: join `newWorker` to loop `worker` through `port`, or tell it `gone` is gone. */
export function introduce(worker: number, newWorker: number, port: MessagePort): void {
  ports.get(worker)?.postMessage({ sys: 'peer', w: newWorker, port } satisfies Envelope, [port]);
}

export function announceGone(gone: number): void {
  for (const port of ports.values()) port.postMessage({ sys: 'gone', w: gone } satisfies Envelope);
}
