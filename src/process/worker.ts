// The entry of a worker thread (`workers` > 1): the same pooler as the main thread, started from
// the main thread's settings (SET and -v included) and the same files, accepting on TCP sockets of
// its own (SO_REUSEPORT); the Unix socket and systemd's sockets are the main thread's (see
// pool/listener.ts, sharedFds). No signals, pidfile, daemon, systemd or metrics endpoint here:
// those are the main thread's (process/workers.ts).
import { parentPort, workerData } from 'node:worker_threads';
import { cf, installSettings } from '../config/current.js';
import { loadConfig } from '../config/load.js';
import { splitList } from '../config/settings.js';
import { log } from '../log/logger.js';
import { applyConfig } from '../pool/databases.js';
import { initTrackedParams } from '../pool/varcache.js';
import { startJanitor } from '../pool/janitor.js';
import { leaveSharedSockets, startListening } from '../pool/listener.js';
import { startAdmin } from '../admin/start.js';
import { loadAuthFile } from '../auth/authfile.js';
import { reloadAuthFiles } from '../auth/login.js';
import { setupTls } from '../tls/context.js';
import { connectPeer, onRequest } from '../workers/bus.js';
import { workerSelf } from '../workers/identity.js';
import { SharedTable } from '../workers/shared.js';
import { abandonLoop } from '../pool/abandon.js';
import { armTestFaults } from './faults.js';
import type { WorkerStart } from './workers.js';

/** what the clients of a loop whose thread failed are told (FATAL, 08P01) */
const CRASH_REASON = 'worker thread crashed';
/** how long the last bytes (FATAL, Terminate) may take before the thread ends anyway */
const CRASH_FLUSH_MS = 2000;
let crashing = false;

/**
 * An uncaught exception or unhandled rejection: this loop's state can no longer be trusted, so
 * it ends, cleanly for its connections (pool/abandon.ts), and the main thread starts a new one
 * (process/workers.ts). Node would otherwise end the thread with its sockets cut: clients would
 * lose their connection without a word, PostgreSQL its sessions without a Terminate. A fault
 * during the cleanup changes nothing: the thread ends when its sockets are done or at the deadline.
 */
function crash(e: unknown): void {
  if (crashing) return;
  crashing = true;
  const deadline = setTimeout(leave, CRASH_FLUSH_MS);
  try {
    log.error(`worker ${workerSelf.index} crashed: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
  } catch {
    // the exit below is what matters
  }
  const pending = abandonLoop(CRASH_REASON);
  const poll = setInterval(() => {
    if (pending.some((s) => !s.destroyed)) return;
    clearInterval(poll);
    clearTimeout(deadline);
    leave();
  }, 10);
}

function leave(): never {
  // a plain descriptor outlives the thread: the log file's would leak with every replacement
  try {
    log.setLogfile('');
  } catch {
    // exiting anyway
  }
  process.exit(1);
}

// the main thread's watchdog (process/workers.ts): an answer says this loop still turns
onRequest('worker.ping', () => true);

async function run(start: WorkerStart): Promise<void> {
  process.on('uncaughtException', crash);
  process.on('unhandledRejection', crash);
  workerSelf.index = start.index;
  workerSelf.count = start.count;
  workerSelf.table = new SharedTable(start.buffer, start.count);
  for (const [w, port] of start.ports) connectPeer(w, port);

  installSettings(start.settings);
  log.setStderr(start.logStderr);
  log.setVerbose(cf.verbose);
  log.setJson(cf.log_format === 'json');
  if (cf.logfile) log.setLogfile(cf.logfile);

  const tlsErr = setupTls(true);
  if (tlsErr !== null) throw new Error(`TLS setup failed: ${tlsErr}`);
  initTrackedParams(splitList(cf.track_extra_parameters));
  const users = loadAuthFile(cf.auth_file, true);
  // the main thread logged the file's problems; its settings (with SET and -v) are in force
  const { config } = loadConfig(cf.conffile!, { startup: true });
  if (config === null) throw new Error('cannot load config file');
  config.settings = start.settings;
  applyConfig(config, users);
  const hbaRefused = reloadAuthFiles();
  if (hbaRefused !== null) throw new Error(hbaRefused);

  leaveSharedSockets(start.mainOnlyTcp);
  await startListening(true);
  startJanitor();
  startAdmin(config);
  armTestFaults();
}

run(workerData as WorkerStart).then(
  () => parentPort!.postMessage({ ready: true }),
  (e: unknown) => parentPort!.postMessage({ error: (e as Error).message }),
);
