import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { checkMd5Response, checkPlainPassword, md5Response, md5Secret } from '../../src/auth/md5.js';
import { buildScramSecret } from '../../src/auth/scram.js';
import { parseSecret } from '../../src/auth/secret.js';

const md5hex = (b: Buffer | string): string => createHash('md5').update(b).digest('hex');
const salt = Buffer.from([0x01, 0xff, 0x80, 0x20]);

test('md5Secret is md5(password || user)', () => {
  // pg_authid's value for role postgres with password postgres
  assert.equal(md5Secret('postgres', 'postgres'), 'md53175bce1d3201d16594cebf9d7eb3f9d');
  assert.equal(md5Secret('pw', 'usr'), 'md5' + md5hex('pwusr'));
});

test('md5Response is md5(md5hex(password || user) || salt bytes)', () => {
  const inner = md5hex('pwusr');
  const expected = 'md5' + md5hex(Buffer.concat([Buffer.from(inner), salt]));
  assert.equal(md5Response(inner, salt), expected);
  assert.equal(md5Response('md5' + inner, salt), expected);
  assert.equal(md5Response({ kind: 'plain', password: 'pw' }, 'usr', salt), expected);
  assert.equal(md5Response({ kind: 'md5', hash: 'md5' + inner }, 'usr', salt), expected);
  assert.throws(() => md5Response(parseSecret(buildScramSecret('pw', 4096)), 'usr', salt));
});

test('checkMd5Response with plain and md5 secrets', () => {
  const good = md5Response(md5Secret('pw', 'usr'), salt);
  assert.equal(checkMd5Response({ kind: 'plain', password: 'pw' }, 'usr', salt, good), true);
  assert.equal(checkMd5Response({ kind: 'md5', hash: md5Secret('pw', 'usr') }, 'usr', salt, good), true);
  // wrong user (the user name is part of the hash), wrong salt, wrong password, truncated
  assert.equal(checkMd5Response({ kind: 'plain', password: 'pw' }, 'other', salt, good), false);
  assert.equal(checkMd5Response({ kind: 'plain', password: 'pw' }, 'usr', Buffer.from([1, 2, 3, 4]), good), false);
  assert.equal(checkMd5Response({ kind: 'plain', password: 'pw2' }, 'usr', salt, good), false);
  assert.equal(checkMd5Response({ kind: 'plain', password: 'pw' }, 'usr', salt, good.slice(0, -1)), false);
  assert.equal(checkMd5Response({ kind: 'plain', password: 'pw' }, 'usr', salt, ''), false);
});

test('checkMd5Response: empty stored password and SCRAM secrets never match', () => {
  const emptyResp = md5Response(md5Secret('', 'usr'), salt);
  assert.equal(checkMd5Response({ kind: 'plain', password: '' }, 'usr', salt, emptyResp), false);
  const scram = parseSecret(buildScramSecret('pw', 4096));
  assert.equal(checkMd5Response(scram, 'usr', salt, md5Response(md5Secret('pw', 'usr'), salt)), false);
});

test('checkPlainPassword against plain, md5 and SCRAM secrets', () => {
  assert.equal(checkPlainPassword({ kind: 'plain', password: 'pw' }, 'usr', 'pw'), true);
  assert.equal(checkPlainPassword({ kind: 'plain', password: 'pw' }, 'usr', 'pW'), false);
  assert.equal(checkPlainPassword({ kind: 'plain', password: '' }, 'usr', ''), false);
  assert.equal(checkPlainPassword({ kind: 'md5', hash: md5Secret('pw', 'usr') }, 'usr', 'pw'), true);
  assert.equal(checkPlainPassword({ kind: 'md5', hash: md5Secret('pw', 'usr') }, 'usr', 'px'), false);
  const scram = parseSecret(buildScramSecret('pw', 1000));
  assert.equal(checkPlainPassword(scram, 'usr', 'pw'), true);
  assert.equal(checkPlainPassword(scram, 'usr', 'px'), false);
});
