// MD5 password handling as PostgreSQL's wire protocol defines it, plus the checks for the two
// password messages a client can send us (md5 response, cleartext). PostgreSQL hashes the
// UTF-8 bytes of password and user name; so do we.

import { createHash, timingSafeEqual } from 'node:crypto';
import type { Secret } from './secret.js';
import { scramVerifyPassword } from './scram.js';

function md5hex(...parts: (string | Buffer)[]): string {
  const h = createHash('md5');
  for (const p of parts) h.update(p);
  return h.digest('hex');
}

/** What pg_authid / userlist.txt store for md5: 'md5' + md5hex(password || user). */
export function md5Secret(password: string, user: string): string {
  return 'md5' + md5hex(password, user);
}

/**
 * The PasswordMessage answering AuthenticationMD5Password:
 * 'md5' + md5hex(md5hex(password || user) || salt). Takes either the inner hash (with or
 * without its 'md5' prefix), or a stored plain/md5 secret plus the user name. A SCRAM secret
 * cannot produce it: the caller fails with `server login failed: wrong password type` first.
 */
export function md5Response(secretOrHash: string, salt: Buffer): string;
export function md5Response(secret: Secret, user: string, salt: Buffer): string;
export function md5Response(a: string | Secret, b: string | Buffer, c?: Buffer): string {
  let hash: string;
  let salt: Buffer;
  if (typeof a === 'string') {
    hash = a.length === 35 && a.startsWith('md5') ? a.slice(3) : a;
    salt = b as Buffer;
  } else {
    if (a.kind === 'scram') throw new Error('md5Response: a SCRAM secret cannot answer md5');
    hash = (a.kind === 'md5' ? a.hash : md5Secret(a.password, b as string)).slice(3);
    salt = c!;
  }
  return 'md5' + md5hex(hash, salt);
}

/**
 * Checks a client's md5 response against a stored plain or md5 secret. SCRAM secrets cannot
 * answer md5 (auth_type=md5 switches to SCRAM for them before getting here), and an empty
 * stored password never matches.
 */
export function checkMd5Response(secret: Secret, user: string, salt: Buffer, clientResponse: string): boolean {
  let hash: string;
  if (secret.kind === 'plain') {
    if (secret.password === '') return false;
    hash = md5Secret(secret.password, user);
  } else if (secret.kind === 'md5') {
    hash = secret.hash;
  } else {
    return false;
  }
  return safeEqual(md5Response(hash, salt), clientResponse);
}

/**
 * auth_type=plain (and HBA `password`): the client sent its password in clear. Compared with a
 * plain secret, hashed for an md5 one, and run through SCRAM's key derivation for a SCRAM one.
 */
export function checkPlainPassword(secret: Secret, user: string, password: string): boolean {
  if (password === '') return false;
  switch (secret.kind) {
    case 'plain':
      return secret.password !== '' && safeEqual(secret.password, password);
    case 'md5':
      return safeEqual(secret.hash, md5Secret(password, user));
    case 'scram':
      return scramVerifyPassword(secret, password);
  }
}

/** Constant-time for equal lengths; a length mismatch may return early (lengths are public). */
function safeEqual(a: string | Buffer, b: string | Buffer): boolean {
  const ab = typeof a === 'string' ? Buffer.from(a) : a;
  const bb = typeof b === 'string' ? Buffer.from(b) : b;
  return ab.length === bb.length && timingSafeEqual(ab, bb);
}
