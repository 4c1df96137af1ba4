// Process startup and shutdown, in PgBouncer's order: load config (fatal on error)
// -> TLS setup -> switch user -> refuse root -> Unix socket in use? -> pidfile check ->
// daemonize -> listen -> write pidfile -> `process up`.
import { cf, installSettings } from './config/current.js';
import { loadConfig, type LoadedConfig } from './config/load.js';
import { splitList } from './config/settings.js';
import type { ConfigProblem } from './config/types.js';
import { log } from './log/logger.js';
import { applyConfig } from './pool/databases.js';
import { initTrackedParams } from './pool/varcache.js';
import { startJanitor } from './pool/janitor.js';
import { adoptSystemdSockets, closeAllListeners, startListening, StartupError, unixSocketInUse } from './pool/listener.js';
import { sdNotify, sdNotifyFlushAtExit, sdNotifyStopping } from './process/systemd.js';
import { checkPidfile, PidfileError, removePidfile, writePidfile } from './process/pidfile.js';
import { switchUser, UserSwitchError } from './process/user.js';
import { daemonize, isDaemonChild, notifyParent } from './process/daemon.js';
import { installSignalHandlers } from './process/signals.js';
import { startAdmin } from './admin/start.js';
import { setExitHandler } from './process/exit.js';
import { loadAuthFile } from './auth/authfile.js';
import { reloadAuthFiles } from './auth/login.js';
import { VERSION_STRING } from './version.js';
import { applyMetrics } from './reload.js';
import { setupTls } from './tls/context.js';
import { runtimeName, tlsLibrary } from './runtime/name.js';
import { configuredWorkers, prepareWorkers, startWorkers } from './process/workers.js';
import { armTestFaults } from './process/faults.js';

export interface StartOptions {
  configFile: string;
  daemon: boolean;
  quiet: boolean;
  verbose: number;
  user: string | null;
  reboot: boolean;
  /** arguments to give the daemon child (everything but -d) */
  childArgs: string[];
}

/** A config problem as PgBouncer logs it (its text already names file:line). */
function problemText(p: ConfigProblem): string {
  return p.message;
}

function die(message: string): never {
  log.fatal(message);
  notifyParent(false, message);
  removePidfile();
  process.exit(1);
}

/** Load the ini and apply its logging settings; exits on error like PgBouncer. */
function loadOrDie(opts: StartOptions): LoadedConfig {
  const { config, problems } = loadConfig(opts.configFile, { startup: true });
  for (const p of problems) {
    if (p.warning) log.warning(problemText(p));
    else log.error(problemText(p));
  }
  if (config === null || problems.some((p) => !p.warning)) die('cannot load config file');
  return config;
}

export async function start(opts: StartOptions): Promise<void> {
  setExitHandler(exitNow);
  const daemonChild = isDaemonChild();
  // -d silences stderr only in the daemon: what stops the start before it (the config, a
  // missing pidfile) is printed, as PgBouncer does until it detaches
  log.setStderr(!opts.quiet && !daemonChild);
  log.setVerbose(opts.verbose);

  const config = loadOrDie(opts);
  if (opts.verbose > config.settings.verbose) config.settings.verbose = opts.verbose;
  installSettings(config.settings);
  cf.conffile = cf.conffile ?? opts.configFile;
  log.setVerbose(cf.verbose);
  log.setJson(cf.log_format === 'json');
  // open the log file first: with -d it is the only place a startup failure can be read
  if (cf.logfile) log.setLogfile(cf.logfile);

  if (opts.daemon && !daemonChild) {
    if (!cf.pidfile) die('daemon needs pidfile configured');
    checkPidfileOrDie();
    await daemonize(opts.childArgs);
  }

  if (opts.reboot) {
    // PgBouncer's -R takes over the listening sockets and connections of the running process;
    // node cannot receive file descriptors from another process, so pgbun cannot do that. Start
    // as if it could, and the old process would keep the port (or both would serve it): refuse.
    log.warning('Online restart is deprecated, use so_reuseport instead');
    die('online restart (-R) is not supported by pgbun: for a restart without downtime start the new ' +
      'process with so_reuseport = 1 beside the old one, then stop the old one with SHUTDOWN WAIT_FOR_CLIENTS');
  }

  const tlsErr = setupTls(true);
  if (tlsErr !== null) die(`TLS setup failed: ${tlsErr}`);
  prepareWorkers(configuredWorkers(cf.workers));

  try {
    // the log file was opened (maybe created) as root: hand it over, so that reopening it on
    // RELOAD (log rotation) still works as the unprivileged user
    switchUser(opts.user ?? cf.user, cf.logfile ? [cf.logfile] : []);
  } catch (e) {
    if (e instanceof UserSwitchError) die(e.message);
    throw e;
  }

  initTrackedParams(splitList(cf.track_extra_parameters));
  const users = loadAuthFile(cf.auth_file, true);
  applyConfig(config, users);
  const hbaRefused = reloadAuthFiles();
  if (hbaRefused !== null) die(hbaRefused);

  try {
    // socket activation (pgbun.socket): first, so that our own Unix socket is not taken as in use
    await adoptSystemdSockets();
  } catch (e) {
    if (e instanceof StartupError) die(e.message);
    throw e;
  }
  if (await unixSocketInUse()) die('unix socket is in use, cannot continue');
  if (!daemonChild) checkPidfileOrDie();

  try {
    await startListening();
  } catch (e) {
    if (e instanceof StartupError) die(e.message);
    throw e;
  }
  const metricsErr = await applyMetrics();
  if (metricsErr !== null) die(metricsErr);
  try {
    writePidfile(cf.pidfile);
  } catch (e) {
    die(`could not write pidfile '${cf.pidfile}': ${(e as Error).message}`);
  }
  installSignalHandlers();
  startJanitor();
  startAdmin(config);
  armTestFaults();
  try {
    await startWorkers(!opts.quiet && !daemonChild);
  } catch (e) {
    die(`cannot start worker threads: ${(e as Error).message}`);
  }
  log.log(`process up: ${VERSION_STRING}, ${runtimeName()}, tls: ${tlsLibrary()}`);
  notifyParent(true);
  sdNotify('READY=1', `STATUS=${VERSION_STRING} accepting connections`);
}

function checkPidfileOrDie(): void {
  try {
    checkPidfile(cf.pidfile);
  } catch (e) {
    if (e instanceof PidfileError) die(e.message);
    throw e;
  }
}

/** Leave now: listeners and pidfile removed, exit code as given (process/exit.ts calls it). */
export function exitNow(code: number): never {
  sdNotifyStopping();
  sdNotifyFlushAtExit();
  closeAllListeners();
  removePidfile();
  process.exit(code);
}
