// Choosing and starting the client authentication method: auth_type, or the matching
// auth_hba_file rule; auth_query first when the user is not in auth_file.
// Called once the startup packet is accepted and the connection limits are checked; ends in
// client.afterAuth(), client.startPassword() or client.fail().
import { cf } from '../config/current.js';
import { log } from '../log/logger.js';
import type { Client } from '../pool/client.js';
import { registry, type PgUser } from '../pool/objects.js';
import { adminDb } from '../pool/admin-db.js';
import { runAuthQuery, usesAuthQuery } from '../pool/auth-query.js';
import { upgradedTlsVerifies } from '../runtime/handles.js';
import { runtimeName } from '../runtime/name.js';
import { clientCertificate } from '../tls/client.js';
import { certNameMatches } from './cert-name.js';
import { matchHba, parseHbaFile, type HbaRule } from './hba.js';
import { identMapMatches, parseIdentFile, type IdentMaps } from './ident.js';
import { peerCredentials } from './peer.js';
import type { PasswordMethod } from './client-auth.js';

// ---------------------------------------------------------------------------------------------
// auth_hba_file and auth_ident_file

let hbaRules: HbaRule[] = [];
let identMaps: IdentMaps = new Map();
let authFilesLoaded = false;

/**
 * (Re-)read auth_hba_file and auth_ident_file (startup, RELOAD, SIGHUP): PgBouncer re-reads both
 * on every reload. Unparseable lines are skipped with a warning; a missing file is logged and
 * leaves no rules (then every hba login fails with `no authentication method is found`).
 * Returns why the rules were refused, null when they were not.
 */
export function reloadAuthFiles(): string | null {
  authFilesLoaded = true;
  if (cf.auth_type !== 'hba') {
    // only HBA rules use them (ident maps are named by `map=` of HBA lines)
    hbaRules = [];
    identMaps = new Map();
    return null;
  }
  let refusal: string | null = null;
  const report = (problems: Array<{ message: string; warning?: boolean }>): boolean => {
    let unreadable = false;
    for (const p of problems) {
      if (p.warning) log.warning(p.message);
      else {
        log.error(p.message);
        unreadable = true;
      }
    }
    return unreadable;
  };
  if (!cf.auth_hba_file) {
    hbaRules = [];
  } else {
    const { rules, problems } = parseHbaFile(cf.auth_hba_file);
    // a `cert` rule on a runtime that cannot tell whether a certificate verified (Bun) is
    // refused, not weakened: pgbun does not start, a reload keeps the rules in force
    const cert = upgradedTlsVerifies() ? undefined : rules.find((r) => r.method === 'cert');
    if (cert !== undefined) {
      refusal = `${cert.file}:${cert.line}: cert authentication needs client certificates verified, which ${runtimeName()} cannot do on a connection upgraded by SSLRequest; run pgbun on Node.js for it`;
      log.error(refusal);
    } else if (!report(problems)) {
      // a file that cannot be read at all keeps the rules in force (PgBouncer: load failed)
      hbaRules = rules;
    }
  }
  if (!cf.auth_ident_file) {
    identMaps = new Map();
  } else {
    const { maps, problems } = parseIdentFile(cf.auth_ident_file);
    if (!report(problems)) identMaps = maps;
  }
  return refusal;
}

function ensureAuthFiles(): void {
  if (!authFilesLoaded) reloadAuthFiles();
}

// ---------------------------------------------------------------------------------------------

type Method = 'trust' | 'any' | 'plain' | 'md5' | 'scram-sha-256' | 'cert' | 'peer' | 'reject' | 'ldap' | 'pam';

const CERT_FAILED = 'certificate authentication failed';
const PEER_FAILED = 'unix socket login rejected';

export function beginAuth(client: Client, userName: string, user: PgUser | null, isAdminDb: boolean): void {
  let method: Method;
  let map: string | null = null;
  if (cf.auth_type === 'hba') {
    ensureAuthFiles();
    const rule = matchHba(hbaRules, {
      unix: client.isUnix,
      tls: client.tlsInfo !== '',
      database: client.dbName,
      user: userName,
      addr: client.addr,
      replication: client.replication,
    });
    if (rule === null) {
      client.fail('no authentication method is found');
      return;
    }
    method = rule.method === 'password' ? 'plain' : rule.method;
    map = rule.map;
  } else {
    method = cf.auth_type as Method;
  }

  if (method === 'any') {
    const db = client.db;
    if (!isAdminDb && db !== null && db.forcedUser === null) {
      log.conn('warning', client, 'auth_type=any requires forced user');
      client.fail('bouncer config error');
      return;
    }
    if (user === null) client.loginUser = registry.addUser(userName);
    client.afterAuth();
    return;
  }
  if (method === 'reject') {
    client.fail('login rejected');
    return;
  }
  if (method === 'ldap' || method === 'pam') {
    log.conn('warning', client, `${method === 'ldap' ? 'LDAP' : 'PAM'} support is not built in`);
    client.fail(`${method === 'ldap' ? 'LDAP' : 'PAM'} authentication failed`);
    return;
  }

  // A user not in auth_file (or only with a [users] entry) is looked up with auth_query when an
  // auth_user is configured; never for an unknown database (mock auth then). Console logins too
  // (PgBouncer 1.25): once found, the user must be in admin_users or stats_users, before any
  // password is asked.
  if (client.db !== null && usesAuthQuery(client.db, user)) {
    runAuthQuery(client, userName, (found) => {
      client.loginUser = found;
      if (isAdminDb && adminDb().checkAccess(client, userName, found) === 'denied') return;
      withUser(client, userName, found, true, method, map);
    });
    return;
  }
  withUser(client, userName, user, user !== null && user.inAuthFile, method, map, isAdminDb);
}

/** The method, now that the user is known (`known`: from auth_file or auth_query). */
function withUser(client: Client, userName: string, user: PgUser | null, known: boolean, method: Method, map: string | null, isAdminDb = false): void {
  switch (method) {
    case 'trust':
      if (!known) {
        client.fail('"trust" authentication failed');
        return;
      }
      client.afterAuth();
      return;
    case 'plain':
    case 'md5':
    case 'scram-sha-256':
      client.startPassword(method as PasswordMethod, userName, user);
      return;
    // the console needs no auth_file entry for an identity proven by certificate or peer
    // (admin_users / stats_users decide what it may do)
    case 'cert':
      certAuth(client, userName, user, known || isAdminDb, map);
      return;
    case 'peer':
      peerAuth(client, userName, user, known || isAdminDb, map);
      return;
    default:
      log.conn('warning', client, `auth method ${method} is not supported`);
      client.fail('bouncer config error');
  }
}

/**
 * auth_type=cert / HBA `cert`: TLS with a verified client certificate naming the user (libtls
 * name rules), or the certificate's CommonName mapped to the user by the rule's ident map.
 */
function certAuth(client: Client, userName: string, user: PgUser | null, known: boolean, map: string | null): void {
  const why = certMismatch(client, userName, map);
  if (why !== null) {
    log.conn('log', client, why);
    client.fail(CERT_FAILED);
    return;
  }
  if (!known) {
    log.conn('log', client, `no such user: ${userName}`);
    client.fail(CERT_FAILED);
    return;
  }
  client.loginUser = user ?? registry.addUser(userName);
  client.afterAuth();
}

function certMismatch(client: Client, userName: string, map: string | null): string | null {
  const cert = clientCertificate(client);
  if (typeof cert === 'string') return cert;
  if (map !== null) {
    const cn = cert.subject?.CN;
    const name = Array.isArray(cn) ? null : cn ?? null;
    if (name === null || !identMapMatches(identMaps.get(map), name, userName)) return `ident map: ${map} does not have a match`;
    return null;
  }
  return certNameMatches(cert, userName) ? null : 'TLS certificate name mismatch';
}

/**
 * HBA `peer`: the Unix-socket peer's OS user (SO_PEERCRED, see peer.ts) must be the database
 * user, or map to it through the rule's ident map.
 */
function peerAuth(client: Client, userName: string, user: PgUser | null, known: boolean, map: string | null): void {
  if (!client.isUnix) {
    log.conn('log', client, 'peer authentication is only possible over a Unix socket');
    client.fail(PEER_FAILED);
    return;
  }
  client.pauseLogin();
  void peerCredentials(client).then((cred) => {
    if (client.closed) return;
    let why: string | null = null;
    if (cred === null || cred.userName === null) {
      why = cred === null ? 'could not get peer credentials' : `peer uid ${cred.uid} has no user name`;
    } else if (map !== null) {
      if (!identMapMatches(identMaps.get(map), cred.userName, userName)) why = `ident map ${map} cannot be matched`;
    } else if (cred.userName !== userName) {
      why = `peer authentication failed: OS user "${cred.userName}" is not "${userName}"`;
    }
    if (why === null && !known) why = `no such user: ${userName}`;
    if (why !== null) {
      log.conn('log', client, why);
      client.fail(PEER_FAILED);
      return;
    }
    client.loginUser = user ?? registry.addUser(userName);
    client.afterAuth();
    if (!client.closed) client.resumeLogin();
  });
}
