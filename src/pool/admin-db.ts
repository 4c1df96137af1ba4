// The admin console (the `pgbouncer` database) as a client connection sees it. admin/console.ts
// registers itself here when it loads, so that pool/ does not import admin/ (layers point one
// way: the console is built on the pool, not the other way round).
import type { Action } from '../protocol/stream.js';
import type { Client } from './client.js';
import type { PgUser } from './objects.js';

export interface AdminDb {
  /** before authentication: `trusted` (no password), `password` (authenticate first), `denied` (failed) */
  checkAccess(client: Client, userName: string, user: PgUser | null): 'trusted' | 'denied' | 'password';
  /** authenticated: the console's welcome */
  welcome(client: Client): void;
  /** a message from a console client */
  onMessage(client: Client, type: number, len: number, buf: Buffer, start: number, complete: boolean): Action;
  /** a CancelRequest for a console client */
  cancel(target: Client): void;
}

let handler: AdminDb | null = null;

export function registerAdminDb(h: AdminDb): void {
  handler = h;
}

export function adminDb(): AdminDb {
  if (handler === null) throw new Error('the admin console is not loaded');
  return handler;
}
