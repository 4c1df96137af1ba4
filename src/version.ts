// The version pgbun reports. Tools that parse PgBouncer's version keep working because the
// text starts like PgBouncer's: `PgBouncer 1.25.2 (pgbun 0.1.0)` (pgbun --version, SHOW VERSION).
// A unit test keeps PGBUN_VERSION equal to package.json's version.

const PGBUN_VERSION = '0.1.0';
const PGBOUNCER_COMPAT_VERSION = '1.25.2';
export const VERSION_STRING = `PgBouncer ${PGBOUNCER_COMPAT_VERSION} (pgbun ${PGBUN_VERSION})`;
/** server_version the admin console reports: `<X.Y.Z>/bouncer` */
export const ADMIN_SERVER_VERSION = `${PGBOUNCER_COMPAT_VERSION}/bouncer`;
