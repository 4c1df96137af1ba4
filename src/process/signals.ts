// Signals (PgBouncer >= 1.23 semantics, https://www.pgbouncer.org/usage.html#signals):
//   HUP   reload (= RELOAD)
//   INT   SHUTDOWN WAIT_FOR_SERVERS; a second INT/TERM exits at once
//   TERM  SHUTDOWN WAIT_FOR_CLIENTS; a second INT/TERM exits at once
//   QUIT  immediate exit
//   USR1  PAUSE;  USR2  RESUME (ignored while shutting down)
//   PIPE  ignored
// During SUSPEND, INT and TERM end the process at once (the sockets are frozen).
// Signals reach the main thread only: with `workers` > 1 it applies them to every event loop,
// as the console's commands do.
import { log } from '../log/logger.js';
import {
  applyElsewhere, control, pauseAll, resumeAll, shutdownNow, shutdownWaitForClients, shutdownWaitForServers,
} from '../pool/control.js';
import { poolerState } from '../pool/pooler.js';
import { reloadConfig, reloadElsewhere } from '../reload.js';

function onSigterm(): void {
  if (control.shutdown !== 'none') {
    log.log('got SIGTERM while shutting down, fast exit');
    shutdownNow(0);
    return;
  }
  log.log('got SIGTERM, shutting down, waiting for all clients disconnect');
  if (poolerState.suspended) {
    log.fatal('suspend was in progress, going down immediately');
    shutdownNow(1);
    return;
  }
  shutdownWaitForClients();
  void applyElsewhere({ op: 'shutdown_clients' });
}

function onSigint(): void {
  if (control.shutdown !== 'none') {
    log.log('got SIGINT while shutting down, fast exit');
    shutdownNow(0);
    return;
  }
  log.log('got SIGINT, shutting down, waiting for all servers connections to be released');
  if (poolerState.suspended) {
    log.fatal('suspend was in progress, going down immediately');
    shutdownNow(1);
    return;
  }
  shutdownWaitForServers();
  void applyElsewhere({ op: 'shutdown_servers' });
}

function onSigusr1(): void {
  if (!poolerState.paused && !poolerState.suspended) {
    log.log('got SIGUSR1, pausing all activity');
    pauseAll();
    void applyElsewhere({ op: 'pause' });
  } else {
    log.log('got SIGUSR1, but already paused/suspended');
  }
}

function onSigusr2(): void {
  if (control.shutdown !== 'none') {
    log.log('got SIGUSR2 while shutting down, ignoring');
    return;
  }
  if (poolerState.suspended) {
    log.log('got SIGUSR2, continuing from SUSPEND');
    resumeAll();
    void applyElsewhere({ op: 'resume' });
  } else if (poolerState.paused) {
    log.log('got SIGUSR2, continuing from PAUSE');
    resumeAll();
    void applyElsewhere({ op: 'resume' });
  } else {
    log.log('got SIGUSR2, but not paused/suspended');
  }
}

function onSighup(): void {
  log.log('got SIGHUP, re-reading config');
  reloadConfig();
  void reloadElsewhere();
}

export function installSignalHandlers(): void {
  process.on('SIGQUIT', () => {
    log.log('got SIGQUIT, fast exit');
    shutdownNow(0);
  });
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigterm);
  process.on('SIGHUP', onSighup);
  process.on('SIGUSR1', onSigusr1);
  process.on('SIGUSR2', onSigusr2);
  process.on('SIGPIPE', () => { /* ignored, as PgBouncer blocks it */ });
}
