// auth_file (userlist.txt) reader, ported from PgBouncer's load_auth_file and
// checked against 1.18: `"user" "secret"` records, `""` = a quote, `;` comment lines. A line
// that does not start with a quote (a `#` "comment" included) stops reading with `broken auth
// file`: users before it stay loaded, the ones after it are lost. Note the C code looks for the
// secret's opening quote anywhere after the user name, even across lines and past junk.
import { readFileSync } from 'node:fs';
import type { ConfigProblem } from './types.js';
import { isCSpace, strerror } from './cvalues.js';

/**
 * PgBouncer's MAX_USERNAME / MAX_PASSWORD: raw bytes between the quotes. MAX_PASSWORD is 2048 up
 * to 1.25.2 and 65531 after it (PgBouncer's suite logs in with 65530-byte passwords); the larger
 * limit only accepts files that an older PgBouncer refused.
 */
export const MAX_USERNAME = 128;
export const MAX_PASSWORD = 65531;

export interface Userlist {
  /** user name → secret as written (plain text, `md5...` or `SCRAM-SHA-256$...`) */
  users: Map<string, string>;
  problems: ConfigProblem[];
}

/** find_quote(): next `"`; unless looking for an opening quote, `""` is skipped as an escape */
function findQuote(buf: string, p: number, opening: boolean): number {
  for (;;) {
    while (p < buf.length && buf[p] !== '"') p++;
    if (!opening && buf[p] === '"' && buf[p + 1] === '"') {
      p += 2;
      continue;
    }
    return p;
  }
}

// bytes (latin1) in, UTF-8 out, `""` unescaped
const unquote = (raw: string): string => Buffer.from(raw.replace(/""/g, '"'), 'latin1').toString('utf8');

/** Parses auth_file contents. `file` names the file in problems. */
export function parseUserlist(content: Buffer | string, file: string): Userlist {
  let buf = typeof content === 'string' ? Buffer.from(content, 'utf8').toString('latin1')
    : content.toString('latin1');
  const nul = buf.indexOf('\0');
  if (nul >= 0) buf = buf.slice(0, nul);

  const users = new Map<string, string>();
  const problems: ConfigProblem[] = [];
  const stop = (pos: number, text: string): Userlist => {
    let line = 1;
    for (let i = 0; i < pos && i < buf.length; i++) if (buf[i] === '\n') line++;
    problems.push({ file, line, message: `${text} (${file}:${line})`, log: [text] });
    return { users, problems };
  };

  let p = 0;
  while (p < buf.length) {
    while (p < buf.length && isCSpace(buf[p])) p++;
    if (p >= buf.length) break;
    if (buf[p] === ';') {
      while (p < buf.length && buf[p] !== '\n') p++;
      continue;
    }
    const lineStart = p;
    if (buf[p] !== '"') return stop(lineStart, 'broken auth file');
    const userStart = ++p;
    p = findQuote(buf, p, false);
    if (buf[p] !== '"') return stop(lineStart, 'broken auth file');
    if (p - userStart >= MAX_USERNAME) return stop(lineStart, 'username too long in auth file');
    const user = buf.slice(userStart, p);
    p = findQuote(buf, p + 1, true);
    if (buf[p] !== '"') return stop(lineStart, 'broken auth file');
    const secretStart = ++p;
    p = findQuote(buf, p, false);
    if (buf[p] !== '"') return stop(lineStart, 'broken auth file');
    if (p - secretStart >= MAX_PASSWORD) return stop(lineStart, 'password too long in auth file');
    users.set(unquote(user), unquote(buf.slice(secretStart, p)));
    p++;
    while (p < buf.length && buf[p] !== '\n') p++;
  }
  return { users, problems };
}

/** Reads and parses the auth_file at `path`; an unreadable file is one problem, no users. */
export function loadUserlist(path: string): Userlist {
  let content: Buffer;
  try {
    content = readFileSync(path);
  } catch (err) {
    const text = `could not open auth_file ${path}: ${strerror(err)}`;
    return { users: new Map(), problems: [{ file: path, line: 0, message: text, log: [text] }] };
  }
  return parseUserlist(content, path);
}
