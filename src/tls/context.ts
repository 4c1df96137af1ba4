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
import { SERVER_STATES_COUNTED } from '../pool/state.js';

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
export function cipherString(ciphers: string, tls13: string | null): string {
  const kw = ciphers.trim().toLowerCase();
  let tls12: string;
  if (kw === '' || kw === 'default' || kw === 'secure' || kw === 'fast' || kw === 'normal') tls12 = DEFAULT_TLS12;
  else if (kw === 'compat' || kw === 'legacy') tls12 = 'HIGH:!aNULL';
  else if (kw === 'insecure' || kw === 'all') tls12 = 'ALL:!aNULL:!eNULL';
  else tls12 = ciphers.trim();
  const suites = tls13 === null || tls13.trim() === '' ? DEFAULT_TLS13 : tls13.trim();
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

function dhOption(v: string): string | undefined {
  switch (v.trim().toLowerCase()) {
    case 'none':
      return undefined;
    case 'auto':
      return 'auto';
    case 'legacy':
      return legacyDhParams();
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

function makeContext(side: 'client' | 'server', opts: tls.SecureContextOptions): tls.SecureContext {
  try {
    return tls.createSecureContext(opts);
  } catch (e) {
    throw new TlsConfigError(`${side}_tls: ${(e as Error).message}`);
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
  const opts: tls.SecureContextOptions = {
    key: readPem('client_tls_key_file', cf.client_tls_key_file),
    cert: readPem('client_tls_cert_file', cf.client_tls_cert_file),
    ciphers: cipherString(cf.client_tls_ciphers, cf.client_tls13_ciphers),
    ...protocolOptions(parseProtocols(cf.client_tls_protocols)),
    honorCipherOrder: true,
  };
  if (cf.client_tls_ca_file) opts.ca = readPem('client_tls_ca_file', cf.client_tls_ca_file);
  const ecdh = ecdhOption(cf.client_tls_ecdhcurve);
  if (ecdh !== undefined) opts.ecdhCurve = ecdh;
  const dh = dhOption(cf.client_tls_dheparams);
  if (dh !== undefined) opts.dhparam = dh;
  // OpenSSL 3.5 (node 24) defaults to security level 2, which refuses DH parameters under 2048
  // bits ("Error setting temp DH parameter"); `legacy` asks for the 1024-bit group on purpose,
  // so its context gets level 1 (what node 20's OpenSSL 3.0 used), unless the ciphers name one.
  if (dh !== undefined && dh !== 'auto' && !/@SECLEVEL=/i.test(opts.ciphers!)) opts.ciphers += ':@SECLEVEL=1';
  let context: tls.SecureContext;
  try {
    context = makeContext('client', opts);
  } catch (e) {
    // Bun's TLS library (BoringSSL) has no DHE at all and refuses dhparam 'auto', the default;
    // ECDHE still works there, so go on without DHE rather than refuse to start.
    if (dh !== 'auto' || !/Automatic DH parameter selection is not supported/.test((e as Error).message)) throw e;
    delete opts.dhparam;
    context = makeContext('client', opts);
    log.warning('client_tls_dheparams = auto: this runtime\'s TLS library has no DHE, using ECDHE only');
  }
  return { mode, context, requestCert: requireCert || !!cf.client_tls_ca_file, requireCert };
}

function buildServerSide(): ServerSideTls | null {
  const mode = cf.server_tls_sslmode;
  if (mode === 'disable') return null;
  if (!!cf.server_tls_key_file !== !!cf.server_tls_cert_file) {
    throw new TlsConfigError('server_tls_key_file and server_tls_cert_file must be set together');
  }
  const opts: tls.SecureContextOptions = {
    ciphers: cipherString(cf.server_tls_ciphers, cf.server_tls13_ciphers),
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
  if ((s?.fingerprint ?? 'disable') !== oldPrint && !_startup) markServersCloseNeeded();
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

function markServersCloseNeeded(): void {
  for (const pool of registry.pools) {
    pool.forEachServer((s) => {
      s.closeNeeded = true;
    }, SERVER_STATES_COUNTED);
  }
}
