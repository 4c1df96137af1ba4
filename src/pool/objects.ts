// The pooler's object model, after PgBouncer's objects.c: databases, users and pools (one per
// (database, user) pair). A pool owns one list per connection state; the counts of those lists
// are what SHOW POOLS prints.
import type { DatabaseDef, PoolMode, UserDef } from '../config/types.js';
import type { Secret } from '../auth/secret.js';
import { cf } from '../config/current.js';
import { StateList } from './list.js';
import type { Client } from './client.js';
import type { Server } from './server.js';
import { PoolStats } from '../stats/counters.js';
import { PoolLatency } from '../stats/latency.js';
import type { VarCache } from './varcache.js';
import { ClientState, SERVER_STATES_COUNTED, SERVER_STATES_SHOWN, ServerState } from './state.js';

/** A user known to pgbun: from auth_file, [users], auth_query or a forced `user=`. */
export class PgUser {
  /** secret from auth_file or auth_query; null = no usable password */
  secret: Secret | null = null;
  /** true when the user is in auth_file (trust needs that) */
  inAuthFile = false;
  /** the [users] entry, if any */
  def: UserDef | null = null;
  /** current server connections / client connections of this user, over all pools */
  serverCount = 0;
  clientCount = 0;
  /** SCRAM pass-through keys recovered from a client's proof */
  scramClientKey: Buffer | null = null;
  scramServerKey: Buffer | null = null;
  /** workers > 1: this user's slot in the shared counters (limits.ts; -2 = not looked up yet) */
  sharedSlot = -2;

  constructor(readonly name: string) {}

  get poolMode(): PoolMode | null {
    return this.def?.pool_mode ?? null;
  }

  get maxUserConnections(): number {
    return this.def?.max_user_connections ?? cf.max_user_connections;
  }

  get maxUserClientConnections(): number {
    return this.def?.max_user_client_connections ?? cf.max_user_client_connections;
  }
}

/** One `[databases]` entry (or an auto-database made from `*`, or the admin console). */
export class PgDatabase {
  def: DatabaseDef | null;
  /** the admin console database `pgbouncer` */
  readonly admin: boolean;
  /** created from the `*` entry */
  autodb = false;
  /** forced server user (`user=` in the connection string) */
  forcedUser: PgUser | null = null;
  hosts: string[] = [];
  /** next host to try (load_balance_hosts) */
  hostIndex = 0;
  serverCount = 0;
  clientCount = 0;
  paused = false;
  disabled = false;
  /** bumped when the definition changes: servers of older generations are closed on release */
  generation = 0;
  /** when the last pool of an auto-database became unused (autodb_idle_timeout) */
  inactiveSinceUs = 0;
  readonly pools = new Map<PgUser, PgPool>();
  /** workers > 1: this database's slot in the shared counters (limits.ts; -2 = not looked up yet) */
  sharedSlot = -2;

  constructor(readonly name: string, def: DatabaseDef | null, admin = false) {
    this.def = def;
    this.admin = admin;
    this.applyDef(def);
  }

  applyDef(def: DatabaseDef | null): void {
    this.def = def;
    this.hosts = def?.host ? def.host.split(',').map((h) => h.trim()).filter((h) => h !== '') : [];
    if (this.hostIndex >= this.hosts.length) this.hostIndex = 0;
  }

  get dbname(): string {
    return this.def?.dbname ?? this.name;
  }

  get port(): number {
    return this.def?.port ?? 5432;
  }

  get poolMode(): PoolMode | null {
    return this.admin ? 'statement' : this.def?.pool_mode ?? null;
  }

  get poolSize(): number {
    if (this.admin) return 2;
    return this.def?.pool_size ?? cf.default_pool_size;
  }

  get minPoolSize(): number {
    return this.def?.min_pool_size ?? cf.min_pool_size;
  }

  get reservePoolSize(): number {
    return this.def?.reserve_pool_size ?? cf.reserve_pool_size;
  }

  get maxDbConnections(): number {
    return this.def?.max_db_connections ?? cf.max_db_connections;
  }

  get maxDbClientConnections(): number {
    return this.def?.max_db_client_connections ?? cf.max_db_client_connections;
  }

  get serverLifetime(): number {
    const v = this.def?.server_lifetime;
    return v !== null && v !== undefined && v > 0 ? v : cf.server_lifetime;
  }

  get loadBalanceHosts(): 'round-robin' | 'disable' {
    return this.def?.load_balance_hosts ?? 'round-robin';
  }
}

/** Server connections and waiting clients for one (database, user). */
export class PgPool {
  // client lists
  readonly activeClients = new StateList<Client>('cl_active');
  readonly waitingClients = new StateList<Client>('cl_waiting');
  readonly activeCancelReqs = new StateList<Client>('cl_active_cancel_req');
  readonly waitingCancelReqs = new StateList<Client>('cl_waiting_cancel_req');
  // server lists
  readonly activeServers = new StateList<Server>('sv_active');
  readonly idleServers = new StateList<Server>('sv_idle');
  readonly usedServers = new StateList<Server>('sv_used');
  readonly testedServers = new StateList<Server>('sv_tested');
  readonly loginServers = new StateList<Server>('sv_login');
  readonly activeCancelServers = new StateList<Server>('sv_active_cancel');
  readonly beingCanceledServers = new StateList<Server>('sv_being_canceled');

  /** ParameterStatus set of the pool's first server login: what clients are welcomed with */
  welcome: Array<[string, string]> | null = null;
  /** tracked parameter values of that first server: defaults for clients that set none */
  welcomeVars: VarCache | null = null;
  /** the last server login error (relayed to clients while server_login_retry lasts) */
  lastLoginError: { sqlstate: string; message: string } | null = null;
  lastLoginFailedUs = 0;
  /** last server connect failure time (TCP level; delays retries without failing clients) */
  lastConnectFailedUs = 0;
  /** servers closed for lifetime, spaced out (server_lifetime / pool_size apart) */
  lastLifetimeDisconnectUs = 0;
  readonly stats = new PoolStats();
  /** query/transaction/wait histograms for the Prometheus endpoint */
  readonly latency = new PoolLatency();
  /** since when the pool has had no clients and no servers (pool_idle_timeout), 0 = in use */
  emptySinceUs = 0;
  /** workers > 1: this pool's slot in the shared counters (limits.ts; -2 = not looked up yet) */
  sharedSlot = -2;
  /**
   * workers > 1: the slot of the limit (this pool's, its database's or its user's) that kept this
   * loop from opening a server for the clients waiting here, and how many they were, as recorded
   * in its Counter.WAITING share (-1: none recorded)
   */
  blockedSlot = -1;
  blockedCount = 0;
  /** when this loop last asked another to give up a server for clients of this pool that wait long */
  starvingAskedUs = 0;
  /** workers > 1: servers of this loop closing to make room for this pool's next one (pooler.evictIdle) */
  roomPending = 0;

  constructor(readonly db: PgDatabase, readonly user: PgUser) {}

  get poolMode(): PoolMode {
    return this.user.poolMode ?? this.db.poolMode ?? cf.pool_mode;
  }

  get poolSize(): number {
    return this.user.def?.pool_size ?? this.db.poolSize;
  }

  get reservePoolSize(): number {
    return this.user.def?.reserve_pool_size ?? this.db.reservePoolSize;
  }

  get minPoolSize(): number {
    const size = this.poolSize;
    const min = this.db.minPoolSize;
    return size > 0 && min > size ? size : min;
  }

  /** The list a client in state `st` belongs to (null: not in a pool list). */
  clientList(st: ClientState): StateList<Client> | null {
    switch (st) {
      case ClientState.WAITING:
      case ClientState.WAITING_LOGIN:
        return this.waitingClients;
      case ClientState.ACTIVE:
        return this.activeClients;
      case ClientState.WAITING_CANCEL:
        return this.waitingCancelReqs;
      case ClientState.ACTIVE_CANCEL:
        return this.activeCancelReqs;
      default:
        return null;
    }
  }

  /** The list a server in state `st` belongs to (null: FREE). */
  serverList(st: ServerState): StateList<Server> | null {
    switch (st) {
      case ServerState.LOGIN:
        return this.loginServers;
      case ServerState.IDLE:
        return this.idleServers;
      case ServerState.ACTIVE:
        return this.activeServers;
      case ServerState.USED:
        return this.usedServers;
      case ServerState.TESTED:
        return this.testedServers;
      case ServerState.ACTIVE_CANCEL:
        return this.activeCancelServers;
      case ServerState.BEING_CANCELED:
        return this.beingCanceledServers;
      default:
        return null;
    }
  }

  /**
   * Call fn for every server in one of `states` (default: all), state by state in that order.
   * Each list is copied first, so fn may close servers or change their state.
   */
  forEachServer(fn: (s: Server) => void, states: readonly ServerState[] = SERVER_STATES_SHOWN): void {
    for (const st of states) {
      const list = this.serverList(st);
      if (list !== null && list.count > 0) for (const s of list.toArray()) fn(s);
    }
  }

  /**
   * PgBouncer's tag_pool_dirty (RECONNECT, a changed server-side TLS configuration): every
   * server is closed once it is released, and the welcome is forgotten, so that clients logging
   * in from now on wait for a server login made with the new settings (and get its error if it
   * fails) instead of being welcomed with the old server's parameters.
   */
  tagDirty(): void {
    if (this.db.admin) return;
    this.forgetWelcome();
    this.forEachServer((s) => {
      s.closeNeeded = true;
    }, SERVER_STATES_COUNTED);
  }

  /** The next server login provides the welcome (a changed [databases] entry, tagDirty). */
  forgetWelcome(): void {
    this.welcome = null;
    this.welcomeVars = null;
  }

  /** all server connections that count against pool_size (cancel connections do not) */
  get serverCount(): number {
    return this.activeServers.count + this.idleServers.count + this.usedServers.count +
      this.testedServers.count + this.loginServers.count + this.beingCanceledServers.count;
  }

  get clientCount(): number {
    return this.activeClients.count + this.waitingClients.count;
  }

  /** per-user, then per-database, then global query_wait_timeout (seconds) */
  get queryWaitTimeout(): number {
    return this.user.def?.query_wait_timeout ?? this.db.def?.query_wait_timeout ?? cf.query_wait_timeout;
  }

  get queryTimeout(): number {
    const v = this.user.def?.query_timeout;
    return v !== null && v !== undefined && v > 0 ? v : cf.query_timeout;
  }

  get idleTransactionTimeout(): number {
    const v = this.user.def?.idle_transaction_timeout;
    return v !== null && v !== undefined && v > 0 ? v : cf.idle_transaction_timeout;
  }

  get transactionTimeout(): number {
    const v = this.user.def?.transaction_timeout;
    return v !== null && v !== undefined && v > 0 ? v : cf.transaction_timeout;
  }

  get clientIdleTimeout(): number {
    const v = this.user.def?.client_idle_timeout;
    return v !== null && v !== undefined && v > 0 ? v : cf.client_idle_timeout;
  }
}

/** Everything the pooler knows, in one place (PgBouncer's global lists). */
export class Registry {
  readonly databases = new Map<string, PgDatabase>();
  readonly users = new Map<string, PgUser>();
  /** pools in creation order (SHOW POOLS order) */
  readonly pools: PgPool[] = [];
  /** clients not yet logged in */
  readonly loginClients = new StateList<Client>('cl_login');
  /** all client connections (for max_client_conn) */
  clientCount = 0;
  /** all server connections */
  serverCount = 0;

  getUser(name: string): PgUser | undefined {
    return this.users.get(name);
  }

  addUser(name: string): PgUser {
    let u = this.users.get(name);
    if (!u) {
      u = new PgUser(name);
      this.users.set(name, u);
    }
    return u;
  }

  getPool(db: PgDatabase, user: PgUser): PgPool {
    let p = db.pools.get(user);
    if (!p) {
      p = new PgPool(db, user);
      db.pools.set(user, p);
      this.pools.push(p);
    }
    return p;
  }

  removePool(p: PgPool): void {
    p.db.pools.delete(p.user);
    const i = this.pools.indexOf(p);
    if (i >= 0) this.pools.splice(i, 1);
  }
}

export const registry = new Registry();
