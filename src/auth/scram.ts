// SCRAM-SHA-256 (RFC 5802 / RFC 7677) as PostgreSQL speaks it, both ways:
//   ScramServerExchange - a client authenticating to pgbun;
//   ScramClientExchange - pgbun logging in to PostgreSQL, with a password or with the keys
//                         recovered from a client's exchange (SCRAM pass-through).
// No channel binding: we never advertise SCRAM-SHA-256-PLUS, so a gs2 header of `n,,` or `y,,`
// is accepted and `p=...` refused, as PostgreSQL does without TLS.
//
// SCRAM messages are handled as latin1 strings, a lossless byte<->char mapping, so the
// AuthMessage we sign is exactly the bytes on the wire even if a client puts non-UTF-8 bytes in
// the (ignored) user name or an extension. Everything we emit ourselves is ASCII.

import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';
import { randomSmall } from './random.js';
import { decodeBase64, scramSaltText, type ScramSecret, type Secret } from './secret.js';
import { saslprep } from './saslprep.js';

export const SCRAM_MECHANISM = 'SCRAM-SHA-256';
/** PostgreSQL's SCRAM_RAW_NONCE_LEN: 18 random bytes, sent base64-encoded (24 chars). */
const SCRAM_RAW_NONCE_LEN = 18;
/** PostgreSQL's SCRAM_DEFAULT_SALT_LEN. */
const SCRAM_SALT_LEN = 16;

// PgBouncer's client-facing texts; the caller sends them as FATAL 08P01.
export const SASL_AUTH_FAILED = 'SASL authentication failed';
export const INVALID_SASL_MECHANISM = 'client selected an invalid SASL authentication mechanism';
// Server-login failure reasons; the caller prefixes `server login failed: `.
export const INVALID_SERVER_SIGNATURE = 'invalid server signature';
export const FAILED_TO_VERIFY_SERVER_SIGNATURE = 'failed to verify server signature';

/** What pass-through needs to log in to PostgreSQL as a client that proved it knows the password. */
export interface ScramKeys {
  clientKey: Buffer;
  serverKey: Buffer;
}

// ---------------------------------------------------------------------------------------------
// Key derivation (RFC 5802 §3)

const sha256 = (data: Buffer): Buffer => createHash('sha256').update(data).digest();
const hmac = (key: Buffer, data: string | Buffer): Buffer =>
  createHmac('sha256', key).update(typeof data === 'string' ? Buffer.from(data, 'latin1') : data).digest();

function xor(a: Buffer, b: Buffer): Buffer {
  const out = Buffer.allocUnsafe(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! ^ b[i]!;
  return out;
}

/** Hi(Normalize(password), salt, i). SASLprep as PostgreSQL applies it (raw bytes if it fails). */
function scramSaltedPassword(password: string | Buffer, salt: Buffer, iterations: number): Buffer {
  return pbkdf2Sync(saslprep(password), salt, iterations, 32, 'sha256');
}

/** ClientKey and ServerKey from a password. */
function scramKeysFromPassword(password: string | Buffer, salt: Buffer, iterations: number): ScramKeys {
  const salted = scramSaltedPassword(password, salt, iterations);
  return { clientKey: hmac(salted, 'Client Key'), serverKey: hmac(salted, 'Server Key') };
}

function secretText(iterations: number, salt: Buffer, storedKey: Buffer, serverKey: Buffer): string {
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

/** The secret PostgreSQL stores for a password (and PgBouncer's ad-hoc one for plain secrets). */
export function scramSecretFromPassword(password: string | Buffer, iterations: number, salt?: Buffer): ScramSecret {
  const s = salt ?? randomBytes(SCRAM_SALT_LEN);
  const { clientKey, serverKey } = scramKeysFromPassword(password, s, iterations);
  const storedKey = sha256(clientKey);
  return { kind: 'scram', iterations, salt: s, storedKey, serverKey, text: secretText(iterations, s, storedKey, serverKey) };
}

/** `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>` exactly as pg_authid.rolpassword holds it. */
export function buildScramSecret(password: string | Buffer, iterations: number, salt?: Buffer): string {
  return scramSecretFromPassword(password, iterations, salt).text;
}

/** A cleartext password (auth_type=plain) checked against a SCRAM secret, as PostgreSQL does. */
export function scramVerifyPassword(secret: ScramSecret, password: string | Buffer): boolean {
  const { serverKey } = scramKeysFromPassword(password, secret.salt, secret.iterations);
  return timingSafeEqual(serverKey, secret.serverKey);
}

// Per-process: mock salts are stable while pgbun runs (so repeated probes see the same salt
// for the same name, like a real user), but cannot be linked across restarts or hosts.
let processMockKey: Buffer | undefined;

/**
 * A fake secret for a user that does not exist, so the exchange looks like a real one. The salt
 * is deterministic per user name and as long as a real one; the keys are HMAC outputs nobody
 * knows a password for (and the exchange is doomed anyway).
 */
export function mockScramSecret(userName: string, iterations: number, mockNonceKey?: Buffer): ScramSecret {
  const key = mockNonceKey ?? (processMockKey ??= randomBytes(32));
  const name = Buffer.from(userName, 'utf8');
  const salt = hmac(key, Buffer.concat([Buffer.from('salt\0'), name])).subarray(0, SCRAM_SALT_LEN);
  const storedKey = hmac(key, Buffer.concat([Buffer.from('stored\0'), name]));
  const serverKey = hmac(key, Buffer.concat([Buffer.from('server\0'), name]));
  return { kind: 'scram', iterations, salt, storedKey, serverKey, text: secretText(iterations, salt, storedKey, serverKey) };
}

function makeNonce(): string {
  return randomSmall(SCRAM_RAW_NONCE_LEN).toString('base64');
}

// ---------------------------------------------------------------------------------------------
// SASL message framing helpers

/**
 * Body of a SASLInitialResponse ('p' after AuthenticationSASL): mechanism name, Int32 length
 * (-1 = no data), data. null if the layout is broken. The caller checks the mechanism against
 * SCRAM_MECHANISM and answers INVALID_SASL_MECHANISM otherwise.
 */
export function parseSaslInitialResponse(body: Buffer): { mechanism: string; data: Buffer | null } | null {
  const nul = body.indexOf(0);
  if (nul < 0 || body.length < nul + 5) return null;
  const mechanism = body.toString('utf8', 0, nul);
  const len = body.readInt32BE(nul + 1);
  const rest = body.length - (nul + 5);
  if (len === -1) return rest === 0 ? { mechanism, data: null } : null;
  if (len < 0 || len !== rest) return null;
  return { mechanism, data: body.subarray(nul + 5) };
}

/**
 * Mechanism list of an AuthenticationSASL message (after the Int32 code 10): NUL-terminated
 * names closed by an empty one. null if broken.
 */
export function parseSaslMechanisms(body: Buffer): string[] | null {
  const out: string[] = [];
  let pos = 0;
  for (;;) {
    const nul = body.indexOf(0, pos);
    if (nul < 0) return null;
    if (nul === pos) return out;
    out.push(body.toString('utf8', pos, nul));
    pos = nul + 1;
  }
}

// PostgreSQL's attribute reader: `<letter>=<value>` up to the next ',' or the end.
class AttrReader {
  pos = 0;
  constructor(readonly text: string) {}

  get atEnd(): boolean {
    return this.pos >= this.text.length;
  }

  /** value of the expected attribute, or an error text */
  read(attr: string): { value: string } | { error: string } {
    const t = this.text;
    if (t[this.pos] !== attr) return { error: `malformed SCRAM message (attribute "${attr}" expected)` };
    if (t[this.pos + 1] !== '=') return { error: `malformed SCRAM message (expected character "=" for attribute "${attr}")` };
    return { value: this.value(this.pos + 2) };
  }

  /** any attribute (extensions); the letter must be ASCII alphabetic */
  readAny(): { attr: string; value: string } | { error: string } {
    const t = this.text;
    if (this.atEnd) return { error: 'malformed SCRAM message (attribute expected, but found end of string)' };
    const attr = t[this.pos]!;
    if (!/^[A-Za-z]$/.test(attr)) return { error: `malformed SCRAM message (attribute expected, but found invalid character "${attr}")` };
    if (t[this.pos + 1] !== '=') return { error: `malformed SCRAM message (expected character "=" for attribute "${attr}")` };
    return { attr, value: this.value(this.pos + 2) };
  }

  private value(start: number): string {
    const comma = this.text.indexOf(',', start);
    const end = comma < 0 ? this.text.length : comma;
    this.pos = comma < 0 ? end : comma + 1;
    return this.text.slice(start, end);
  }
}

/** printable ASCII except ',' (RFC 5802 `printable`), as nonces must be */
function isScramPrintable(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x21 || c > 0x7e || c === 0x2c) return false;
  }
  return true;
}

const asLatin1 = (msg: string | Buffer): string =>
  typeof msg === 'string' ? Buffer.from(msg, 'utf8').toString('latin1') : msg.toString('latin1');

// ---------------------------------------------------------------------------------------------
// Server side: a client proves to pgbun that it knows the password.

export type ScramServerStep = { ok: true; message: string } | { ok: false; log: string };
export type ScramServerResult =
  | {
      ok: true;
      /** server-final-message (`v=...`), sent in AuthenticationSASLFinal */
      message: string;
      /** ClientKey + ServerKey for pass-through; null unless the secret was a stored SCRAM one */
      passthrough: ScramKeys | null;
    }
  | { ok: false; log: string };

export interface ScramServerOptions {
  /** `scram_iterations`, for the ad-hoc secret built from a plain password */
  scramIterations: number;
  /** run the whole exchange but fail it at the end (unknown users, empty stored password) */
  doomed?: boolean;
  /** tests only: a fixed server nonce */
  serverNonce?: string;
}

/**
 * One SCRAM exchange with a client. Feed the SASLInitialResponse data to clientFirst() and the
 * SASLResponse data to clientFinal(); every failure is reported to the client as
 * SASL_AUTH_FAILED, the `log` text says why.
 */
export class ScramServerExchange {
  private state: 'first' | 'final' | 'done' = 'first';
  private secret: ScramSecret | null = null;
  private cbindFlag = '';
  private clientFirstBare = '';
  private serverFirst = '';
  private nonce = '';
  private doomed: boolean;
  /** ClientKey recovered from the proof, after a successful clientFinal() */
  clientKey: Buffer | null = null;

  constructor(
    private readonly stored: Secret,
    private readonly opts: ScramServerOptions,
  ) {
    this.doomed = opts.doomed ?? false;
  }

  /** An exchange for a user name we do not know: a mock secret, always failing at the end. */
  static forUnknownUser(userName: string, scramIterations: number, mockNonceKey?: Buffer): ScramServerExchange {
    return new ScramServerExchange(mockScramSecret(userName, scramIterations, mockNonceKey), { scramIterations, doomed: true });
  }

  /** The secret's ServerKey (null before clientFirst() succeeded). */
  get serverKey(): Buffer | null {
    return this.secret?.serverKey ?? null;
  }

  clientFirst(data: string | Buffer): ScramServerStep {
    if (this.state !== 'first') return { ok: false, log: 'protocol error: unexpected SASL initial response' };
    this.state = 'done'; // until it succeeds
    const input = asLatin1(data);
    const flag = input[0];
    if (flag === 'p') return { ok: false, log: 'client requires SCRAM channel binding, but it is not supported' };
    if (flag !== 'n' && flag !== 'y') {
      return { ok: false, log: `malformed SCRAM message (unexpected channel-binding flag "${flag ?? ''}")` };
    }
    if (input[1] !== ',') return { ok: false, log: `malformed SCRAM message (comma expected, got "${input[1] ?? ''}")` };
    if (input[2] === 'a') return { ok: false, log: 'client uses authorization identity, but it is not supported' };
    if (input[2] !== ',') {
      return { ok: false, log: `malformed SCRAM message (unexpected attribute "${input[2] ?? ''}" in client-first-message)` };
    }
    const bare = input.slice(3);
    if (bare[0] === 'm') return { ok: false, log: 'client requires an unsupported SCRAM extension' };
    const r = new AttrReader(bare);
    // PostgreSQL ignores the user name here: the startup packet's user is the one that counts.
    const user = r.read('n');
    if ('error' in user) return { ok: false, log: user.error };
    const nonce = r.read('r');
    if ('error' in nonce) return { ok: false, log: nonce.error };
    if (!isScramPrintable(nonce.value)) return { ok: false, log: 'non-printable characters in SCRAM nonce' };
    while (!r.atEnd) {
      const ext = r.readAny();
      if ('error' in ext) return { ok: false, log: ext.error };
    }

    const secret = this.resolveSecret();
    if (typeof secret === 'string') return { ok: false, log: secret };
    this.secret = secret;
    this.cbindFlag = flag;
    this.clientFirstBare = bare;
    this.nonce = nonce.value + (this.opts.serverNonce ?? makeNonce());
    this.serverFirst = `r=${this.nonce},s=${scramSaltText(secret)},i=${secret.iterations}`;
    this.state = 'final';
    return { ok: true, message: this.serverFirst };
  }

  clientFinal(data: string | Buffer): ScramServerResult {
    if (this.state !== 'final') return { ok: false, log: 'protocol error: unexpected SASL response' };
    this.state = 'done';
    const secret = this.secret!;
    const input = asLatin1(data);
    const r = new AttrReader(input);
    const cbind = r.read('c');
    if ('error' in cbind) return { ok: false, log: cbind.error };
    // Without channel binding the only valid data is the gs2 header again: "n,," or "y,,".
    if (!((cbind.value === 'biws' && this.cbindFlag === 'n') || (cbind.value === 'eSws' && this.cbindFlag === 'y'))) {
      return { ok: false, log: 'unexpected SCRAM channel-binding attribute in client-final-message' };
    }
    const finalNonce = r.read('r');
    if ('error' in finalNonce) return { ok: false, log: finalNonce.error };
    let proofAt: number;
    let proofText: string;
    for (;;) {
      proofAt = r.pos - 1; // the comma before the attribute
      const attr = r.readAny();
      if ('error' in attr) return { ok: false, log: attr.error };
      if (attr.attr === 'p') {
        proofText = attr.value;
        break;
      }
    }
    const proof = decodeBase64(proofText);
    if (!proof || proof.length !== 32) {
      return { ok: false, log: 'malformed SCRAM message (malformed proof in client-final-message)' };
    }
    if (!r.atEnd) return { ok: false, log: 'malformed SCRAM message (garbage at end of client-final-message)' };
    if (finalNonce.value !== this.nonce) return { ok: false, log: 'invalid SCRAM response (nonce does not match)' };

    const authMessage = `${this.clientFirstBare},${this.serverFirst},${input.slice(0, proofAt)}`;
    const clientKey = xor(proof, hmac(secret.storedKey, authMessage));
    const proofOk = timingSafeEqual(sha256(clientKey), secret.storedKey);
    if (this.doomed || !proofOk) return { ok: false, log: 'password authentication failed' };
    this.clientKey = clientKey;
    return {
      ok: true,
      message: `v=${hmac(secret.serverKey, authMessage).toString('base64')}`,
      passthrough: this.stored.kind === 'scram' ? { clientKey, serverKey: secret.serverKey } : null,
    };
  }

  // Done after client-first parsed, so garbage input costs no key derivation.
  private resolveSecret(): ScramSecret | string {
    const s = this.stored;
    switch (s.kind) {
      case 'scram':
        return s;
      case 'md5':
        return 'SCRAM authentication failed: user has MD5 secret';
      case 'plain':
        // Empty stored password: it never matches, but the client still gets a full exchange.
        if (s.password === '') this.doomed = true;
        return scramSecretFromPassword(s.password, this.opts.scramIterations);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Client side: pgbun logs in to PostgreSQL.

export type ScramClientCredentials = { password: string | Buffer } | ScramKeys;

/**
 * Which credentials a stored secret allows for a SCRAM server login: a plain password as is,
 * a SCRAM secret only with pass-through keys from a client's SCRAM login; null = the caller
 * fails with `server login failed: wrong password type`.
 */
export function scramClientCredentials(secret: Secret, passthrough: ScramKeys | null): ScramClientCredentials | null {
  if (secret.kind === 'plain') return { password: secret.password };
  if (secret.kind === 'scram' && passthrough) return passthrough;
  return null;
}

export interface ScramClientOptions {
  /** tests only: a fixed client nonce */
  nonce?: string;
  /** sent in `n=`; PostgreSQL ignores it, libpq and PgBouncer send it empty */
  userName?: string;
}

/**
 * A failed server login step. `error` is what follows `server login failed: ` in the FATAL the
 * pool's waiting clients get (PgBouncer's texts where it has one); `log` is the detail.
 */
export interface ScramClientFailure {
  error: string;
  log: string;
}

const fail = (error: string, log = error): ScramClientFailure => ({ error, log });

/**
 * One SCRAM login to a server. clientFirst() → SASLInitialResponse data; onServerFirst() takes
 * AuthenticationSASLContinue data and returns the SASLResponse data; verifyServerFinal() takes
 * AuthenticationSASLFinal data. Pass the server's bytes as a Buffer where possible.
 */
export class ScramClientExchange {
  private readonly nonce: string;
  private readonly clientFirstBare: string;
  private state: 'first' | 'server-first' | 'server-final' | 'failed' | 'done' = 'first';
  private expectedServerSignature: Buffer | null = null;

  constructor(
    private readonly credentials: ScramClientCredentials,
    opts: ScramClientOptions = {},
  ) {
    this.nonce = opts.nonce ?? makeNonce();
    const user = (opts.userName ?? '').replace(/=/g, '=3D').replace(/,/g, '=2C');
    this.clientFirstBare = `n=${user},r=${this.nonce}`;
  }

  /** true once the server's signature has been verified (AuthenticationOk may follow). */
  get done(): boolean {
    return this.state === 'done';
  }

  clientFirst(): string {
    this.state = 'server-first';
    return `n,,${this.clientFirstBare}`;
  }

  onServerFirst(msg: string | Buffer): string | ScramClientFailure {
    if (this.state !== 'server-first') return fail('unexpected SASL continue');
    this.state = 'failed'; // until it succeeds
    const serverFirst = asLatin1(msg);
    const r = new AttrReader(serverFirst);
    const nonce = r.read('r');
    if ('error' in nonce) return fail(nonce.error);
    // The server must extend our nonce; we echo it back, so it must be printable too.
    if (!nonce.value.startsWith(this.nonce) || !isScramPrintable(nonce.value)) {
      return fail('invalid SCRAM response (nonce mismatch)');
    }
    const saltAttr = r.read('s');
    if ('error' in saltAttr) return fail(saltAttr.error);
    const salt = decodeBase64(saltAttr.value);
    if (!salt) return fail('malformed SCRAM message (invalid salt)');
    const iterAttr = r.read('i');
    if ('error' in iterAttr) return fail(iterAttr.error);
    const iterations = /^[0-9]{1,10}$/.test(iterAttr.value) ? Number(iterAttr.value) : 0;
    if (iterations < 1 || iterations > 0x7fffffff) return fail('malformed SCRAM message (invalid iteration count)');
    if (!r.atEnd) return fail('malformed SCRAM message (garbage at end of server-first-message)');

    // Pass-through: the client's ClientKey stands in for the password. It only works if the
    // server's secret has the salt and iterations the keys were made with; if not, the server
    // rejects the proof with its own error.
    const keys =
      'password' in this.credentials
        ? scramKeysFromPassword(this.credentials.password, salt, iterations)
        : this.credentials;
    const withoutProof = `c=biws,r=${nonce.value}`;
    const authMessage = `${this.clientFirstBare},${serverFirst},${withoutProof}`;
    const proof = xor(keys.clientKey, hmac(sha256(keys.clientKey), authMessage));
    this.expectedServerSignature = hmac(keys.serverKey, authMessage);
    this.state = 'server-final';
    return `${withoutProof},p=${proof.toString('base64')}`;
  }

  /** true if the server proved it knows the secret. */
  verifyServerFinal(msg: string | Buffer): true | ScramClientFailure {
    if (this.state !== 'server-final' || !this.expectedServerSignature) {
      return fail(FAILED_TO_VERIFY_SERVER_SIGNATURE, 'protocol error: got SASL final without SASL continue');
    }
    this.state = 'failed';
    const input = asLatin1(msg);
    const r = new AttrReader(input);
    if (input[0] === 'e') {
      const e = r.read('e');
      const detail = 'value' in e ? e.value : '';
      return fail(FAILED_TO_VERIFY_SERVER_SIGNATURE, `error received from server in SCRAM exchange: ${detail}`);
    }
    const v = r.read('v');
    if ('error' in v) return fail(FAILED_TO_VERIFY_SERVER_SIGNATURE, v.error);
    if (!r.atEnd) {
      return fail(FAILED_TO_VERIFY_SERVER_SIGNATURE, 'malformed SCRAM message (garbage at end of server-final-message)');
    }
    const signature = decodeBase64(v.value);
    if (!signature || signature.length !== 32) {
      return fail(FAILED_TO_VERIFY_SERVER_SIGNATURE, 'malformed SCRAM message (malformed server signature)');
    }
    if (!timingSafeEqual(signature, this.expectedServerSignature)) return fail(INVALID_SERVER_SIGNATURE);
    this.state = 'done';
    return true;
  }
}
