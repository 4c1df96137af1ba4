import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import {
  FAILED_TO_VERIFY_SERVER_SIGNATURE,
  INVALID_SERVER_SIGNATURE,
  ScramClientExchange,
  ScramServerExchange,
  buildScramSecret,
  mockScramSecret,
  parseSaslInitialResponse,
  parseSaslMechanisms,
  scramClientCredentials,
  scramVerifyPassword,
  type ScramClientFailure,
  type ScramKeys,
} from '../../src/auth/scram.js';
import { parseSecret, type ScramSecret, type Secret } from '../../src/auth/secret.js';

// RFC 7677 section 3 (user "user", password "pencil")
const RFC = {
  clientNonce: 'rOprNGfwEbeRWgbNEkqO',
  serverNonce: '%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0',
  clientFirst: 'n,,n=user,r=rOprNGfwEbeRWgbNEkqO',
  serverFirst: 'r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096',
  clientFinal:
    'c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=',
  serverFinal: 'v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=',
  salt: Buffer.from('W22ZaJ0SNY7soEsUEjb6gQ==', 'base64'),
};

// Independent derivation with node:crypto only.
function reference(password: string, salt: Buffer, iterations: number) {
  const salted = pbkdf2Sync(password, salt, iterations, 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest();
  const text = `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
  return { clientKey, serverKey, storedKey, text };
}

const scramSecret = (text: string): ScramSecret => {
  const s = parseSecret(text);
  assert.equal(s.kind, 'scram');
  return s as ScramSecret;
};

function isFailure(x: unknown): x is ScramClientFailure {
  return typeof x === 'object' && x !== null && 'error' in x;
}

/** Runs a full exchange; returns what each side said. */
function exchange(server: ScramServerExchange, client: ScramClientExchange) {
  const first = server.clientFirst(client.clientFirst());
  assert.ok(first.ok, !first.ok ? first.log : '');
  const clientFinal = client.onServerFirst(first.message);
  assert.equal(typeof clientFinal, 'string', JSON.stringify(clientFinal));
  const result = server.clientFinal(clientFinal as string);
  const verified = result.ok ? client.verifyServerFinal(result.message) : null;
  return { result, verified };
}

test('buildScramSecret matches an independently computed secret', () => {
  const salt = Buffer.from('0011223344556677889900aabbccddee', 'hex');
  assert.equal(buildScramSecret('secret pass', 4096, salt), reference('secret pass', salt, 4096).text);
  assert.equal(buildScramSecret('pencil', 4096, RFC.salt), reference('pencil', RFC.salt, 4096).text);
  // random salt: 16 bytes, fresh each time, still parseable
  const a = scramSecret(buildScramSecret('x', 4096));
  const b = scramSecret(buildScramSecret('x', 4096));
  assert.equal(a.salt.length, 16);
  assert.notDeepEqual(a.salt, b.salt);
});

test('buildScramSecret applies SASLprep like PostgreSQL', () => {
  const salt = Buffer.alloc(16, 7);
  // soft hyphen is mapped to nothing: same secret as without it
  assert.equal(buildScramSecret('pass\u00ADword', 4096, salt), reference('password', salt, 4096).text);
});

test('RFC 7677 vector: client side', () => {
  const client = new ScramClientExchange({ password: 'pencil' }, { nonce: RFC.clientNonce, userName: 'user' });
  assert.equal(client.clientFirst(), RFC.clientFirst);
  assert.equal(client.onServerFirst(RFC.serverFirst), RFC.clientFinal);
  assert.equal(client.done, false);
  assert.equal(client.verifyServerFinal(RFC.serverFinal), true);
  assert.equal(client.done, true);
});

test('RFC 7677 vector: server side, and the recovered ClientKey', () => {
  const secret = scramSecret(buildScramSecret('pencil', 4096, RFC.salt));
  const server = new ScramServerExchange(secret, { scramIterations: 4096, serverNonce: RFC.serverNonce });
  const first = server.clientFirst(RFC.clientFirst);
  assert.deepEqual(first, { ok: true, message: RFC.serverFirst });
  const result = server.clientFinal(Buffer.from(RFC.clientFinal));
  assert.ok(result.ok);
  assert.equal(result.message, RFC.serverFinal);
  const ref = reference('pencil', RFC.salt, 4096);
  assert.deepEqual(result.passthrough, { clientKey: ref.clientKey, serverKey: ref.serverKey });
  assert.deepEqual(server.clientKey, ref.clientKey);
  assert.deepEqual(server.serverKey, ref.serverKey);
});

test('round trip with a stored SCRAM secret and with a plain password (ad-hoc secret)', () => {
  const stored = parseSecret(buildScramSecret('s3cret', 4096));
  let r = exchange(new ScramServerExchange(stored, { scramIterations: 4096 }), new ScramClientExchange({ password: 's3cret' }));
  assert.ok(r.result.ok);
  assert.equal(r.verified, true);

  const plain: Secret = { kind: 'plain', password: 's3cret' };
  const server = new ScramServerExchange(plain, { scramIterations: 1234 });
  const client = new ScramClientExchange({ password: 's3cret' });
  const first = server.clientFirst(client.clientFirst());
  assert.ok(first.ok);
  assert.match(first.message, /^r=[^,]+,s=[A-Za-z0-9+/]{22}==,i=1234$/); // 16-byte random salt
  const final = server.clientFinal(client.onServerFirst(first.message) as string);
  assert.ok(final.ok);
  assert.equal(final.passthrough, null, 'an ad-hoc secret gives no pass-through keys');
  assert.equal(client.verifyServerFinal(final.message), true);

  r = exchange(new ScramServerExchange(plain, { scramIterations: 4096 }), new ScramClientExchange({ password: 'wrong' }));
  assert.deepEqual(r.result, { ok: false, log: 'password authentication failed' });
});

test('nonces: 18 random bytes in base64, client nonce echoed first', () => {
  const client = new ScramClientExchange({ password: 'x' });
  const cf = client.clientFirst();
  assert.match(cf, /^n,,n=,r=[A-Za-z0-9+/]{24}$/);
  const server = new ScramServerExchange(parseSecret(buildScramSecret('x', 4096)), { scramIterations: 4096 });
  const first = server.clientFirst(cf);
  assert.ok(first.ok);
  const nonce = first.message.split(',')[0]!.slice(2);
  assert.equal(nonce.length, 48);
  assert.equal(nonce.slice(0, 24), cf.slice(8));
});

test('pass-through: keys from a client login log in to a server with the same secret', () => {
  const text = buildScramSecret('hunter2', 4096);
  // 1. a client logs in to pgbun, whose userlist holds only the SCRAM secret
  const front = exchange(new ScramServerExchange(parseSecret(text), { scramIterations: 4096 }), new ScramClientExchange({ password: 'hunter2' }));
  assert.ok(front.result.ok);
  const keys = front.result.passthrough as ScramKeys;
  assert.ok(keys);
  // 2. pgbun logs in to PostgreSQL (same secret) without knowing the password
  const creds = scramClientCredentials(parseSecret(text), keys);
  assert.deepEqual(creds, keys);
  const back = exchange(new ScramServerExchange(parseSecret(text), { scramIterations: 4096 }), new ScramClientExchange(creds!));
  assert.ok(back.result.ok);
  assert.equal(back.verified, true);
  // 3. a server whose secret differs (other salt) rejects the proof
  const other = exchange(new ScramServerExchange(parseSecret(buildScramSecret('hunter2', 4096)), { scramIterations: 4096 }), new ScramClientExchange(keys));
  assert.equal(other.result.ok, false);
  // 4. the server signature is checked with the stored ServerKey
  const wrongKey = new ScramClientExchange({ clientKey: keys.clientKey, serverKey: randomBytes(32) });
  const r = exchange(new ScramServerExchange(parseSecret(text), { scramIterations: 4096 }), wrongKey);
  assert.ok(r.result.ok);
  assert.deepEqual(r.verified, { error: INVALID_SERVER_SIGNATURE, log: INVALID_SERVER_SIGNATURE });
});

test('scramClientCredentials: which stored secrets can answer SCRAM', () => {
  assert.deepEqual(scramClientCredentials({ kind: 'plain', password: 'p' }, null), { password: 'p' });
  assert.equal(scramClientCredentials({ kind: 'md5', hash: 'md5' + '0'.repeat(32) }, null), null);
  assert.equal(scramClientCredentials(parseSecret(buildScramSecret('p', 4096)), null), null);
});

test('mock secrets: deterministic salt per user name, always failing', () => {
  const key = randomBytes(32);
  const a1 = mockScramSecret('alice', 4096, key);
  const a2 = mockScramSecret('alice', 4096, key);
  const b = mockScramSecret('bob', 4096, key);
  assert.deepEqual(a1, a2);
  assert.equal(a1.salt.length, 16, 'as long as a real salt');
  assert.notDeepEqual(a1.salt, b.salt);
  assert.notDeepEqual(mockScramSecret('alice', 4096, randomBytes(32)).salt, a1.salt);
  assert.equal(parseSecret(a1.text).kind, 'scram');
  // without a key: the per-process key, stable across calls
  assert.deepEqual(mockScramSecret('carol', 4096).salt, mockScramSecret('carol', 4096).salt);

  const saltOf = (ex: ScramServerExchange): string => {
    const f = ex.clientFirst('n,,n=,r=abcdef');
    assert.ok(f.ok);
    return f.message.split(',')[1]!;
  };
  assert.equal(saltOf(ScramServerExchange.forUnknownUser('eve', 4096)), saltOf(ScramServerExchange.forUnknownUser('eve', 4096)));
  assert.notEqual(saltOf(ScramServerExchange.forUnknownUser('eve', 4096)), saltOf(ScramServerExchange.forUnknownUser('mallory', 4096)));

  // a client that even knows the mock "password" derivation cannot pass: the exchange is doomed
  const mock = mockScramSecret('eve', 4096, key);
  const server = new ScramServerExchange(mock, { scramIterations: 4096, doomed: true });
  const client = new ScramClientExchange({ password: 'anything' });
  const r = exchange(server, client);
  assert.deepEqual(r.result, { ok: false, log: 'password authentication failed' });
});

test('an empty stored password runs the exchange and fails', () => {
  const r = exchange(new ScramServerExchange({ kind: 'plain', password: '' }, { scramIterations: 4096 }), new ScramClientExchange({ password: '' }));
  assert.equal(r.result.ok, false);
});

test('an md5 stored secret cannot do SCRAM', () => {
  const server = new ScramServerExchange({ kind: 'md5', hash: 'md5' + '0'.repeat(32) }, { scramIterations: 4096 });
  assert.deepEqual(server.clientFirst('n,,n=,r=abc'), { ok: false, log: 'SCRAM authentication failed: user has MD5 secret' });
});

test('tampered client-final messages fail', () => {
  const text = buildScramSecret('pw', 4096);
  const run = (tamper: (m: string) => string) => {
    const server = new ScramServerExchange(parseSecret(text), { scramIterations: 4096 });
    const client = new ScramClientExchange({ password: 'pw' });
    const first = server.clientFirst(client.clientFirst());
    assert.ok(first.ok);
    return server.clientFinal(tamper(client.onServerFirst(first.message) as string));
  };
  assert.ok(run((m) => m).ok);
  const flipProof = (m: string): string => {
    const proof = Buffer.from(m.slice(m.indexOf(',p=') + 3), 'base64');
    proof[0]! ^= 1;
    return m.slice(0, m.indexOf(',p=') + 3) + proof.toString('base64');
  };
  assert.deepEqual(run(flipProof), { ok: false, log: 'password authentication failed' });
  assert.deepEqual(run((m) => m.replace('r=', 'r=X')), { ok: false, log: 'invalid SCRAM response (nonce does not match)' });
  assert.deepEqual(run((m) => m.replace('c=biws', 'c=eSws')), {
    ok: false,
    log: 'unexpected SCRAM channel-binding attribute in client-final-message',
  });
  assert.deepEqual(run((m) => m + ',x=1'), { ok: false, log: 'malformed SCRAM message (garbage at end of client-final-message)' });
  assert.deepEqual(run((m) => m.replace(/,p=.*/, ',p=AAAA')), {
    ok: false,
    log: 'malformed SCRAM message (malformed proof in client-final-message)',
  });
  assert.deepEqual(run((m) => m.replace(/,p=.*/, '')), {
    ok: false,
    log: 'malformed SCRAM message (attribute expected, but found end of string)',
  });
  // an extension before the proof is allowed (and signed as part of the message)
  assert.equal(run((m) => m.replace(',p=', ',x=ext,p=')).ok, false, 'proof no longer matches the signed message');
});

test('gs2 header y,, is accepted and needs c=eSws', () => {
  const text = buildScramSecret('pw', 4096);
  const server = new ScramServerExchange(parseSecret(text), { scramIterations: 4096 });
  const first = server.clientFirst('y,,n=,r=clientnonce');
  assert.ok(first.ok);
  // compute a proper proof by hand with the reference keys
  const s = parseSecret(text) as ScramSecret;
  const ref = reference('pw', s.salt, 4096);
  const withoutProof = `c=eSws,r=${first.message.split(',')[0]!.slice(2)}`;
  const authMessage = `n=,r=clientnonce,${first.message},${withoutProof}`;
  const sig = createHmac('sha256', ref.storedKey).update(authMessage).digest();
  const proof = Buffer.from(ref.clientKey.map((b, i) => b ^ sig[i]!));
  const result = server.clientFinal(`${withoutProof},p=${proof.toString('base64')}`);
  assert.ok(result.ok);
  assert.equal(result.message, 'v=' + createHmac('sha256', ref.serverKey).update(authMessage).digest('base64'));
});

test('malformed client-first messages', () => {
  const cases: Array<[string, string]> = [
    ['p=tls-server-end-point,,n=,r=abc', 'client requires SCRAM channel binding, but it is not supported'],
    ['x,,n=,r=abc', 'malformed SCRAM message (unexpected channel-binding flag "x")'],
    ['', 'malformed SCRAM message (unexpected channel-binding flag "")'],
    ['n;,n=,r=abc', 'malformed SCRAM message (comma expected, got ";")'],
    ['n,a=admin,n=,r=abc', 'client uses authorization identity, but it is not supported'],
    ['n,x,n=,r=abc', 'malformed SCRAM message (unexpected attribute "x" in client-first-message)'],
    ['n,,m=ext,n=,r=abc', 'client requires an unsupported SCRAM extension'],
    ['n,,r=abc', 'malformed SCRAM message (attribute "n" expected)'],
    ['n,,n=', 'malformed SCRAM message (attribute "r" expected)'],
    ['n,,n=,rabc', 'malformed SCRAM message (expected character "=" for attribute "r")'],
    ['n,,n=,r=a b', 'non-printable characters in SCRAM nonce'],
    ['n,,n=,r=abc,1=x', 'malformed SCRAM message (attribute expected, but found invalid character "1")'],
  ];
  for (const [msg, log] of cases) {
    const server = new ScramServerExchange({ kind: 'plain', password: 'pw' }, { scramIterations: 4096 });
    assert.deepEqual(server.clientFirst(msg), { ok: false, log }, msg);
    assert.equal(server.clientFinal('c=biws,r=abc,p=AAAA').ok, false, 'no second chance');
  }
  // the user name is ignored, extensions after the nonce are skipped
  const server = new ScramServerExchange({ kind: 'plain', password: 'pw' }, { scramIterations: 4096 });
  assert.ok(server.clientFirst('n,,n=somebody,r=abc,x=ext').ok);
  assert.equal(server.clientFirst('n,,n=,r=abc').ok, false, 'client-first only once');
});

test('client-final before client-first fails', () => {
  const server = new ScramServerExchange({ kind: 'plain', password: 'pw' }, { scramIterations: 4096 });
  assert.equal(server.clientFinal('c=biws,r=abc,p=AAAA').ok, false);
});

test('malformed server-first messages (client side)', () => {
  const serverFirst = (client: ScramClientExchange, body: string) => {
    const nonce = client.clientFirst().slice(8);
    return client.onServerFirst(body.replace('NONCE', nonce));
  };
  const salt = Buffer.alloc(16, 1).toString('base64');
  const cases: Array<[string, string]> = [
    [`r=other,s=${salt},i=4096`, 'invalid SCRAM response (nonce mismatch)'],
    [`r=NONCE srv,s=${salt},i=4096`, 'invalid SCRAM response (nonce mismatch)'],
    [`s=${salt},i=4096`, 'malformed SCRAM message (attribute "r" expected)'],
    ['r=NONCEx,s=@@,i=4096', 'malformed SCRAM message (invalid salt)'],
    [`r=NONCEx,s=${salt},i=0`, 'malformed SCRAM message (invalid iteration count)'],
    [`r=NONCEx,s=${salt},i=12a`, 'malformed SCRAM message (invalid iteration count)'],
    [`r=NONCEx,s=${salt}`, 'malformed SCRAM message (attribute "i" expected)'],
    [`r=NONCEx,s=${salt},i=4096,x=1`, 'malformed SCRAM message (garbage at end of server-first-message)'],
  ];
  for (const [body, error] of cases) {
    const client = new ScramClientExchange({ password: 'pw' });
    assert.deepEqual(serverFirst(client, body), { error, log: error }, body);
    assert.equal(client.done, false);
  }
  const client = new ScramClientExchange({ password: 'pw' });
  assert.equal(typeof serverFirst(client, `r=NONCEx,s=${salt},i=1`), 'string');
  assert.ok(isFailure(client.onServerFirst(`r=x,s=${salt},i=1`)), 'only once');
});

test('server-final problems (client side)', () => {
  const make = () => {
    const text = buildScramSecret('pw', 4096);
    const server = new ScramServerExchange(parseSecret(text), { scramIterations: 4096 });
    const client = new ScramClientExchange({ password: 'pw' });
    const first = server.clientFirst(client.clientFirst());
    assert.ok(first.ok);
    const final = server.clientFinal(client.onServerFirst(first.message) as string);
    assert.ok(final.ok);
    return { client, good: final.message };
  };
  const cases: Array<[(good: string) => string, string, string]> = [
    [(g) => 'v=' + Buffer.alloc(32).toString('base64'), INVALID_SERVER_SIGNATURE, INVALID_SERVER_SIGNATURE],
    [() => 'e=invalid-proof', FAILED_TO_VERIFY_SERVER_SIGNATURE, 'error received from server in SCRAM exchange: invalid-proof'],
    // another attribute name: not g.slice(2), whose first base64 character is 'e' once in 64 runs
    [(g) => 'w' + g.slice(1), FAILED_TO_VERIFY_SERVER_SIGNATURE, 'malformed SCRAM message (attribute "v" expected)'],
    [(g) => g + ',x=1', FAILED_TO_VERIFY_SERVER_SIGNATURE, 'malformed SCRAM message (garbage at end of server-final-message)'],
    [() => 'v=AAAA', FAILED_TO_VERIFY_SERVER_SIGNATURE, 'malformed SCRAM message (malformed server signature)'],
  ];
  for (const [tamper, error, log] of cases) {
    const { client, good } = make();
    assert.deepEqual(client.verifyServerFinal(tamper(good)), { error, log });
    assert.equal(client.done, false);
  }
  const { client, good } = make();
  assert.equal(client.verifyServerFinal(good), true);
  assert.ok(isFailure(client.verifyServerFinal(good)), 'only once');
  const early = new ScramClientExchange({ password: 'pw' });
  early.clientFirst();
  assert.equal((early.verifyServerFinal(good) as ScramClientFailure).error, FAILED_TO_VERIFY_SERVER_SIGNATURE);
});

test('scramVerifyPassword (auth_type=plain against a SCRAM secret)', () => {
  const s = scramSecret(buildScramSecret('p\u00E4ss', 4096));
  assert.equal(scramVerifyPassword(s, 'p\u00E4ss'), true);
  assert.equal(scramVerifyPassword(s, Buffer.from('p\u00E4ss')), true);
  assert.equal(scramVerifyPassword(s, 'pass'), false);
});

test('parseSaslInitialResponse', () => {
  const body = (mech: string, data: Buffer | null, extra = Buffer.alloc(0)) => {
    const len = Buffer.alloc(4);
    len.writeInt32BE(data ? data.length : -1);
    return Buffer.concat([Buffer.from(mech + '\0'), len, data ?? Buffer.alloc(0), extra]);
  };
  assert.deepEqual(parseSaslInitialResponse(body('SCRAM-SHA-256', Buffer.from('n,,n=,r=x'))), {
    mechanism: 'SCRAM-SHA-256',
    data: Buffer.from('n,,n=,r=x'),
  });
  assert.deepEqual(parseSaslInitialResponse(body('SCRAM-SHA-256-PLUS', null)), { mechanism: 'SCRAM-SHA-256-PLUS', data: null });
  assert.equal(parseSaslInitialResponse(body('SCRAM-SHA-256', Buffer.from('abc'), Buffer.from('x'))), null);
  assert.equal(parseSaslInitialResponse(body('SCRAM-SHA-256', Buffer.from('abc')).subarray(0, 20)), null);
  assert.equal(parseSaslInitialResponse(Buffer.from('SCRAM-SHA-256')), null);
  assert.equal(parseSaslInitialResponse(Buffer.from('SCRAM-SHA-256\0\0\0')), null);
});

test('parseSaslMechanisms', () => {
  assert.deepEqual(parseSaslMechanisms(Buffer.from('SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0')), ['SCRAM-SHA-256-PLUS', 'SCRAM-SHA-256']);
  assert.deepEqual(parseSaslMechanisms(Buffer.from('\0')), []);
  assert.equal(parseSaslMechanisms(Buffer.from('SCRAM-SHA-256\0')), null);
});
