// auth_ident_file: user name maps for HBA `map=` (cert and peer). Lines are
// `mapname system-user db-user`; db-user `all` (unquoted) accepts any database user. Unlike
// PostgreSQL's pg_ident.conf there are no regular expressions, no +group and no include:
// such lines are skipped with a warning, like unparseable HBA lines.

import { readFileSync } from 'node:fs';
import type { ConfigProblem } from '../config/types.js';
import { Tokenizer } from './hba.js';

export interface IdentEntry {
  systemUser: string;
  /** null = `all` */
  dbUser: string | null;
  line: number;
}

/** map name → its entries, in file order */
export type IdentMaps = Map<string, IdentEntry[]>;

export function parseIdentFile(path: string): { maps: IdentMaps; problems: ConfigProblem[] } {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'No such file or directory' : (err as Error).message;
    return { maps: new Map(), problems: [{ file: path, line: 0, message: `could not open ident config file ${path}: ${reason}` }] };
  }
  return parseIdentText(text, path);
}

export function parseIdentText(text: string, file: string): { maps: IdentMaps; problems: ConfigProblem[] } {
  const maps: IdentMaps = new Map();
  const problems: ConfigProblem[] = [];
  text.split('\n').forEach((lineText, i) => {
    const line = i + 1;
    const tp = new Tokenizer(lineText);
    const words: Array<{ text: string; quoted: boolean }> = [];
    let broken = false;
    for (let tok = tp.tok; tok.type !== 'eol'; tok = tp.next()) {
      if (tok.type === 'ident' || tok.type === 'string') words.push({ text: tok.text, quoted: tok.type === 'string' });
      else broken = true; // a comma list or an unterminated quote
      if (tok.type === 'fail') break;
    }
    if (words.length === 0 && !broken) return;
    const problem = (why: string): void => {
      problems.push({ file, line, message: `could not parse ident config line ${line}: ${why}`, warning: true });
    };
    if (broken || words.length !== 3) return problem('expected "mapname system-user db-user"');
    const [map, sys, db] = words as [(typeof words)[0], (typeof words)[0], (typeof words)[0]];
    if (!sys.quoted && sys.text.startsWith('/')) return problem('regular expressions are not supported');
    if (!db.quoted && db.text.startsWith('+')) return problem('groups are not supported');
    const entry: IdentEntry = { systemUser: sys.text, dbUser: !db.quoted && db.text === 'all' ? null : db.text, line };
    const list = maps.get(map.text);
    if (list) list.push(entry);
    else maps.set(map.text, [entry]);
  });
  return { maps, problems };
}

/** Does the map let `systemUser` (peer OS user, or certificate name) log in as `dbUser`? */
export function identMapMatches(map: readonly IdentEntry[] | undefined, systemUser: string, dbUser: string): boolean {
  if (!map) return false;
  return map.some((e) => e.systemUser === systemUser && (e.dbUser === null || e.dbUser === dbUser));
}
