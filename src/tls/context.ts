// TLS configuration (client_tls_* / server_tls_*): the settings turned into
// node:tls SecureContexts, built at startup and on RELOAD / SET. The files are read anew each
// time. A failed rebuild keeps the configuration in force (PgBouncer: "TLS settings could not be
// applied, still using old configuration"); a changed server-side configuration marks the
// existing server connections close_needed (since 1.24 only when it really changed).
import { getDiffieHellman } from 'node:crypto';
import * as fs from 'node:fs';
import tls from 'node:tls';
import { constants as cryptoConstants } from 'node:crypto';
import { cf } from '../config/current.js';
import { strerror } from '../config/cvalues.js';
import type { SslMode } from '../config/settings.js';
import { log } from '../log/logger.js';
import { registry } from '../pool/objects.js';
import { upgradedTlsVerifies } from '../runtime/handles.js';
import { runtimeName } from '../runtime/name.js';

/** pgbun as the TLS server, towards clients. */
export interface ClientSideTls {
  mode: SslMode;
  context: tls.SecureContext;
  /** ask the client for a certificate (verify-ca/verify-full, or a CA file is configured) */
  requestCert: boolean;
  /** a certificate is required and must verify (verify-ca/verify-full) */
  requireCert: boolean;
}

/** pgbun as the TLS client, towards PostgreSQL. */
export interface ServerSideTls {
  mode: SslMode;
  context: tls.SecureContext;
  /** what the configuration was made of: a change closes the existing server connections */
  fingerprint: string;
}

let clientSide: ClientSideTls | null = null;
let serverSide: ServerSideTls | null = null;

/** The client-side TLS in force; null = client_tls_sslmode=disable. */
export function clientTls(): ClientSideTls | null {
  return clientSide;
}

/** The server-side TLS in force; null = server_tls_sslmode=disable. */
export function serverTls(): ServerSideTls | null {
  return serverSide;
}

class TlsConfigError extends Error {}

// ---------------------------------------------------------------------------------------------
// Settings → node:tls options

const PROTOCOLS = ['TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3'] as const;
type Proto = (typeof PROTOCOLS)[number];
const NO_FLAG: Record<Proto, number> = {
  TLSv1: cryptoConstants.SSL_OP_NO_TLSv1,
  'TLSv1.1': cryptoConstants.SSL_OP_NO_TLSv1_1,
  'TLSv1.2': cryptoConstants.SSL_OP_NO_TLSv1_2,
  'TLSv1.3': cryptoConstants.SSL_OP_NO_TLSv1_3,
};

/**
 * `*_tls_protocols` as libtls's tls_config_parse_protocols() reads it: a list separated by
 * commas, colons or blanks of `tlsv1.0`..`tlsv1.3`, `tlsv1` (= 1.0-1.2), `all`/`legacy`,
 * `secure`/`default` (= 1.2 and 1.3); `!` or `-` before a name removes it.
 */
export function parseProtocols(text: string): Set<Proto> {
  const out = new Set<Proto>();
  for (const raw of text.split(/[\s,:]+/).filter((w) => w !== '')) {
    const neg = raw.startsWith('!') || raw.startsWith('-');
    const w = (neg ? raw.slice(1) : raw).toLowerCase();
    let set: Proto[];
    if (w === 'all' || w === 'legacy') set = [...PROTOCOLS];
    else if (w === 'secure' || w === 'default') set = ['TLSv1.2', 'TLSv1.3'];
    else if (w === 'tlsv1') set = ['TLSv1', 'TLSv1.1', 'TLSv1.2'];
    else if (w === 'tlsv1.0') set = ['TLSv1'];
    else if (w === 'tlsv1.1') set = ['TLSv1.1'];
    else if (w === 'tlsv1.2') set = ['TLSv1.2'];
    else if (w === 'tlsv1.3') set = ['TLSv1.3'];
    else throw new TlsConfigError(`invalid TLS protocol: ${raw}`);
    for (const p of set) {
      if (neg) out.delete(p);
      else out.add(p);
    }
  }
  if (out.size === 0) throw new TlsConfigError(`no TLS protocol enabled by "${text}"`);
  return out;
}

/** minVersion/maxVersion spanning the set, and SSL_OP_NO_* for the holes inside it. */
export function protocolOptions(protos: Set<Proto>): { minVersion: tls.SecureVersion; maxVersion: tls.SecureVersion; secureOptions: number } {
  const idx = PROTOCOLS.map((p, i) => (protos.has(p) ? i : -1)).filter((i) => i >= 0);
  const lo = idx[0]!;
  const hi = idx[idx.length - 1]!;
  let secureOptions = 0;
  for (let i = lo; i <= hi; i++) if (!protos.has(PROTOCOLS[i]!)) secureOptions |= NO_FLAG[PROTOCOLS[i]!];
  return { minVersion: PROTOCOLS[lo]!, maxVersion: PROTOCOLS[hi]!, secureOptions };
}

const DEFAULT_TLS13 = tls.DEFAULT_CIPHERS.split(':').filter((c) => c.startsWith('TLS_')).join(':');
const DEFAULT_TLS12 = tls.DEFAULT_CIPHERS.split(':').filter((c) => !c.startsWith('TLS_')).join(':');

/**
 * The OpenSSL cipher string for `*_tls_ciphers` (TLS ≤ 1.2) and `*_tls13_ciphers` (TLS 1.3
 * suites), combined as node:tls wants it. Keywords as in libtls/PgBouncer: default, secure,
 * fast and normal mean the system defaults; compat/legacy `HIGH:!aNULL`; insecure/all
 * `ALL:!aNULL:!eNULL`; anything else is an OpenSSL cipher list.
 */
export function cipherString(side: 'client' | 'server', ciphers: string, tls13: string | null): string {
  const kw = ciphers.trim().toLowerCase();
  let tls12: string;
  if (kw === '' || kw === 'default' || kw === 'secure' || kw === 'fast' || kw === 'normal') tls12 = DEFAULT_TLS12;
  else if (kw === 'compat' || kw === 'legacy') tls12 = 'HIGH:!aNULL';
  else if (kw === 'insecure' || kw === 'all') tls12 = 'ALL:!aNULL:!eNULL';
  else tls12 = ciphers.trim();
  const explicit = tls13 !== null && tls13.trim() !== '';
  // BoringSSL (Bun) has its fixed TLS 1.3 suites and ignores a choice: suites the operator
  // left out would still be negotiated, so a choice is refused rather than silently dropped
  if (explicit && process.versions.boringssl !== undefined) {
    throw new TlsConfigError(`${side}_tls13_ciphers: ${runtimeName()}'s TLS library (BoringSSL) does not let TLS 1.3 cipher suites be chosen; leave it unset, or run pgbun on Node.js`);
  }
  const suites = explicit ? tls13.trim() : DEFAULT_TLS13;
  for (const s of suites.split(':')) {
    // PgBouncer's (libtls) wording
    if (!/^TLS_[A-Z0-9_]+$/.test(s)) throw new TlsConfigError(`failed to set the TLSv1.3 cipher suites: ${s}`);
  }
  return `${suites}:${tls12}`;
}

/** RFC 2409 group 2 (1024-bit MODP) as PEM DHParameters: `client_tls_dheparams = legacy`. */
function legacyDhParams(): string {
  const dh = getDiffieHellman('modp2');
  const int = (b: Buffer): Buffer => {
    const body = b[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), b]) : b;
    return Buffer.concat([Buffer.from([0x02]), derLen(body.length), body]);
  };
  const seq = Buffer.concat([int(dh.getPrime()), int(dh.getGenerator())]);
  const der = Buffer.concat([Buffer.from([0x30]), derLen(seq.length), seq]);
  const b64 = der.toString('base64').replace(/(.{64})/g, '$1\n').trimEnd();
  return `-----BEGIN DH PARAMETERS-----\n${b64}\n-----END DH PARAMETERS-----\n`;
}

function derLen(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  if (n < 0x100) return Buffer.from([0x81, n]);
  return Buffer.from([0x82, n >> 8, n & 0xff]);
}

let hasDhe: boolean | null = null;

/** Does the runtime's TLS library do DHE at all? (Bun's BoringSSL does not.) */
function runtimeHasDhe(): boolean {
  if (hasDhe === null) {
    try {
      tls.createSecureContext({ dhparam: 'auto' });
      hasDhe = true;
    } catch {
      hasDhe = false;
    }
  }
  return hasDhe;
}

/** client_tls_dheparams: none (undefined), auto, or legacy (PgBouncer's 1024-bit group). */
function dhOption(v: string): 'auto' | 'legacy' | undefined {
  switch (v.trim().toLowerCase()) {
    case 'none':
      return undefined;
    case 'auto':
      return 'auto';
    case 'legacy':
      return 'legacy';
    default:
      throw new TlsConfigError(`invalid client_tls_dheparams: ${v}`);
  }
}

/** `auto` = OpenSSL's automatic choice; `none` = no explicit curve list; else curve names. */
function ecdhOption(v: string): string | undefined {
  const t = v.trim();
  if (t.toLowerCase() === 'none' || t === '') return undefined;
  if (t.toLowerCase() === 'auto') return 'auto';
  return t.split(/[\s,]+/).filter((c) => c !== '').join(':');
}

function readPem(setting: string, file: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    throw new TlsConfigError(`could not read ${setting} "${file}": ${strerror(e)}`);
  }
}

/**
 * BoringSSL (Bun) reports `error:100000b1:SSL routines:OPENSSL_internal:NO_CIPHER_MATCH` where
 * OpenSSL says `no cipher match`: log watchers get OpenSSL's (and PgBouncer's) wording.
 */
function opensslReason(msg: string): string {
  const m = /^error:[0-9a-f]+:[^:]*:OPENSSL_internal:([A-Z0-9_]+)$/.exec(msg);
  return m ? m[1]!.toLowerCase().replace(/_/g, ' ') : msg;
}

function makeContext(side: 'client' | 'server', opts: tls.SecureContextOptions): tls.SecureContext {
  try {
    return tls.createSecureContext(opts);
  } catch (e) {
    throw new TlsConfigError(`${side}_tls: ${opensslReason((e as Error).message)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Building

function buildClientSide(): ClientSideTls | null {
  const mode = cf.client_tls_sslmode;
  if (mode === 'disable') return null;
  if (!cf.client_tls_key_file || !cf.client_tls_cert_file) {
    throw new TlsConfigError('client_tls_sslmode requires client_tls_key_file and client_tls_cert_file');
  }
  const requireCert = mode === 'verify-ca' || mode === 'verify-full';
  if (requireCert && !cf.client_tls_ca_file) {
    throw new TlsConfigError(`client_tls_sslmode=${mode} requires client_tls_ca_file`);
  }
  // A runtime that cannot tell whether a client certificate verified (Bun) would have to treat
  // every certificate as unverified or, worse, trust it: refuse what needs the answer instead
  // (HBA `cert` rules: auth/login.ts)
  const certSetting = requireCert ? `client_tls_sslmode = ${mode}` : cf.auth_type === 'cert' ? 'auth_type = cert' : null;
  if (certSetting !== null && !upgradedTlsVerifies()) {
    throw new TlsConfigError(`${certSetting} needs client certificates verified, which ${runtimeName()} cannot do on a connection upgraded by SSLRequest; run pgbun on Node.js for it`);
  }
  const opts: tls.SecureContextOptions = {
    key: readPem('client_tls_key_file', cf.client_tls_key_file),
    cert: readPem('client_tls_cert_file', cf.client_tls_cert_file),
    ciphers: cipherString('client', cf.client_tls_ciphers, cf.client_tls13_ciphers),
    ...protocolOptions(parseProtocols(cf.client_tls_protocols)),
    honorCipherOrder: true,
  };
  if (cf.client_tls_ca_file) opts.ca = readPem('client_tls_ca_file', cf.client_tls_ca_file);
  const ecdh = ecdhOption(cf.client_tls_ecdhcurve);
  if (ecdh !== undefined) opts.ecdhCurve = ecdh;
  let dh = dhOption(cf.client_tls_dheparams);
  if (dh !== undefined && !runtimeHasDhe()) {
    // Bun's TLS library (BoringSSL) has no DHE. `auto` leaves the choice to the library, which
    // then chooses ECDHE only; explicit parameters cannot be honoured, so they are refused.
    if (dh !== 'auto') throw new TlsConfigError(`client_tls_dheparams = ${cf.client_tls_dheparams}: ${runtimeName()}'s TLS library has no DHE; use auto or none, or run pgbun on Node.js`);
    log.warning('client_tls_dheparams = auto: this runtime\'s TLS library has no DHE, using ECDHE only');
    dh = undefined;
  }
  if (dh !== undefined) opts.dhparam = dh === 'legacy' ? legacyDhParams() : dh;
  // OpenSSL 3.5 (node 24) defaults to security level 2, which refuses DH parameters under 2048
  // bits ("Error setting temp DH parameter"); `legacy` asks for the 1024-bit group on purpose,
  // so its context gets level 1 (what node 20's OpenSSL 3.0 used), unless the ciphers name one.
  if (dh === 'legacy' && !/@SECLEVEL=/i.test(opts.ciphers!)) opts.ciphers += ':@SECLEVEL=1';
  const context = makeContext('client', opts);
  return { mode, context, requestCert: requireCert || !!cf.client_tls_ca_file, requireCert };
}

function buildServerSide(): ServerSideTls | null {
  const mode = cf.server_tls_sslmode;
  if (mode === 'disable') return null;
  if (!!cf.server_tls_key_file !== !!cf.server_tls_cert_file) {
    throw new TlsConfigError('server_tls_key_file and server_tls_cert_file must be set together');
  }
  const opts: tls.SecureContextOptions = {
    ciphers: cipherString('server', cf.server_tls_ciphers, cf.server_tls13_ciphers),
    ...protocolOptions(parseProtocols(cf.server_tls_protocols)),
  };
  const parts: string[] = [mode, opts.ciphers!, cf.server_tls_protocols];
  if (cf.server_tls_key_file) {
    opts.key = readPem('server_tls_key_file', cf.server_tls_key_file);
    opts.cert = readPem('server_tls_cert_file', cf.server_tls_cert_file);
    parts.push(opts.key.toString('base64'), opts.cert.toString('base64'));
  }
  if (cf.server_tls_ca_file) {
    opts.ca = readPem('server_tls_ca_file', cf.server_tls_ca_file);
    parts.push(opts.ca.toString('base64'));
  }
  return { mode, context: makeContext('server', opts), fingerprint: parts.join('\n') };
}

/**
 * Build the TLS contexts from the current settings; returns an error text or null. On error
 * nothing changes (the previous contexts stay in force).
 */
export function setupTls(_startup: boolean): string | null {
  let c: ClientSideTls | null;
  let s: ServerSideTls | null;
  try {
    c = buildClientSide();
    s = buildServerSide();
  } catch (e) {
    if (e instanceof TlsConfigError) return e.message;
    throw e;
  }
  const oldPrint = serverSide?.fingerprint ?? 'disable';
  clientSide = c;
  serverSide = s;
  if ((s?.fingerprint ?? 'disable') !== oldPrint && !_startup) tagPoolsDirty();
  return null;
}

/**
 * RELOAD / SIGHUP / SET of a *_tls_* key: re-read the TLS files and settings. On failure the old
 * configuration stays and the reason is returned (and logged); a changed server-side
 * configuration tags every server connection close_needed.
 */
export function reloadTls(): string | null {
  const err = setupTls(false);
  if (err !== null) log.error(`TLS settings could not be applied, still using old configuration: ${err}`);
  return err;
}

function tagPoolsDirty(): void {
  for (const pool of registry.pools) pool.tagDirty();
}
