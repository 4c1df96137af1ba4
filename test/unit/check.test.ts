// pgbun --check beyond syntax: warnings (exit 0) when no client could log in or nobody can use
// the console or a database names the reserved auth_dbname, and one clear error for a file that
// cannot be read.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { checkConfig } from '../../src/check.js';

function run(files: Record<string, string>, ini = 'pgbun.ini'): { code: number; text: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgbun-checkw-'));
  try {
    for (const [name, content] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), content.replaceAll('{{dir}}', dir));
    let text = '';
    const code = checkConfig(path.join(dir, ini), (s) => (text += s));
    return { code, text: text.replaceAll(dir, 'DIR') };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const DB = '[databases]\nx = host=127.0.0.1\n';

test('an empty auth_file with a password auth_type: a warning, not an error', () => {
  const r = run({ 'pgbun.ini': `${DB}[pgbouncer]\nauth_type = md5\nauth_file = {{dir}}/users.txt\nadmin_users = a\n`, 'users.txt': '' });
  assert.equal(r.code, 0, r.text);
  assert.match(r.text, /^WARNING auth_file DIR\/users\.txt has no users and auth_user is not set: no client can log in with auth_type = md5/m);
  assert.match(r.text, /OK \(1 warning\)$/m);
});

test('no auth_file at all with a password auth_type: a warning; with auth_user (auth_query) none', () => {
  const r = run({ 'pgbun.ini': `${DB}[pgbouncer]\nauth_type = scram-sha-256\nstats_users = s\n` });
  assert.equal(r.code, 0, r.text);
  assert.match(r.text, /^WARNING auth_file is not set and auth_user is not set: no client can log in with auth_type = scram-sha-256/m);
  const q = run({ 'pgbun.ini': `${DB}[pgbouncer]\nauth_type = scram-sha-256\nauth_user = lookup\nstats_users = s\n` });
  assert.doesNotMatch(q.text, /WARNING/);
});

test('no admin_users and no stats_users: a warning about the console', () => {
  const r = run({ 'pgbun.ini': `${DB}[pgbouncer]\nauth_type = trust\nauth_file = {{dir}}/users.txt\n`, 'users.txt': '"u" ""\n' });
  assert.equal(r.code, 0, r.text);
  assert.match(r.text, /^WARNING admin_users and stats_users are empty: only the user pgbouncer over the Unix socket can use the admin console/m);
  const any = run({ 'pgbun.ini': `${DB}[pgbouncer]\nauth_type = any\n` });
  assert.doesNotMatch(any.text, /admin console/, 'auth_type = any lets anyone in');
});

test('a database with auth_dbname=pgbouncer: a warning naming its line (it loads, its auth_query logins fail)', () => {
  const r = run({ 'pgbun.ini': `${DB}y = host=127.0.0.1 auth_dbname=pgbouncer\n[pgbouncer]\nauth_type = trust\nauth_user = lookup\nstats_users = s\n` });
  assert.equal(r.code, 0, r.text);
  assert.deepEqual(r.text.trim().split('\n'), [
    'WARNING cannot use the reserved "pgbouncer" database as an auth_dbname: logins to y of users not in auth_file fail (bouncer config error) (DIR/pgbun.ini:3)',
    'DIR/pgbun.ini: OK (1 warning)',
  ]);
});

test('an ini that does not exist: one error, not also "main section missing"', () => {
  const r = run({}, 'missing.ini');
  assert.equal(r.code, 1);
  assert.deepEqual(r.text.trim().split('\n'), [
    'ERROR could not load file "DIR/missing.ini": No such file or directory (DIR/missing.ini)',
    'DIR/missing.ini: 1 error',
  ]);
});
