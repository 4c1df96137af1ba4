// The admin console: database `pgbouncer` (https://www.pgbouncer.org/usage.html#admin-console).
// Access rules, the welcome, and the simple-Query-only message loop; commands themselves are in
// commands.ts.
import { cf } from '../config/current.js';
import { splitList } from '../config/settings.js';
import { F_BIND, F_EXECUTE, F_PARSE, F_QUERY } from '../protocol/constants.js';
import { registerAdminDb } from '../pool/admin-db.js';
import * as msg from '../protocol/messages.js';
import { cstrEnd } from '../protocol/reader.js';
import { HANDLED, NEED_FULL, STOP, WAIT, type Action } from '../protocol/stream.js';
import { ADMIN_SERVER_VERSION } from '../version.js';
import type { Client } from '../pool/client.js';
import { registry, type PgUser } from '../pool/objects.js';
import { ClientState } from '../pool/state.js';
import { trackedIndex, trackedNames } from '../pool/varcache.js';
import { log } from '../log/logger.js';
import { adminCancelRequest, adminError, adminIsWaiting, runAdminCommand } from './commands.js';
import { nowUs } from '../pool/clock.js';
import { peerUid } from '../auth/peer.js';

function inList(list: string, name: string): boolean {
  return splitList(list).includes(name);
}

function adminLevelFor(name: string): 'admin' | 'stats' | 'none' {
  if (inList(cf.admin_users, name)) return 'admin';
  if (inList(cf.stats_users, name)) return 'stats';
  return 'none';
}

/**
 * Before any password: 'trusted' (no password needed), 'denied' (client already told), or
 * 'password' (normal authentication; unknown names fail in the mock exchange).
 */
function checkAdminAccess(client: Client, userName: string, user: PgUser | null): 'trusted' | 'denied' | 'password' {
  if (userName === 'pgbouncer' && client.isUnix && peerUid(client) === process.getuid?.()) {
    log.conn('log', client, 'pgbouncer access from unix socket');
    client.adminLevel = 'admin';
    return 'trusted';
  }
  if (cf.auth_type === 'any') {
    const lvl = adminLevelFor(userName);
    client.adminLevel = lvl === 'none' ? 'stats' : lvl;
    return 'trusted';
  }
  const lvl = adminLevelFor(userName);
  if (lvl === 'none' && user !== null) {
    client.fail('not allowed');
    return 'denied';
  }
  client.adminLevel = lvl;
  return 'password';
}

/** Logged in to the console: the admin welcome (server_version=X/bouncer, fixed settings). */
function welcomeAdmin(client: Client): void {
  const db = registry.databases.get('pgbouncer')!;
  if (client.adminLevel === 'none') client.adminLevel = adminLevelFor(client.userName);
  if (client.adminLevel === 'none') {
    // authenticated, but neither in admin_users nor in stats_users
    client.fail('not allowed');
    return;
  }
  client.pool = registry.getPool(db, db.forcedUser!);
  const parts: Buffer[] = [
    msg.AUTH_OK_MSG,
    msg.parameterStatus('server_version', ADMIN_SERVER_VERSION),
    msg.parameterStatus('client_encoding', 'UTF8'),
    msg.parameterStatus('server_encoding', 'UTF8'),
    msg.parameterStatus('DateStyle', 'ISO'),
    msg.parameterStatus('TimeZone', 'GMT'),
    msg.parameterStatus('standard_conforming_strings', 'on'),
    msg.parameterStatus('is_superuser', 'on'),
  ];
  // tracked parameters the client set itself (e.g. application_name) are echoed back
  for (let i = 0; i < trackedNames.length; i++) {
    const v = client.vars.get(i);
    const name = trackedNames[i]!;
    if (v !== null && !['client_encoding', 'datestyle', 'timezone', 'standard_conforming_strings'].includes(name.toLowerCase())) {
      parts.push(msg.parameterStatus(name, v));
    }
  }
  parts.push(msg.backendKeyData(client.newCancelKey()));
  parts.push(msg.readyForQuery('I'));
  client.changeState(ClientState.ACTIVE);
  client.pool.stats.clientLoginCount++;
  client.enterPooling(Buffer.concat(parts));
}

/** Console messages: simple Query only. */
function adminOnMessage(client: Client, type: number, len: number, buf: Buffer, start: number, complete: boolean): Action {
  if (type !== F_QUERY) {
    // as PgBouncer's admin_handle_client(): an ERROR with its ReadyForQuery, then FATAL `bad
    // packet`; Parse, Bind and Execute only get a more helpful ERROR text
    adminError(client, type === F_PARSE || type === F_BIND || type === F_EXECUTE
      ? 'extended query protocol not supported by admin console'
      : `unsupported packet type for admin console: ${type}`);
    client.fail('bad packet');
    return STOP;
  }
  if (!complete) return NEED_FULL;
  // a PAUSE/SUSPEND/WAIT_CLOSE is still running, or (workers > 1) the other loops' answers to the
  // last command are awaited: hold this query until it is answered
  if (adminIsWaiting(client)) return WAIT;
  const end = start + len + 1;
  const qe = cstrEnd(buf, start + 5, end);
  const sql = buf.toString('utf8', start + 5, qe < 0 ? end : qe);
  client.requestTimeUs = nowUs();
  runAdminCommand(client, sql);
  return client.closed ? STOP : HANDLED;
}

/** A CancelRequest with a console client's key: resume a PAUSE/SUSPEND it waits for. */
function adminCancel(target: Client): void {
  adminCancelRequest(target);
}

export { trackedIndex };

// the `pgbouncer` database's clients are handed to this module (pool/admin-db.ts)
registerAdminDb({ checkAccess: checkAdminAccess, welcome: welcomeAdmin, onMessage: adminOnMessage, cancel: adminCancel });
