// Tracked session parameters (PgBouncer's varcache). Clients set them in the startup packet or
// with SET (the server reports GUC_REPORT changes with ParameterStatus); servers are shared, so
// before a client's first packet reaches a server whose values differ, pgbun sends one
// `SET k='v';...` batch and swallows its results.

const BUILTIN = ['client_encoding', 'DateStyle', 'TimeZone', 'standard_conforming_strings', 'application_name'];

/** canonical names, in the order PgBouncer welcomes clients with them */
export let trackedNames: string[] = BUILTIN.slice();
const indexByLower = new Map<string, number>();

/** Set the list once at startup: track_extra_parameters is not reloadable. */
export function initTrackedParams(extra: string[]): void {
  trackedNames = BUILTIN.slice();
  for (const e of extra) {
    if (!trackedNames.some((n) => n.toLowerCase() === e.toLowerCase())) trackedNames.push(e);
  }
  indexByLower.clear();
  trackedNames.forEach((n, i) => indexByLower.set(n.toLowerCase(), i));
}
initTrackedParams(['IntervalStyle']);

/** Index of a tracked parameter (case-insensitive), or -1. */
export function trackedIndex(name: string): number {
  return indexByLower.get(name.toLowerCase()) ?? -1;
}

export const APPLICATION_NAME = 4;

export class VarCache {
  readonly values: Array<string | null> = new Array<string | null>(trackedNames.length).fill(null);

  set(i: number, v: string): void {
    this.values[i] = v;
  }

  get(i: number): string | null {
    return this.values[i] ?? null;
  }

  /** Fill what is unset from `from` (a client takes the server defaults it did not choose). */
  fillUnset(from: VarCache): void {
    for (let i = 0; i < this.values.length; i++) {
      if (this.values[i] === null) this.values[i] = from.values[i] ?? null;
    }
  }

  /**
   * After a SET batch made `server` hold this client's values: take the server's spelling of
   * each (PostgreSQL reports DateStyle `ISO` as `ISO, MDY`, and says nothing when the value did
   * not change), so the same SET is not sent again on every transaction.
   */
  adoptCanonical(server: VarCache): void {
    for (let i = 0; i < this.values.length; i++) {
      const sv = server.values[i];
      if (this.values[i] !== null && this.values[i] !== undefined && sv !== null && sv !== undefined) this.values[i] = sv;
    }
  }

  copyFrom(from: VarCache): void {
    for (let i = 0; i < this.values.length; i++) this.values[i] = from.values[i] ?? null;
  }
}

/** SQL literal as PgBouncer writes it: E'' with doubled backslashes only when needed. */
function quoteLiteral(v: string): string {
  const q = v.replace(/'/g, "''");
  return v.includes('\\') ? `E'${q.replace(/\\/g, '\\\\')}'` : `'${q}'`;
}

/**
 * The SET batch that makes `server` match `client`, or null if nothing differs. Values are
 * compared case-insensitively like PgBouncer; search_path is passed as written.
 */
export function buildSetQuery(client: VarCache, server: VarCache): string | null {
  let sql: string | null = null;
  for (let i = 0; i < client.values.length; i++) {
    const cv = client.values[i];
    if (cv === null || cv === undefined) continue;
    const sv = server.values[i];
    if (sv === cv) continue; // the common case, without allocating lowercase copies
    if (sv !== null && sv !== undefined && sv.toLowerCase() === cv.toLowerCase()) continue;
    const name = trackedNames[i]!;
    const val = name.toLowerCase() === 'search_path' ? cv : quoteLiteral(cv);
    sql = (sql ?? '') + `SET ${name}=${val};`;
  }
  return sql;
}
