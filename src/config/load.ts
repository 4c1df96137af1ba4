// Loads pgbouncer.ini into settings, databases, users and peers with PgBouncer's rules for
// startup and reload (https://www.pgbouncer.org/config.html). Every problem names file and line.
import type { ConfigProblem, DatabaseDef, PeerDef, UserDef } from './types.js';
import { IniValueError, located, parseIniFile } from './parser.js';
import { ConnstrError, parseDatabase, parsePeer, parseUser } from './connstr.js';
import { SettingError, defaultSettings, resetDefaults, setSetting, type Settings } from './settings.js';

export const SECTIONS = ['pgbouncer', 'databases', 'users', 'peers'] as const;

/** PostgreSQL's NAMEDATALEN - 1: longer database names are refused */
const MAX_DBNAME = 63;

export interface LoadedConfig {
  /** the file that was read */
  file: string;
  settings: Settings;
  /** `[databases]` in file order, `*` included */
  databases: Map<string, DatabaseDef>;
  users: Map<string, UserDef>;
  peers: Map<number, PeerDef>;
}

export interface LoadOptions {
  /** true at process start; false for RELOAD/SIGHUP (non-reloadable keys are then ignored) */
  startup: boolean;
  /** the settings in force, for a reload: the file is applied on top of a copy of them */
  current?: Settings;
  /** `pgbun --check`: keep going after a problem and report them all */
  collectAll?: boolean;
}

export interface LoadResult {
  /** null when there was any problem: PgBouncer refuses the file */
  config: LoadedConfig | null;
  problems: ConfigProblem[];
  /**
   * What had been applied when loading stopped. On a failed reload PgBouncer keeps the
   * settings set before the bad line (and the databases read so far), so RELOAD uses this.
   */
  partial: LoadedConfig;
}

export function loadConfig(path: string, opts: LoadOptions): LoadResult {
  const settings: Settings = opts.current ? { ...opts.current } : defaultSettings(path);
  const out: LoadedConfig = {
    file: path, settings, databases: new Map(), users: new Map(), peers: new Map(),
  };
  let mainSeen = false;

  const problems = parseIniFile(path, {
    section(name) {
      if (name !== 'pgbouncer') return;
      mainSeen = true;
      resetDefaults(settings, { startup: opts.startup });
    },
    key({ section, key, value, file, line }) {
      try {
        switch (section) {
          case 'pgbouncer':
            setSetting(settings, key, value, { startup: opts.startup });
            break;
          case 'databases':
            if (key === 'pgbouncer') throw new IniValueError(`database name "${key}" is reserved`);
            if (Buffer.byteLength(key, 'utf8') > MAX_DBNAME) {
              throw new IniValueError(`too long db name: ${key}`);
            }
            out.databases.set(key, parseDatabase(key, value, file, line));
            break;
          case 'users':
            out.users.set(key, parseUser(key, value, file, line));
            break;
          case 'peers': {
            const peer = parsePeer(key, value, file, line);
            out.peers.set(peer.peer_id, peer);
            break;
          }
        }
      } catch (err) {
        if (err instanceof SettingError) {
          // an unknown key logs its own line first; a bad value its reason, if the key's check
          // gives one, then the `invalid value` line
          throw new IniValueError(err.kind === 'unknown' ? err.message : err.reason);
        }
        if (err instanceof ConnstrError) throw new IniValueError(err.message);
        throw err;
      }
    },
  }, { sections: SECTIONS, collectAll: opts.collectAll });

  const stopped = problems.length > 0 && !opts.collectAll;
  if (!stopped && !mainSeen) {
    const text = 'load_init_file: main section missing from config file';
    problems.push({ file: path, line: 0, message: located(text, path, 0), log: [text] });
  }
  const failed = problems.some((p) => !p.warning);
  return { config: failed ? null : out, problems, partial: out };
}
