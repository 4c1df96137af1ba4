// Loading auth_file (userlist.txt). On reload the file is re-read only if its stat() changed
// (dev, ino, mode, uid, gid, mtime, size), as PgBouncer does.
import fs from 'node:fs';
import { parseUserlist } from '../config/userlist.js';
import { log } from '../log/logger.js';

let lastStat = '';

function statKey(st: fs.Stats): string {
  return [st.dev, st.ino, st.mode, st.uid, st.gid, st.mtimeMs, st.size].join(':');
}

/**
 * The users of auth_file, or null when nothing needs to change (unchanged on reload). A missing
 * or unreadable file is logged and yields no users.
 */
export function loadAuthFile(path: string | null, force: boolean): Map<string, string> | null {
  if (!path) {
    if (!force && lastStat === '') return null;
    lastStat = '';
    return new Map();
  }
  let st: fs.Stats;
  let text: string;
  try {
    st = fs.statSync(path);
    text = fs.readFileSync(path, 'utf8');
  } catch (e) {
    log.error(`could not open auth_file ${path}: ${(e as NodeJS.ErrnoException).message}`);
    lastStat = 'missing';
    return new Map();
  }
  const key = statKey(st);
  if (!force && key === lastStat) return null;
  lastStat = key;
  const { users, problems } = parseUserlist(text, path);
  for (const p of problems) log.warning(p.message);
  return users;
}
