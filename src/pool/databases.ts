// Applying a loaded config to the registry: databases, users and auth_file secrets, at start
// and on RELOAD, and auto-databases made from the `*` entry.
import type { DatabaseDef } from '../config/types.js';
import type { LoadedConfig } from '../config/load.js';
import { parseSecret } from '../auth/secret.js';
import { log } from '../log/logger.js';
import { nowUs } from './clock.js';
import { registry, PgDatabase } from './objects.js';

/** the `*` entry, if any: template for auto-databases */
let autodbTemplate: DatabaseDef | null = null;

/** The admin console database and its user exist from the start. */
function ensureAdminDb(): PgDatabase {
  let db = registry.databases.get('pgbouncer');
  if (!db) {
    db = new PgDatabase('pgbouncer', null, true);
    db.forcedUser = registry.addUser('pgbouncer');
    registry.databases.set('pgbouncer', db);
  }
  return db;
}

/** The fields whose change makes existing server connections obsolete (close_needed). */
function sameServerDefinition(a: DatabaseDef, b: DatabaseDef): boolean {
  return a.dbname === b.dbname && a.host === b.host && a.port === b.port && a.user === b.user &&
    a.password === b.password && a.connect_query === b.connect_query && a.auth_dbname === b.auth_dbname &&
    a.auth_query === b.auth_query && a.load_balance_hosts === b.load_balance_hosts &&
    a.client_encoding === b.client_encoding && a.datestyle === b.datestyle && a.timezone === b.timezone &&
    a.application_name === b.application_name;
}

/**
 * Install users (auth_file + [users]) and databases. On reload, users keep existing (as in
 * PgBouncer, they are never deleted) but lose a password the file no longer gives; changed
 * databases get a new generation (their servers are closed when released); removed ones are
 * returned so the caller can close their connections.
 */
export function applyConfig(cfg: LoadedConfig, authUsers: Map<string, string> | null): PgDatabase[] {
  if (authUsers !== null) {
    for (const u of registry.users.values()) {
      u.secret = null;
      u.inAuthFile = false;
    }
    for (const [name, secret] of authUsers) {
      const u = registry.addUser(name);
      u.secret = parseSecret(secret);
      u.inAuthFile = true;
    }
  }
  for (const u of registry.users.values()) u.def = cfg.users.get(u.name) ?? null;
  for (const [name, def] of cfg.users) registry.addUser(name).def = def;

  ensureAdminDb();
  autodbTemplate = cfg.databases.get('*') ?? null;
  const seen = new Set<string>();
  for (const [name, def] of cfg.databases) {
    if (name === '*') continue;
    seen.add(name);
    const old = registry.databases.get(name);
    if (old) {
      if (old.def !== null && !sameServerDefinition(old.def, def)) definitionChanged(old);
      old.autodb = false;
      old.applyDef(def);
      setForcedUser(old, def);
    } else {
      const db = new PgDatabase(name, def);
      setForcedUser(db, def);
      registry.databases.set(name, db);
    }
  }
  const removed: PgDatabase[] = [];
  for (const [name, db] of registry.databases) {
    if (db.admin || seen.has(name)) continue;
    if (db.autodb) {
      // auto-databases follow the `*` entry
      if (autodbTemplate === null) removed.push(db);
      else {
        const def = autodbDef(name, autodbTemplate);
        if (db.def !== null && !sameServerDefinition(db.def, def)) definitionChanged(db);
        db.applyDef(def);
        setForcedUser(db, def);
      }
      continue;
    }
    removed.push(db);
  }
  return removed;
}

/**
 * A changed [databases] entry (PgBouncer's tag_database_dirty): its servers are closed when
 * released, and clients logging in from now on wait for a login with the new definition.
 */
function definitionChanged(db: PgDatabase): void {
  db.generation++;
  for (const p of db.pools.values()) p.forgetWelcome();
}

function setForcedUser(db: PgDatabase, def: DatabaseDef): void {
  if (def.user) {
    db.forcedUser = registry.addUser(def.user);
  } else if (db.forcedUser !== null && !db.admin) {
    // PgBouncer cannot drop a forced user on reload either: keep it, say so
    log.warning(`database ${db.name}: removing the forced user on reload is not supported, keeping ${db.forcedUser.name}`);
  }
}

function autodbDef(name: string, t: DatabaseDef): DatabaseDef {
  return { ...t, name, dbname: t.dbname ?? name };
}

/** A configured database, or a new auto-database from `*`, or null. */
export function findDatabase(name: string): PgDatabase | null {
  const db = registry.databases.get(name);
  if (db) return db.admin ? null : db;
  if (autodbTemplate === null) return null;
  const auto = new PgDatabase(name, autodbDef(name, autodbTemplate));
  auto.autodb = true;
  auto.inactiveSinceUs = nowUs();
  setForcedUser(auto, auto.def!);
  registry.databases.set(name, auto);
  log.log(`registered new auto-database: ${name}`);
  return auto;
}
