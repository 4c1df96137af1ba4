// Test only: a way for the fault suite to make one event loop fail as a bug would, so that what
// follows (process/worker.ts's crash path, the replacement) can be tested. Off unless the
// environment names a directory in PGBUN_TEST_FAULT_DIR when pgbun starts, which no
// configuration, console command or client can do. Then on each janitor tick every loop looks
// for the file `crash-<its index>` there: it removes it, and fails with an uncaught exception,
// or an unhandled rejection if the file says `rejection`, or stops answering for good (an endless
// loop, for the main thread's watchdog) if it says `hang`.
import fs from 'node:fs';
import path from 'node:path';
import { log } from '../log/logger.js';
import { onJanitorTick } from '../pool/janitor.js';
import { workerSelf } from '../workers/identity.js';

export const TEST_FAULT_ENV = 'PGBUN_TEST_FAULT_DIR';

export function armTestFaults(): void {
  const dir = process.env[TEST_FAULT_ENV];
  if (dir === undefined || dir === '') return;
  const file = path.join(dir, `crash-${workerSelf.index}`);
  onJanitorTick(() => {
    let kind: string;
    try {
      kind = fs.readFileSync(file, 'utf8').trim();
      fs.unlinkSync(file);
    } catch {
      return;
    }
    log.warning(`${TEST_FAULT_ENV}: failing on purpose (${kind || 'exception'})`);
    const err = new Error(`test fault in worker ${workerSelf.index}`);
    if (kind === 'hang') setImmediate(() => { for (;;) { /* stuck */ } });
    else if (kind === 'rejection') void Promise.reject(err);
    else setImmediate(() => { throw err; });
  });
}
