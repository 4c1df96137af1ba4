import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createHmac, pbkdf2Sync } from 'node:crypto';
import { decodeBase64, parseSecret, scramSaltText } from '../../src/auth/secret.js';

// A SCRAM secret computed here from first principles, independent of src/auth/scram.ts.
function scramText(password: string, salt: Buffer, iterations: number): string {
  const salted = pbkdf2Sync(password, salt, iterations, 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest();
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

const GOOD = scramText('secret', Buffer.from('0123456789abcdef'), 4096);

test('md5 secrets: md5 + 32 lowercase hex only', () => {
  const hash = 'md5' + createHash('md5').update('pwuser').digest('hex');
  assert.deepEqual(parseSecret(hash), { kind: 'md5', hash });
  // PgBouncer's charset is lowercase only: anything else is a plain password
  assert.deepEqual(parseSecret(hash.toUpperCase()), { kind: 'plain', password: hash.toUpperCase() });
  assert.deepEqual(parseSecret('md5' + hash.slice(3).toUpperCase()).kind, 'plain');
  assert.equal(parseSecret(hash.slice(0, -1)).kind, 'plain');
  assert.equal(parseSecret(hash + '0').kind, 'plain');
  assert.equal(parseSecret('md5' + 'g'.repeat(32)).kind, 'plain');
});

test('SCRAM secrets are decoded', () => {
  const s = parseSecret(GOOD);
  assert.equal(s.kind, 'scram');
  if (s.kind !== 'scram') return;
  assert.equal(s.iterations, 4096);
  assert.deepEqual(s.salt, Buffer.from('0123456789abcdef'));
  assert.equal(s.storedKey.length, 32);
  assert.equal(s.serverKey.length, 32);
  assert.equal(s.text, GOOD);
  assert.equal(scramSaltText(s), Buffer.from('0123456789abcdef').toString('base64'));
});

test('malformed SCRAM secrets are plain passwords', () => {
  const [head, keys] = GOOD.split('$').slice(1) as [string, string];
  const [iter, salt] = head.split(':') as [string, string];
  const [stored, server] = keys.split(':') as [string, string];
  const bad = [
    `SCRAM-SHA-256$${iter}:${salt}$${stored}`, // no ServerKey
    `SCRAM-SHA-256$${iter}:${salt}$${stored}:${server}$x`, // extra part
    `SCRAM-SHA-256$x${iter}:${salt}$${stored}:${server}`, // iterations not a number
    `SCRAM-SHA-256$0:${salt}$${stored}:${server}`, // zero iterations
    `SCRAM-SHA-256$${iter}:$${stored}:${server}`, // empty salt
    `SCRAM-SHA-256$${iter}:${salt.slice(0, -2)}$${stored}:${server}`, // unpadded salt
    `SCRAM-SHA-256$${iter}:${salt}$${stored.slice(4)}:${server}`, // short StoredKey
    `SCRAM-SHA-256$${iter}:${salt}$${stored}:${server}AAAA`, // long ServerKey
    `SCRAM-SHA-256$${iter}:${salt}$${stored}:${server.replace(/.$/, '!')}`, // not base64
    `SCRAM-SHA-1$${iter}:${salt}$${stored}:${server}`, // other mechanism
    `scram-sha-256$${iter}:${salt}$${stored}:${server}`, // case matters
  ];
  for (const text of bad) assert.deepEqual(parseSecret(text), { kind: 'plain', password: text }, text);
});

test('anything else is plain, including the empty password', () => {
  assert.deepEqual(parseSecret(''), { kind: 'plain', password: '' });
  assert.deepEqual(parseSecret('hunter2'), { kind: 'plain', password: 'hunter2' });
  assert.deepEqual(parseSecret(' md5' + '0'.repeat(32)).kind, 'plain');
});

test('decodeBase64 wants padding, like pg_b64_decode', () => {
  assert.deepEqual(decodeBase64('YWI='), Buffer.from('ab'));
  assert.deepEqual(decodeBase64(''), Buffer.alloc(0));
  assert.equal(decodeBase64('YWI'), null);
  assert.equal(decodeBase64('YW I='), null);
  assert.equal(decodeBase64('YWI=YWI='), null);
});
