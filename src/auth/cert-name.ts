// auth_type=cert: does the client certificate name the user? libtls's tls_check_name() rules,
// which PgBouncer uses: subjectAltName entries of the name's kind (DNS for a name,
// IP Address for an IP literal) are authoritative when present (RFC 6125 §6.4.4: the CN is then
// not consulted), else the subject CommonName; case-insensitive; `*.` wildcard only as the
// whole left-most label, matching exactly one label.

import { parseIp } from './hba.js';

/** The parts of node's tls `PeerCertificate` that are needed (also easy to build in tests). */
export interface PeerCertificateLike {
  subject?: { CN?: string | string[] } | null;
  /** e.g. `DNS:a.example, DNS:*.b.example, IP Address:1.2.3.4` */
  subjectaltname?: string;
}

export function certNameMatches(cert: PeerCertificateLike, name: string): boolean {
  if (name === '') return false;
  const ip = parseIp(name);
  const wanted = ip ? 'IP Address' : 'DNS';
  let altExists = false;
  for (const alt of parseSubjectAltName(cert.subjectaltname ?? '')) {
    if (alt.type !== wanted) continue;
    altExists = true;
    if (ip) {
      const altIp = parseIp(alt.value);
      if (altIp && altIp.length === ip.length && altIp.every((b, i) => b === ip[i])) return true;
    } else {
      // libtls refuses the whole certificate for these (malicious or broken): no match at all
      if (alt.value.includes('\0') || alt.value === ' ') return false;
      if (tlsMatchName(alt.value, name)) return true;
    }
  }
  if (altExists) return false;

  const cn = cert.subject?.CN;
  // Several CommonNames: newer libtls rejects such a certificate as probably malicious.
  if (cn === undefined || Array.isArray(cn)) return false;
  if (cn.includes('\0')) return false;
  return tlsMatchName(cn, name);
}

/** libtls tls_match_name(): exact (case-insensitive), or `*.rest` matching `label.rest`. */
export function tlsMatchName(certName: string, name: string): boolean {
  if (certName.toLowerCase() === name.toLowerCase()) return true;
  if (!certName.startsWith('*')) return false;
  const certDomain = certName.slice(1);
  // Not "*", "*foo", "*..", "*.tld" or "*.tld..".
  if (certDomain === '' || certDomain[0] !== '.' || certDomain[1] === '.') return false;
  const nextDot = certDomain.indexOf('.', 1);
  if (nextDot < 0 || certDomain[nextDot + 1] === '.') return false;
  // The name needs a non-empty host part and a domain part.
  if (name.startsWith('.')) return false;
  const dot = name.indexOf('.');
  if (dot < 0 || dot === name.length - 1) return false;
  return certDomain.toLowerCase() === name.slice(dot).toLowerCase();
}

/**
 * Node's `subjectaltname` string: `TYPE:value` entries joined by `, `. Values with characters
 * that would make this ambiguous (commas, quotes, control characters) are printed as JSON
 * strings, which we decode.
 */
export function parseSubjectAltName(text: string): Array<{ type: string; value: string }> {
  const out: Array<{ type: string; value: string }> = [];
  let pos = 0;
  while (pos < text.length) {
    const colon = text.indexOf(':', pos);
    if (colon < 0) break;
    const type = text.slice(pos, colon);
    let value: string;
    let end: number;
    if (text[colon + 1] === '"') {
      end = colon + 2;
      while (end < text.length && text[end] !== '"') end += text[end] === '\\' ? 2 : 1;
      end++;
      try {
        value = JSON.parse(text.slice(colon + 1, end)) as string;
      } catch {
        value = '\0'; // unreadable: never matches
      }
    } else {
      const sep = text.indexOf(', ', colon + 1);
      end = sep < 0 ? text.length : sep;
      value = text.slice(colon + 1, end);
    }
    out.push({ type, value });
    pos = text.startsWith(', ', end) ? end + 2 : end;
    if (pos === end && pos < text.length) break; // garbage after a quoted value
  }
  return out;
}
