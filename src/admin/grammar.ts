// Console command grammar (https://www.pgbouncer.org/usage.html#admin-console): a port of the three
// POSIX regexes of PgBouncer's admin.c, case-insensitive, tried in PgBouncer's order:
//   WORD [WORD] [;]            e.g. `SHOW POOLS`, `PAUSE "my db";`
//   SET WORD (=|TO) 'string'   value with '' escapes
//   SET WORD (=|TO) WORD
// where WORD is [0-9a-z_]+ or a "double-quoted" name ("" escapes). Nothing else is accepted: one
// statement per query, so monitoring tools cannot smuggle a second command in.
// Kept free of I/O so it can be unit tested.

const WS0 = '[ \\t\\n\\r]*';
const WS1 = '[ \\t\\n\\r]+';
// `(?:[^"]|"")*` rather than PgBouncer's `([^"]+|"")*`: the same language without the nested
// quantifier, so an unterminated quote cannot make the match take exponential time.
const WORD = '("(?:[^"]|"")*"|[0-9a-z_]+)';
const STRING = "('(?:[^']|'')*')";
const END = `${WS0}(?:;${WS0})?$`;

const CMD_RX = new RegExp(`^${WS0}${WORD}(?:${WS1}${WORD})?${END}`, 'i');
const SET_STR_RX = new RegExp(`^${WS0}set${WS1}${WORD}${WS0}(?:=|to)${WS0}${STRING}${END}`, 'i');
const SET_WORD_RX = new RegExp(`^${WS0}set${WS1}${WORD}${WS0}(?:=|to)${WS0}${WORD}${END}`, 'i');

/** PgBouncer's buffer sizes (bytes incl. the terminating NUL): command, argument/key, SET value. */
const CMD_MAX = 16;
const ARG_MAX = 64;
const VAL_MAX = 256;

export type AdminQuery =
  | { kind: 'command'; cmd: string; arg: string }
  | { kind: 'set'; key: string; value: string }
  /** a part too long for PgBouncer's buffers, or an empty SET key: ERROR `bad arguments` */
  | { kind: 'bad-arguments' }
  /** no grammar matched: ERROR `invalid command '<query>', use SHOW HELP;` */
  | { kind: 'syntax-error' };

/**
 * copy_arg(): a matched group, unquoted when it starts with `q` (doubled quotes are one), or
 * null when it does not fit PgBouncer's buffer (`max` bytes incl. NUL). The length limit
 * applies to the text as written, quotes included, as in PgBouncer.
 */
function copyArg(raw: string | undefined, max: number, q: string): string | null {
  if (raw === undefined) return '';
  if (Buffer.byteLength(raw) >= max) return null;
  if (raw[0] !== q) return raw;
  return raw.slice(1, -1).split(q + q).join(q);
}

export function parseAdminQuery(sql: string): AdminQuery {
  let m = CMD_RX.exec(sql);
  if (m) {
    const cmd = copyArg(m[1], CMD_MAX, '"');
    const arg = copyArg(m[2], ARG_MAX, '"');
    if (cmd === null || arg === null) return { kind: 'bad-arguments' };
    return { kind: 'command', cmd, arg };
  }
  let valueQuote = "'";
  m = SET_STR_RX.exec(sql);
  if (!m) {
    m = SET_WORD_RX.exec(sql);
    valueQuote = '"';
  }
  if (m) {
    const key = copyArg(m[1], ARG_MAX, '"');
    if (key === null || key === '') return { kind: 'bad-arguments' };
    const value = copyArg(m[2], VAL_MAX, valueQuote);
    if (value === null) return { kind: 'bad-arguments' };
    return { kind: 'set', key, value };
  }
  return { kind: 'syntax-error' };
}
