// auth_user / auth_query / auth_dbname: the secret of a user that is not in
// auth_file is looked up on the server. The client, not logged in yet, borrows a server
// connection of the pool (auth database, auth_user) the normal way - it waits in that pool like
// any client - and runs the query on it with the extended protocol, `$1` = the user name. The
// server's answers are read here (Server.interceptor), never forwarded; the tracked-variable
// SETs are not sent on this connection. The server then goes back to its pool.
import { cf } from '../config/current.js';
import { RESERVED_AUTH_DBNAME } from '../config/settings.js';
import { log } from '../log/logger.js';
import {
  B_BIND_COMPLETE, B_COMMAND_COMPLETE, B_DATA_ROW, B_ERROR, B_NO_DATA, B_NOTICE, B_PARAMETER_STATUS,
  B_PARSE_COMPLETE, B_READY_FOR_QUERY, B_ROW_DESCRIPTION,
} from '../protocol/constants.js';
import * as msg from '../protocol/messages.js';
import { parseErrorFields } from '../protocol/reader.js';
import { HANDLED, STOP, type Action } from '../protocol/stream.js';
import { parseSecret } from '../auth/secret.js';
import type { Client } from './client.js';
import { findDatabase } from './databases.js';
import { registry, type PgDatabase, type PgUser } from './objects.js';
import * as pooler from './pooler.js';
import { Internal, type Server } from './server.js';
import { ClientState } from './state.js';

/**
 * The auth_user name for logins to this database (db-level auth_user, else the global one).
 * The console has no entry of its own: its logins use the global auth_user, as PgBouncer's do.
 */
function authUserFor(db: PgDatabase): string | null {
  return db.def?.auth_user ?? cf.auth_user ?? null;
}

/**
 * Whether a login of `user` (null: not known at all) to `db` looks the user up with auth_query:
 * a user not in auth_file (unknown, or only in [users]) when an auth_user is configured.
 */
export function usesAuthQuery(db: PgDatabase, user: PgUser | null): boolean {
  return (user === null || !user.inAuthFile) && authUserFor(db) !== null;
}

/**
 * auth_dbname resolution: db entry's auth_dbname > global auth_dbname > the client's db. So a
 * console login without a global auth_dbname ends at the reserved `pgbouncer` (refused below).
 */
function authDbName(db: PgDatabase): string {
  return db.def?.auth_dbname ?? cf.auth_dbname ?? db.name;
}

// ---- running it ----

/**
 * Look `userName` up with auth_query for `client` (whose db is known; the console too). Calls
 * `done(user)` with the user, its secret updated (null secret: NULL from the query, no password
 * can match); every failure is answered to the client here and `done` is not called.
 */
export function runAuthQuery(client: Client, userName: string, done: (user: PgUser) => void): void {
  const db = client.db!;
  const dbName = authDbName(db);
  // a [databases] entry may name it (it loads, as in PgBouncer): each login is refused and logged
  if (dbName === 'pgbouncer') {
    log.conn('error', client, RESERVED_AUTH_DBNAME);
    client.fail('bouncer config error');
    return;
  }
  const authDb = dbName === db.name ? db : findDatabase(dbName);
  if (authDb === null) {
    log.conn('error', client, `authentication database "${dbName}" is not configured.`);
    client.fail('bouncer config error');
    return;
  }
  if (authDb.disabled) {
    client.fail(`authentication database "${dbName}" is disabled`);
    return;
  }
  const authUser = registry.addUser(authUserFor(db)!);
  const sql = db.def?.auth_query ?? cf.auth_query;
  const pool = registry.getPool(authDb, authUser);

  client.pauseLogin();
  client.pool = pool;
  client.authQuery = (server: Server): void => {
    client.authQuery = null;
    runOn(client, server, sql, userName, done);
  };
  // linked now (an idle server) or later, when one is ready: pooler.link() calls authQuery
  pooler.findServer(client);
}

function runOn(client: Client, server: Server, sql: string, userName: string, done: (user: PgUser) => void): void {
  let columns = -1;
  let row: { name: string | null; secret: string | null } | null = null;
  let failed = false;

  const fail = (reason: string): Action => {
    failed = true;
    // the linked client is closed with it ("bouncer config error", pooler.disconnectServer)
    pooler.disconnectServer(server, true, reason);
    return STOP;
  };

  server.beginInternal(Internal.AUTH_QUERY);
  server.interceptor = (type: number, buf: Buffer, start: number, len: number): Action => {
    const end = start + len + 1;
    switch (type) {
      case B_PARSE_COMPLETE:
      case B_BIND_COMPLETE:
      case B_NO_DATA:
      case B_COMMAND_COMPLETE:
      case B_NOTICE:
        return HANDLED;
      case B_PARAMETER_STATUS:
        server.onParameterStatus(buf, start, len, null);
        return HANDLED;
      case B_ROW_DESCRIPTION:
        columns = buf.readInt16BE(start + 5);
        if (columns !== 2) {
          log.conn('warning', server, `expected 2 columns from auth_query, not ${columns}`);
          return fail(`expected 2 columns from auth_query, not ${columns}`);
        }
        return HANDLED;
      case B_DATA_ROW: {
        if (row !== null) return HANDLED; // first row wins
        const n = buf.readInt16BE(start + 5);
        if (n !== 2) return fail(`expected 2 columns from auth_query, not ${n}`);
        let pos = start + 7;
        const vals: Array<string | null> = [];
        for (let i = 0; i < 2; i++) {
          const l = buf.readInt32BE(pos);
          pos += 4;
          if (l < 0) {
            vals.push(null);
          } else {
            if (pos + l > end) return fail('auth_query: broken DataRow');
            vals.push(buf.toString('utf8', pos, pos + l));
            pos += l;
          }
        }
        row = { name: vals[0]!, secret: vals[1]! };
        return HANDLED;
      }
      case B_ERROR: {
        const f = parseErrorFields(buf, start + 5, end);
        log.conn('warning', server, `S: error in auth_query: ${f.get('S') ?? 'ERROR'} ${f.get('M') ?? ''}`);
        return fail('auth_query failed');
      }
      case B_READY_FOR_QUERY: {
        server.endInternal(buf[start + 5]!);
        // give the server back (releaseServer unlinks it), then the client to the login phase
        pooler.releaseServer(server);
        client.pool = null;
        client.changeState(ClientState.LOGIN);
        if (failed || client.closed) return STOP;
        if (row === null) {
          client.fail('no such user');
          return server.closed ? STOP : HANDLED;
        }
        const user = registry.addUser(userName);
        const secretText = row.secret;
        const old = user.secret;
        const oldText = old === null ? null : old.kind === 'plain' ? old.password : old.kind === 'md5' ? old.hash : old.text;
        if (oldText !== secretText) {
          // pass-through keys belong to the old secret
          user.scramClientKey = null;
          user.scramServerKey = null;
        }
        user.secret = secretText === null ? null : parseSecret(secretText);
        done(user);
        if (!client.closed) client.resumeLogin();
        return server.closed ? STOP : HANDLED;
      }
      default:
        log.conn('warning', server, `unexpected packet from server during auth_query: ${String.fromCharCode(type)}`);
        return fail('auth_query failed');
    }
  };
  server.send(msg.extendedQuery(sql, [userName]));
}
