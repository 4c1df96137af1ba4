// Protocol-level prepared statements in transaction and statement mode, as PgBouncer 1.21+ does
// them (max_prepared_statements, https://www.pgbouncer.org/config.html#max_prepared_statements).
//
// A client's named statement lives on whatever server it gets next, so names are rewritten:
// one global entry per (query text + parameter types) named PGBOUNCER_<n>; each client maps its
// own names to entries; each server keeps an LRU of the entries prepared on it
// (max_prepared_statements), closing the least recently used one when full. A Parse for an
// entry the server already has is not sent; a Bind/Describe for one it lacks gets a Parse
// injected first.
//
// The client must still see exactly one response per message, in order. Every message sent to
// the server (or answered by pgbun itself) is queued per server with what to do with its
// response: forward it, swallow it (injected Parse/Close), or synthesize it (ParseComplete /
// CloseComplete that no server sends). Server messages are matched against the queue head.
import { cf } from '../config/current.js';
import { log } from '../log/logger.js';
import {
  B_BIND_COMPLETE, B_CLOSE_COMPLETE, B_COMMAND_COMPLETE, B_EMPTY_QUERY, B_ERROR, B_NO_DATA,
  B_NOTICE, B_NOTIFICATION, B_PARAMETER_STATUS, B_PARSE_COMPLETE, B_PORTAL_SUSPENDED,
  B_READY_FOR_QUERY, B_ROW_DESCRIPTION, F_BIND, F_CLOSE, F_DESCRIBE, F_EXECUTE, F_FUNCTION_CALL,
  F_FLUSH, F_PARSE, F_QUERY, F_SYNC, TARGET_STATEMENT,
} from '../protocol/constants.js';
import * as msg from '../protocol/messages.js';
import { cstrEnd } from '../protocol/reader.js';
import { FORWARD, HANDLED, NEED_FULL, STOP, type Action } from '../protocol/stream.js';
import { onRequest, tellAll } from '../workers/bus.js';
import { multiWorker } from '../workers/identity.js';
import type { PgPool } from './objects.js';
import type { Client } from './client.js';
import type { Server } from './server.js';

/** One distinct statement (query + parameter types), shared by every client and server. */
export interface Entry {
  readonly id: number;
  /** the server-side name, PGBOUNCER_<id> */
  readonly name: string;
  readonly key: string;
  /** the Parse message with the server-side name, built once */
  readonly parse: Buffer;
  /** client maps + server LRUs holding it; freed at 0 */
  refs: number;
  /** a server has accepted this Parse at least once */
  validated: boolean;
}

const entries = new Map<string, Entry>();
let nextId = 0;

function getEntry(key: string, body: Buffer): Entry {
  let e = entries.get(key);
  if (e === undefined) {
    const id = ++nextId;
    const name = `PGBOUNCER_${id}`;
    const parse = msg.parseNamed(name, body);
    e = { id, name, key, parse, refs: 0, validated: false };
    entries.set(key, e);
  }
  return e;
}

function unref(e: Entry): void {
  if (--e.refs <= 0) entries.delete(e.key);
}

/**
 * workers > 1: statements a server of another loop has accepted (their keys), so that this
 * loop answers an unlinked client's Parse of one without a server, as it does for its own
 * (onUnlinkedClientMessage). Each loop tells the others the first time one of its servers
 * accepts a statement. Oldest first; kept to KNOWN_MAX keys.
 */
const validElsewhere = new Set<string>();
const KNOWN_MAX = 4096;

function markValidated(e: Entry): void {
  e.validated = true;
  if (multiWorker() && !validElsewhere.has(e.key)) tellAll('prepared.valid', e.key);
}

onRequest('prepared.valid', (key) => {
  if (typeof key !== 'string' || validElsewhere.has(key)) return;
  if (validElsewhere.size >= KNOWN_MAX) validElsewhere.delete(validElsewhere.values().next().value!);
  validElsewhere.add(key);
});

// what to do with the response to a queued request
const ACT_FORWARD = 0;
const ACT_SWALLOW = 1;
const ACT_SYNTHETIC = 2;

/** Per-server state: the LRU of prepared entries and the queue of outstanding requests. */
export class ServerPrepared {
  /** insertion order = LRU order (oldest first); a use moves the entry to the end */
  readonly lru = new Map<Entry, true>();
  private kinds = new Uint8Array(64);
  private acts = new Uint8Array(64);
  private ents: Array<Entry | null> = new Array<Entry | null>(64).fill(null);
  private cnames: Array<string | null> = new Array<string | null>(64).fill(null);
  private head = 0;
  private len = 0;
  /** synthetic answers wait behind a response that is being forwarded right now (flushDue) */
  syntheticDue = false;
  /**
   * An extended-protocol error came before the client sent its Sync: PostgreSQL skips whatever
   * the client sends up to that Sync, so nothing sent meanwhile will be answered (nor may pgbun
   * answer for the server) until its ReadyForQuery.
   */
  skipping = false;

  get queued(): number {
    return this.len;
  }

  push(kind: number, act: number, ent: Entry | null = null, cname: string | null = null): void {
    if (this.len === this.kinds.length) this.grow();
    const i = (this.head + this.len) & (this.kinds.length - 1);
    this.kinds[i] = kind;
    this.acts[i] = act;
    this.ents[i] = ent;
    this.cnames[i] = cname;
    this.len++;
  }

  private grow(): void {
    const n = this.kinds.length * 2;
    const kinds = new Uint8Array(n);
    const acts = new Uint8Array(n);
    const ents = new Array<Entry | null>(n).fill(null);
    const cnames = new Array<string | null>(n).fill(null);
    for (let k = 0; k < this.len; k++) {
      const i = (this.head + k) & (this.kinds.length - 1);
      kinds[k] = this.kinds[i]!;
      acts[k] = this.acts[i]!;
      ents[k] = this.ents[i]!;
      cnames[k] = this.cnames[i]!;
    }
    this.kinds = kinds;
    this.acts = acts;
    this.ents = ents;
    this.cnames = cnames;
    this.head = 0;
  }

  headKind(): number {
    return this.len === 0 ? 0 : this.kinds[this.head]!;
  }

  headAct(): number {
    return this.acts[this.head]!;
  }

  /** what becomes of the response to the k-th queued request (0 = the head) */
  actAt(k: number): number {
    return this.acts[(this.head + k) & (this.kinds.length - 1)]!;
  }

  headEnt(): Entry | null {
    return this.ents[this.head]!;
  }

  headName(): string | null {
    return this.cnames[this.head]!;
  }

  pop(): void {
    this.ents[this.head] = null;
    this.cnames[this.head] = null;
    this.head = (this.head + 1) & (this.kinds.length - 1);
    this.len--;
  }

  /**
   * Forget the first `n` Syncs queued behind the head (the COPY's Execute): PostgreSQL ignores a
   * Sync that arrives while it is in COPY FROM STDIN mode, so no ReadyForQuery will answer them.
   */
  dropSyncs(n: number): void {
    const mask = this.kinds.length - 1;
    let out = 1;
    for (let k = 1; k < this.len; k++) {
      const i = (this.head + k) & mask;
      if (n > 0 && this.kinds[i] === F_SYNC) {
        n--;
        continue;
      }
      const o = (this.head + out) & mask;
      this.kinds[o] = this.kinds[i]!;
      this.acts[o] = this.acts[i]!;
      this.ents[o] = this.ents[i]!;
      this.cnames[o] = this.cnames[i]!;
      out++;
    }
    for (let k = out; k < this.len; k++) {
      const i = (this.head + k) & mask;
      this.ents[i] = null;
      this.cnames[i] = null;
    }
    this.len = out;
  }

  clearQueue(): void {
    while (this.len > 0) this.pop();
    this.head = 0;
    this.skipping = false;
    this.syntheticDue = false;
  }

  touch(e: Entry): void {
    this.lru.delete(e);
    this.lru.set(e, true);
  }

  /** Forget everything prepared on this server (DISCARD ALL / DEALLOCATE ALL / close). */
  dropAll(): void {
    for (const e of this.lru.keys()) unref(e);
    this.lru.clear();
  }
}

function serverState(s: Server): ServerPrepared {
  let p = s.prepared;
  if (p === null) p = s.prepared = new ServerPrepared();
  return p;
}

function clientMap(c: Client): Map<string, Entry> {
  let m = c.prepared;
  if (m === null) m = c.prepared = new Map();
  return m;
}

/** Drop a client's statements (client closed, or its server saw DISCARD ALL). */
export function forgetClientStatements(c: Client): void {
  c.unpreparedNames = null;
  const m = c.prepared;
  if (m === null) return;
  for (const e of m.values()) unref(e);
  m.clear();
}

export function forgetServerStatements(s: Server): void {
  if (s.prepared !== null) {
    s.prepared.dropAll();
    s.prepared.clearQueue();
  }
}


/** Make room in the server's LRU, closing the least recently used statement. */
function makeRoom(server: Server, sp: ServerPrepared): void {
  const max = cf.max_prepared_statements;
  while (sp.lru.size >= max) {
    const oldest = sp.lru.keys().next().value as Entry;
    sp.lru.delete(oldest);
    server.send(msg.closeStatement(oldest.name));
    // the entry keeps its reference until the CloseComplete (re-added if the Close is skipped)
    sp.push(F_CLOSE, ACT_SWALLOW, oldest);
  }
}

/** Send the entry's Parse to a server that lacks it; `act` says what becomes of ParseComplete. */
function sendParse(server: Server, sp: ServerPrepared, e: Entry, act: number, cname: string | null): void {
  makeRoom(server, sp);
  server.send(e.parse);
  sp.lru.set(e, true);
  e.refs++;
  sp.push(F_PARSE, act, e, cname);
  server.pool.stats.serverParseCount++;
}

/** Answer a synthetic response now if nothing is outstanding before it, else queue it. */
function synthetic(client: Client, sp: ServerPrepared, kind: number, e: Entry | null = null, cname: string | null = null): void {
  if (sp.queued === 0 && !sp.skipping) {
    client.send(kind === F_PARSE ? msg.PARSE_COMPLETE_MSG : msg.CLOSE_COMPLETE_MSG);
  } else {
    sp.push(kind, ACT_SYNTHETIC, e, cname);
  }
}

/** Emit the synthetic responses at the head of the queue. */
function flushSynthetic(client: Client | null, server: Server, sp: ServerPrepared): void {
  while (!sp.skipping && sp.queued > 0 && sp.headAct() === ACT_SYNTHETIC) {
    const kind = sp.headKind();
    sp.pop();
    if (client !== null) {
      server.stream.flush();
      client.socket.write(kind === F_PARSE ? msg.PARSE_COMPLETE_MSG : msg.CLOSE_COMPLETE_MSG);
    }
  }
}

/**
 * A request whose response never came: the one that failed, or one PostgreSQL skipped after that
 * error, up to the Sync. Such a Parse is not on the server, but its name stays the client's, as
 * in PgBouncer: pgbun knows the statement and prepares it on a server when the client uses it
 * (psycopg binds such names after a failed pipeline, e.g. once the missing table exists). The
 * client may also Parse the name again, as PostgreSQL would allow (Client.unpreparedNames).
 */
function abandon(server: Server, sp: ServerPrepared, client: Client | null): void {
  const kind = sp.headKind();
  const act = sp.headAct();
  const e = sp.headEnt();
  if (kind === F_PARSE && e !== null) {
    // an answer pgbun gave itself stands for a statement the server has
    if (act !== ACT_SYNTHETIC && sp.lru.delete(e)) unref(e);
    const cname = sp.headName();
    if (cname !== null && client !== null && client.prepared?.get(cname) === e) {
      (client.unpreparedNames ??= new Set()).add(cname);
    }
  } else if (kind === F_CLOSE && e !== null && act === ACT_SWALLOW) {
    // the statement still exists on the server
    sp.lru.set(e, true);
    return popNoUnref(sp);
  }
  sp.pop();
  void server;
}

function popNoUnref(sp: ServerPrepared): void {
  sp.pop();
}

// -------------------------------------------------------------------- public hooks


export const prepared = {
  /** A Parse at buf[start] of the unnamed statement (its empty name is in buf). */
  unnamedParseInHand(buf: Buffer, start: number): boolean {
    return buf.length > start + 5 && buf[start + 5] === 0;
  },

  /** An incomplete Bind at buf[start] whose portal and statement names are both in buf. */
  bindHeadInHand(buf: Buffer, start: number): boolean {
    const pe = cstrEnd(buf, start + 5, buf.length);
    return pe >= 0 && cstrEnd(buf, pe + 1, buf.length) >= 0;
  },

  /** rewriting is on in transaction/statement mode with max_prepared_statements > 0 */
  active(pool: PgPool): boolean {
    return cf.max_prepared_statements > 0 && pool.poolMode !== 'session' && !pool.db.admin;
  },

  /**
   * A client message on a linked server. Returns FORWARD (send as is), HANDLED (pgbun sent a
   * rewritten message or answered itself) or STOP (client closed). The caller already did the
   * generic bookkeeping; P/B/D/C arrive complete.
   */
  onClientMessage(client: Client, server: Server, type: number, len: number, buf: Buffer, start: number, complete: boolean): Action {
    const sp = serverState(server);
    const end = start + len + 1;
    switch (type) {
      case F_PARSE: {
        // an unnamed Parse may be incomplete (unnamedParseInHand): it is streamed as it is
        const ne = cstrEnd(buf, start + 5, complete ? end : buf.length);
        if (ne === start + 5) {
          sp.push(F_PARSE, ACT_FORWARD);
          return FORWARD;
        }
        if (!complete || ne < 0) {
          client.fail('broken Parse packet');
          return STOP;
        }
        server.pool.stats.clientParseCount++;
        const name = buf.toString('utf8', start + 5, ne);
        const map = clientMap(client);
        const old = map.get(name);
        if (old !== undefined) {
          if (client.unpreparedNames?.delete(name) !== true) {
            log.conn('warning', client, `prepared statement '${name}' was already prepared`);
            client.fail('prepared statement name is already in use');
            return STOP;
          }
          // its Parse never took effect on a server: the name may be prepared again
          map.delete(name);
          unref(old);
        }
        const body = buf.subarray(ne + 1, end);
        const e = getEntry(body.toString('latin1'), body);
        map.set(name, e);
        e.refs++;
        if (sp.lru.has(e)) {
          sp.touch(e);
          synthetic(client, sp, F_PARSE, e, name);
        } else {
          sendParse(server, sp, e, ACT_FORWARD, name);
        }
        return HANDLED;
      }
      case F_BIND: {
        // only the head (portal and statement names) is needed: an incomplete Bind has it in
        // hand (bindHeadInHand), and its parameters, however large, are streamed
        const have = complete ? end : buf.length;
        const pe = cstrEnd(buf, start + 5, have);
        const se = pe < 0 ? -1 : cstrEnd(buf, pe + 1, have);
        if (se < 0) {
          client.fail('broken Bind packet');
          return STOP;
        }
        if (se === pe + 1) {
          sp.push(F_BIND, ACT_FORWARD);
          return FORWARD;
        }
        server.pool.stats.bindCount++;
        if (complete) return sendRenamed(client, server, sp, F_BIND, buf, start, end, pe + 1, se);
        const e = lookup(client, buf.toString('utf8', pe + 1, se));
        if (e === null) return STOP;
        ensurePrepared(server, sp, e);
        server.send(msg.withNameReplaced(buf, start, se + 1, pe + 1, se, e.name, len + 1));
        client.stream.skipHead(se + 1 - start);
        sp.push(F_BIND, ACT_FORWARD);
        return FORWARD;
      }
      case F_DESCRIBE: {
        const ne = statementName(client, 'Describe', buf, start, end, complete);
        if (ne < 0) return STOP;
        if (ne === 0) {
          sp.push(F_DESCRIBE, ACT_FORWARD);
          return FORWARD;
        }
        return sendRenamed(client, server, sp, F_DESCRIBE, buf, start, end, start + 6, ne);
      }
      case F_CLOSE: {
        const ne = statementName(client, 'Close', buf, start, end, complete);
        if (ne < 0) return STOP;
        if (ne === 0) {
          sp.push(F_CLOSE, ACT_FORWARD);
          return FORWARD;
        }
        // the server keeps the statement for other clients; only this client's name goes
        const name = buf.toString('utf8', start + 6, ne);
        const map = clientMap(client);
        const e = map.get(name);
        if (e !== undefined) {
          map.delete(name);
          client.unpreparedNames?.delete(name);
          unref(e);
        }
        synthetic(client, sp, F_CLOSE);
        return HANDLED;
      }
      case F_SYNC:
        // no ReadyForQuery will answer a Sync sent in COPY FROM STDIN mode
        if (server.ignoresSync) return FORWARD;
        sp.push(type, ACT_FORWARD);
        return FORWARD;
      case F_EXECUTE:
      case F_QUERY:
      case F_FUNCTION_CALL:
        sp.push(type, ACT_FORWARD);
        return FORWARD;
      default:
        // Flush and COPY messages get no response of their own
        return FORWARD;
    }
  },

  /**
   * A server message while linked: match it to the queue head. Returns FORWARD (the caller goes
   * on with its normal handling), HANDLED (swallowed) or NEED_FULL.
   */
  onServerMessage(server: Server, client: Client, type: number, _len: number, _buf: Buffer, _start: number, _complete: boolean): Action {
    const sp = server.prepared;
    if (sp === null) return FORWARD;
    // asynchronous messages belong to no request
    if (type === B_NOTICE || type === B_PARAMETER_STATUS || type === B_NOTIFICATION) return FORWARD;
    if (type === B_READY_FOR_QUERY && sp.skipping) {
      // the Sync that ends the skipping: what was sent before it was never answered
      sp.skipping = false;
      while (sp.queued > 0 && sp.headKind() !== F_SYNC) abandon(server, sp, client);
    }
    flushSynthetic(client, server, sp);
    if (sp.queued === 0) return FORWARD;
    const kind = sp.headKind();
    if (type === B_ERROR) {
      if (kind === F_QUERY || kind === F_FUNCTION_CALL || kind === F_SYNC) return FORWARD;
      // an extended-protocol error: the server skips everything up to the next Sync
      while (sp.queued > 0 && sp.headKind() !== F_SYNC) abandon(server, sp, client);
      // no Sync sent yet: PostgreSQL skips up to the one the client is still to send
      if (sp.queued === 0) sp.skipping = true;
      return FORWARD;
    }
    let ends = false;
    switch (kind) {
      case F_PARSE:
        ends = type === B_PARSE_COMPLETE;
        break;
      case F_BIND:
        ends = type === B_BIND_COMPLETE;
        break;
      case F_CLOSE:
        ends = type === B_CLOSE_COMPLETE;
        break;
      case F_DESCRIBE:
        ends = type === B_ROW_DESCRIPTION || type === B_NO_DATA;
        break;
      case F_EXECUTE:
        ends = type === B_COMMAND_COMPLETE || type === B_EMPTY_QUERY || type === B_PORTAL_SUSPENDED;
        break;
      default: // Query, FunctionCall, Sync
        ends = type === B_READY_FOR_QUERY;
    }
    if (!ends) return FORWARD;
    const act = sp.headAct();
    // pgbun's own answers queued behind this response go out after it, so the response must be
    // whole here: it is forwarded by Server.onMessage, then the answers (flushDue)
    const answersBehind = act !== ACT_SWALLOW && sp.queued > 1 && sp.actAt(1) === ACT_SYNTHETIC;
    if (answersBehind && !_complete) return NEED_FULL;
    const e = sp.headEnt();
    if (kind === F_CLOSE && e !== null && act === ACT_SWALLOW) unref(e);
    if (kind === F_PARSE && e !== null && !e.validated) markValidated(e);
    sp.pop();
    if (act === ACT_SWALLOW) {
      flushSynthetic(client, server, sp);
      return HANDLED;
    }
    if (answersBehind) sp.syntheticDue = true;
    return FORWARD;
  },

  /**
   * After the response that ended a request has been queued for the client: pgbun's own answers
   * that were waiting behind it (synthetic ParseComplete/CloseComplete) go out now.
   */
  flushDue(server: Server, client: Client): void {
    const sp = server.prepared;
    if (sp === null || !sp.syntheticDue) return;
    sp.syntheticDue = false;
    flushSynthetic(client, server, sp);
  },

  /**
   * A client without a server sends Parse/Close/Sync/Flush. pgbun answers these itself when it
   * can: a Parse of a statement some server has already accepted, a Close of a statement name,
   * a Flush, and the Sync that ends such a batch (ReadyForQuery 'I': an unlinked client has no
   * transaction). Returns null when a server is needed.
   *
   * This goes beyond PgBouncer, which takes a server for them: clients like pgbench prepare
   * synchronously (PQprepare) while other clients of the same thread hold every server in an
   * open transaction; waiting for a server there deadlocks the client program until
   * query_wait_timeout whenever the pool is smaller than the number of clients. With
   * workers > 1 a statement accepted in another loop counts too: a loop new to a statement
   * may hold no server at all while the other loops' servers are all in such transactions.
   */
  onUnlinkedClientMessage(client: Client, type: number, len: number, buf: Buffer, start: number): Action | null {
    const end = start + len + 1;
    switch (type) {
      case F_PARSE: {
        const ne = cstrEnd(buf, start + 5, end);
        if (ne <= start + 5) return null;
        const name = buf.toString('utf8', start + 5, ne);
        const map = clientMap(client);
        if (map.has(name)) return null;
        const key = buf.toString('latin1', ne + 1, end);
        let e = entries.get(key);
        if (e === undefined || !e.validated) {
          if (!validElsewhere.has(key)) return null;
          e ??= getEntry(key, buf.subarray(ne + 1, end));
          e.validated = true;
        }
        map.set(name, e);
        e.refs++;
        client.pool!.stats.clientParseCount++;
        client.send(msg.PARSE_COMPLETE_MSG);
        return HANDLED;
      }
      case F_CLOSE: {
        const ne = cstrEnd(buf, start + 6, end);
        if (buf[start + 5] !== TARGET_STATEMENT || ne <= start + 6) return null;
        const name = buf.toString('utf8', start + 6, ne);
        const map = clientMap(client);
        const e = map.get(name);
        if (e !== undefined) {
          map.delete(name);
          unref(e);
        }
        client.send(msg.CLOSE_COMPLETE_MSG);
        return HANDLED;
      }
      case F_SYNC:
        client.send(msg.readyForQuery('I'));
        return HANDLED;
      case F_FLUSH: // nothing is pending
        return HANDLED;
      default:
        return null;
    }
  },

  /** CommandComplete: DISCARD ALL / DEALLOCATE ALL drop the server's (and client's) statements. */
  onCommandComplete(server: Server, client: Client | null, buf: Buffer, start: number, len: number, complete: boolean): Action {
    // only the two tags matter: look at lengths and bytes before making a string (hot path)
    if ((len !== 4 + 12 && len !== 4 + 15) || buf[start + 5] !== 0x44 /* 'D' of DISCARD or DEALLOCATE */) return FORWARD;
    if (!complete) return NEED_FULL;
    const tag = buf.toString('latin1', start + 5, start + len); // without the NUL
    if (tag === 'DISCARD ALL' || tag === 'DEALLOCATE ALL') {
      if (server.prepared !== null) server.prepared.dropAll();
      if (client !== null) forgetClientStatements(client);
    }
    return FORWARD;
  },
};

/**
 * Describe/Close: the end of a named statement's name (it starts at start + 6), 0 for a portal
 * or the unnamed statement (forwarded as is), -1 when malformed (the client was failed).
 */
function statementName(client: Client, what: string, buf: Buffer, start: number, end: number, complete: boolean): number {
  const ne = cstrEnd(buf, start + 6, end);
  if (!complete || ne < 0) {
    client.fail(`broken ${what} packet`);
    return -1;
  }
  return buf[start + 5] !== TARGET_STATEMENT || ne === start + 6 ? 0 : ne;
}

function lookup(client: Client, name: string): Entry | null {
  const e = client.prepared?.get(name);
  if (e === undefined) {
    log.conn('warning', client, `prepared statement '${name}' not found`);
    client.fail('prepared statement did not exist');
    return null;
  }
  return e;
}

/**
 * Bind/Describe of a client's named statement: make sure the server has it, then send the
 * message with the server-side name in place of buf[nameStart, nameEnd).
 */
function sendRenamed(client: Client, server: Server, sp: ServerPrepared, kind: number,
  buf: Buffer, start: number, end: number, nameStart: number, nameEnd: number): Action {
  const e = lookup(client, buf.toString('utf8', nameStart, nameEnd));
  if (e === null) return STOP;
  ensurePrepared(server, sp, e);
  server.send(msg.withNameReplaced(buf, start, end, nameStart, nameEnd, e.name));
  sp.push(kind, ACT_FORWARD);
  return HANDLED;
}

function ensurePrepared(server: Server, sp: ServerPrepared, e: Entry): void {
  if (sp.lru.has(e)) sp.touch(e);
  else sendParse(server, sp, e, ACT_SWALLOW, null);
}

