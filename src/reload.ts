// RELOAD and SIGHUP: re-read the ini on top of the
// settings in force (reloadable keys with a default are reset at each [pgbouncer] header, the
// rest are kept; non-reloadable keys are ignored), the auth_file only if its stat() changed, the
// HBA and ident files always; reopen the log file (rotation), re-apply TLS, then apply databases
// and users: changed definitions get a new generation (their servers close when released),
// removed databases are dropped with `database removed`, pool sizes change live.
// A broken file keeps what was read before the bad line and drops no database; RELOAD then
// answers ERROR F0000. With `workers` > 1 every event loop re-reads the files: the one that took
// the RELOAD or SIGHUP writes the log lines, the others only their connections' lines.
import fs from 'node:fs';
import { cf, installSettings } from './config/current.js';
import { loadConfig, type LoadedConfig } from './config/load.js';
import type { DatabaseDef, UserDef } from './config/types.js';
import { log } from './log/logger.js';
import { loadAuthFile } from './auth/authfile.js';
import { reloadAuthFiles } from './auth/login.js';
import { applyConfig } from './pool/databases.js';
import { registry } from './pool/objects.js';
import { launchNewConnection } from './pool/pooler.js';
import { dropDatabase, trimPools } from './pool/control.js';
import { setupTls } from './tls/context.js';
import { setPeers } from './pool/peering.js';
import { sdNotify } from './process/systemd.js';
import { onRequest, requestAll } from './workers/bus.js';
import { multiWorker, workerSelf } from './workers/identity.js';

/** inode of the log file when it was last opened: a different one means it was rotated */
let logfileIno = -1;

function inodeOf(path: string): number {
  try {
    return fs.statSync(path).ino;
  } catch {
    return -1;
  }
}

/** Remember the log file opened at startup (for rotation checks on reload). */
export function noteLogfile(): void {
  logfileIno = cf.logfile ? inodeOf(cf.logfile) : -1;
}

/**
 * Logging settings take effect at once. The log file is reopened when logfile changed or the
 * file was rotated away (moved or deleted, so the path names another file or none): reopening
 * an untouched file gains nothing, and may be impossible after the switch to `user`.
 */
function applyLogSettings(): void {
  log.setVerbose(cf.verbose);
  log.setJson(cf.log_format === 'json');
  const ino = cf.logfile ? inodeOf(cf.logfile) : -1;
  if (cf.logfile !== log.logfile || ino === -1 || ino !== logfileIno) {
    log.setLogfile(cf.logfile);
    logfileIno = cf.logfile ? inodeOf(cf.logfile) : -1;
  }
}

/**
 * What a failed load leaves in force: the databases and [users] entries read before the bad
 * line, on top of the ones already known (a failed reload drops nothing).
 */
function keepWhatIsKnown(partial: LoadedConfig): LoadedConfig {
  const databases = new Map<string, DatabaseDef>();
  for (const db of registry.databases.values()) {
    if (!db.admin && !db.autodb && db.def !== null) databases.set(db.name, db.def);
  }
  for (const [k, v] of partial.databases) databases.set(k, v);
  const users = new Map<string, UserDef>();
  for (const u of registry.users.values()) if (u.def !== null) users.set(u.name, u.def);
  for (const [k, v] of partial.users) users.set(k, v);
  return { ...partial, databases, users };
}

type MetricsModule = typeof import('./admin/metrics.js');
let metricsModule: MetricsModule | null = null;

/**
 * Start, move or stop the Prometheus endpoint as the settings say (startup and reload). Its
 * module (and prom-client) is loaded only once an endpoint is configured. Resolves with an
 * error text when it cannot listen.
 */
export async function applyMetrics(): Promise<string | null> {
  // the main thread serves it, for every loop
  if (workerSelf.index !== 0) return null;
  if (metricsModule === null) {
    if (cf.metrics_listen_port <= 0 && !cf.metrics_listen_addr.startsWith('/')) return null;
    metricsModule = await import('./admin/metrics.js');
  }
  return metricsModule.applyMetricsEndpoint();
}

/** Re-read everything; false when the ini could not be loaded (RELOAD answers F0000). */
export function reloadConfig(): boolean {
  // systemd hears from the main thread, which reloads whichever loop was asked
  const notify = workerSelf.index === 0;
  if (notify) sdNotify('RELOADING=1');
  try {
    return reloadNow();
  } finally {
    if (notify) sdNotify('READY=1');
  }
}

/**
 * After reloadConfig() here: every other loop reloads too. Null with one loop; else resolves
 * when all have.
 */
export function reloadElsewhere(): Promise<unknown> | null {
  return multiWorker() ? requestAll('reload.do') : null;
}

onRequest('reload.do', () => log.quietly(reloadConfig));

function reloadNow(): boolean {
  const file = cf.conffile ?? '';
  const { config, problems, partial } = loadConfig(file, { startup: false, current: cf });
  for (const p of problems) {
    for (const line of p.log ?? [p.message]) {
      if (p.warning) log.warning(line);
      else log.error(line);
    }
  }
  const ok = config !== null;
  if (!ok) log.warning('config file loading failed');
  installSettings((config ?? partial).settings);
  applyLogSettings();

  if (config !== null) {
    const users = loadAuthFile(cf.auth_file, false);
    for (const db of applyConfig(config, users)) dropDatabase(db);
    setPeers(config.peers);
  } else {
    applyConfig(keepWhatIsKnown(partial), null);
  }
  reloadAuthFiles();
  const tlsErr = setupTls(false);
  // PgBouncer's words (its suite greps `ERROR TLS setup failed:.*No such file or directory`)
  if (tlsErr !== null) log.error(`TLS setup failed: ${tlsErr} (keeping old configuration)`);

  // pool sizes may have changed: shrink now, and let grown pools serve their queues
  trimPools();
  for (const pool of registry.pools.slice()) {
    if (!pool.db.admin && pool.waitingClients.count > 0) launchNewConnection(pool);
  }
  void applyMetrics().then((err) => {
    if (err !== null) log.error(err);
  });
  return ok;
}
