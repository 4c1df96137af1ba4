// `pgbun --check CONFIG`: load the ini, its auth_file and auth_hba_file (and ident map) the way
// startup would, print every problem with file:line, start nothing. Exit 0 = usable.
import { loadConfig } from './config/load.js';
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

export function checkConfig(path: string, out: (s: string) => void = (s) => process.stdout.write(s)): number {
  const { config, problems, partial } = loadConfig(path, { startup: true, collectAll: true });
  const all: ConfigProblem[] = [...problems];
  const s = (config ?? partial).settings;
  if (s.auth_file) all.push(...loadUserlist(s.auth_file).problems);
  if (s.auth_type === 'hba') {
    if (!s.auth_hba_file) all.push({ file: path, line: 0, message: 'auth_type=hba requires auth_hba_file' });
    else all.push(...parseHbaFile(s.auth_hba_file).problems);
  }
  if (s.auth_ident_file) all.push(...parseIdentFile(s.auth_ident_file).problems);
  for (const p of all) out(line(p) + '\n');
  const errors = all.filter((p) => !p.warning).length;
  out(errors === 0 ? `${path}: OK${all.length ? ` (${all.length} warning${all.length > 1 ? 's' : ''})` : ''}\n`
    : `${path}: ${errors} error${errors > 1 ? 's' : ''}\n`);
  return errors === 0 ? 0 : 1;
}
