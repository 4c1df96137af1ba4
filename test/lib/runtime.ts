// Which runtime the tests exercise. `node dist/test/run.js --runtime=bun` runs pgbun on Bun:
// the unit tests themselves run under `bun test`, and every pgbun the integration tests start
// runs on Bun (PGBUN_TEST_RUNTIME is the bun executable). Tests of what Bun cannot do safely
// (client certificate verification on an upgraded socket, DHE parameters, TLS 1.3 suite
// choice) check there that pgbun refuses the setting at start.
import * as path from 'node:path';

const runtime = process.env.PGBUN_TEST_RUNTIME ?? '';

/** Is pgbun, in this test process or the ones it starts, running on Bun? */
export const onBun: boolean = (process.versions as Record<string, string | undefined>).bun !== undefined || /^bun(\.exe)?$/.test(path.basename(runtime));
