// Connection states, named as PgBouncer names them (SHOW SOCKETS shows these names). Every
// client and server is in exactly one state, and the state decides which list it is in.

export const enum ClientState {
  /** not yet logged in (global login list) */
  LOGIN = 1,
  /** logged in, waiting for a server (pool waiting list) */
  WAITING = 2,
  /** authenticated, waiting for the pool's first server login to fetch the welcome */
  WAITING_LOGIN = 3,
  /** logged in; linked to a server or idle (pool active list) */
  ACTIVE = 4,
  /** a cancel request connection waiting for its server cancel connection */
  WAITING_CANCEL = 5,
  /** a cancel request being sent */
  ACTIVE_CANCEL = 6,
  /** closed */
  FREE = 7,
}

export const enum ServerState {
  /** connecting / logging in */
  LOGIN = 1,
  /** usable right away */
  IDLE = 2,
  /** linked to a client */
  ACTIVE = 3,
  /** idle longer than server_check_delay: needs server_check_query before reuse */
  USED = 4,
  /** running server_reset_query or server_check_query */
  TESTED = 5,
  /** a connection that only carries a cancel request */
  ACTIVE_CANCEL = 6,
  /** a server whose query is being cancelled: not reused until the cancel is done */
  BEING_CANCELED = 7,
  FREE = 8,
}

export const CLIENT_STATE_NAMES: Record<number, string> = {
  1: 'cl_login', 2: 'cl_waiting', 3: 'cl_waiting', 4: 'cl_active', 5: 'cl_waiting_cancel_req',
  6: 'cl_active_cancel_req', 7: 'cl_free',
};

export const SERVER_STATE_NAMES: Record<number, string> = {
  1: 'sv_login', 2: 'sv_idle', 3: 'sv_active', 4: 'sv_used', 5: 'sv_tested', 6: 'sv_active_cancel',
  7: 'sv_being_canceled', 8: 'sv_free',
};
