// pgbun logging in to PostgreSQL: the StartupMessage of a server connection and the
// answers to the server's authentication requests, from the pool user's stored secret (or the
// database entry's password= for a forced user). A SCRAM secret can only answer SCRAM, and only
// with the keys a client's SCRAM login left behind (pass-through).
import { AUTH_CLEARTEXT, AUTH_MD5, AUTH_OK, AUTH_SASL, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL } from '../protocol/constants.js';
import * as msg from '../protocol/messages.js';
import { BodyReader } from '../protocol/reader.js';
import { md5Response } from './md5.js';
import { parseSecret, type Secret } from './secret.js';
import { ScramClientExchange } from './scram.js';
import { log } from '../log/logger.js';
import type { Server } from '../pool/server.js';

const WRONG_TYPE = 'server login failed: wrong password type';

export class ServerLogin {
  started = false;
  authenticated = false;
  private scram: ScramClientExchange | null = null;

  constructor(private readonly server: Server) {}

  /** Send the StartupMessage: database, the entry's session settings, a replication client's parameters, then user (as PgBouncer). */
  start(): void {
    const db = this.server.pool.db;
    const params: Array<[string, string]> = [['database', db.dbname]];
    const d = db.def;
    if (d?.client_encoding) params.push(['client_encoding', d.client_encoding]);
    if (d?.datestyle) params.push(['datestyle', d.datestyle]);
    if (d?.timezone) params.push(['timezone', d.timezone]);
    if (d?.application_name) params.push(['application_name', d.application_name]);
    // a replication client's own parameters come after the entry's: PostgreSQL applies startup
    // settings in order, so the client's value of the same parameter wins
    if (this.server.startupExtra !== null) params.push(...this.server.startupExtra);
    params.push(['user', this.server.pool.user.name]);
    this.started = true;
    this.server.send(msg.startupMessage(params));
  }

  /** The secret to log in with: the entry's password for a forced user, else the user's. */
  private secret(): Secret {
    const pool = this.server.pool;
    const db = pool.db;
    if (db.forcedUser === pool.user && db.def?.password) return parseSecret(db.def.password);
    return pool.user.secret ?? { kind: 'plain', password: '' };
  }

  /** Handle an AuthenticationXXX body; returns an error text if the login cannot go on. */
  onAuthRequest(buf: Buffer, off: number, end: number): string | null {
    const r = new BodyReader(buf, off, end);
    const code = r.int32();
    if (!r.ok) return 'server login failed: bad auth packet';
    const user = this.server.pool.user;
    if (log.debugEnabled) log.conn('debug', this.server, `S: auth request ${code}`);
    switch (code) {
      case AUTH_OK:
        if (this.scram !== null && !this.scram.done) return 'server login failed: server signature not received';
        this.authenticated = true;
        return null;
      case AUTH_CLEARTEXT: {
        const s = this.secret();
        const v = s.kind === 'plain' ? s.password : s.kind === 'md5' ? s.hash : s.text;
        this.server.send(msg.passwordMessage(v));
        return null;
      }
      case AUTH_MD5: {
        const salt = r.bytes(4);
        if (!r.ok) return 'server login failed: bad auth packet';
        const s = this.secret();
        if (s.kind === 'scram') return WRONG_TYPE;
        this.server.send(msg.passwordMessage(md5Response(s, user.name, salt)));
        return null;
      }
      case AUTH_SASL: {
        const mechs: string[] = [];
        while (r.ok && r.remaining > 0) {
          const m = r.cstring();
          if (m === '') break;
          mechs.push(m);
        }
        if (!mechs.includes('SCRAM-SHA-256')) {
          return "server login failed: none of the server's SASL authentication mechanisms are supported";
        }
        const s = this.secret();
        if (s.kind === 'plain') {
          this.scram = new ScramClientExchange({ password: s.password });
        } else if (s.kind === 'scram' && user.scramClientKey !== null && user.scramServerKey !== null &&
          this.server.pool.db.forcedUser !== user) {
          // pass-through: only for the user the client logged in as, never a forced user=
          this.scram = new ScramClientExchange({ clientKey: user.scramClientKey, serverKey: user.scramServerKey });
        } else {
          return WRONG_TYPE;
        }
        this.server.send(msg.saslInitialResponse('SCRAM-SHA-256', this.scram.clientFirst()));
        return null;
      }
      case AUTH_SASL_CONTINUE: {
        if (this.scram === null) return 'server login failed: unexpected SASL continue';
        const res = this.scram.onServerFirst(r.rest().toString('utf8'));
        if (typeof res !== 'string') return `server login failed: ${res.error}`;
        this.server.send(msg.saslResponse(res));
        return null;
      }
      case AUTH_SASL_FINAL: {
        if (this.scram === null) return 'server login failed: unexpected SASL final';
        const ok = this.scram.verifyServerFinal(r.rest().toString('utf8'));
        if (ok !== true) return `server login failed: ${ok.error}`;
        return null;
      }
      default:
        return `server login failed: unsupported authentication method ${code}`;
    }
  }
}
