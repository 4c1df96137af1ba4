// Process-wide event counters for the Prometheus endpoint (admin/metrics.ts) that no SHOW
// command has: client logins refused by reason, server logins that failed, and the connection
// limits that refused a client or a new server connection. Successful logins are not counted
// here: SHOW STATS' client_login_count already counts them per pool.
import { PASSWORD_FAILED } from '../auth/client-auth.js';
import { SASL_AUTH_FAILED } from '../auth/scram.js';

/** `result` label of pgbun_client_logins_total, besides `ok` */
export type LoginFailure = 'wrong_password' | 'unknown_user' | 'hba_reject' | 'tls_required' | 'pool_full' | 'other';

export const loginFailures: Record<LoginFailure, number> = {
  wrong_password: 0, unknown_user: 0, hba_reject: 0, tls_required: 0, pool_full: 0, other: 0,
};

/** `limit` label of pgbun_pool_full_total */
export type Limit = 'max_client_conn' | 'max_db_client_connections' | 'max_user_client_connections' |
  'max_db_connections' | 'max_user_connections';

export const limitHits: Record<Limit, number> = {
  max_client_conn: 0, max_db_client_connections: 0, max_user_client_connections: 0,
  max_db_connections: 0, max_user_connections: 0,
};

export const serverLogins = { failed: 0 };

/** The client-side limit a login was refused by, from PgBouncer's error text; null for another reason. */
function clientLimit(reason: string): Limit | null {
  switch (reason) {
    case 'no more connections allowed (max_client_conn)': return 'max_client_conn';
    case 'client connections exceeded (max_db_client_connections)': return 'max_db_client_connections';
    case 'client connections exceeded (max_user_client_connections)': return 'max_user_client_connections';
    default: return null;
  }
}

/**
 * A client was refused during login with PgBouncer's `reason`. `knownUser`: the user has a
 * secret (auth_file or auth_query); an unknown one goes through a mock exchange that fails with
 * the same text as a wrong password, so only this tells them apart.
 */
export function countLoginFailure(reason: string, knownUser: boolean): void {
  const limit = clientLimit(reason);
  let kind: LoginFailure;
  if (limit !== null) {
    limitHits[limit]++;
    kind = 'pool_full';
  } else if (reason === 'SSL required') {
    kind = 'tls_required';
  } else if (reason === 'no authentication method is found' || reason === 'login rejected') {
    // no HBA line matches, or the matching line says `reject`
    kind = 'hba_reject';
  } else if (reason === PASSWORD_FAILED || reason === SASL_AUTH_FAILED || reason === '"trust" authentication failed') {
    kind = knownUser ? 'wrong_password' : 'unknown_user';
  } else {
    kind = 'other';
  }
  loginFailures[kind]++;
}
