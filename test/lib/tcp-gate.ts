// A TCP gate between pgbun and PostgreSQL, for tests that need to control or observe the server
// side of pgbun: connections are piped to PostgreSQL, or held unanswered while `hold` is set
// (a server login or a cancel request that waits as long as the test wants) until release(), or
// never answered at all (`silent`). It counts the connections it accepted and the bytes that
// reached PostgreSQL.

import * as net from 'node:net';
import { freePort } from './procs.js';

export interface TcpGateOptions {
  /** hold new connections until release() (default false: pipe them at once) */
  hold?: boolean;
  /** accept connections and never answer them */
  silent?: boolean;
  /** address to listen on (default 127.0.0.1) */
  host?: string;
  /** port to listen on (default: a free one) */
  port?: number;
}

export class TcpGate {
  port = 0;
  /** connections accepted */
  accepted = 0;
  /** bytes pgbun sent towards PostgreSQL through the gate */
  bytesUp = 0;
  hold: boolean;
  private server: net.Server | null = null;
  private held: net.Socket[] = [];
  private readonly live = new Set<net.Socket>();

  constructor(private readonly target: { host: string; port: number }, private readonly opts: TcpGateOptions = {}) {
    this.hold = opts.hold ?? false;
  }

  async start(): Promise<this> {
    this.port = this.opts.port ?? await freePort();
    this.server = net.createServer((s) => {
      this.accepted++;
      this.live.add(s);
      s.once('close', () => this.live.delete(s));
      s.on('error', () => {});
      if (this.opts.silent) return;
      if (this.hold) this.held.push(s);
      else this.pipe(s);
    });
    const srv = this.server;
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(this.port, this.opts.host ?? '127.0.0.1', () => resolve());
    });
    return this;
  }

  private pipe(s: net.Socket): void {
    const up = net.connect(this.target.port, this.target.host);
    this.live.add(up);
    up.once('close', () => this.live.delete(up));
    up.on('error', () => s.destroy());
    // the client's end ends `up` after the data it sent (a held CancelRequest, say); destroying
    // `up` when the client closes would drop that
    up.on('close', () => s.destroy());
    s.on('data', (d: Buffer) => {
      this.bytesUp += d.length;
    });
    s.pipe(up);
    up.pipe(s);
  }

  /** Pipe the held connections, and new ones from now on. */
  release(): void {
    this.hold = false;
    for (const s of this.held.splice(0)) this.pipe(s);
  }

  close(): void {
    for (const s of this.live) s.destroy();
    this.held = [];
    this.server?.close();
  }
}
