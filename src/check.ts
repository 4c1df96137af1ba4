// `pgbun --check CONFIG`: load the ini, its auth_file and auth_hba_file (and ident map) the way
// startup would, print every problem with file:line, start nothing. Exit 0 = usable.
import { loadConfig } from './config/load.js';
import { RESERVED_AUTH_DBNAME } from './config/settings.js';
import { loadUserlist } from './config/userlist.js';
import type { ConfigProblem } from './config/types.js';
import { parseHbaFile } from './auth/hba.js';
import { parseIdentFile } from './auth/ident.js';

function line(p: ConfigProblem): string {
  const where = p.line > 0 ? `${p.file}:${p.line}` : p.file;
  // the messages carry PgBouncer's text, usually already followed by (file:line)
  const text = p.message.includes(`(${where})`) ? p.message : `${p.message} (${where})`;
  return `${p.warning ? 'WARNING' : 'ERROR'} ${text}`;
}

/** auth types whose clients must be in auth_file (or found by auth_query) to log in */
const NEEDS_USERS = new Set(['trust', 'plain', 'md5', 'scram-sha-256']);

export function checkConfig(path: string, out: (s: string) => void = (s) => process.stdout.write(s)): number {
  const { config, problems, partial } = loadConfig(path, { startup: true, collectAll: true });
  // an ini that cannot be read is one error, not also a "main section missing"
  const unreadable = problems.some((p) => p.file === path && p.message.startsWith('could not load file'));
  const all: ConfigProblem[] = unreadable ? problems.filter((p) => !p.message.includes('main section missing')) : [...problems];
  const s = (config ?? partial).settings;
  if (unreadable) return report(path, all, out);
  if (s.auth_file) {
    const users = loadUserlist(s.auth_file);
    all.push(...users.problems);
    if (users.problems.length === 0 && users.users.size === 0 && NEEDS_USERS.has(s.auth_type) && !s.auth_user) {
      all.push({ file: s.auth_file, line: 0, warning: true,
        message: `auth_file ${s.auth_file} has no users and auth_user is not set: no client can log in with auth_type = ${s.auth_type}` });
    }
  } else if (NEEDS_USERS.has(s.auth_type) && !s.auth_user) {
    all.push({ file: path, line: 0, warning: true,
      message: `auth_file is not set and auth_user is not set: no client can log in with auth_type = ${s.auth_type}` });
  }
  if (s.admin_users.trim() === '' && s.stats_users.trim() === '' && s.auth_type !== 'any') {
    all.push({ file: path, line: 0, warning: true,
      message: 'admin_users and stats_users are empty: only the user pgbouncer over the Unix socket can use the admin console' });
  }
  // PgBouncer loads such an entry and refuses each login that needs its auth_query
  for (const db of (config ?? partial).databases.values()) {
    if (db.auth_dbname === 'pgbouncer') {
      all.push({ file: db.file, line: db.line, warning: true,
        message: `${RESERVED_AUTH_DBNAME}: logins to ${db.name} of users not in auth_file fail (bouncer config error)` });
    }
  }
  if (s.auth_type === 'hba') {
    if (!s.auth_hba_file) all.push({ file: path, line: 0, message: 'auth_type=hba requires auth_hba_file' });
    else all.push(...parseHbaFile(s.auth_hba_file).problems);
  }
  if (s.auth_ident_file) all.push(...parseIdentFile(s.auth_ident_file).problems);
  return report(path, all, out);
}

function report(path: string, all: ConfigProblem[], out: (s: string) => void): number {
  for (const p of all) out(line(p) + '\n');
  const errors = all.filter((p) => !p.warning).length;
  out(errors === 0 ? `${path}: OK${all.length ? ` (${all.length} warning${all.length > 1 ? 's' : ''})` : ''}\n`
    : `${path}: ${errors} error${errors > 1 ? 's' : ''}\n`);
  return errors === 0 ? 0 : 1;
}
