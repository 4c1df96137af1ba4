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

/** Every server state in the order SHOW SERVERS, SHOW SOCKETS and SHOW FDS list them. */
export const SERVER_STATES_SHOWN: readonly ServerState[] = [
  ServerState.ACTIVE, ServerState.IDLE, ServerState.USED, ServerState.TESTED, ServerState.LOGIN,
  ServerState.ACTIVE_CANCEL, ServerState.BEING_CANCELED,
];

/** The servers that count against pool_size (cancel connections do not). */
export const SERVER_STATES_COUNTED: readonly ServerState[] = [
  ServerState.ACTIVE, ServerState.IDLE, ServerState.USED, ServerState.TESTED, ServerState.LOGIN,
  ServerState.BEING_CANCELED,
];

/**
 * State names as PgBouncer shows them: `socket` in SHOW SOCKETS and SHOW LISTS (cl_active,
 * sv_idle, ...), `show` in the state column of SHOW CLIENTS/SERVERS (active, idle, new, ...).
 * A client in ACTIVE without a server shows as `idle` there.
 */
export const CLIENT_STATE_NAMES: Record<ClientState, { socket: string; show: string }> = {
  [ClientState.LOGIN]: { socket: 'cl_login', show: 'login' },
  [ClientState.WAITING]: { socket: 'cl_waiting', show: 'waiting' },
  [ClientState.WAITING_LOGIN]: { socket: 'cl_waiting', show: 'waiting' },
  [ClientState.ACTIVE]: { socket: 'cl_active', show: 'active' },
  [ClientState.WAITING_CANCEL]: { socket: 'cl_waiting_cancel_req', show: 'waiting_cancel_req' },
  [ClientState.ACTIVE_CANCEL]: { socket: 'cl_active_cancel_req', show: 'active_cancel_req' },
  [ClientState.FREE]: { socket: 'cl_free', show: 'free' },
};

export const SERVER_STATE_NAMES: Record<ServerState, { socket: string; show: string }> = {
  [ServerState.LOGIN]: { socket: 'sv_login', show: 'new' },
  [ServerState.IDLE]: { socket: 'sv_idle', show: 'idle' },
  [ServerState.ACTIVE]: { socket: 'sv_active', show: 'active' },
  [ServerState.USED]: { socket: 'sv_used', show: 'used' },
  [ServerState.TESTED]: { socket: 'sv_tested', show: 'tested' },
  [ServerState.ACTIVE_CANCEL]: { socket: 'sv_active_cancel', show: 'active_cancel' },
  [ServerState.BEING_CANCELED]: { socket: 'sv_being_canceled', show: 'being_canceled' },
  [ServerState.FREE]: { socket: 'sv_free', show: 'free' },
};
