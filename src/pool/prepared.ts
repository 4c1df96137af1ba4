// Protocol-level prepared statements in transaction/statement mode (spec §7.5). Until that
// lands, named statements are forwarded untouched (as with max_prepared_statements = 0).
import { FORWARD, type Action } from '../protocol/stream.js';
import type { PgPool } from './objects.js';
import type { Client } from './client.js';
import type { Server } from './server.js';

export const prepared = {
  /** whether Parse/Bind/Describe/Close names are rewritten for this pool */
  active(_pool: PgPool): boolean {
    return false;
  },
  onClientMessage(_c: Client, _s: Server, _type: number, _len: number, _buf: Buffer, _start: number, _complete: boolean): Action {
    return FORWARD;
  },
  onServerMessage(_s: Server, _c: Client, _type: number, _len: number, _buf: Buffer, _start: number, _complete: boolean): Action {
    return FORWARD;
  },
  onCommandComplete(_s: Server, _c: Client, _buf: Buffer, _start: number, _len: number, _complete: boolean): Action {
    return FORWARD;
  },
};
