// The module graph of src/ (read with madge, type-only imports left out since they vanish at
// run time): no import cycle, and layers that point one way. config/, protocol/, log/, workers/ and the
// pool's clock import nothing of pgbun above them; pool/ does not import the admin console, the
// reload code or the entry modules (the console registers itself with pool/admin-db.ts, the
// entry module installs its exit with process/exit.ts, servers report through
// pool/server-events.ts).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import madge from 'madge';
import { REPO_ROOT } from '../lib/procs.js';

const graph = await madge(path.join(REPO_ROOT, 'src'), {
  fileExtensions: ['ts'],
  tsConfig: path.join(REPO_ROOT, 'tsconfig.json'),
  detectiveOptions: { ts: { skipTypeImports: true }, es6: { skipTypeImports: true } },
});
const deps = graph.obj();

test('src/ has no import cycle', () => {
  assert.deepEqual(graph.circular(), []);
  assert.ok(Object.keys(deps).length > 50, `madge read ${Object.keys(deps).length} modules`);
});

/** Every import of a module matching `from` that is not allowed by `allowed`. */
function violations(from: (f: string) => boolean, allowed: (dep: string, f: string) => boolean): string[] {
  const out: string[] = [];
  for (const [f, ds] of Object.entries(deps)) {
    if (!from(f)) continue;
    for (const d of ds) if (!allowed(d, f)) out.push(`${f} -> ${d}`);
  }
  return out;
}

const folder = (f: string): string => (f.includes('/') ? f.slice(0, f.indexOf('/')) : '');

test('config/, protocol/, log/, workers/ and pool/clock.ts import nothing above them', () => {
  const bottom = ['config', 'protocol', 'log', 'workers'];
  assert.deepEqual(violations((f) => bottom.includes(folder(f)), (d, f) => folder(d) === folder(f)), []);
  assert.deepEqual(deps['pool/clock.ts'], []);
});

test('pool/ does not import admin/, the reload code or the entry modules', () => {
  const above = (d: string): boolean => folder(d) === 'admin' || ['reload.ts', 'pgbun.ts', 'cli.ts', 'check.ts'].includes(d);
  assert.deepEqual(violations((f) => folder(f) === 'pool', (d) => !above(d)), []);
});
