// Signals (spec §6.2). Completed with the admin console's shutdown modes.
import { log } from '../log/logger.js';
import { exitNow } from '../pgbun.js';

export function installSignalHandlers(): void {
  process.on('SIGQUIT', () => {
    log.log('got SIGQUIT, fast exit');
    exitNow(0);
  });
  process.on('SIGINT', () => {
    log.log('got SIGINT, shutting down');
    exitNow(0);
  });
  process.on('SIGTERM', () => {
    log.log('got SIGTERM, shutting down');
    exitNow(0);
  });
  process.on('SIGPIPE', () => { /* ignored, as PgBouncer blocks it */ });
}
