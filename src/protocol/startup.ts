// StartupMessage parsing: the name/value pairs after the protocol code, and the `options`
// parameter (PgBouncer accepts only `-c key=value` and `--key=value` items in it).

export interface StartupPacket {
  params: Array<[string, string]>;
}

/**
 * Pairs of NUL-terminated strings from buf[off, end), ending with one extra NUL. Returns the
 * error text PgBouncer sends for a malformed packet.
 */
export function parseStartupPacket(buf: Buffer, off: number, end: number): StartupPacket | string {
  if (end <= off || buf[end - 1] !== 0) return 'invalid startup packet layout: expected terminator as last byte';
  const params: Array<[string, string]> = [];
  let p = off;
  while (p < end - 1) {
    const ke = buf.indexOf(0, p);
    if (ke < 0 || ke >= end - 1) return 'invalid startup packet layout: expected terminator as last byte';
    const ve = buf.indexOf(0, ke + 1);
    if (ve < 0 || ve >= end) return 'invalid startup packet layout: expected terminator as last byte';
    params.push([buf.toString('utf8', p, ke), buf.toString('utf8', ke + 1, ve)]);
    p = ve + 1;
  }
  return { params };
}

/**
 * Split `options` like PostgreSQL's pg_split_opts (whitespace separated, backslash escapes the
 * next character) and read `-c key=value`, `-ckey=value` and `--key=value` items (dashes in a
 * `--` key become underscores, as in PostgreSQL). null = something else is in there.
 */
export function parseOptionsParameter(value: string): Array<[string, string]> | null {
  const words: string[] = [];
  let cur = '';
  let inWord = false;
  for (let i = 0; i < value.length; i++) {
    const ch = value[i]!;
    if (ch === '\\' && i + 1 < value.length) {
      cur += value[++i];
      inWord = true;
    } else if (ch === ' ' || ch === '\t' || ch === '\n' || ch === '\r') {
      if (inWord) words.push(cur);
      cur = '';
      inWord = false;
    } else {
      cur += ch;
      inWord = true;
    }
  }
  if (inWord) words.push(cur);

  const out: Array<[string, string]> = [];
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!;
    let kv: string;
    let dashes = false;
    if (w === '-c') {
      if (i + 1 >= words.length) return null;
      kv = words[++i]!;
    } else if (w.startsWith('-c')) {
      kv = w.slice(2);
    } else if (w.startsWith('--')) {
      kv = w.slice(2);
      dashes = true;
    } else {
      return null;
    }
    const eq = kv.indexOf('=');
    if (eq <= 0) return null;
    let key = kv.slice(0, eq);
    if (dashes) key = key.replace(/-/g, '_');
    out.push([key, kv.slice(eq + 1)]);
  }
  return out;
}

export type ReplicationMode = 'none' | 'logical' | 'physical';

/**
 * The `replication` startup parameter as PostgreSQL reads it (ProcessStartupPacket): exactly
 * `database` asks for a logical walsender, a boolean for a physical one or none. Booleans are
 * PostgreSQL's parse_bool: any case-insensitive prefix of true/false/yes/no, `on`, `off` (`of`),
 * `1`, `0`. null = not a valid value.
 */
export function parseReplicationParameter(value: string): ReplicationMode | null {
  if (value === 'database') return 'logical';
  const v = value.toLowerCase();
  const prefixOf = (word: string, min: number): boolean => v.length >= min && word.startsWith(v);
  if (prefixOf('true', 1) || prefixOf('yes', 1) || prefixOf('on', 2) || v === '1') return 'physical';
  if (prefixOf('false', 1) || prefixOf('no', 1) || prefixOf('off', 2) || v === '0') return 'none';
  return null;
}
