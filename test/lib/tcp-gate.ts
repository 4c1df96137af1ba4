// A TCP gate between pgbun and PostgreSQL, for tests that need to control or observe the
// server side of pgbun: connections are held silent until open() (a server login that waits as
// long as the test wants), then piped both ways; bytesUp counts what reached PostgreSQL.

import * as net from 'node:net';
import { freePort } from './procs.js';

export class TcpGate {
  port = 0;
  /** bytes pgbun sent towards PostgreSQL through the gate */
  bytesUp = 0;
  private server: net.Server | null = null;
  private opened = false;
  private held: net.Socket[] = [];
  private readonly live = new Set<net.Socket>();

  constructor(private readonly target: { host: string; port: number }, opened = false) {
    this.opened = opened;
  }

  async start(): Promise<this> {
    this.port = await freePort();
    this.server = net.createServer((s) => {
      s.on('error', () => {});
      this.live.add(s);
      s.once('close', () => this.live.delete(s));
      if (this.opened) this.pipe(s);
      else {
        s.pause();
        this.held.push(s);
      }
    });
    const srv = this.server;
    await new Promise<void>((resolve) => srv.listen(this.port, '127.0.0.1', resolve));
    return this;
  }

  private pipe(s: net.Socket): void {
    const up = net.connect(this.target.port, this.target.host);
    this.live.add(up);
    up.once('close', () => this.live.delete(up));
    up.on('error', () => s.destroy());
    s.on('close', () => up.destroy());
    up.on('close', () => s.destroy());
    s.on('data', (d: Buffer) => {
      this.bytesUp += d.length;
    });
    s.pipe(up);
    up.pipe(s);
    s.resume();
  }

  /** Let held and future connections through. */
  open(): void {
    this.opened = true;
    for (const s of this.held.splice(0)) this.pipe(s);
  }

  close(): void {
    for (const s of this.live) s.destroy();
    this.held = [];
    this.server?.close();
  }
}
