// A client connection (application -> pgbun): the startup phase (SSLRequest, CancelRequest,
// StartupMessage and its parameter rules), authentication, the welcome, and after login the
// per-message decisions: find a server, forward, or handle locally.
import net from 'node:net';
import { cf } from '../config/current.js';
import { splitList } from '../config/settings.js';
import { MAX_PASSWORD } from '../config/userlist.js';
import { log, type LogSubject } from '../log/logger.js';
import {
  CANCEL_REQUEST_CODE, COPY_DATA, COPY_DONE, F_BIND, F_CLOSE, F_COPY_FAIL, F_DESCRIBE, F_EXECUTE,
  F_FLUSH, F_FUNCTION_CALL, F_PARSE, F_PASSWORD, F_QUERY, F_SYNC, F_TERMINATE, GSSENC_REQUEST_CODE,
  PROTO_V2, SSL_REQUEST_CODE, TLS_HANDSHAKE_RECORD, TX_IDLE,
} from '../protocol/constants.js';
import * as msg from '../protocol/messages.js';
import { hdr2hex } from '../protocol/reader.js';
import { FORWARD, HANDLED, NEED_FULL, PacketStream, STOP, WAIT, type Action, type StreamOwner } from '../protocol/stream.js';
import { parseStartupPacket, parseOptionsParameter, parseReplicationParameter, type ReplicationMode } from '../protocol/startup.js';
import { PasswordExchange, type PasswordMethod } from '../auth/client-auth.js';
import { beginAuth } from '../auth/login.js';
import { randomSmall } from '../auth/random.js';
import { hasPeerCredentials, peerCredentials, peerLookupPending, startPeerLookup } from '../auth/peer.js';
import type { ListNode, StateList } from './list.js';
import { registry, type PgDatabase, type PgPool, type PgUser } from './objects.js';
import type { Server } from './server.js';
import { Internal } from './server.js';
import { ClientState } from './state.js';
import { APPLICATION_NAME, VarCache, trackedIndex, trackedNames } from './varcache.js';
import { nowUs } from './clock.js';
import { connIds } from './ids.js';
import * as pooler from './pooler.js';
import { forgetClientStatements, prepared, type Entry } from './prepared.js';
import { findDatabase } from './databases.js';
import { acceptClientTls, acceptDirectTls } from '../tls/client.js';
import { adminDb } from './admin-db.js';
import { usesAuthQuery } from './auth-query.js';
import { CANCEL_KEY_LEN, CANCEL_KEY_TTL, cancelKeyTtl, makeCancelKey, withCancelKeyTtl } from './cancel-key.js';
import { forwardCancel, type PeerPool } from './peering.js';
import { forwardToLoop, serveLoopCancels, type LoopCancel, type LoopCancelDone } from './worker-cancel.js';
import { multiWorker, workerSelf } from '../workers/identity.js';
import {
  Held, REFUSED, TABLE_FULL_REASON, clientConnections, clientSlot, countClientConnection, countLoggedIn,
  releaseClientSlots,
} from './limits.js';

/** clients by their cancel key (hex), for CancelRequest lookups */
const clientsByKey = new Map<string, Client>();

/**
 * The client a CancelRequest's key names. A request forwarded by a peer has a lower TTL than the
 * key that was issued (cancel-key.ts): for a key issued with peering only the TTL may differ.
 */
function findByCancelKey(key: Buffer): Client | undefined {
  const exact = clientsByKey.get(key.toString('hex'));
  if (exact !== undefined || cancelKeyTtl(key) === CANCEL_KEY_TTL) return exact;
  const c = clientsByKey.get(withCancelKeyTtl(key, CANCEL_KEY_TTL).toString('hex'));
  return c?.cancelKeyPeered === true ? c : undefined;
}

/** biggest startup-phase packet we accept (PostgreSQL's MAX_STARTUP_PACKET_LENGTH) */
const MAX_STARTUP_PACKET = 10000;
/** biggest authentication packet: a PasswordMessage with a password of MAX_PASSWORD bytes */
const MAX_AUTH_PACKET = 4 + MAX_PASSWORD + 1;

export class Client implements ListNode, StreamOwner, LogSubject {
  listPrev: ListNode | null = null;
  listNext: ListNode | null = null;
  list: StateList<ListNode> | null = null;

  readonly id: number;
  readonly ptr: string;
  state: ClientState = ClientState.LOGIN;
  socket: net.Socket;
  stream: PacketStream;
  isUnix: boolean;
  addr: string;
  port: number;
  localAddr: string;
  localPort: number;
  /** Unix-socket peer pid when known, else 0 */
  remotePid = 0;
  /** set while this client, not logged in yet, waits for a server to run auth_query on (pool/auth-query.ts) */
  authQuery: ((server: Server) => void) | null = null;
  /** TLS description for logs and SHOW CLIENTS (`TLSv1.3/...`), '' = plain */
  tlsInfo = '';
  db: PgDatabase | null = null;
  loginUser: PgUser | null = null;
  pool: PgPool | null = null;
  link: Server | null = null;
  cancelKey: Buffer | null = null;
  readonly vars = new VarCache();
  /** names from the startup packet, for the log prefix before login completes */
  dbName = '';
  userName = '';
  /** `replication` startup parameter: such a client gets a server of its own (PgBouncer 1.23+) */
  replication: ReplicationMode = 'none';
  /** a replication client's `options`, passed to its server as they are */
  private replicationOptions: string | null = null;
  /** admin console access level once logged in */
  adminLevel: 'none' | 'stats' | 'admin' = 'none';
  connectTimeUs: number;
  /** last request (client_idle_timeout, SHOW CLIENTS request_time) */
  requestTimeUs: number;
  queryStartUs = 0;
  xactStartUs = 0;
  /** when the client started waiting for a server (cl_waiting), 0 = not waiting */
  waitStartUs = 0;
  /** query_wait_notify NOTICE already sent for the current wait */
  waitNotified = false;
  closed = false;
  /** for a CancelRequest connection: the client whose query is to be cancelled */
  cancelFor: Client | null = null;
  /** for a CancelRequest forwarded to another peer: that peer's pool and the key to send it */
  peerPool: PeerPool | null = null;
  forwardKey: Buffer | null = null;
  /** cancelKey was issued with peering: it carries peer_id and a TTL */
  cancelKeyPeered = false;
  /**
   * a stand-in for a CancelRequest another event loop accepted (worker-cancel.ts): told how it
   * was closed, which that loop repeats on the real connection
   */
  onClosed: ((notify: boolean, reason: string, sqlstate: string) => void) | null = null;
  /** close without a log line */
  silent = false;
  /**
   * names whose Parse failed or was skipped after an error in a pipeline: still the client's (a
   * Bind prepares them on demand), and free to be Parsed again (prepared.ts)
   */
  unpreparedNames: Set<string> | null = null;
  /** this client's prepared statement names (transaction/statement mode, max_prepared_statements) */
  prepared: Map<string, Entry> | null = null;
  /** counted in db/user client counts (after login) */
  private counted = false;
  /** workers > 1: what this client holds in the shared counters, and where (limits.ts) */
  sharedHeld = 0;
  sharedDbSlot = -1;
  sharedUserSlot = -1;

  // login phase
  private loginBuf: Buffer | null = null;
  private startupDone = false;
  private loginPaused = false;
  private exchange: PasswordExchange | null = null;
  loggedIn = false;

  /**
   * `standIn`: the stand-in for a CancelRequest another event loop accepted (cancelForLoop): that
   * loop counts the connection, so this one is counted nowhere
   */
  constructor(sock: net.Socket, isUnix: boolean, readonly listenerPort: number, private readonly standIn = false) {
    this.id = connIds.next();
    this.ptr = connIds.ptr(this.id);
    this.socket = sock;
    this.isUnix = isUnix;
    this.addr = isUnix ? 'unix' : sock.remoteAddress ?? '';
    if (this.addr.startsWith('::ffff:')) this.addr = this.addr.slice(7);
    this.port = isUnix ? listenerPort : sock.remotePort ?? 0;
    this.localAddr = isUnix ? 'unix' : sock.localAddress ?? '';
    if (this.localAddr.startsWith('::ffff:')) this.localAddr = this.localAddr.slice(7);
    this.localPort = isUnix ? listenerPort : sock.localPort ?? 0;
    this.connectTimeUs = this.requestTimeUs = nowUs();
    this.stream = new PacketStream(sock, this);
    this.stream.maxPacket = cf.max_packet_size;
    if (!standIn) {
      registry.clientCount++;
      countClientConnection(this);
    }
    this.changeState(ClientState.LOGIN);
    this.attach(sock);
    // the peer's pid, for unix(<pid>) in its log lines (startLogin waits for it)
    if (isUnix && !standIn) startPeerLookup(this);
  }

  /** (Re)attach socket events; TLS replaces the socket with the encrypted one. */
  private readonly onData = (chunk: Buffer): void => {
    if (this.loggedIn) {
      // total_received: bytes of pooled clients, not of console sessions (as PgBouncer)
      if (this.pool !== null && !this.pool.db.admin) this.pool.stats.clientBytes += chunk.length;
      this.stream.feed(chunk);
    } else {
      this.onLoginData(chunk);
    }
  };

  private readonly onEof = (): void => {
    // a connection that closes before sending anything (port probes) is not worth a log line
    if (!this.startupDone && this.loginBuf === null && this.state === ClientState.LOGIN) this.silent = true;
    pooler.disconnectClient(this, false, 'client unexpected eof');
  };

  private attach(sock: net.Socket): void {
    this.socket = sock;
    sock.on('data', this.onData);
    sock.on('end', this.onEof);
    sock.on('error', this.onEof);
    sock.on('close', this.onEof);
  }

  /**
   * Continue on another socket (the TLS socket wrapping the accepted one). Only before login:
   * the message stream is made anew for it.
   */
  replaceSocket(sock: net.Socket): void {
    const old = this.socket;
    old.off('data', this.onData);
    old.off('end', this.onEof);
    old.off('error', this.onEof);
    old.off('close', this.onEof);
    old.on('error', () => { /* the TLS socket reports */ });
    this.stream = new PacketStream(sock, this);
    this.stream.maxPacket = cf.max_packet_size;
    this.attach(sock);
  }

  /** Bytes received in the login phase and not consumed yet (plaintext after SSLRequest). */
  get pendingLoginBytes(): number {
    return this.loginBuf === null ? 0 : this.loginBuf.length;
  }

  logPrefix(): string {
    const a = this.isUnix ? `unix(${this.remotePid}):${this.port}` : this.addr.includes(':') ? `[${this.addr}]:${this.port}` : `${this.addr}:${this.port}`;
    return `C-${this.ptr}: ${this.dbName || '(nodb)'}/${this.userName || '(nouser)'}@${a}`;
  }

  ageSeconds(): number {
    return Math.floor((nowUs() - this.connectTimeUs) / 1e6);
  }

  /**
   * The one place a client changes state. The state decides the list: the global login list,
   * one of its pool's lists, or none (FREE).
   */
  changeState(st: ClientState): void {
    if (this.list !== null) (this.list as unknown as StateList<Client>).remove(this);
    this.state = st;
    const owner = this.pool ?? this.peerPool;
    const list = st === ClientState.LOGIN ? registry.loginClients : owner === null ? null : owner.clientList(st);
    if (list !== null) list.append(this);
  }

  /** Write a pgbun-made message, after whatever the server stream queued for this client. */
  send(b: Buffer): void {
    if (this.link !== null) this.link.stream.flush();
    if (!this.socket.destroyed) this.socket.write(b);
  }

  /** AuthenticationSASLFinal not written yet: it precedes whatever the client gets next. */
  private authFinal: Buffer | null = null;

  flushAuthFinal(): void {
    if (this.authFinal !== null) {
      this.socket.write(this.authFinal);
      this.authFinal = null;
    }
  }

  /** Tell the client why and close: a FATAL ErrorResponse, no ReadyForQuery after it, as PostgreSQL ends a session. */
  fail(reason: string, sqlstate = '08P01'): void {
    this.flushAuthFinal();
    pooler.disconnectClient(this, true, reason, sqlstate);
  }

  /** Close without a message to the client (e.g. a TLS peer that was refused), logging why. */
  drop(reason: string): void {
    pooler.disconnectClient(this, false, reason);
  }

  /** Final cleanup, called once by pooler.disconnectClient. */
  release(lastMessage: Buffer | null): void {
    this.stream.stop();
    this.changeState(ClientState.FREE);
    if (!this.standIn) registry.clientCount--;
    if (this.counted) {
      this.counted = false;
      if (this.db !== null) this.db.clientCount--;
      if (this.loginUser !== null) this.loginUser.clientCount--;
    }
    if (this.sharedHeld !== 0) releaseClientSlots(this);
    if (this.cancelKey !== null) clientsByKey.delete(this.cancelKey.toString('hex'));
    forgetClientStatements(this);
    const sock = this.socket;
    if (!sock.destroyed) {
      if (lastMessage !== null && sock.writable) sock.end(lastMessage, () => sock.destroy());
      else sock.destroy();
    }
  }

  // ---------------------------------------------------------------- startup phase

  private onLoginData(chunk: Buffer): void {
    this.loginBuf = this.loginBuf === null ? chunk : Buffer.concat([this.loginBuf, chunk]);
    this.processLogin();
    // Bytes that cannot be processed now (login paused for auth_query or peer credentials, or
    // the pool's first server login still running) stay in the kernel: stop reading until then,
    // as PgBouncer does, instead of buffering whatever the client sends. Only with bytes in hand:
    // during a TLS handshake the socket must keep reading.
    if (this.loginBuf !== null && !this.closed && (this.loginPaused || this.state !== ClientState.LOGIN)) {
      this.socket.pause();
    }
  }

  /** Pause login processing (e.g. while the TLS handshake or auth_query runs). */
  pauseLogin(): void {
    this.loginPaused = true;
  }

  resumeLogin(): void {
    this.loginPaused = false;
    this.processLogin();
    if (!this.closed && !this.loggedIn && !this.loginPaused && this.state === ClientState.LOGIN) this.socket.resume();
  }

  private processLogin(): void {
    while (this.loginBuf !== null && !this.closed && !this.loggedIn && !this.loginPaused &&
      this.state === ClientState.LOGIN) {
      const b = this.loginBuf;
      let total: number;
      if (b[0] === TLS_HANDSHAKE_RECORD && !this.startupDone && this.tlsInfo === '') {
        // a TLS ClientHello without SSLRequest: PostgreSQL 17's sslnegotiation=direct
        this.loginBuf = null;
        if (!acceptDirectTls(this, b)) this.fail(`bad packet header: '${hdr2hex(b, 0, b.length)}'`);
        return;
      }
      if (b[0] !== 0 || this.startupDone) {
        // a typed packet: only PasswordMessage belongs here
        if (b.length < 5) return;
        const type = b[0]!;
        const len = b.readInt32BE(1);
        if (!this.startupDone) {
          // PgBouncer reads a non-zero first byte as a message type
          if (len < 4 || len > MAX_STARTUP_PACKET) this.fail(`bad packet header: '${hdr2hex(b, 0, b.length)}'`);
          else if (type === F_PASSWORD) this.fail('client password pkt before startup packet');
          else pooler.disconnectClient(this, false, 'bad packet');
          return;
        }
        if (type === 0) {
          this.fail('client re-sent startup pkt');
          return;
        }
        if (len < 4 || len > MAX_AUTH_PACKET) {
          this.fail(`bad packet header: '${hdr2hex(b, 0, b.length)}'`);
          return;
        }
        total = len + 1;
        if (b.length < total) return;
        this.consume(total);
        if (type !== F_PASSWORD) {
          this.fail('unknown pkt');
          return;
        }
        this.onPasswordPacket(b, 5, total);
        continue;
      }
      if (b.length < 8) return;
      const len = b.readInt32BE(0);
      if (len < 8 || len > MAX_STARTUP_PACKET) {
        this.fail(`bad packet header: '${hdr2hex(b, 0, b.length)}'`);
        return;
      }
      // the rest of the packet may come in later reads (PgBouncer waits for it since 1.23);
      // a client that never sends it is closed by client_login_timeout
      if (b.length < len) return;
      this.consume(len);
      this.onStartupPacket(b, len);
    }
  }

  private consume(n: number): void {
    const b = this.loginBuf!;
    this.loginBuf = b.length > n ? b.subarray(n) : null;
  }

  private onStartupPacket(b: Buffer, len: number): void {
    const code = b.readInt32BE(4);
    if (code === CANCEL_REQUEST_CODE) {
      this.onCancelRequest(b, len);
      return;
    }
    if (code === SSL_REQUEST_CODE) {
      // anything sent before our one-byte answer would be read as if it had come through TLS
      // (CVE-2021-23214), and with TLS off a client that does not wait for the answer is
      // broken: PgBouncer refuses both
      if (this.pendingLoginBytes > 0) {
        this.fail('received unencrypted data after SSL request');
        return;
      }
      if (acceptClientTls(this)) return;
      this.socket.write('N');
      return;
    }
    if (code === GSSENC_REQUEST_CODE) {
      this.socket.write('N');
      return;
    }
    if (code >> 16 === PROTO_V2 >> 16) {
      this.fail('old V2 protocol not supported');
      return;
    }
    if (code >> 16 !== 3) {
      this.fail(`bad packet header: '${hdr2hex(b, 0, len)}'`);
      return;
    }
    if (cf.client_tls_sslmode !== 'disable' && !this.isUnix && this.tlsInfo === '' &&
      ['require', 'verify-ca', 'verify-full'].includes(cf.client_tls_sslmode)) {
      this.fail('SSL required');
      return;
    }
    const sp = parseStartupPacket(b, 8, len);
    if (typeof sp === 'string') {
      this.fail(sp);
      return;
    }
    this.startupDone = true;
    const negotiate: string[] = [];
    const ignore = splitList(cf.ignore_startup_parameters).map((s) => s.toLowerCase());
    let user: string | null = null;
    let database: string | null = null;
    let options: string | null = null;
    for (const [k, v] of sp.params) {
      if (k === 'user') {
        user = v;
      } else if (k === 'database') {
        database = v;
      } else if (k === 'replication') {
        const mode = parseReplicationParameter(v);
        if (mode === null) {
          this.fail(`invalid value for parameter "replication": "${v}"`);
          return;
        }
        this.replication = mode;
      } else if (k === 'options') {
        options = v;
      } else if (k.startsWith('_pq_.')) {
        negotiate.push(k);
      } else {
        const idx = trackedIndex(k);
        if (idx >= 0) this.vars.set(idx, v);
        else if (!ignore.includes(k.toLowerCase())) {
          this.fail(`unsupported startup parameter: ${k}`);
          return;
        }
      }
    }
    if (options !== null) {
      if (this.replication !== 'none') {
        // the server is this client's alone: whatever it sets there concerns nobody else, and
        // PostgreSQL itself judges it
        this.replicationOptions = options;
      } else {
        const err = this.applyOptions(options, ignore);
        if (err !== null) {
          this.fail(err);
          return;
        }
      }
    }
    if (user === null || user === '') {
      this.fail('no username supplied');
      return;
    }
    if (Buffer.byteLength(user) >= 128) {
      this.fail('username too long');
      return;
    }
    if (database === null || database === '') database = user;
    this.userName = user;
    this.dbName = database;
    if ((code & 0xffff) > 0 || negotiate.length > 0) this.socket.write(msg.negotiateProtocolVersion(0, negotiate));
    if (cf.application_name_add_host) {
      const app = this.vars.get(APPLICATION_NAME) ?? '';
      this.vars.set(APPLICATION_NAME, `${app} - ${this.addr}:${this.port}`);
    }
    this.startLogin(user, database);
  }

  /** `options`: only `-c key=value` / `--key=value` of tracked or ignored parameters. */
  private applyOptions(value: string, ignore: string[]): string | null {
    const ignoreUnknown = ignore.includes('options');
    const items = parseOptionsParameter(value);
    if (items === null) {
      return ignoreUnknown ? null
        : "unsupported options startup parameter: only '-c config=val' and '--config=val' are allowed";
    }
    for (const [k, v] of items) {
      const idx = trackedIndex(k);
      if (idx >= 0) this.vars.set(idx, v);
      else if (!ignoreUnknown && !ignore.includes(k.toLowerCase())) return `unsupported startup parameter in options: ${k}`;
    }
    return null;
  }

  private onCancelRequest(b: Buffer, len: number): void {
    if (len !== 16) {
      this.fail(`bad packet header: '${hdr2hex(b, 0, len)}'`);
      return;
    }
    const key = b.subarray(8, 8 + CANCEL_KEY_LEN);
    const target = findByCancelKey(key);
    if (target === undefined && (forwardCancel(this, key) || forwardToLoop(this, key))) return;
    this.cancelQueryOf(target);
  }

  /** Cancel `target`'s query for this CancelRequest (this connection, or a stand-in for another loop's). */
  private cancelQueryOf(target: Client | undefined): void {
    if (target === undefined || target.pool === null) {
      // logged once, by the close, as PgBouncer does
      pooler.disconnectClient(this, false, 'failed cancel request');
      return;
    }
    this.dbName = target.dbName;
    this.userName = target.userName;
    if (target.db?.admin) {
      adminDb().cancel(target);
      pooler.disconnectClient(this, false, 'cancel request for console client');
      return;
    }
    this.pool = target.pool;
    pooler.startCancel(this, target);
  }

  // ---------------------------------------------------------------- authentication

  private startLogin(userName: string, dbName: string): void {
    // the console's same-uid check for `pgbouncer` over the Unix socket needs the peer's uid,
    // which a helper process reads, and every Unix-socket client's log lines its pid: wait for
    // them (cached from then on) instead of blocking the event loop for every other client
    const peerWait = !this.isUnix || hasPeerCredentials(this) ? null
      : dbName === 'pgbouncer' && userName === 'pgbouncer' ? peerCredentials(this) : peerLookupPending(this);
    if (peerWait !== null) {
      this.pauseLogin();
      void peerWait.then(() => {
        if (this.closed) return;
        this.loginPaused = false;
        this.startLogin(userName, dbName);
        if (!this.loginPaused) this.resumeLogin();
      });
      return;
    }
    const isAdminDb = dbName === 'pgbouncer';
    const db = isAdminDb ? registry.databases.get('pgbouncer')! : findDatabase(dbName);
    this.db = db;
    const user = registry.getUser(userName) ?? null;
    if (cf.log_connections) {
      log.conn('log', this, `login attempt: db=${dbName} user=${userName} tls=${this.tlsInfo || 'no'} replication=${this.replication === 'none' ? 'no' : this.replication === 'physical' ? 'yes' : 'database'}`);
    }
    if (!isAdminDb && clientConnections(registry.clientCount) > cf.max_client_conn) {
      this.fail('no more connections allowed (max_client_conn)');
      return;
    }
    if (isAdminDb) {
      // a user that auth_query will look up is not known yet: checked once it is (login.ts)
      const r = adminDb().checkAccess(this, userName, usesAuthQuery(db!, user) ? null : user);
      if (r === 'denied') return;
      // console clients count against the client limits too, except admin_users (PgBouncer)
      if (this.adminLevel !== 'admin' && !this.withinClientLimits(db!, user)) return;
      if (r === 'trusted') {
        this.loginUser = user ?? registry.addUser(userName);
        this.afterAuth();
        return;
      }
    } else if (db !== null && !this.withinClientLimits(db, user)) {
      return;
    }
    this.loginUser = user;
    beginAuth(this, userName, user, isAdminDb);
  }

  /** max_db_client_connections and max_user_client_connections; false: the client was failed. */
  private withinClientLimits(db: PgDatabase, user: PgUser | null): boolean {
    // with workers > 1 the room is taken here, over all loops (limits.ts); release() gives it back
    const r = clientSlot(this, Held.DB, db, db.maxDbClientConnections);
    if (r < 0) return this.refuseClient(r, 'max_db_client_connections');
    if (user !== null) {
      const u = clientSlot(this, Held.USER, user, user.maxUserClientConnections);
      if (u < 0) return this.refuseClient(u, 'max_user_client_connections');
    }
    return true;
  }

  private refuseClient(r: number, limit: string): false {
    this.fail(r === REFUSED ? `client connections exceeded (${limit})` : TABLE_FULL_REASON);
    return false;
  }

  /** Logged in: counted in its database's and user's client connections (SHOW DATABASES/USERS). */
  private countIn(db: PgDatabase): void {
    db.clientCount++;
    if (this.loginUser !== null) this.loginUser.clientCount++;
    this.counted = true;
    countLoggedIn(this, db, this.loginUser);
  }

  /** Start a password exchange; `user` null = unknown (mock exchange that fails). */
  startPassword(method: PasswordMethod, userName: string, user: PgUser | null): void {
    this.exchange = new PasswordExchange(method, userName, user?.secret ?? (user !== null ? { kind: 'plain', password: '' } : null), cf.scram_iterations);
    this.socket.write(this.exchange.challenge());
  }

  private onPasswordPacket(b: Buffer, off: number, end: number): void {
    const ex = this.exchange;
    if (ex === null) {
      this.fail('unknown pkt');
      return;
    }
    const step = ex.onPassword(b, off, end);
    if (step.kind === 'reply') {
      this.socket.write(step.message);
      return;
    }
    this.exchange = null;
    if (step.kind === 'fail') {
      if (step.log) log.conn('debug', this, step.log);
      this.fail(step.reason);
      return;
    }
    if (step.passthrough !== null && this.loginUser !== null) {
      this.loginUser.scramClientKey = step.passthrough.clientKey;
      this.loginUser.scramServerKey = step.passthrough.serverKey;
    }
    // AuthenticationSASLFinal goes out with the welcome (one write instead of two)
    this.authFinal = step.final;
    this.afterAuth();
  }

  /** Authenticated: now the database may be revealed as unknown or disabled. */
  afterAuth(): void {
    const db = this.db;
    if (db === null) {
      this.fail(`no such database: ${this.dbName}`);
      return;
    }
    if (db.admin) {
      this.countIn(db);
      adminDb().welcome(this);
      return;
    }
    if (db.disabled) {
      this.fail(`database "${db.name}" is disabled`);
      return;
    }
    if (pooler.poolerState.shuttingDown) {
      this.fail('pooler is shutting down');
      return;
    }
    const poolUser = db.forcedUser ?? this.loginUser!;
    this.pool = registry.getPool(db, poolUser);
    this.countIn(db);
    if (this.replication !== 'none') {
      // welcomed by its own server once that has logged in (finishReplicationLogin)
      this.flushAuthFinal();
      this.waitStartUs = nowUs();
      this.changeState(ClientState.WAITING_LOGIN);
      pooler.launchReplicationServers(this.pool);
      return;
    }
    this.finishLogin();
  }

  /** Waiting for a server of its own: a replication client that has none yet. */
  get wantsReplicationServer(): boolean {
    return this.replication !== 'none' && this.state === ClientState.WAITING_LOGIN && this.link === null && !this.closed;
  }

  /**
   * What a replication client's server is started with besides database and user: the
   * replication mode, the client's tracked parameters and its `options` (PgBouncer 1.23+).
   */
  replicationStartupParams(): Array<[string, string]> {
    const params: Array<[string, string]> = [['replication', this.replication === 'logical' ? 'database' : 'true']];
    for (let i = 0; i < trackedNames.length; i++) {
      const v = this.vars.get(i);
      if (v !== null) params.push([trackedNames[i]!, v]);
    }
    if (this.replicationOptions !== null) params.push(['options', this.replicationOptions]);
    return params;
  }

  /**
   * A replication client's own server logged in: the client is welcomed with that server's
   * ParameterStatus set (not the pool's cached one: the startup parameters made it), and the
   * link already made carries its messages from now on.
   */
  finishReplicationLogin(params: Array<[string, string]>, serverVars: VarCache): void {
    this.vars.copyFrom(serverVars);
    const parts: Buffer[] = [msg.AUTH_OK_MSG];
    for (const [k, v] of params) parts.push(msg.parameterStatus(k, v));
    this.sendWelcome(parts);
  }

  /** Send the welcome if the pool has one; else wait for the pool's first server login. */
  finishLogin(): void {
    const pool = this.pool!;
    if (pool.welcome === null || pool.welcomeVars === null) {
      this.flushAuthFinal();
      if (this.state !== ClientState.WAITING_LOGIN) {
        this.waitStartUs = nowUs();
        this.changeState(ClientState.WAITING_LOGIN);
      }
      pooler.launchNewConnection(pool);
      return;
    }
    this.vars.fillUnset(pool.welcomeVars);
    const parts: Buffer[] = [msg.AUTH_OK_MSG];
    for (const [k, v] of pool.welcome) {
      if (trackedIndex(k) < 0) parts.push(msg.parameterStatus(k, v));
    }
    for (let i = 0; i < trackedNames.length; i++) {
      const v = this.vars.get(i);
      if (v !== null) parts.push(msg.parameterStatus(trackedNames[i]!, v));
    }
    this.sendWelcome(parts);
  }

  /** The end of every welcome: pgbun's own cancel key, login_notify_message, ReadyForQuery. */
  private sendWelcome(parts: Buffer[]): void {
    const pool = this.pool!;
    parts.push(msg.backendKeyData(this.newCancelKey()));
    if (cf.login_notify_message) parts.push(msg.notice(cf.login_notify_message));
    parts.push(msg.readyForQuery('I'));
    // the wait for the pool's first server login is wait time too, as in PgBouncer
    if (this.state === ClientState.WAITING_LOGIN) this.endWait(nowUs());
    this.waitStartUs = 0;
    this.changeState(ClientState.ACTIVE);
    pool.stats.clientLoginCount++;
    this.enterPooling(Buffer.concat(parts));
  }

  /** The wait for a server is over: SHOW STATS' wait_time and the wait histogram count it. */
  endWait(now: number): void {
    if (this.waitStartUs === 0) return;
    const pool = this.pool!;
    pool.stats.waitTime += now - this.waitStartUs;
    pool.latency.wait.observe(now - this.waitStartUs);
    this.waitStartUs = 0;
  }

  /** Switch from the login parser to the message stream. */
  enterPooling(welcome: Buffer): void {
    this.loggedIn = true;
    this.requestTimeUs = nowUs();
    const fin = this.authFinal;
    this.authFinal = null;
    this.socket.write(fin === null ? welcome : Buffer.concat([fin, welcome]));
    const rest = this.loginBuf;
    this.loginBuf = null;
    if (rest !== null) {
      // what a client sent ahead of the welcome counts as it would have on arrival
      if (this.pool !== null && !this.pool.db.admin) this.pool.stats.clientBytes += rest.length;
      this.stream.feed(rest);
    }
    // reading may have stopped while the login waited (onLoginData); the stream pauses it
    // again itself when it has to wait
    if (!this.closed && !this.stream.isWaiting) this.socket.resume();
  }

  /**
   * A CancelRequest accepted by another event loop for a key of this one (worker-cancel.ts): run
   * it as if it had come here, through a stand-in with the requester's addresses, which is never
   * written to and not counted as a connection; resolves with how the stand-in was closed.
   */
  static cancelForLoop(req: LoopCancel): Promise<LoopCancelDone> {
    const c = new Client(new net.Socket(), req.isUnix, req.listenerPort, true);
    c.silent = true;
    Object.assign(c, req.addresses);
    return new Promise((resolve) => {
      c.onClosed = (notify, reason, sqlstate) => resolve({ notify, reason, sqlstate, dbName: c.dbName, userName: c.userName });
      c.cancelQueryOf(findByCancelKey(Buffer.from(req.key)));
    });
  }

  /** PgBouncer's own BackendKeyData (cancel-key.ts): random, with peer_id and TTL when peering. */
  newCancelKey(): Buffer {
    const peerId = cf.peer_id;
    const worker = multiWorker() ? workerSelf.index : null;
    let key: Buffer;
    let hex: string;
    do {
      key = makeCancelKey(randomSmall(CANCEL_KEY_LEN), peerId, worker);
      hex = key.toString('hex');
    } while (clientsByKey.has(hex));
    this.cancelKey = key;
    this.cancelKeyPeered = peerId > 0;
    clientsByKey.set(hex, this);
    return key;
  }

  // ---------------------------------------------------------------- after login

  onBadHeader(buf: Buffer, start: number, end: number): void {
    this.fail(`bad packet header: '${hdr2hex(buf, start, end)}'`);
  }

  onForwardBoundary(): void {
    pooler.onClientBoundary(this);
  }

  onMessage(type: number, len: number, buf: Buffer, start: number, complete: boolean): Action {
    switch (type) {
      case F_QUERY:
        if (cf.disable_pqexec) {
          this.fail('PQexec disallowed');
          return STOP;
        }
        break;
      case F_TERMINATE:
        // counted with its chunk, but PgBouncer leaves a Terminate out of total_received
        if (!this.db!.admin) this.pool!.stats.clientBytes -= len + 1;
        pooler.disconnectClient(this, false, 'client close request');
        return STOP;
      case COPY_DATA:
      case COPY_DONE:
      case F_COPY_FAIL:
        // the console refuses them; late COPY messages after the server was released are dropped
        if (this.db!.admin) break;
        if (this.link === null) return HANDLED;
        if (type !== COPY_DATA) this.link.noteCopyEnd();
        return FORWARD;
      case F_FUNCTION_CALL:
      case F_SYNC:
      case F_FLUSH:
      case F_PARSE:
      case F_BIND:
      case F_DESCRIBE:
      case F_EXECUTE:
      case F_CLOSE:
        break;
      default:
        this.fail('unknown pkt');
        return STOP;
    }
    if (this.db!.admin) return adminDb().onMessage(this, type, len, buf, start, complete);
    let server = this.link;
    if (server === null) {
      // an unnamed Parse needs no answer of pgbun's: it goes to a server, streamed if large
      if ((type === F_PARSE || type === F_CLOSE || type === F_SYNC || type === F_FLUSH) && prepared.active(this.pool!) &&
        !(type === F_PARSE && prepared.unnamedParseInHand(buf, start))) {
        if (!complete) return NEED_FULL;
        const a = prepared.onUnlinkedClientMessage(this, type, len, buf, start);
        if (a !== null) return a;
      }
      if (!pooler.findServer(this)) return this.closed ? STOP : WAIT;
      server = this.link!;
    } else if (server.internal !== Internal.NONE) {
      return WAIT;
    }
    const rewrite = server.rewriting;
    // a Bind is rewritten from its head (its names) and its parameters streamed, an unnamed
    // Parse is streamed as it is; a named Parse (pgbun keeps its text for other servers),
    // Describe, Close, and a Bind whose names are not in hand yet are read whole first
    if (rewrite && !complete && (type === F_PARSE && !prepared.unnamedParseInHand(buf, start) ||
      type === F_DESCRIBE || type === F_CLOSE || type === F_BIND && !prepared.bindHeadInHand(buf, start))) {
      return NEED_FULL;
    }
    // a message pgbun refuses itself (an unknown or reused statement name) never reaches the
    // server: the client is failed, and the server owes nothing for it
    const act = rewrite ? prepared.onClientMessage(this, server, type, len, buf, start, complete) : FORWARD;
    if (act === STOP) return STOP;
    const now = nowUs();
    // the server counts what it owes; the client keeps its own clocks for SHOW STATS
    if (server.noteClientMessage(type, now, this.queryStartUs === 0)) {
      this.queryStartUs = now;
      if (server.txStatus === TX_IDLE && this.xactStartUs === 0) this.xactStartUs = now;
    }
    this.requestTimeUs = now;
    return act;
  }
}

serveLoopCancels((req) => Client.cancelForLoop(req));
