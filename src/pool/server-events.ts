// What a server connection reports to the pooler. pooler.ts installs the handlers when it loads;
// Server (and tls/server.ts) call them, so the Server class does not import the pooler that
// creates it and the module graph stays free of cycles. Every call is one of pooler.ts's own
// functions, unchanged.
import type { PgDatabase } from './objects.js';
import type { Client } from './client.js';
import type { Internal, Server } from './server.js';

export interface ServerEvents {
  /** close the server (pooler.disconnectServer) */
  disconnect(server: Server, notify: boolean, reason: string): void;
  /** the login failed with an error of the server's or of pgbun's (pooler.serverLoginFailed) */
  loginFailed(server: Server, sqlstate: string, message: string, fromServer: boolean): void;
  /** the login is done; `params` are the server's ParameterStatus values (pooler.serverLoginDone) */
  loginDone(server: Server, params: Array<[string, string]>): void;
  /** connect, DNS or TLS failed before the login (pooler.serverConnectFailed) */
  connectFailed(server: Server, reason: string): void;
  /** load_balance_hosts = disable: the next host next time (pooler.advanceHost) */
  advanceHost(db: PgDatabase): void;
  /** a ReadyForQuery reached the linked client (pooler.onReadyForQuery) */
  readyForQuery(server: Server, client: Client, status: number, done: boolean, now: number): void;
  /** an internal query's ReadyForQuery (pooler.internalQueryDone) */
  internalDone(server: Server, kind: Internal, err: string | null): void;
  /** a cancel connection is up (pooler.sendCancel) */
  sendCancel(server: Server): void;
}

/** Filled in by pooler.ts when it loads (before any Server exists: only the pooler makes them). */
export const serverEvents = {} as ServerEvents;
