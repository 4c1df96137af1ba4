#!/usr/bin/env node
// pgbun entry point (npm bin): run the compiled CLI under whatever name this file was invoked by,
// e.g. a `pgbouncer` symlink put in PgBouncer's place (cli.js alone recognises only its own names).
process.env.PGBUN_MAIN = '1';
await import('../dist/src/cli.js');
