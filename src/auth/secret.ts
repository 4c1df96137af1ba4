// A stored password ("secret") as it comes from userlist.txt, auth_query or a db `password=`.
// The kind is detected from the text alone, exactly as PgBouncer's get_password_type() does:
// anything that is not a well-formed md5 or SCRAM secret is a plain-text password, so a
// malformed SCRAM string silently becomes a (very odd) plain password rather than an error.

export type Secret =
  | { kind: 'plain'; password: string }
  /** 'md5' + 32 lowercase hex digits = 'md5' + md5(password || username) */
  | { kind: 'md5'; hash: string }
  | {
      kind: 'scram';
      iterations: number;
      salt: Buffer;
      storedKey: Buffer;
      serverKey: Buffer;
      /** the secret exactly as stored (pass-through needs the server's to be byte-identical) */
      text: string;
    };

export type ScramSecret = Extract<Secret, { kind: 'scram' }>;

const MD5_RE = /^md5[0-9a-f]{32}$/;
const SCRAM_PREFIX = 'SCRAM-SHA-256$';
// Canonical base64 with padding: PostgreSQL's pg_b64_decode rejects unpadded or truncated input.
const B64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const SHA256_LEN = 32;

export function parseSecret(text: string): Secret {
  if (MD5_RE.test(text)) return { kind: 'md5', hash: text };
  if (text.startsWith(SCRAM_PREFIX)) {
    const scram = parseScramSecret(text);
    if (scram) return scram;
  }
  return { kind: 'plain', password: text };
}

/** `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, or null if malformed. */
function parseScramSecret(text: string): ScramSecret | null {
  if (!text.startsWith(SCRAM_PREFIX)) return null;
  const parts = text.slice(SCRAM_PREFIX.length).split('$');
  if (parts.length !== 2) return null;
  const [iterSalt, keys] = parts as [string, string];
  const colon1 = iterSalt.indexOf(':');
  const colon2 = keys.indexOf(':');
  if (colon1 < 0 || colon2 < 0) return null;
  const iterText = iterSalt.slice(0, colon1);
  const saltText = iterSalt.slice(colon1 + 1);
  const storedText = keys.slice(0, colon2);
  const serverText = keys.slice(colon2 + 1);
  // PostgreSQL's strtol would also take a sign or leading blanks and even 0; a secret like that
  // can only be hand-made and no client would accept i=0, so only positive decimals count.
  if (!/^[0-9]{1,10}$/.test(iterText)) return null;
  const iterations = Number(iterText);
  if (iterations < 1 || iterations > 0x7fffffff) return null;
  if (saltText === '' || !B64_RE.test(saltText)) return null;
  if (!B64_RE.test(storedText) || !B64_RE.test(serverText)) return null;
  const storedKey = Buffer.from(storedText, 'base64');
  const serverKey = Buffer.from(serverText, 'base64');
  if (storedKey.length !== SHA256_LEN || serverKey.length !== SHA256_LEN) return null;
  return {
    kind: 'scram',
    iterations,
    salt: Buffer.from(saltText, 'base64'),
    storedKey,
    serverKey,
    text,
  };
}

/** Base64 as PostgreSQL's pg_b64_decode accepts it (padding required), or null. */
export function decodeBase64(text: string): Buffer | null {
  return B64_RE.test(text) ? Buffer.from(text, 'base64') : null;
}

/** The salt exactly as written in the secret, so server-first echoes PostgreSQL's bytes. */
export function scramSaltText(secret: ScramSecret): string {
  const start = secret.text.indexOf(':') + 1;
  return secret.text.slice(start, secret.text.indexOf('$', start));
}
