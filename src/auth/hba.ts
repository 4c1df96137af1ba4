// auth_hba_file: PgBouncer's subset of pg_hba.conf
// (https://www.pgbouncer.org/config.html#hba-file-format), parsed the way PgBouncer's hba.c does: a
// small tokenizer (white space and commas separate, `"..."` quotes with `""` for a quote, `#` ends
// the line), first matching rule wins, unparseable lines are skipped with a warning while the rest
// still loads. Keywords are case-sensitive and only unquoted: `"all"` is a database or user
// literally named all.

import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { isIPv4, isIPv6 } from 'node:net';
import type { ConfigProblem } from '../config/types.js';

export type HbaLineType = 'local' | 'host' | 'hostssl' | 'hostnossl';
export type HbaMethod = 'trust' | 'reject' | 'md5' | 'password' | 'scram-sha-256' | 'cert' | 'peer' | 'ldap';

/** A database or user column. */
export interface HbaNames {
  all: boolean;
  /** database column only: database name = user name */
  sameuser: boolean;
  /** database column only: physical replication connections */
  replication: boolean;
  names: Set<string>;
}

export type HbaAddress = { kind: 'all' } | { kind: 'ipv4' | 'ipv6'; addr: Uint8Array; mask: Uint8Array };

export interface HbaRule {
  type: HbaLineType;
  databases: HbaNames;
  users: HbaNames;
  /** null for `local` */
  address: HbaAddress | null;
  method: HbaMethod;
  /** `map=NAME` (cert, peer): an auth_ident_file map */
  map: string | null;
  /** ldap: the options text as written, for the LDAP module */
  options: string | null;
  file: string;
  line: number;
}

export interface HbaConn {
  unix: boolean;
  tls: boolean;
  database: string;
  user: string;
  /** client IP address, '' for a Unix socket */
  addr: string;
  replication: 'none' | 'logical' | 'physical';
}

// ---------------------------------------------------------------------------------------------
// Tokenizer (also used for auth_ident_file)

export type Token =
  | { type: 'ident'; text: string }
  | { type: 'string'; text: string }
  | { type: 'comma' }
  | { type: 'eol' }
  | { type: 'fail' };

const isSpace = (c: string | undefined): boolean => c !== undefined && /^[ \t\n\v\f\r]$/.test(c);

export class Tokenizer {
  pos = 0;
  /** where the current token starts */
  start = 0;
  tok: Token;

  constructor(readonly text: string) {
    this.tok = this.scan();
  }

  next(): Token {
    if (this.tok.type !== 'eol' && this.tok.type !== 'fail') this.tok = this.scan();
    return this.tok;
  }

  /** current token if it is this unquoted keyword; then moves on */
  eatKeyword(kw: string): boolean {
    if (this.tok.type === 'ident' && this.tok.text === kw) {
      this.next();
      return true;
    }
    return false;
  }

  private scan(): Token {
    const t = this.text;
    while (isSpace(t[this.pos])) this.pos++;
    this.start = this.pos;
    const c = t[this.pos];
    if (c === undefined || c === '#') {
      this.pos = t.length;
      return { type: 'eol' };
    }
    if (c === ',') {
      this.pos++;
      return { type: 'comma' };
    }
    if (c === '"') {
      let out = '';
      for (let i = this.pos + 1; i < t.length; i++) {
        if (t[i] === '"') {
          if (t[i + 1] !== '"') {
            this.pos = i + 1;
            return { type: 'string', text: out };
          }
          i++;
        }
        out += t[i];
      }
      return { type: 'fail' }; // unterminated
    }
    let end = this.pos + 1;
    while (end < t.length && !isSpace(t[end]) && t[end] !== ',' && t[end] !== '#' && t[end] !== '"') end++;
    const text = t.slice(this.pos, end);
    this.pos = end;
    return { type: 'ident', text };
  }
}

// ---------------------------------------------------------------------------------------------
// IP addresses

/** IPv4 (4 bytes) or IPv6 (16 bytes) from text, or null. No zone ids, no host names. */
export function parseIp(text: string): Uint8Array | null {
  if (isIPv4(text)) return Uint8Array.from(text.split('.').map(Number));
  if (!isIPv6(text) || text.includes('%')) return null;
  const out = new Uint8Array(16);
  const groups = (part: string): number[] => {
    if (part === '') return [];
    const res: number[] = [];
    for (const g of part.split(':')) {
      if (g.includes('.')) {
        const v4 = g.split('.').map(Number) as [number, number, number, number];
        res.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else {
        res.push(parseInt(g, 16));
      }
    }
    return res;
  };
  const dbl = text.indexOf('::');
  const head = groups(dbl < 0 ? text : text.slice(0, dbl));
  const tail = dbl < 0 ? [] : groups(text.slice(dbl + 2));
  const all = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  all.forEach((g, i) => {
    out[i * 2] = g >> 8;
    out[i * 2 + 1] = g & 0xff;
  });
  return out;
}

/** A client address as the matcher compares it: zone id dropped, IPv4-mapped IPv6 as IPv4. */
function clientIp(addr: string): Uint8Array | null {
  const pct = addr.indexOf('%');
  const ip = parseIp(pct < 0 ? addr : addr.slice(0, pct));
  // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; PgBouncer, listening per
  // family, sees them as IPv4, so IPv4 rules must match them.
  if (ip && ip.length === 16 && ip.subarray(0, 10).every((b) => b === 0) && ip[10] === 0xff && ip[11] === 0xff) {
    return ip.slice(12);
  }
  return ip;
}

function prefixMask(bits: number, len: number): Uint8Array {
  const mask = new Uint8Array(len);
  for (let i = 0; i < len; i++) {
    const b = Math.max(0, Math.min(8, bits - i * 8));
    mask[i] = (0xff << (8 - b)) & 0xff;
  }
  return mask;
}

// ---------------------------------------------------------------------------------------------
// Parser

class LineError extends Error {}

const METHODS: readonly HbaMethod[] = ['trust', 'reject', 'md5', 'password', 'scram-sha-256', 'cert', 'peer', 'ldap'];
const LINE_TYPES: readonly HbaLineType[] = ['local', 'host', 'hostssl', 'hostnossl'];

export function parseHbaFile(path: string): { rules: HbaRule[]; problems: ConfigProblem[] } {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'No such file or directory' : (err as Error).message;
    return { rules: [], problems: [{ file: path, line: 0, message: `could not open hba config file ${path}: ${reason}` }] };
  }
  return parseHbaText(text, path);
}

/** `file` names the HBA file: problems cite it, and `@file` names are relative to its directory. */
export function parseHbaText(text: string, file: string): { rules: HbaRule[]; problems: ConfigProblem[] } {
  const rules: HbaRule[] = [];
  const problems: ConfigProblem[] = [];
  text.split('\n').forEach((lineText, i) => {
    const line = i + 1;
    const tp = new Tokenizer(lineText);
    if (tp.tok.type === 'eol') return;
    try {
      rules.push(parseLine(tp, file, line));
    } catch (err) {
      if (!(err instanceof LineError)) throw err;
      problems.push({ file, line, message: `hba line ${line}: ${err.message}`, warning: true });
      problems.push({ file, line, message: `could not parse hba config line ${line}`, warning: true });
    }
  });
  return { rules, problems };
}

function parseLine(tp: Tokenizer, file: string, line: number): HbaRule {
  const type = LINE_TYPES.find((t) => tp.eatKeyword(t));
  if (!type) throw new LineError('unknown keyword');
  const databases = parseNames(tp, true, file);
  const users = parseNames(tp, false, file);
  const address = type === 'local' ? null : parseAddress(tp);

  const method = METHODS.find((m) => tp.eatKeyword(m));
  if (!method) throw new LineError(`unsupported method: ${tokenText(tp.tok)}`);
  let map: string | null = null;
  let options: string | null = null;
  if (method === 'ldap') {
    // The LDAP options are the LDAP module's business: keep the rest of the line as written.
    options = stripComment(tp.text.slice(tp.start)).trim();
    while (tp.tok.type !== 'eol' && tp.tok.type !== 'fail') tp.next();
  } else {
    while (tp.tok.type === 'ident' && tp.tok.text.startsWith('map=')) {
      if (method !== 'cert' && method !== 'peer') throw new LineError(`map= is only supported for cert and peer`);
      let name = tp.tok.text.slice(4);
      if (name === '' && tp.next().type === 'string') name = (tp.tok as { text: string }).text;
      if (name === '') throw new LineError('empty map name');
      map = name;
      tp.next();
    }
  }
  if (tp.tok.type !== 'eol') throw new LineError('unsupported parameters');
  return { type, databases, users, address, method, map, options, file, line };
}

function tokenText(tok: Token): string {
  return tok.type === 'ident' || tok.type === 'string' ? tok.text : tok.type === 'comma' ? ',' : '';
}

/** the text up to a `#` outside double quotes */
function stripComment(s: string): string {
  let quoted = false;
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '"') quoted = !quoted;
    else if (s[i] === '#' && !quoted) return s.slice(0, i);
  }
  return s;
}

function parseNames(tp: Tokenizer, isDb: boolean, file: string): HbaNames {
  const res: HbaNames = { all: false, sameuser: false, replication: false, names: new Set() };
  for (;;) {
    const tok = tp.tok;
    if (tp.eatKeyword('all')) {
      res.all = true;
    } else if (isDb && tp.eatKeyword('sameuser')) {
      res.sameuser = true;
    } else if (isDb && tp.eatKeyword('replication')) {
      res.replication = true;
    } else if (tok.type === 'ident') {
      if (isDb && (tok.text === 'samerole' || tok.text === 'samegroup')) throw new LineError(`${tok.text} is not supported`);
      if (!isDb && tok.text.startsWith('+')) throw new LineError('groups are not supported');
      if (tok.text.startsWith('@')) readNamesFile(res, file, tok.text.slice(1));
      else res.names.add(tok.text);
      tp.next();
    } else if (tok.type === 'string') {
      res.names.add(tok.text);
      tp.next();
    } else {
      throw new LineError(isDb ? 'bad database name' : 'bad user name');
    }
    if (tp.tok.type !== 'comma') return res;
    tp.next();
  }
}

// `@file`: names separated by white space or commas, `#` comments, quotes allowed. Every name
// in it is literal (no keywords, no nested @file).
function readNamesFile(res: HbaNames, parentFile: string, name: string): void {
  if (name === '') throw new LineError('empty file name after @');
  const path = resolve(dirname(parentFile), name);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new LineError(`could not open file "${path}": ${(err as Error).message}`);
  }
  for (const lineText of text.split('\n')) {
    const tp = new Tokenizer(lineText);
    for (let tok = tp.tok; tok.type !== 'eol'; tok = tp.next()) {
      if (tok.type === 'ident' || tok.type === 'string') res.names.add(tok.text);
      else if (tok.type === 'fail') throw new LineError(`could not parse file "${path}"`);
    }
  }
}

function parseAddress(tp: Tokenizer): HbaAddress {
  if (tp.eatKeyword('all')) return { kind: 'all' };
  const tok = tp.tok;
  if (tok.type !== 'ident') throw new LineError('no address');
  tp.next();
  const slash = tok.text.indexOf('/');
  const addr = parseIp(slash < 0 ? tok.text : tok.text.slice(0, slash));
  if (!addr) throw new LineError(`invalid address: ${tok.text}`);
  const kind = addr.length === 4 ? 'ipv4' : 'ipv6';
  if (slash >= 0) {
    const bits = tok.text.slice(slash + 1);
    if (!/^[0-9]{1,3}$/.test(bits) || Number(bits) > addr.length * 8) throw new LineError(`invalid mask: ${tok.text}`);
    return { kind, addr, mask: prefixMask(Number(bits), addr.length) };
  }
  const maskTok = tp.tok;
  if (maskTok.type !== 'ident') throw new LineError('no mask');
  tp.next();
  const mask = parseIp(maskTok.text);
  if (!mask || mask.length !== addr.length) throw new LineError(`invalid mask: ${maskTok.text}`);
  return { kind, addr, mask };
}

// ---------------------------------------------------------------------------------------------
// Matcher

function namesMatch(n: HbaNames, name: string, user: string): boolean {
  return n.all || (n.sameuser && name === user) || n.names.has(name);
}

function addressMatches(a: HbaAddress, ip: Uint8Array | null): boolean {
  if (a.kind === 'all') return true;
  if (!ip || ip.length !== a.addr.length) return false;
  for (let i = 0; i < ip.length; i++) {
    if ((ip[i]! & a.mask[i]!) !== (a.addr[i]! & a.mask[i]!)) return false;
  }
  return true;
}

/**
 * First rule matching the connection, or null (the caller answers `no authentication method is
 * found`). A physical replication connection matches only rules whose database column has
 * `replication`; a logical one matches like any connection to its database.
 */
export function matchHba(rules: readonly HbaRule[], conn: HbaConn): HbaRule | null {
  const ip = conn.unix ? null : clientIp(conn.addr);
  for (const rule of rules) {
    if (conn.unix) {
      if (rule.type !== 'local') continue;
    } else {
      if (rule.type === 'local') continue;
      if (rule.type === 'hostssl' && !conn.tls) continue;
      if (rule.type === 'hostnossl' && conn.tls) continue;
      if (!addressMatches(rule.address!, ip)) continue;
    }
    if (conn.replication === 'physical') {
      if (!rule.databases.replication) continue;
    } else if (!namesMatch(rule.databases, conn.database, conn.user)) {
      continue;
    }
    if (!namesMatch(rule.users, conn.user, conn.user)) continue;
    return rule;
  }
  return null;
}
