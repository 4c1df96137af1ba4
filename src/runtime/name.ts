// Which JavaScript runtime runs pgbun. pgbun runs on Node.js and on Bun; log lines, `pgbun -V`
// and the refusals of what a runtime cannot do safely name it.

const bunVersion = (process.versions as Record<string, string | undefined>).bun;

/** The runtime as a log line names it: `node v24.1.0`, `Bun 1.2.0`. */
export function runtimeName(): string {
  return bunVersion !== undefined ? `Bun ${bunVersion}` : `node ${process.version}`;
}

/** `pgbun -V`'s runtime line: `Node.js v24.1.0`, `Bun 1.2.0`. */
export function runtimeTitle(): string {
  return bunVersion !== undefined ? `Bun ${bunVersion}` : `Node.js ${process.version}`;
}

/** The TLS library, as `pgbun -V` and the `process up` log line name it. */
export function tlsLibrary(): string {
  return process.versions.boringssl !== undefined ? 'BoringSSL' : `OpenSSL ${process.versions.openssl}`;
}
