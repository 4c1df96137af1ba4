// pgbun answers under any program name, as operators link it in PgBouncer's place:
// `ln -s .../bin/pgbun.js /usr/bin/pgbouncer; pgbouncer -V`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { runCommand } from '../lib/clients.js';
import { makeTempDir, REPO_ROOT } from '../lib/procs.js';

test('a symlink named pgbouncer to bin/pgbun.js: -V and -h answer as pgbun does', async () => {
  const dir = makeTempDir('pgbun-name-', null);
  const link = path.join(dir, 'pgbouncer');
  fs.symlinkSync(path.join(REPO_ROOT, 'bin', 'pgbun.js'), link);
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${path.dirname(process.execPath)}:${process.env.PATH ?? ''}` };
  delete env.PGBUN_MAIN;
  const v = await runCommand(link, ['-V'], { env, timeoutMs: 20_000 });
  assert.equal(v.code, 0, v.stderr);
  assert.match(v.stdout, /^PgBouncer 1\.25\.\d+ \(pgbun [\d.]+\)/);
  const h = await runCommand(link, ['-h'], { env, timeoutMs: 20_000 });
  assert.equal(h.code, 0, h.stderr);
  assert.match(h.stdout, /Usage|usage/);
});
