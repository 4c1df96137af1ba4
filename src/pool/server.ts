// A server connection (pgbun -> PostgreSQL). Its state machine: connect, log in (answering the
// server's auth challenges with the pool user's secret), cache the welcome, then be idle,
// linked (active) or running an internal query (reset, check, SET batch, connect_query).
import net from 'node:net';
import { cf } from '../config/current.js';
import { log, type LogSubject } from '../log/logger.js';
import {
  B_AUTH, B_BACKEND_KEY, B_COMMAND_COMPLETE, B_COPY_BOTH, B_COPY_IN, B_COPY_OUT, B_ERROR,
  B_NEGOTIATE_PROTOCOL, B_NOTICE, B_PARAMETER_STATUS, B_READY_FOR_QUERY, F_EXECUTE, F_FLUSH,
  F_FUNCTION_CALL, F_QUERY, F_SYNC, TX_IDLE,
} from '../protocol/constants.js';
import * as msg from '../protocol/messages.js';
import { cstrEnd, parseErrorFields } from '../protocol/reader.js';
import { FORWARD, HANDLED, NEED_FULL, PacketStream, STOP, type Action, type StreamOwner } from '../protocol/stream.js';
import type { ReplicationMode } from '../protocol/startup.js';
import { ServerLogin } from '../auth/server-login.js';
import { prepared, type ServerPrepared } from './prepared.js';
import type { ListNode, StateList } from './list.js';
import type { PgPool } from './objects.js';
import type { Client } from './client.js';
import { ServerState } from './state.js';
import { VarCache, trackedIndex } from './varcache.js';
import { nowUs } from './clock.js';
import { connIds } from './ids.js';
import { serverEvents } from './server-events.js';
import { applySocketOptions } from './sockopts.js';
import { beginServerLogin } from '../tls/server.js';

/** What an internal query is for; its results are swallowed, never forwarded. */

export const enum Internal {
  NONE = 0,
  SETVARS = 1,
  RESET = 2,
  CHECK = 3,
  CONNECT_QUERY = 4,
  /** auth_query (pool/auth-query.ts), whose answers `interceptor` reads */
  AUTH_QUERY = 5,
}

export class Server implements ListNode, StreamOwner, LogSubject {
  listPrev: ListNode | null = null;
  listNext: ListNode | null = null;
  list: StateList<ListNode> | null = null;

  readonly id: number;
  readonly ptr: string;
  state: ServerState = ServerState.LOGIN;
  link: Client | null = null;
  socket: net.Socket;
  stream: PacketStream;
  readonly vars = new VarCache();
  /** ParameterStatus values in arrival order during login (the pool's welcome) */
  private loginParams: Array<[string, string]> | null = [];
  private login: ServerLogin | null;
  /** PostgreSQL's BackendKeyData for this connection (pid + secret) */
  backendKey: Buffer | null = null;
  backendPid = 0;
  /**
   * A replication client's own server (PgBouncer 1.23+): linked to that client from its creation,
   * never idle, never given to anyone else, closed with its client (pooler.ts).
   */
  replication: ReplicationMode = 'none';
  /** startup parameters beyond database, the entry's settings and user (a replication client's) */
  startupExtra: Array<[string, string]> | null = null;
  /** database generation this server was made for (a changed [databases] entry closes it) */
  readonly generation: number;
  closeNeeded = false;

  // Request accounting: what the server owes and where it stands. Only this class writes these
  // (noteClientMessage, noteReadyForQuery, beginInternal/endInternal and the message handlers):
  // `ready` is what stops one client's transaction from reaching another.
  /** transaction status from the last ReadyForQuery (TX_IDLE, TX_IN_BLOCK, TX_FAILED) */
  private tx = TX_IDLE;
  /** ReadyForQuery messages still owed (Query, Sync, FunctionCall sent) */
  private rfqOwed = 0;
  /** extended-protocol messages sent since the last Sync */
  private extendedOpen = false;
  /** inside COPY (copy-in/out/both) */
  private copying = false;
  /** when the current query started (query_timeout), 0 = none */
  private queryStart = 0;
  /** when the current transaction started (transaction_timeout), 0 = none */
  private xactStart = 0;
  /**
   * Syncs sent after the last Execute or Query and before the client ended its COPY data: if
   * that command turns out to be COPY FROM STDIN, PostgreSQL ignores them (no ReadyForQuery).
   */
  private copyWindowSyncs = 0;
  private copyWindowOpen = false;
  /** in COPY FROM STDIN (or BOTH) mode, where PostgreSQL ignores Sync and Flush */
  private copyIn = false;

  get txStatus(): number {
    return this.tx;
  }

  get pendingRfq(): number {
    return this.rfqOwed;
  }

  get unsynced(): boolean {
    return this.extendedOpen;
  }

  get inCopy(): boolean {
    return this.copying;
  }

  get queryStartUs(): number {
    return this.queryStart;
  }

  get xactStartUs(): number {
    return this.xactStart;
  }

  /**
   * A client left it holding part of a message (the link ended while the client's stream was
   * forwarding one): PostgreSQL would read whatever comes next as the rest, so it is never reused.
   */
  cutMessage = false;
  internal = Internal.NONE;
  private internalError: string | null = null;
  /** while an internal query is run by someone else (auth_query): every complete message goes here */
  interceptor: ((type: number, buf: Buffer, start: number, len: number) => Action) | null = null;
  /** prepared-statement rewriting is on for the current link (prepared.active, fixed per link) */
  rewriting = false;
  /** prepared statements on this server and its queue of outstanding requests (prepared.ts) */
  prepared: ServerPrepared | null = null;
  /** cancel requests in flight for this server */
  cancelsInFlight = 0;
  /** bumped on every release: a cancel is only sent if the server is still on the same job */
  linkEpoch = 0;
  connectTimeUs: number;
  /** last time the server was assigned or released (server_check_delay, idle timeouts) */
  requestTimeUs: number;
  /** last ReadyForQuery from the server: idle in transaction since (idle_transaction_timeout) */
  lastPacketUs = 0;
  addr = '';
  port = 0;
  localAddr = '';
  localPort = 0;
  isUnix = false;
  /** the host argument of connect(): a Unix socket dir, or null for unix_socket_dir */
  connectHost: string | null = null;
  closed = false;
  tlsInfo = '';
  /** for cancel connections: the server to cancel and the link epoch at request time */
  cancelTarget: Server | null = null;
  cancelEpoch = 0;
  cancelClient: Client | null = null;
  /** the CancelRequest was written; PostgreSQL closing the connection completes it */
  cancelSent = false;
  /** workers > 1: the shared counters this server holds (limits.ts Held bits), given back when it closes */
  sharedHeld = 0;
  /**
   * workers > 1: closed to make room for another server (evicted, or given up to another loop):
   * its shared slots are held until PostgreSQL has closed the connection (pooler.endLingering)
   */
  lingers = false;
  /** given up to another loop's waiting clients: the slot of that give-up (limits.claimYield), -1 = not */
  yieldSlot = -1;
  /** evicted to make room for a server of this pool (pooler.evictIdle) */
  roomFor: PgPool | null = null;

  constructor(readonly pool: PgPool, forCancel = false) {
    this.id = connIds.next();
    this.ptr = connIds.ptr(this.id);
    this.generation = pool.db.generation;
    this.connectTimeUs = this.requestTimeUs = nowUs();
    this.socket = new net.Socket();
    this.stream = new PacketStream(this.socket, this);
    this.stream.maxPacket = 0x7fffffff;
    this.login = forCancel ? null : new ServerLogin(this);
  }

  logPrefix(): string {
    const p = this.pool;
    const a = this.isUnix ? `unix:${this.port}` : this.addr.includes(':') ? `[${this.addr}]:${this.port}` : `${this.addr}:${this.port}`;
    return `S-${this.ptr}: ${p.db.name}/${p.user.name}@${a}`;
  }

  /** seconds since connect, for `closing because: ... (age=Ns)` */
  ageSeconds(): number {
    return Math.floor((nowUs() - this.connectTimeUs) / 1e6);
  }

  /**
   * true when the server can be given to another client: at a transaction boundary with nothing
   * owed, and neither direction stopped in the middle of a message.
   */
  get ready(): boolean {
    return this.tx === TX_IDLE && this.rfqOwed === 0 && !this.extendedOpen && !this.copying &&
      this.internal === Internal.NONE && !this.stream.midMessage && !this.cutMessage &&
      (this.link === null || !this.link.stream.forwardingPartial) &&
      (this.prepared === null || this.prepared.queued === 0);
  }

  /**
   * A client message is about to be forwarded: count what the server now owes. Returns true
   * when the message starts a new request (the server owed nothing and `clientIdle`): the
   * query clock starts, and the transaction clock too outside a transaction.
   */
  noteClientMessage(type: number, now: number, clientIdle: boolean): boolean {
    let starts = false;
    if (this.rfqOwed === 0 && !this.extendedOpen && clientIdle) {
      starts = true;
      this.queryStart = now;
      if (this.tx === TX_IDLE && this.xactStart === 0) this.xactStart = now;
    }
    if (type === F_QUERY || type === F_FUNCTION_CALL) {
      this.rfqOwed++;
      this.copyWindowSyncs = 0;
      this.copyWindowOpen = type === F_QUERY;
    } else if (type === F_SYNC) {
      // PostgreSQL ignores a Sync during COPY FROM STDIN: nothing is owed for it
      if (this.ignoresSync) return starts;
      this.rfqOwed++;
      this.extendedOpen = false;
      if (this.copyWindowOpen) this.copyWindowSyncs++;
    } else if (type !== F_FLUSH) {
      this.extendedOpen = true;
      if (type === F_EXECUTE) {
        this.copyWindowSyncs = 0;
        this.copyWindowOpen = true;
      }
    }
    return starts;
  }

  /** A Sync now would reach PostgreSQL in COPY FROM STDIN mode, which ignores it. */
  get ignoresSync(): boolean {
    return this.copyIn && this.copyWindowOpen;
  }

  /** The client sent CopyDone or CopyFail: Syncs after it are answered again. */
  noteCopyEnd(): void {
    this.copyWindowOpen = false;
  }

  /**
   * COPY FROM STDIN (or COPY BOTH) started: the Syncs the client sent behind its command, before
   * its CopyDone/CopyFail, reach PostgreSQL in COPY mode and are ignored there; they are not owed.
   */
  private enterCopyIn(): void {
    this.copyIn = true;
    const n = this.copyWindowSyncs < this.rfqOwed ? this.copyWindowSyncs : this.rfqOwed;
    this.copyWindowSyncs = 0;
    if (n === 0) return;
    this.rfqOwed -= n;
    this.prepared?.dropSyncs(n);
  }

  /** A ReadyForQuery for a client's request. Returns true when nothing more is owed. */
  noteReadyForQuery(status: number, now: number): boolean {
    this.tx = status;
    if (this.rfqOwed > 0) this.rfqOwed--;
    this.lastPacketUs = now;
    const done = this.rfqOwed === 0 && !this.extendedOpen;
    if (done) this.queryStart = 0;
    if (status === TX_IDLE) this.xactStart = 0;
    return done;
  }

  /** Start a query whose results pgbun reads itself; the caller sends it. */
  beginInternal(kind: Internal): void {
    this.internal = kind;
    this.internalError = null;
    this.rfqOwed++;
  }

  /** The ReadyForQuery of an internal query: the server is pgbun's to hand on again. */
  endInternal(status: number): Internal {
    const kind = this.internal;
    this.internal = Internal.NONE;
    this.internalError = null;
    this.interceptor = null;
    if (this.rfqOwed > 0) this.rfqOwed--;
    this.tx = status;
    return kind;
  }

  // ---- connecting ----

  /** while set, bytes from the server go here instead of the message stream (SSLRequest answer) */
  rawData: ((chunk: Buffer) => void) | null = null;

  private readonly onData = (chunk: Buffer): void => {
    if (this.rawData !== null) {
      this.rawData(chunk);
      return;
    }
    // total_sent: what the server answers once logged in (PgBouncer leaves the login out)
    if (this.state !== ServerState.LOGIN) this.pool.stats.serverBytes += chunk.length;
    this.stream.feed(chunk);
  };

  private readonly onError = (err: NodeJS.ErrnoException): void => this.onSocketError(err);
  private readonly onClose = (): void => this.onSocketClose();

  private attach(sock: net.Socket): void {
    this.socket = sock;
    sock.on('data', this.onData);
    sock.on('error', this.onError);
    sock.on('close', this.onClose);
  }

  /** Continue on another socket (TLS wrapping the TCP one), before the login starts. */
  replaceSocket(sock: net.Socket): void {
    const old = this.socket;
    old.off('data', this.onData);
    old.off('error', this.onError);
    old.off('close', this.onClose);
    old.on('error', () => { /* the TLS socket reports */ });
    this.stream = new PacketStream(sock, this);
    this.attach(sock);
  }

  /** host: name, IP or socket dir (null = unix_socket_dir); ip: the resolved address of a name */
  connect(host: string | null, port: number, ip?: string): void {
    const sock = this.socket;
    this.connectHost = host;
    this.attach(sock);
    sock.once('connect', () => this.onConnect());
    if (host === null || host.startsWith('/') || host.startsWith('@')) {
      const dir = host ?? cf.unix_socket_dir;
      const path = dir.startsWith('@') ? `\0${dir.slice(1)}/.s.PGSQL.${port}` : `${dir}/.s.PGSQL.${port}`;
      this.isUnix = true;
      this.addr = 'unix';
      this.port = port;
      sock.connect({ path });
    } else {
      this.addr = ip ?? host;
      this.port = port;
      // TCP_NODELAY: applySocketOptions() on connect (node reads noDelay only when a Socket is
      // constructed, never from connect(): the option that used to be here did nothing)
      sock.connect({ host: this.addr, port });
    }
  }

  private onConnect(): void {
    if (this.closed) return;
    if (!this.isUnix) {
      this.addr = this.socket.remoteAddress ?? this.addr;
      this.localAddr = this.socket.localAddress ?? '';
      this.localPort = this.socket.localPort ?? 0;
      applySocketOptions(this.socket);
    }
    if (this.cancelTarget !== null) {
      serverEvents.sendCancel(this);
      return;
    }
    if (cf.log_connections) {
      const from = this.isUnix ? 'unix socket' : `${this.localAddr}:${this.localPort}`;
      log.conn('log', this, `new connection to server (from ${from})`);
    }
    beginServerLogin(this);
  }

  /** Send the StartupMessage (after TLS negotiation, if any). */
  startLogin(): void {
    if (!this.closed) this.login!.start();
  }

  private onSocketError(err: NodeJS.ErrnoException): void {
    if (this.closed) return;
    if (this.cancelTarget !== null) {
      this.onSocketClose();
      return;
    }
    if (this.state === ServerState.LOGIN && this.login !== null && !this.login.started) {
      log.conn('warning', this, `connect failed: ${err.message}`);
      this.connectFailed();
      return;
    }
    serverEvents.disconnect(this, false, 'server conn crashed?');
  }

  private onSocketClose(): void {
    if (this.closed) return;
    if (this.cancelTarget !== null) {
      serverEvents.disconnect(this, false, this.cancelSent ? 'successfully sent cancel request' : 'cancel connection failed');
      return;
    }
    if (this.state === ServerState.LOGIN && this.login !== null && !this.login.started) {
      this.connectFailed();
      return;
    }
    serverEvents.disconnect(this, false, 'server conn crashed?');
  }

  /** TCP/Unix connect failed: retry after server_login_retry, the next host first (load_balance_hosts). */
  private connectFailed(): void {
    serverEvents.advanceHost(this.pool.db);
    serverEvents.connectFailed(this, 'connect failed');
  }

  /** Write a pgbun-made message to the server, after whatever the client stream queued. */
  send(b: Buffer): void {
    if (this.link !== null) this.link.stream.flush();
    if (!this.socket.destroyed) this.socket.write(b);
  }

  // ---- messages from the server ----

  onBadHeader(): void {
    serverEvents.disconnect(this, false, 'bad packet header');
  }

  onMessage(type: number, len: number, buf: Buffer, start: number, complete: boolean): Action {
    if (this.state === ServerState.LOGIN) {
      if (!complete) return NEED_FULL;
      return this.onLoginMessage(type, buf, start, len);
    }
    if (this.internal !== Internal.NONE) {
      if (this.interceptor !== null) return complete ? this.interceptor(type, buf, start, len) : NEED_FULL;
      if (!complete) {
        // a big row from an internal query is nothing we need to see
        return type === B_READY_FOR_QUERY || type === B_ERROR || type === B_PARAMETER_STATUS ||
          type === B_COMMAND_COMPLETE ? NEED_FULL : HANDLED;
      }
      return this.onInternalMessage(type, buf, start, len);
    }
    const client = this.link;
    if (client === null) {
      // an idle server has nothing to say, except parameter changes and notices
      if (!complete) return NEED_FULL;
      if (type === B_PARAMETER_STATUS) {
        this.onParameterStatus(buf, start, len, null);
        return HANDLED;
      }
      if (type === B_NOTICE) return HANDLED;
      log.conn('warning', this, `got packet '${String.fromCharCode(type)}' from server when not linked`);
      serverEvents.disconnect(this, false, 'server conn crashed?');
      return STOP;
    }

    // messages whose content we read: have them whole before any bookkeeping, so that the
    // second call (with the collected message) is the only one that counts
    if (!complete && (type === B_READY_FOR_QUERY || type === B_PARAMETER_STATUS || type === B_COMMAND_COMPLETE)) {
      return NEED_FULL;
    }
    if (this.rewriting && this.prepared !== null) {
      const a = prepared.onServerMessage(this, client, type, len, buf, start, complete);
      if (a !== FORWARD) return a;
      if (this.prepared.syntheticDue && type !== B_READY_FOR_QUERY) {
        // pgbun's own answers follow this response: forward it first, then them
        const r = this.onLinkedMessage(client, type, len, buf, start);
        if (r === FORWARD) this.stream.forwardRange(buf, start, start + len + 1);
        prepared.flushDue(this, client);
        return r === STOP ? STOP : HANDLED;
      }
    }
    return this.onLinkedMessage(client, type, len, buf, start);
  }

  /** A (whole, when its content matters) message for the linked client: track state, then forward. */
  private onLinkedMessage(client: Client, type: number, len: number, buf: Buffer, start: number): Action {
    switch (type) {
      case B_READY_FOR_QUERY:
        return this.onReadyForQuery(client, buf, start);
      case B_PARAMETER_STATUS:
        this.onParameterStatus(buf, start, len, client);
        return FORWARD;
      case B_COPY_IN:
      case B_COPY_BOTH:
        this.copying = true;
        this.enterCopyIn();
        return FORWARD;
      case B_COPY_OUT:
        this.copying = true;
        return FORWARD;
      case B_COMMAND_COMPLETE:
        this.copying = false;
        this.copyIn = false;
        return prepared.onCommandComplete(this, client, buf, start, len, true);
      case B_ERROR:
        this.copying = false;
        this.copyIn = false;
        return FORWARD;
      default:
        return FORWARD;
    }
  }

  private onReadyForQuery(client: Client, buf: Buffer, start: number): Action {
    const status = buf[start + 5]!;
    const now = nowUs();
    const done = this.noteReadyForQuery(status, now);
    if (status !== TX_IDLE && this.replication === 'none' && this.pool.poolMode === 'statement') {
      // a transaction block in statement mode: as in PgBouncer, the server is closed with what it
      // has not sent yet (its BEGIN's CommandComplete, this ReadyForQuery); the client sees the FATAL
      this.stream.discardForwarded();
      serverEvents.readyForQuery(this, client, status, done, now);
      return STOP;
    }
    this.stream.forwardRange(buf, start, start + 6);
    this.stream.flush();
    // pgbun's own answers for the next requests follow the ReadyForQuery
    if (this.prepared !== null) prepared.flushDue(this, client);
    serverEvents.readyForQuery(this, client, status, done, now);
    return HANDLED;
  }

  /** ParameterStatus: remember tracked values for this server and the linked client. */
  onParameterStatus(buf: Buffer, start: number, len: number, client: Client | null): void {
    const end = start + len + 1;
    const ne = cstrEnd(buf, start + 5, end);
    if (ne < 0) return;
    const ve = cstrEnd(buf, ne + 1, end);
    if (ve < 0) return;
    const name = buf.toString('utf8', start + 5, ne);
    const value = buf.toString('utf8', ne + 1, ve);
    if (this.loginParams !== null) {
      const i = this.loginParams.findIndex(([k]) => k === name);
      if (i >= 0) this.loginParams[i] = [name, value];
      else this.loginParams.push([name, value]);
    }
    const idx = trackedIndex(name);
    if (idx >= 0) {
      this.vars.set(idx, value);
      if (client !== null) client.vars.set(idx, value);
    }
  }

  // ---- login ----

  private onLoginMessage(type: number, buf: Buffer, start: number, len: number): Action {
    const end = start + len + 1;
    switch (type) {
      case B_AUTH: {
        const err = this.login!.onAuthRequest(buf, start + 5, end);
        if (err !== null) {
          serverEvents.loginFailed(this, '08P01', err, false);
          return STOP;
        }
        return HANDLED;
      }
      case B_ERROR: {
        const f = parseErrorFields(buf, start + 5, end);
        const m = f.get('M') ?? 'unknown error';
        const sqlstate = f.get('C') ?? '08P01';
        log.conn('warning', this, `server login failed: ${f.get('S') ?? 'FATAL'} ${m}`);
        serverEvents.loginFailed(this, sqlstate, m, true);
        return STOP;
      }
      case B_PARAMETER_STATUS:
        this.onParameterStatus(buf, start, len, null);
        return HANDLED;
      case B_BACKEND_KEY:
        if (len >= 12) {
          this.backendKey = Buffer.from(buf.subarray(start + 5, start + 13));
          this.backendPid = buf.readInt32BE(start + 5);
        }
        return HANDLED;
      case B_NOTICE:
      case B_NEGOTIATE_PROTOCOL:
        return HANDLED;
      case B_READY_FOR_QUERY: {
        if (!this.login!.authenticated) {
          serverEvents.loginFailed(this, '08P01', 'server login failed: no authentication done', false);
          return STOP;
        }
        const params = this.loginParams ?? [];
        this.loginParams = null;
        this.login = null;
        this.tx = buf[start + 5]!;
        serverEvents.loginDone(this, params);
        return this.closed ? STOP : HANDLED;
      }
      default:
        serverEvents.disconnect(this, true, `unexpected packet during login: ${String.fromCharCode(type)}`);
        return STOP;
    }
  }

  // ---- internal queries ----

  /** Send a simple Query whose results pgbun consumes itself. */
  runInternal(kind: Internal, sql: string): void {
    if (log.debugEnabled) log.conn('debug', this, `internal query: ${sql === '' ? '<empty>' : sql}`);
    this.beginInternal(kind);
    this.send(msg.query(sql));
  }

  /** The empty query: server_check_query = `<empty>`. */
  private onInternalMessage(type: number, buf: Buffer, start: number, len: number): Action {
    if (type === B_PARAMETER_STATUS) {
      this.onParameterStatus(buf, start, len, this.link);
    } else if (type === B_ERROR) {
      const f = parseErrorFields(buf, start + 5, start + len + 1);
      this.internalError = f.get('M') ?? 'error';
    } else if (type === B_COPY_IN || type === B_COPY_BOTH) {
      // an internal query must not leave the server in COPY: its state is unknown now
      serverEvents.disconnect(this, true, 'internal query started COPY');
      return STOP;
    } else if (type === B_COMMAND_COMPLETE) {
      prepared.onCommandComplete(this, null, buf, start, len, true);
    } else if (type === B_READY_FOR_QUERY) {
      const err = this.internalError;
      const kind = this.endInternal(buf[start + 5]!);
      serverEvents.internalDone(this, kind, err);
      return this.closed ? STOP : HANDLED;
    }
    return HANDLED;
  }

  /** the backend pid and key, for cancel requests sent on a separate connection */
  get hasBackendKey(): boolean {
    return this.backendKey !== null;
  }

  // ---- states ----

  /**
   * The one place a server changes state. The state decides the pool list; idle servers are
   * reused LIFO (few servers stay warm and the rest reach server_idle_timeout) unless
   * server_round_robin asks to spread the load.
   */
  changeState(st: ServerState): void {
    if (this.list !== null) (this.list as unknown as StateList<Server>).remove(this);
    this.state = st;
    const list = this.pool.serverList(st);
    if (list === null) return;
    if (st === ServerState.IDLE && !cf.server_round_robin) list.prepend(this);
    else list.append(this);
  }
}
