// Builders for every message pgbun emits itself (to clients and to servers). Each builder
// allocates exactly one Buffer of the final size. Forwarded traffic never goes through here.
import {
  AUTH_CLEARTEXT, AUTH_MD5, AUTH_OK, AUTH_SASL, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL,
  CANCEL_REQUEST_CODE, F_BIND, F_CLOSE, F_DESCRIBE, F_EXECUTE, F_PARSE, PROTO_V3, SQLSTATE_PROTOCOL_VIOLATION,
  SSL_REQUEST_CODE, TARGET_PORTAL, TARGET_STATEMENT,
} from './constants.js';

/** A message with a type byte and a body made of the given parts. */
function typed(type: number, bodyLen: number): Buffer {
  const b = Buffer.allocUnsafe(bodyLen + 5);
  b[0] = type;
  b.writeInt32BE(bodyLen + 4, 1);
  return b;
}

function cstrLen(s: string): number {
  return Buffer.byteLength(s) + 1;
}

function putCstr(b: Buffer, off: number, s: string): number {
  off += b.write(s, off);
  b[off] = 0;
  return off + 1;
}

export type Severity = 'FATAL' | 'ERROR' | 'WARNING' | 'NOTICE' | 'LOG' | 'INFO' | 'DEBUG';

/**
 * ErrorResponse / NoticeResponse as PgBouncer builds them: only S, C and M fields
 * (no V, D or H), so clients see exactly what PgBouncer's clients see.
 */
export function errorResponse(severity: Severity, sqlstate: string, message: string, notice = false, detail?: string): Buffer {
  let len = 1 + cstrLen(severity) + 1 + cstrLen(sqlstate) + 1 + cstrLen(message) + 1;
  if (detail !== undefined) len += 1 + cstrLen(detail);
  const b = typed(notice ? 0x4e : 0x45, len);
  let o = 5;
  b[o++] = 0x53; // S
  o = putCstr(b, o, severity);
  b[o++] = 0x43; // C
  o = putCstr(b, o, sqlstate);
  b[o++] = 0x4d; // M
  o = putCstr(b, o, message);
  if (detail !== undefined) {
    b[o++] = 0x44; // D
    o = putCstr(b, o, detail);
  }
  b[o] = 0;
  return b;
}

export function fatal(message: string, sqlstate = SQLSTATE_PROTOCOL_VIOLATION): Buffer {
  return errorResponse('FATAL', sqlstate, message);
}

export function notice(message: string, sqlstate = '00000', detail?: string): Buffer {
  return errorResponse('NOTICE', sqlstate, message, true, detail);
}

function authMsg(code: number, extra: number): Buffer {
  const b = typed(0x52, 4 + extra);
  b.writeInt32BE(code, 5);
  return b;
}

export const AUTH_OK_MSG: Buffer = authMsg(AUTH_OK, 0);
export const AUTH_CLEARTEXT_MSG: Buffer = authMsg(AUTH_CLEARTEXT, 0);

export function authMd5(salt: Buffer): Buffer {
  const b = authMsg(AUTH_MD5, 4);
  salt.copy(b, 9, 0, 4);
  return b;
}

export function authSasl(mechanisms: string[]): Buffer {
  let extra = 1;
  for (const m of mechanisms) extra += cstrLen(m);
  const b = authMsg(AUTH_SASL, extra);
  let o = 9;
  for (const m of mechanisms) o = putCstr(b, o, m);
  b[o] = 0;
  return b;
}

export function authSaslContinue(data: string): Buffer {
  const n = Buffer.byteLength(data);
  const b = authMsg(AUTH_SASL_CONTINUE, n);
  b.write(data, 9);
  return b;
}

export function authSaslFinal(data: string): Buffer {
  const n = Buffer.byteLength(data);
  const b = authMsg(AUTH_SASL_FINAL, n);
  b.write(data, 9);
  return b;
}

export function parameterStatus(name: string, value: string): Buffer {
  const b = typed(0x53, cstrLen(name) + cstrLen(value));
  putCstr(b, putCstr(b, 5, name), value);
  return b;
}

/** BackendKeyData from the 8 key bytes (pid + secret) pgbun gives a client. */
export function backendKeyData(key: Buffer): Buffer {
  const b = typed(0x4b, 8);
  key.copy(b, 5, 0, 8);
  return b;
}

const RFQ: Record<string, Buffer> = {};
for (const s of ['I', 'T', 'E']) {
  const b = typed(0x5a, 1);
  b[5] = s.charCodeAt(0);
  RFQ[s] = b;
}

export function readyForQuery(status: 'I' | 'T' | 'E' = 'I'): Buffer {
  return RFQ[status]!;
}

export function query(sql: string): Buffer {
  const b = typed(0x51, cstrLen(sql));
  putCstr(b, 5, sql);
  return b;
}

export const TERMINATE_MSG: Buffer = typed(0x58, 0);
const SYNC_MSG: Buffer = typed(0x53, 0);
export const PARSE_COMPLETE_MSG: Buffer = typed(0x31, 0);
export const CLOSE_COMPLETE_MSG: Buffer = typed(0x33, 0);

export function commandComplete(tag: string): Buffer {
  const b = typed(0x43, cstrLen(tag));
  putCstr(b, 5, tag);
  return b;
}

export function passwordMessage(password: string | Buffer): Buffer {
  const n = typeof password === 'string' ? Buffer.byteLength(password) : password.length;
  const b = typed(0x70, n + 1);
  if (typeof password === 'string') b.write(password, 5);
  else password.copy(b, 5);
  b[5 + n] = 0;
  return b;
}

export function saslInitialResponse(mechanism: string, data: string): Buffer {
  const n = Buffer.byteLength(data);
  const b = typed(0x70, cstrLen(mechanism) + 4 + n);
  let o = putCstr(b, 5, mechanism);
  o = b.writeInt32BE(n, o);
  b.write(data, o);
  return b;
}

export function saslResponse(data: string): Buffer {
  const n = Buffer.byteLength(data);
  const b = typed(0x70, n);
  b.write(data, 5);
  return b;
}

/** StartupMessage (protocol 3.0) with the parameters in the given order. */
export function startupMessage(params: Array<[string, string]>): Buffer {
  let len = 8 + 1;
  for (const [k, v] of params) len += cstrLen(k) + cstrLen(v);
  const b = Buffer.allocUnsafe(len);
  b.writeInt32BE(len, 0);
  b.writeInt32BE(PROTO_V3, 4);
  let o = 8;
  for (const [k, v] of params) o = putCstr(b, putCstr(b, o, k), v);
  b[o] = 0;
  return b;
}

export function cancelRequest(key: Buffer): Buffer {
  const b = Buffer.allocUnsafe(16);
  b.writeInt32BE(16, 0);
  b.writeInt32BE(CANCEL_REQUEST_CODE, 4);
  key.copy(b, 8, 0, 8);
  return b;
}

/** SSLRequest, sent to a server before the StartupMessage (server_tls_sslmode). */
export const SSL_REQUEST_MSG: Buffer = (() => {
  const b = Buffer.allocUnsafe(8);
  b.writeInt32BE(8, 0);
  b.writeInt32BE(SSL_REQUEST_CODE, 4);
  return b;
})();

/**
 * Parse of statement `name`, whose body after the name (query text, NUL, parameter types) is
 * taken as it is from a client's Parse: pgbun's own server-side name for a client's statement.
 */
export function parseNamed(name: string, rest: Buffer): Buffer {
  const b = typed(F_PARSE, cstrLen(name) + rest.length);
  rest.copy(b, putCstr(b, 5, name));
  return b;
}

/** Close of a prepared statement (not a portal) by name. */
export function closeStatement(name: string): Buffer {
  const b = typed(F_CLOSE, 1 + cstrLen(name));
  b[5] = TARGET_STATEMENT;
  putCstr(b, 6, name);
  return b;
}

/**
 * The message buf[start, end) with the name at buf[nameStart, nameEnd) replaced by `name` (a
 * Bind or Describe renamed to pgbun's server-side statement name). `total` is the whole
 * message's size when buf[start, end) is only its head (the rest is streamed after it), so that
 * the length field counts all of it.
 */
export function withNameReplaced(buf: Buffer, start: number, end: number, nameStart: number, nameEnd: number,
  name: string, total = end - start): Buffer {
  const n = Buffer.byteLength(name);
  const delta = n - (nameEnd - nameStart);
  const out = Buffer.allocUnsafe((end - start) + delta);
  buf.copy(out, 0, start, nameStart);
  out.write(name, nameStart - start);
  buf.copy(out, nameStart - start + n, nameEnd, end);
  out.writeInt32BE(total + delta - 1, 1);
  return out;
}

/**
 * One query with text parameters over the extended protocol, everything unnamed: Parse, Bind,
 * Describe (portal), Execute, Sync (auth_query's lookup).
 */
export function extendedQuery(sql: string, params: string[]): Buffer {
  const vals = params.map((p) => Buffer.from(p, 'utf8'));
  const parse = typed(F_PARSE, 1 + cstrLen(sql) + 2);
  parse.writeInt16BE(0, putCstr(parse, putCstr(parse, 5, ''), sql));
  let bindLen = 1 + 1 + 2 + 2 + 2;
  for (const v of vals) bindLen += 4 + v.length;
  const bind = typed(F_BIND, bindLen);
  let o = putCstr(bind, putCstr(bind, 5, ''), '');
  o = bind.writeInt16BE(0, o); // parameter formats: all text
  o = bind.writeInt16BE(vals.length, o);
  for (const v of vals) {
    o = bind.writeInt32BE(v.length, o);
    o += v.copy(bind, o);
  }
  bind.writeInt16BE(0, o); // result formats: all text
  const describe = typed(F_DESCRIBE, 2);
  describe[5] = TARGET_PORTAL;
  describe[6] = 0;
  const execute = typed(F_EXECUTE, 5);
  execute[5] = 0;
  execute.writeInt32BE(0, 6);
  return Buffer.concat([parse, bind, describe, execute, SYNC_MSG]);
}

/** NegotiateProtocolVersion: newest minor version we support (0) + unrecognised _pq_ options. */
export function negotiateProtocolVersion(minor: number, options: string[]): Buffer {
  let len = 8;
  for (const o of options) len += cstrLen(o);
  const b = typed(0x76, len);
  b.writeInt32BE(minor, 5);
  b.writeInt32BE(options.length, 9);
  let o = 13;
  for (const opt of options) o = putCstr(b, o, opt);
  return b;
}

// ---- result sets (admin console) ----

export interface Column {
  name: string;
  typeOid: number;
  typeLen: number;
}

export function rowDescription(cols: Column[]): Buffer {
  let len = 2;
  for (const c of cols) len += cstrLen(c.name) + 18;
  const b = typed(0x54, len);
  let o = b.writeInt16BE(cols.length, 5);
  for (const c of cols) {
    o = putCstr(b, o, c.name);
    o = b.writeInt32BE(0, o); // table oid
    o = b.writeInt16BE(0, o); // attnum
    o = b.writeInt32BE(c.typeOid, o);
    o = b.writeInt16BE(c.typeLen, o);
    o = b.writeInt32BE(-1, o); // typmod
    o = b.writeInt16BE(0, o); // text format
  }
  return b;
}

/** DataRow; null = SQL NULL, Buffer = raw bytes (bytea already encoded as text by the caller). */
export function dataRow(values: Array<string | null>): Buffer {
  let len = 2;
  const bufs: Array<Buffer | null> = values.map((v) => (v === null ? null : Buffer.from(v)));
  for (const v of bufs) len += 4 + (v ? v.length : 0);
  const b = typed(0x44, len);
  let o = b.writeInt16BE(values.length, 5);
  for (const v of bufs) {
    if (v === null) {
      o = b.writeInt32BE(-1, o);
    } else {
      o = b.writeInt32BE(v.length, o);
      o += v.copy(b, o);
    }
  }
  return b;
}
