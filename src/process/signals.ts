// Signals (PgBouncer >= 1.23 semantics, https://www.pgbouncer.org/usage.html#signals):
//   HUP   reload (= RELOAD)
//   INT   SHUTDOWN WAIT_FOR_SERVERS; a second INT/TERM exits at once
//   TERM  SHUTDOWN WAIT_FOR_CLIENTS; a second INT/TERM exits at once
//   QUIT  immediate exit
//   USR1  PAUSE;  USR2  RESUME (ignored while shutting down)
//   PIPE  ignored
// During SUSPEND, INT and TERM end the process at once (the sockets are frozen).
import { log } from '../log/logger.js';
import {
  control, pauseAll, resumeAll, shutdownNow, shutdownWaitForClients, shutdownWaitForServers,
} from '../pool/control.js';
import { poolerState } from '../pool/pooler.js';
import { reloadConfig } from '../reload.js';

function onSigterm(): void {
  if (control.shutdown !== 'none') {
    log.log('got SIGTERM while shutting down, fast exit');
    shutdownNow(0);
  }
  log.log('got SIGTERM, shutting down, waiting for all clients disconnect');
  if (poolerState.suspended) {
    log.fatal('suspend was in progress, going down immediately');
    shutdownNow(1);
  }
  shutdownWaitForClients();
}

function onSigint(): void {
  if (control.shutdown !== 'none') {
    log.log('got SIGINT while shutting down, fast exit');
    shutdownNow(0);
  }
  log.log('got SIGINT, shutting down, waiting for all servers connections to be released');
  if (poolerState.suspended) {
    log.fatal('suspend was in progress, going down immediately');
    shutdownNow(1);
  }
  shutdownWaitForServers();
}

function onSigusr1(): void {
  if (!poolerState.paused && !poolerState.suspended) {
    log.log('got SIGUSR1, pausing all activity');
    pauseAll();
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
  } else if (poolerState.paused) {
    log.log('got SIGUSR2, continuing from PAUSE');
    resumeAll();
  } else {
    log.log('got SIGUSR2, but not paused/suspended');
  }
}

function onSighup(): void {
  log.log('got SIGHUP, re-reading config');
  reloadConfig();
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
