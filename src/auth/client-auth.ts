// One password exchange with a client: cleartext, md5 or SCRAM-SHA-256, against the
// stored secret of a known user or a mock secret for an unknown one. An unknown user goes
// through the same exchange and fails only at the end, with the same message as a wrong
// password, so probing cannot tell which user names exist.
import { randomBytes } from 'node:crypto';
import * as msg from '../protocol/messages.js';
import { BodyReader } from '../protocol/reader.js';
import { checkMd5Response, checkPlainPassword } from './md5.js';
import { randomSmall } from './random.js';
import type { ScramSecret, Secret } from './secret.js';
import {
  INVALID_SASL_MECHANISM, SASL_AUTH_FAILED, SCRAM_MECHANISM, ScramServerExchange, scramSecretFromPassword, type ScramKeys,
} from './scram.js';

export type PasswordMethod = 'plain' | 'md5' | 'scram-sha-256';

export type AuthStep =
  | { kind: 'reply'; message: Buffer }
  | { kind: 'ok'; passthrough: ScramKeys | null; final: Buffer | null }
  | { kind: 'fail'; reason: string; log?: string };

export const PASSWORD_FAILED = 'password authentication failed';

/** Process-wide key for mock SCRAM salts: stable per user name within one process. */
const mockKey = randomBytes(32);
const EMPTY = Buffer.alloc(0);

/**
 * SCRAM secrets made from plain-text passwords, one per user. PgBouncer derives a new one (new
 * salt, scram_iterations rounds of PBKDF2) at every login; keeping it makes a login cost no
 * PBKDF2 at all on our side. One salt per user is what PostgreSQL itself stores, so nothing is
 * weaker. Keyed by user; the password and iterations must match for a hit.
 */
const adhocSecrets = new Map<string, { password: string; iterations: number; secret: ScramSecret }>();

function adhocSecret(user: string, password: string, iterations: number): ScramSecret {
  const c = adhocSecrets.get(user);
  if (c !== undefined && c.password === password && c.iterations === iterations) return c.secret;
  const secret = scramSecretFromPassword(password, iterations);
  adhocSecrets.set(user, { password, iterations, secret });
  return secret;
}

export class PasswordExchange {
  readonly method: PasswordMethod;
  /** md5 only */
  private readonly salt: Buffer;
  private scram: ScramServerExchange | null = null;
  private stage = 0;

  /**
   * `secret` null = unknown user (mock). md5 with a stored SCRAM secret becomes SCRAM, as
   * PgBouncer does.
   */
  constructor(
    method: PasswordMethod,
    private readonly userName: string,
    private readonly secret: Secret | null,
    private readonly scramIterations: number,
  ) {
    this.method = method === 'md5' && secret?.kind === 'scram' ? 'scram-sha-256' : method;
    this.salt = this.method === 'md5' ? randomSmall(4) : EMPTY;
  }

  /** The first authentication request to send. */
  challenge(): Buffer {
    switch (this.method) {
      case 'plain':
        return msg.AUTH_CLEARTEXT_MSG;
      case 'md5':
        return msg.authMd5(this.salt);
      default:
        return msg.authSasl([SCRAM_MECHANISM]);
    }
  }

  /** A PasswordMessage / SASLInitialResponse / SASLResponse body. */
  onPassword(body: Buffer, off: number, end: number): AuthStep {
    if (this.method === 'scram-sha-256') return this.onScram(body, off, end);
    const r = new BodyReader(body, off, end);
    const pw = r.cstring();
    if (!r.ok) return { kind: 'fail', reason: PASSWORD_FAILED, log: 'malformed password packet' };
    if (pw === '') return { kind: 'fail', reason: 'empty password returned by client' };
    if (this.secret === null) return { kind: 'fail', reason: PASSWORD_FAILED };
    const ok = this.method === 'md5'
      ? checkMd5Response(this.secret, this.userName, this.salt, pw)
      : checkPlainPassword(this.secret, this.userName, pw);
    return ok ? { kind: 'ok', passthrough: null, final: null } : { kind: 'fail', reason: PASSWORD_FAILED };
  }

  private onScram(body: Buffer, off: number, end: number): AuthStep {
    const r = new BodyReader(body, off, end);
    if (this.stage === 0) {
      this.stage = 1;
      const mech = r.cstring();
      if (!r.ok) return { kind: 'fail', reason: SASL_AUTH_FAILED, log: 'malformed SASLInitialResponse' };
      if (mech !== SCRAM_MECHANISM) return { kind: 'fail', reason: INVALID_SASL_MECHANISM };
      const n = r.int32();
      const data = n >= 0 ? r.bytes(n) : Buffer.alloc(0);
      if (!r.ok) return { kind: 'fail', reason: SASL_AUTH_FAILED, log: 'malformed SASLInitialResponse' };
      const sec = this.secret;
      if (sec === null) {
        this.scram = ScramServerExchange.forUnknownUser(this.userName, this.scramIterations, mockKey);
      } else if (sec.kind === 'plain' && sec.password !== '') {
        this.scram = new ScramServerExchange(adhocSecret(this.userName, sec.password, this.scramIterations), {
          scramIterations: this.scramIterations,
        });
      } else {
        this.scram = new ScramServerExchange(sec, {
          scramIterations: this.scramIterations,
          doomed: sec.kind === 'plain',
        });
      }
      const step = this.scram.clientFirst(data);
      if (!step.ok) return { kind: 'fail', reason: SASL_AUTH_FAILED, log: step.log };
      return { kind: 'reply', message: msg.authSaslContinue(step.message) };
    }
    if (this.stage === 1 && this.scram !== null) {
      this.stage = 2;
      const res = this.scram.clientFinal(r.rest());
      if (!res.ok) return { kind: 'fail', reason: SASL_AUTH_FAILED, log: res.log };
      // pass-through keys only mean something for a stored SCRAM secret the server also has
      const passthrough = this.secret?.kind === 'scram' ? res.passthrough : null;
      return { kind: 'ok', passthrough, final: msg.authSaslFinal(res.message) };
    }
    return { kind: 'fail', reason: SASL_AUTH_FAILED, log: 'unexpected SASL message' };
  }
}
