// Which event loop this is when `workers = N` runs N of them (worker 0 is the main thread,
// which also handles signals, the pidfile and the metrics endpoint), and the counters they
// share. With workers = 1 the table is null and everything counts locally as before.
import type { SharedTable } from './shared.js';

export const workerSelf = {
  /** 0 for the main thread, 1..count-1 for worker threads */
  index: 0,
  count: 1,
  table: null as SharedTable | null,
};

/** More than one event loop: limits, the console and control must reach the others. */
export function multiWorker(): boolean {
  return workerSelf.count > 1;
}
