// Connection identities: SHOW CLIENTS/SERVERS `id` (unique, increasing; KILL_CLIENT takes it)
// and `ptr`, the `0x…` pointer-like name PgBouncer uses in log prefixes (C-0x…/S-0x…).

import { workerSelf } from '../workers/identity.js';

class ConnIds {
  private last = 0;

  /** with `workers` > 1 each loop takes every N-th number, so ids stay unique over the pooler */
  next(): number {
    return ++this.last * workerSelf.count + workerSelf.index;
  }

  /** stable pointer-looking text for a connection id */
  ptr(id: number): string {
    return '0x' + (0x7f0000000000 + id * 0x10).toString(16);
  }
}

export const connIds = new ConnIds();
