// Host name resolution for server connections: asynchronous (node:dns), cached for dns_max_ttl
// seconds (failures for dns_nxdomain_ttl), round-robin over the addresses of a name. When a
// name's addresses change, servers connected to an address that is gone are closed when
// released (close_needed), as PgBouncer does.
import net from 'node:net';
import dns from 'node:dns/promises';
import { cf } from '../config/current.js';
import { log } from '../log/logger.js';
import { nowUs } from './clock.js';

export interface DnsEntry {
  host: string;
  addrs: string[];
  /** when the entry expires (µs) */
  expiresUs: number;
  /** next address to hand out */
  next: number;
  error: string | null;
  /** resolution in flight */
  pending: Promise<void> | null;
}

/** the cache, also read by SHOW DNS_HOSTS */
export const dnsCache = new Map<string, DnsEntry>();
/** called with (host, removed addresses) when a name's addresses change */
let onChange: ((host: string, gone: string[]) => void) | null = null;

export function onDnsChange(f: (host: string, gone: string[]) => void): void {
  onChange = f;
}

async function refresh(e: DnsEntry): Promise<void> {
  try {
    const res = await dns.lookup(e.host, { all: true });
    const addrs = res.map((r) => r.address);
    const gone = e.addrs.filter((a) => !addrs.includes(a));
    e.addrs = addrs;
    e.error = null;
    e.expiresUs = nowUs() + cf.dns_max_ttl * 1e6;
    if (gone.length > 0 && onChange !== null) onChange(e.host, gone);
  } catch (err) {
    e.addrs = [];
    e.error = (err as Error).message;
    e.expiresUs = nowUs() + cf.dns_nxdomain_ttl * 1e6;
    log.warning(`DNS lookup failed: ${e.host}: ${e.error}`);
  } finally {
    e.pending = null;
  }
}

/**
 * The address to connect to for `host`: IPs and socket paths as they are, names from the cache
 * (resolving when missing or expired). null = lookup failed.
 */
export async function resolveHost(host: string): Promise<string | null> {
  if (net.isIP(host) !== 0) return host;
  let e = dnsCache.get(host);
  if (e === undefined) {
    e = { host, addrs: [], expiresUs: 0, next: 0, error: null, pending: null };
    dnsCache.set(host, e);
  }
  if (e.expiresUs <= nowUs()) {
    if (e.pending === null) e.pending = refresh(e);
    await e.pending;
  }
  if (e.addrs.length === 0) return null;
  const a = e.addrs[e.next % e.addrs.length]!;
  e.next = (e.next + 1) % e.addrs.length;
  return a;
}

/** A cached address for `host` without waiting, or undefined when a lookup is needed. */
export function cachedAddress(host: string): string | undefined {
  if (net.isIP(host) !== 0) return host;
  const e = dnsCache.get(host);
  if (e === undefined || e.expiresUs <= nowUs() || e.addrs.length === 0) return undefined;
  const a = e.addrs[e.next % e.addrs.length]!;
  e.next = (e.next + 1) % e.addrs.length;
  return a;
}
