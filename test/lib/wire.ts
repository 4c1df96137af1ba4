// A tiny raw PostgreSQL protocol-3 client for tests that check exact bytes, error fields and
// connection closes: real drivers hide those. It sends whatever it is given (malformed packets
// included) and reads whole messages.
//
// md5 and SCRAM-SHA-256 client steps are implemented here, independently of src/auth, on
// purpose: a test that logs in with the same code the server side was built from would pass
// even if both shared a mistake. harness.test.ts proves both against a real PostgreSQL.

import * as crypto from 'node:crypto';
import * as net from 'node:net';

export const PROTOCOL_3 = 196608; // 3.0
export const SSL_REQUEST_CODE = 80877103;
export const GSSENC_REQUEST_CODE = 80877104;
export const CANCEL_REQUEST_CODE = 80877102;

// ---------------------------------------------------------------------------------------------
// Builders

const cstr = (s: string): Buffer => Buffer.concat([Buffer.from(s, 'utf8'), Buffer.from([0])]);

/** A typed message: type byte, int32 length (incl. itself), body. */
export function message(type: string, body: Buffer | string = Buffer.alloc(0)): Buffer {
  const b = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  const head = Buffer.alloc(5);
  head.write(type, 0, 1, 'latin1');
  head.writeInt32BE(b.length + 4, 1);
  return Buffer.concat([head, b]);
}

/** An untyped startup-phase packet: int32 length, int32 code, rest. */
export function startupPacket(code: number, rest: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(8);
  head.writeInt32BE(8 + rest.length, 0);
  head.writeInt32BE(code, 4);
  return Buffer.concat([head, rest]);
}

/** StartupMessage with the given parameters (insertion order kept), protocol 3.0 by default. */
export function startupMessage(params: Record<string, string>, version = PROTOCOL_3): Buffer {
  const parts: Buffer[] = [];
  for (const [k, v] of Object.entries(params)) parts.push(cstr(k), cstr(v));
  parts.push(Buffer.from([0]));
  return startupPacket(version, Buffer.concat(parts));
}

export const sslRequest = (): Buffer => startupPacket(SSL_REQUEST_CODE);
export const gssEncRequest = (): Buffer => startupPacket(GSSENC_REQUEST_CODE);

export function cancelRequest(pid: number, secret: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeInt32BE(pid, 0);
  b.writeInt32BE(secret, 4);
  return startupPacket(CANCEL_REQUEST_CODE, b);
}

export const query = (sql: string): Buffer => message('Q', cstr(sql));
export const terminate = (): Buffer => message('X');
export const sync = (): Buffer => message('S');
export const flush = (): Buffer => message('H');

/** PasswordMessage: a cleartext or md5 password (NUL-terminated), or raw SASL bytes as Buffer. */
export function passwordMessage(pw: string | Buffer): Buffer {
  return message('p', typeof pw === 'string' ? cstr(pw) : pw);
}

export function saslInitialResponse(mechanism: string, data: Buffer | string): Buffer {
  const d = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  const len = Buffer.alloc(4);
  len.writeInt32BE(d.length, 0);
  return message('p', Buffer.concat([cstr(mechanism), len, d]));
}

export function saslResponse(data: Buffer | string): Buffer {
  return message('p', typeof data === 'string' ? Buffer.from(data, 'utf8') : data);
}

/** Parse (extended protocol). paramTypes are OIDs (0 = unspecified). */
export function parseMessage(name: string, sql: string, paramTypes: number[] = []): Buffer {
  const n = Buffer.alloc(2 + 4 * paramTypes.length);
  n.writeInt16BE(paramTypes.length, 0);
  paramTypes.forEach((t, i) => n.writeInt32BE(t, 2 + 4 * i));
  return message('P', Buffer.concat([cstr(name), cstr(sql), n]));
}

/** Bind with text parameters (null = SQL NULL) and text results. */
export function bindMessage(portal: string, statement: string, params: Array<string | null> = []): Buffer {
  const parts: Buffer[] = [cstr(portal), cstr(statement)];
  const i16 = (v: number): Buffer => {
    const b = Buffer.alloc(2);
    b.writeInt16BE(v, 0);
    return b;
  };
  parts.push(i16(0), i16(params.length));
  for (const p of params) {
    const len = Buffer.alloc(4);
    if (p === null) {
      len.writeInt32BE(-1, 0);
      parts.push(len);
    } else {
      const v = Buffer.from(p, 'utf8');
      len.writeInt32BE(v.length, 0);
      parts.push(len, v);
    }
  }
  parts.push(i16(0));
  return message('B', Buffer.concat(parts));
}

export const describeMessage = (kind: 'S' | 'P', name: string): Buffer => message('D', Buffer.concat([Buffer.from(kind), cstr(name)]));

export function executeMessage(portal = '', maxRows = 0): Buffer {
  const n = Buffer.alloc(4);
  n.writeInt32BE(maxRows, 0);
  return message('E', Buffer.concat([cstr(portal), n]));
}

export const closeMessage = (kind: 'S' | 'P', name: string): Buffer => message('C', Buffer.concat([Buffer.from(kind), cstr(name)]));

// ---------------------------------------------------------------------------------------------
// Parsing

export interface WireMessage {
  /** type byte as a character ('R', 'E', 'Z', ...) */
  type: string;
  /** the body, without type and length */
  body: Buffer;
}

/** An ErrorResponse/NoticeResponse: S (severity), C (SQLSTATE), M (message) and all fields by code. */
export interface PgError {
  S: string;
  C: string;
  M: string;
  /** every field, keyed by its one-letter code (S, V, C, M, D, H, P, W, F, L, R, ...) */
  fields: Record<string, string>;
}

export function parseErrorFields(body: Buffer): PgError {
  const fields: Record<string, string> = {};
  let i = 0;
  while (i < body.length && body[i] !== 0) {
    const code = String.fromCharCode(body[i]);
    const end = body.indexOf(0, i + 1);
    if (end < 0) break;
    fields[code] = body.toString('utf8', i + 1, end);
    i = end + 1;
  }
  return { S: fields.S ?? '', C: fields.C ?? '', M: fields.M ?? '', fields };
}

/** Thrown when the server answers with an ErrorResponse where success was expected. */
export class PgServerError extends Error {
  constructor(readonly error: PgError) {
    super(`${error.S}: ${error.M} (SQLSTATE ${error.C})`);
  }
}

export class WireTimeoutError extends Error {}
export class WireClosedError extends Error {}

/** Authentication request codes ('R' messages). */
export const AUTH = { OK: 0, CLEARTEXT: 3, MD5: 5, SASL: 10, SASL_CONTINUE: 11, SASL_FINAL: 12 } as const;

export function readCStrings(body: Buffer, start = 0): string[] {
  const out: string[] = [];
  let i = start;
  while (i < body.length) {
    const end = body.indexOf(0, i);
    if (end < 0) break;
    out.push(body.toString('utf8', i, end));
    i = end + 1;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Password helpers

const md5hex = (s: string | Buffer): string => crypto.createHash('md5').update(s).digest('hex');

/** 'md5' + md5(md5(password + user) + salt): the answer to AuthenticationMD5Password. */
export function md5ClientResponse(password: string, user: string, salt: Buffer): string {
  return 'md5' + md5hex(Buffer.concat([Buffer.from(md5hex(password + user), 'utf8'), salt]));
}

/** The md5 secret PostgreSQL stores and userlist.txt may hold: 'md5' + md5(password + user). */
export function md5Secret(password: string, user: string): string {
  return 'md5' + md5hex(password + user);
}

const hmac = (key: Buffer, data: string | Buffer): Buffer => crypto.createHmac('sha256', key).update(data).digest();
const sha256 = (data: Buffer): Buffer => crypto.createHash('sha256').update(data).digest();

/**
 * Client side of SCRAM-SHA-256 (RFC 5802/7677, no channel binding) as libpq does it: empty
 * username in the message (PostgreSQL uses the startup user). Passwords are used as given
 * (no SASLprep: keep test passwords ASCII).
 */
export class ScramClient {
  readonly nonce: string;
  private clientFirstBare = '';
  private serverSignature: Buffer | null = null;

  constructor(private readonly opts: { password: string; nonce?: string }) {
    this.nonce = opts.nonce ?? crypto.randomBytes(18).toString('base64');
  }

  clientFirst(): string {
    this.clientFirstBare = `n=,r=${this.nonce}`;
    return `n,,${this.clientFirstBare}`;
  }

  /** Takes server-first-message, returns client-final-message. */
  onServerFirst(serverFirst: string): string {
    const attrs = Object.fromEntries(serverFirst.split(',').map((kv) => [kv[0], kv.slice(2)]));
    const r = attrs.r ?? '';
    const salt = Buffer.from(attrs.s ?? '', 'base64');
    const iterations = Number(attrs.i);
    if (!r.startsWith(this.nonce) || r.length <= this.nonce.length) throw new Error(`SCRAM: bad server nonce in ${serverFirst}`);
    if (!Number.isInteger(iterations) || iterations < 1) throw new Error(`SCRAM: bad iteration count in ${serverFirst}`);
    const salted = crypto.pbkdf2Sync(this.opts.password, salt, iterations, 32, 'sha256');
    const clientKey = hmac(salted, 'Client Key');
    const storedKey = sha256(clientKey);
    const finalWithoutProof = `c=biws,r=${r}`;
    const authMessage = `${this.clientFirstBare},${serverFirst},${finalWithoutProof}`;
    const clientSignature = hmac(storedKey, authMessage);
    const proof = Buffer.alloc(32);
    for (let i = 0; i < 32; i++) proof[i] = clientKey[i] ^ clientSignature[i];
    this.serverSignature = hmac(hmac(salted, 'Server Key'), authMessage);
    return `${finalWithoutProof},p=${proof.toString('base64')}`;
  }

  /** Checks server-final-message; throws on a server error or a wrong signature. */
  verifyServerFinal(serverFinal: string): void {
    if (serverFinal.startsWith('e=')) throw new Error(`SCRAM: server error ${serverFinal.slice(2)}`);
    if (!this.serverSignature || !serverFinal.startsWith('v=')) throw new Error(`SCRAM: unexpected server-final ${serverFinal}`);
    const got = Buffer.from(serverFinal.slice(2).split(',')[0], 'base64');
    if (!got.equals(this.serverSignature)) throw new Error('SCRAM: server signature mismatch');
  }
}

// ---------------------------------------------------------------------------------------------
// The client

export interface WireTarget {
  host?: string;
  port?: number;
  /** Unix socket path (the full `.../.s.PGSQL.<port>`), instead of host/port */
  path?: string;
}

export interface LoginOptions {
  user: string;
  database?: string;
  password?: string;
  /** extra startup parameters (application_name, options, ...) */
  params?: Record<string, string>;
  timeoutMs?: number;
}

export interface LoginResult {
  /** the auth request codes seen, in order (e.g. [10, 11, 12, 0] for SCRAM) */
  authCodes: number[];
  /** SASL mechanisms offered, when SASL was used */
  mechanisms: string[];
  /** ParameterStatus values */
  params: Record<string, string>;
  backendKey: { pid: number; secret: number } | null;
  notices: PgError[];
  /** ReadyForQuery status ('I') */
  status: string;
  /** the SCRAM server-first-message, when SASL was used */
  serverFirst?: string;
}

export interface QueryResult {
  columns: string[];
  rows: Array<Array<string | null>>;
  /** CommandComplete tags, in order */
  tags: string[];
  error: PgError | null;
  notices: PgError[];
  /** every message up to and including ReadyForQuery */
  messages: WireMessage[];
  /** ReadyForQuery status: 'I', 'T' or 'E' */
  status: string;
}

export interface ExpectErrorOptions {
  /** SQLSTATE */
  code?: string;
  /** exact text, or a pattern */
  message?: string | RegExp;
  severity?: string;
  /** also assert that the server closes the connection afterwards (default: severity FATAL) */
  closed?: boolean;
  /** assert that only S, C and M are present (PgBouncer's own errors) */
  onlySCM?: boolean;
  timeoutMs?: number;
}

export class WireClient {
  readonly socket: net.Socket;
  private buf: Buffer = Buffer.alloc(0);
  private wake: (() => void) | null = null;
  private ended = false;
  private socketError: Error | null = null;
  /** resolves when the connection is closed (by either side) */
  readonly closedPromise: Promise<void>;
  /** progress of the last login() (auth codes seen so far), also when it threw */
  lastLogin: LoginResult | null = null;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (d: Buffer) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
      this.notify();
    });
    socket.on('error', (e) => {
      this.socketError = e;
      this.notify();
    });
    this.closedPromise = new Promise((resolve) =>
      socket.once('close', () => {
        this.ended = true;
        this.notify();
        resolve();
      }),
    );
  }

  static connect(target: WireTarget, timeoutMs = 5000): Promise<WireClient> {
    return new Promise((resolve, reject) => {
      const s = target.path ? net.connect(target.path) : net.connect(target.port!, target.host ?? '127.0.0.1');
      const timer = setTimeout(() => {
        s.destroy();
        reject(new WireTimeoutError(`connect to ${target.path ?? `${target.host}:${target.port}`} timed out`));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        s.setNoDelay(true);
        resolve(new WireClient(s));
      });
      s.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
  }

  /** True once the connection is closed (FIN or reset received, or destroyed). */
  get closed(): boolean {
    return this.ended;
  }

  /** Bytes received but not consumed yet. */
  get pending(): Buffer {
    return this.buf;
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  /** Wait until `have()` is true, the connection closes, or the timeout passes. */
  private async waitFor(have: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!have()) {
      if (this.ended || this.socketError) {
        throw new WireClosedError(
          `connection closed while waiting for ${what}` +
            (this.socketError ? ` (${this.socketError.message})` : '') +
            (this.buf.length ? ` with ${this.buf.length} unread bytes` : ''),
        );
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new WireTimeoutError(`timed out after ${timeoutMs}ms waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }

  /** Send raw bytes (several buffers are sent as one write). */
  write(data: Buffer | Buffer[] | string): Promise<void> {
    const b = Array.isArray(data) ? Buffer.concat(data) : typeof data === 'string' ? Buffer.from(data, 'latin1') : data;
    return new Promise((resolve, reject) => this.socket.write(b, (e) => (e ? reject(e) : resolve())));
  }

  /** Read exactly n bytes (e.g. the single 'N'/'S' answer to an SSLRequest). */
  async readBytes(n: number, timeoutMs = 5000): Promise<Buffer> {
    await this.waitFor(() => this.buf.length >= n, timeoutMs, `${n} bytes`);
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return Buffer.from(out);
  }

  /** Read one whole message. Throws WireClosedError / WireTimeoutError. */
  async readMessage(timeoutMs = 5000): Promise<WireMessage> {
    await this.waitFor(() => this.buf.length >= 5 && this.buf.length >= 1 + this.buf.readInt32BE(1), timeoutMs, 'a message');
    const len = this.buf.readInt32BE(1);
    if (len < 4) throw new Error(`invalid message length ${len} for type ${String.fromCharCode(this.buf[0])}`);
    const type = String.fromCharCode(this.buf[0]);
    const body = Buffer.from(this.buf.subarray(5, 1 + len));
    this.buf = this.buf.subarray(1 + len);
    return { type, body };
  }

  /** The next message, or null when the server closed the connection cleanly before sending one. */
  async readMessageOrClose(timeoutMs = 5000): Promise<WireMessage | null> {
    try {
      return await this.readMessage(timeoutMs);
    } catch (e) {
      if (e instanceof WireClosedError && this.buf.length === 0) return null;
      throw e;
    }
  }

  /** Messages up to and including the first one whose type is in `types`. */
  async readUntil(types: string | string[], timeoutMs = 5000): Promise<WireMessage[]> {
    const want = Array.isArray(types) ? types : [types];
    const deadline = Date.now() + timeoutMs;
    const out: WireMessage[] = [];
    for (;;) {
      const m = await this.readMessage(Math.max(1, deadline - Date.now()));
      out.push(m);
      if (want.includes(m.type)) return out;
    }
  }

  /**
   * Read until an ErrorResponse (NoticeResponses and ParameterStatus are skipped; anything else
   * first is a failure), check it against `expect`, and by default for FATAL also that the
   * connection then closes. Returns the parsed error.
   */
  async expectError(expect: ExpectErrorOptions = {}): Promise<PgError> {
    const timeoutMs = expect.timeoutMs ?? 5000;
    const seen: string[] = [];
    let err: PgError;
    for (;;) {
      let m: WireMessage;
      try {
        m = await this.readMessage(timeoutMs);
      } catch (e) {
        throw new Error(`expected an ErrorResponse, got ${seen.length ? seen.join(',') + ' then ' : ''}${(e as Error).message}`);
      }
      if (m.type === 'E') {
        err = parseErrorFields(m.body);
        break;
      }
      if (m.type !== 'N' && m.type !== 'S') {
        throw new Error(`expected an ErrorResponse, got message '${m.type}' ${JSON.stringify(m.body.toString('latin1'))}`);
      }
      seen.push(m.type);
    }
    const show = JSON.stringify(err.fields);
    if (expect.code !== undefined && err.C !== expect.code) throw new Error(`expected SQLSTATE ${expect.code}, got ${show}`);
    if (expect.severity !== undefined && err.S !== expect.severity) throw new Error(`expected severity ${expect.severity}, got ${show}`);
    if (expect.message !== undefined) {
      const ok = typeof expect.message === 'string' ? err.M === expect.message : expect.message.test(err.M);
      if (!ok) throw new Error(`expected message ${expect.message}, got ${show}`);
    }
    if (expect.onlySCM) {
      const extra = Object.keys(err.fields).filter((k) => !'SCM'.includes(k));
      if (extra.length) throw new Error(`expected only fields S, C, M, got ${show}`);
    }
    if (expect.closed ?? err.S === 'FATAL') await this.waitClose(timeoutMs);
    return err;
  }

  /** Wait until the server closes the connection; fails if it sends more messages first. */
  async waitClose(timeoutMs = 5000): Promise<void> {
    try {
      await this.waitFor(() => this.buf.length > 0, timeoutMs, 'the connection to close');
    } catch (e) {
      if (e instanceof WireClosedError) return;
      throw e;
    }
    throw new Error(`expected the connection to close, but got more data: ${JSON.stringify(this.buf.toString('latin1'))}`);
  }

  /** Send the StartupMessage (user, database and extra params). */
  startup(params: Record<string, string>, version = PROTOCOL_3): Promise<void> {
    return this.write(startupMessage(params, version));
  }

  /**
   * Full login: StartupMessage, answer cleartext/md5/SCRAM challenges with opts.password, then
   * read up to ReadyForQuery. Throws PgServerError on an ErrorResponse.
   */
  async login(opts: LoginOptions): Promise<LoginResult> {
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const params: Record<string, string> = { user: opts.user };
    if (opts.database !== undefined) params.database = opts.database;
    Object.assign(params, opts.params ?? {});
    await this.startup(params);
    const res: LoginResult = { authCodes: [], mechanisms: [], params: {}, backendKey: null, notices: [], status: '' };
    this.lastLogin = res;
    let scram: ScramClient | null = null;
    const needPassword = (): string => {
      if (opts.password === undefined) throw new Error(`server asked ${opts.user} for a password, none given`);
      return opts.password;
    };
    for (;;) {
      const m = await this.readMessage(timeoutMs);
      switch (m.type) {
        case 'R': {
          const code = m.body.readInt32BE(0);
          res.authCodes.push(code);
          if (code === AUTH.OK) break;
          if (code === AUTH.CLEARTEXT) await this.write(passwordMessage(needPassword()));
          else if (code === AUTH.MD5) await this.write(passwordMessage(md5ClientResponse(needPassword(), opts.user, m.body.subarray(4, 8))));
          else if (code === AUTH.SASL) {
            res.mechanisms = readCStrings(m.body, 4).filter((s) => s.length > 0);
            if (!res.mechanisms.includes('SCRAM-SHA-256')) throw new Error(`no supported SASL mechanism in ${res.mechanisms}`);
            scram = new ScramClient({ password: needPassword() });
            await this.write(saslInitialResponse('SCRAM-SHA-256', scram.clientFirst()));
          } else if (code === AUTH.SASL_CONTINUE) {
            if (!scram) throw new Error('SASLContinue without SASL');
            res.serverFirst = m.body.toString('utf8', 4);
            await this.write(saslResponse(scram.onServerFirst(res.serverFirst)));
          } else if (code === AUTH.SASL_FINAL) {
            if (!scram) throw new Error('SASLFinal without SASL');
            scram.verifyServerFinal(m.body.toString('utf8', 4));
          } else throw new Error(`unsupported authentication request ${code}`);
          break;
        }
        case 'S': {
          const [k, v] = readCStrings(m.body);
          res.params[k] = v;
          break;
        }
        case 'K':
          res.backendKey = { pid: m.body.readInt32BE(0), secret: m.body.readInt32BE(4) };
          break;
        case 'N':
          res.notices.push(parseErrorFields(m.body));
          break;
        case 'E':
          throw new PgServerError(parseErrorFields(m.body));
        case 'Z':
          res.status = String.fromCharCode(m.body[0]);
          return res;
        default:
          throw new Error(`unexpected message '${m.type}' during login`);
      }
    }
  }

  /** Simple-protocol query: send Query, collect everything up to ReadyForQuery. */
  async query(sql: string, timeoutMs = 10_000): Promise<QueryResult> {
    await this.write(query(sql));
    return this.collect(timeoutMs);
  }

  /** Collect a response up to ReadyForQuery (after a Query, or after an extended-protocol Sync). */
  async collect(timeoutMs = 10_000): Promise<QueryResult> {
    return toResult(await this.readUntil('Z', timeoutMs));
  }

  /** Send Terminate and close our side. */
  async terminate(): Promise<void> {
    if (!this.ended) {
      await this.write(terminate()).catch(() => {});
      this.socket.end();
    }
  }

  /** Half-close (FIN) without Terminate. */
  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** Connect, log in, and return the client (convenience for tests). */
export async function wireLogin(target: WireTarget, opts: LoginOptions): Promise<{ client: WireClient; login: LoginResult }> {
  const client = await WireClient.connect(target, opts.timeoutMs);
  try {
    return { client, login: await client.login(opts) };
  } catch (e) {
    client.destroy();
    throw e;
  }
}

/** Send a CancelRequest on a fresh connection and wait for the server to close it. */
export async function sendCancel(target: WireTarget, key: { pid: number; secret: number }, timeoutMs = 5000): Promise<void> {
  const c = await WireClient.connect(target, timeoutMs);
  try {
    await c.write(cancelRequest(key.pid, key.secret));
    await c.waitClose(timeoutMs);
  } finally {
    c.destroy();
  }
}

/** The outcome of a login attempt: the auth codes seen, then either the login or the error. */
export interface LoginAttempt {
  client: WireClient;
  authCodes: number[];
  mechanisms: string[];
  serverFirst?: string;
  login: LoginResult | null;
  error: PgError | null;
}

/**
 * Connect and try to log in; never throws for an ErrorResponse (returned in `error`, with the
 * auth codes seen before it). The client stays open on success (terminate it); on error the
 * caller may check that the connection closes.
 */
export async function attemptLogin(target: WireTarget, opts: LoginOptions): Promise<LoginAttempt> {
  const client = await WireClient.connect(target, opts.timeoutMs);
  let login: LoginResult | null = null;
  let error: PgError | null = null;
  try {
    login = await client.login(opts);
  } catch (e) {
    if (!(e instanceof PgServerError)) {
      client.destroy();
      throw e;
    }
    error = e.error;
  }
  const seen = client.lastLogin!;
  return { client, authCodes: seen.authCodes, mechanisms: seen.mechanisms, serverFirst: seen.serverFirst, login, error };
}

/** Columns, rows, tags, error, notices and the final status of a response's messages. */
export function toResult(messages: WireMessage[]): QueryResult {
  const res: QueryResult = { columns: [], rows: [], tags: [], error: null, notices: [], messages, status: '' };
  for (const m of messages) {
    if (m.type === 'T') {
      const n = m.body.readInt16BE(0);
      let i = 2;
      res.columns = [];
      for (let f = 0; f < n; f++) {
        const end = m.body.indexOf(0, i);
        res.columns.push(m.body.toString('utf8', i, end));
        i = end + 1 + 18;
      }
    } else if (m.type === 'D') {
      const n = m.body.readInt16BE(0);
      let i = 2;
      const row: Array<string | null> = [];
      for (let f = 0; f < n; f++) {
        const len = m.body.readInt32BE(i);
        i += 4;
        if (len < 0) row.push(null);
        else {
          row.push(m.body.toString('utf8', i, i + len));
          i += len;
        }
      }
      res.rows.push(row);
    } else if (m.type === 'C') res.tags.push(readCStrings(m.body)[0]);
    else if (m.type === 'E') res.error = parseErrorFields(m.body);
    else if (m.type === 'N') res.notices.push(parseErrorFields(m.body));
    else if (m.type === 'Z') res.status = String.fromCharCode(m.body[0]);
  }
  return res;
}
