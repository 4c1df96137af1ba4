import { test } from 'node:test';
import assert from 'node:assert/strict';
import { certNameMatches, parseSubjectAltName, tlsMatchName } from '../../src/auth/cert-name.js';

test('tls_match_name: exact, case-insensitive', () => {
  assert.equal(tlsMatchName('app.example.com', 'app.example.com'), true);
  assert.equal(tlsMatchName('APP.Example.com', 'app.example.COM'), true);
  assert.equal(tlsMatchName('app', 'app'), true);
  assert.equal(tlsMatchName('app', 'app2'), false);
});

test('tls_match_name: wildcards only as the whole left-most label', () => {
  assert.equal(tlsMatchName('*.example.com', 'app.example.com'), true);
  assert.equal(tlsMatchName('*.EXAMPLE.com', 'App.example.COM'), true);
  assert.equal(tlsMatchName('*.example.com', 'a.b.example.com'), false, 'not across dots');
  assert.equal(tlsMatchName('*.example.com', 'example.com'), false);
  assert.equal(tlsMatchName('*.example.com', '.example.com'), false, 'empty host part');
  assert.equal(tlsMatchName('*.com', 'example.com'), false, '*.tld refused');
  assert.equal(tlsMatchName('*', 'anything'), false);
  assert.equal(tlsMatchName('*app.example.com', 'xapp.example.com'), false, 'partial label');
  assert.equal(tlsMatchName('a*.example.com', 'ab.example.com'), false);
  assert.equal(tlsMatchName('*..example.com', 'a..example.com'), false);
  assert.equal(tlsMatchName('*.example..com', 'a.example..com'), false);
  assert.equal(tlsMatchName('*.example.com', 'app'), false, 'no domain part');
  assert.equal(tlsMatchName('*.example.com', 'app.'), false);
  // a literal '*' user name only matches exactly
  assert.equal(tlsMatchName('*.example.com', '*.example.com'), true);
});

test('subjectAltName DNS entries take precedence over the CommonName', () => {
  const cert = { subject: { CN: 'bob' }, subjectaltname: 'DNS:alice, DNS:*.svc.example' };
  assert.equal(certNameMatches(cert, 'alice'), true);
  assert.equal(certNameMatches(cert, 'ALICE'), true);
  assert.equal(certNameMatches(cert, 'db.svc.example'), true);
  assert.equal(certNameMatches(cert, 'bob'), false, 'CN ignored when DNS SANs exist');
});

test('CommonName when there is no DNS subjectAltName', () => {
  assert.equal(certNameMatches({ subject: { CN: 'bob' } }, 'bob'), true);
  assert.equal(certNameMatches({ subject: { CN: 'Bob' }, subjectaltname: '' }, 'bOB'), true);
  assert.equal(certNameMatches({ subject: { CN: 'bob' } }, 'bobby'), false);
  // other SAN kinds do not hide the CN
  const cert = { subject: { CN: 'bob' }, subjectaltname: 'email:bob@example.com, IP Address:10.0.0.1, URI:spiffe://x/bob' };
  assert.equal(certNameMatches(cert, 'bob'), true);
  assert.equal(certNameMatches(cert, 'bob@example.com'), false);
  assert.equal(certNameMatches({ subject: { CN: '*.example.com' } }, 'app.example.com'), true);
  // no CN at all, several CNs, NUL in CN
  assert.equal(certNameMatches({ subject: {} }, 'bob'), false);
  assert.equal(certNameMatches({ subject: null }, 'bob'), false);
  assert.equal(certNameMatches({}, 'bob'), false);
  assert.equal(certNameMatches({ subject: { CN: ['bob', 'eve'] } }, 'bob'), false);
  assert.equal(certNameMatches({ subject: { CN: 'bob\0.evil' } }, 'bob'), false);
  assert.equal(certNameMatches({ subject: { CN: 'bob' } }, ''), false);
});

test('IP literal names are checked against IP Address entries', () => {
  const cert = { subject: { CN: '10.0.0.2' }, subjectaltname: 'DNS:host, IP Address:10.0.0.1, IP Address:2001:DB8:0:0:0:0:0:1' };
  assert.equal(certNameMatches(cert, '10.0.0.1'), true);
  assert.equal(certNameMatches(cert, '2001:db8::1'), true);
  assert.equal(certNameMatches(cert, '10.0.0.2'), false, 'IP SANs exist: CN not consulted');
  assert.equal(certNameMatches({ subject: { CN: '10.0.0.2' }, subjectaltname: 'DNS:host' }, '10.0.0.2'), true);
});

test('node quotes SAN values with special characters', () => {
  assert.deepEqual(parseSubjectAltName('DNS:a.example, DNS:"x, DNS:evil", IP Address:1.2.3.4'), [
    { type: 'DNS', value: 'a.example' },
    { type: 'DNS', value: 'x, DNS:evil' },
    { type: 'IP Address', value: '1.2.3.4' },
  ]);
  // node's actual escaping (X509Certificate.subjectAltName / PeerCertificate.subjectaltname)
  assert.deepEqual(parseSubjectAltName('DNS:"x\\u002c DNS:evil", email:bob@example.com'), [
    { type: 'DNS', value: 'x, DNS:evil' },
    { type: 'email', value: 'bob@example.com' },
  ]);
  // an injected ", DNS:evil" inside a quoted value must not become an entry of its own
  assert.equal(certNameMatches({ subjectaltname: 'DNS:"x, DNS:evil"' }, 'evil'), false);
  assert.equal(certNameMatches({ subjectaltname: 'DNS:"bob\\u0000.x"' }, 'bob'), false);
  assert.equal(certNameMatches({ subject: { CN: 'bob' }, subjectaltname: 'DNS: ' }, 'bob'), false, '" " dNSName refused');
  assert.deepEqual(parseSubjectAltName(''), []);
});
