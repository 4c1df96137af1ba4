// TLS configuration (client_tls_* / server_tls_*): built at startup and on reload.

/** Build the TLS contexts from the current settings; returns an error text or null. */
export function setupTls(_startup: boolean): string | null {
  return null;
}
