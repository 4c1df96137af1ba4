// The only place pgbun reaches past node's public API, into a socket's native handle (`_handle`):
// node has no public way to read a socket's file descriptor (SO_PEERCRED for HBA `peer`, SHOW
// FDS) or to ask a TLS socket upgraded in place for its certificate verification result. Each
// reach checks that the runtime has what it needs (Bun, for one, may not) and says so when not,
// so callers can refuse or degrade instead of misbehaving.
import net from 'node:net';
import tls from 'node:tls';

interface NativeHandle {
  fd?: number;
  verifyError?: () => (Error & { code?: string }) | null;
}

function handleOf(x: net.Socket | net.Server): NativeHandle | undefined {
  return (x as unknown as { _handle?: NativeHandle })._handle;
}

/** The file descriptor of a socket or listening server, or null when the runtime does not tell. */
export function socketFd(x: net.Socket | net.Server): number | null {
  const fd = handleOf(x)?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : null;
}

/**
 * The result of the peer-certificate chain check OpenSSL did for a TLS socket: null = verified,
 * else the error's code (e.g. `UNABLE_TO_VERIFY_LEAF_SIGNATURE`); `unsupported` where the runtime
 * offers no way to ask (the certificate must then count as unverified).
 */
export function tlsVerifyError(sock: tls.TLSSocket): string | null | 'unsupported' {
  const handle = handleOf(sock);
  if (typeof handle?.verifyError !== 'function') return 'unsupported';
  const e = handle.verifyError();
  return e ? e.code ?? e.message : null;
}

let upgradedVerify: boolean | null = null;

/**
 * Can this runtime tell whether a client certificate verified, on a TLS socket that started as
 * plain PostgreSQL (SSLRequest) and was upgraded in place? Node can (the handle's verifyError);
 * Bun cannot. Asked once, of a TLS socket that never connects.
 */
export function upgradedTlsVerifies(): boolean {
  if (upgradedVerify === null) {
    const probe = new tls.TLSSocket(new net.Socket(), { isServer: true, secureContext: tls.createSecureContext({}) });
    upgradedVerify = typeof handleOf(probe)?.verifyError === 'function';
    probe.destroy();
  }
  return upgradedVerify;
}
