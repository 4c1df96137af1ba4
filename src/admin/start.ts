// Startup of the live-operations side: the stats_period timer, the control hooks on the janitor
// (pause mode, SUSPEND, WAIT_CLOSE, shutdown progress, pool trimming) and the [peers] in force.
import type { LoadedConfig } from '../config/load.js';
import { startControl } from '../pool/control.js';
import { startStats } from '../stats/period.js';
import { setPeers } from '../pool/peering.js';
// the console registers itself as the handler of the `pgbouncer` database when it loads
import './console.js';
import { noteLogfile } from '../reload.js';

export function startAdmin(config: LoadedConfig): void {
  setPeers(config.peers);
  noteLogfile();
  startControl();
  startStats();
}
