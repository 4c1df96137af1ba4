// Options of the fault suite (`node dist/test/run.js --faults [--long] [--soak=SECONDS]
// [--pooler=PATH]`): test/run.ts turns them into environment variables, read here.

/** --long: the long variants (e.g. a million malformed messages instead of 100,000). */
export const LONG: boolean = !!process.env.PGBUN_FAULTS_LONG && process.env.PGBUN_FAULTS_LONG !== '0';

/** --soak=SECONDS: how long soak.test.ts runs; 0 = the soak test is skipped. */
export const SOAK_SECONDS: number = Math.max(0, Number(process.env.PGBUN_FAULTS_SOAK || 0) || 0);

/** --pooler=PATH: the binary under test (PGBUN_BIN); '' = this repository's pgbun. */
export const POOLER: string = process.env.PGBUN_BIN ?? '';

/** The pooler under test is PgBouncer itself (side-by-side runs). */
export const IS_PGBOUNCER: boolean = /pgbouncer/.test(POOLER);
