import { test } from 'node:test';
import assert from 'node:assert/strict';
import { saslprep } from '../../src/auth/saslprep.js';

const prep = (s: string | Buffer): string => saslprep(s).toString('utf8');
const raw = (s: string): Buffer => Buffer.from(s, 'utf8');

test('ASCII passes untouched, control characters too (PostgreSQL fast path)', () => {
  assert.equal(prep('pencil'), 'pencil');
  assert.equal(prep(''), '');
  assert.equal(prep('a\u0007b'), 'a\u0007b'); // RFC 4013 would reject, PostgreSQL keeps it
  assert.equal(prep('USER user'), 'USER user');
});

test('RFC 4013 examples', () => {
  assert.equal(prep('I\u00ADX'), 'IX'); // soft hyphen mapped to nothing
  assert.equal(prep('\u00AA'), 'a'); // NFKC
  assert.equal(prep('\u2168'), 'IX'); // NFKC
});

test('non-ASCII spaces become U+0020, zero-width characters vanish', () => {
  assert.equal(prep('a\u00A0b\u3000c'), 'a b c');
  assert.equal(prep('a\u200Db\uFEFFc'), 'abc');
  assert.equal(prep('\uFEFF\u00E9'), '\u00E9');
  assert.deepEqual(saslprep('\uFEFF'), raw('\uFEFF'));
  assert.equal(prep('caf\u0065\u0301'), 'caf\u00E9'); // composed by NFKC
});

test('prohibited output: the raw bytes are used', () => {
  // private use, non-character, tagging character, ASCII control after a non-ASCII char
  for (const s of ['\u00AA\uE000', '\u00AA\uFFFF', '\u00AA\u{E0041}', '\u00AA\u0007']) {
    assert.deepEqual(saslprep(s), raw(s), JSON.stringify(s));
  }
  // unassigned in Unicode 3.2 (U+0221 arrived in 4.0): prohibited, so not normalised either
  assert.deepEqual(saslprep('\u00AA\u0221'), raw('\u00AA\u0221'));
  // only characters mapped to nothing: PostgreSQL refuses the empty result
  assert.deepEqual(saslprep('\u00AD'), raw('\u00AD'));
});

test('bidi rules', () => {
  assert.equal(prep('\u0627\u0628'), '\u0627\u0628'); // all RandALCat
  assert.equal(prep('\u0627 \u0628'), '\u0627 \u0628');
  // RandALCat with an LCat character ('ª' → 'a' after NFKC): raw, i.e. not normalised
  assert.deepEqual(saslprep('\u0627\u00AA\u0628'), raw('\u0627\u00AA\u0628'));
  // RandALCat not at both ends
  assert.deepEqual(saslprep('\u06271\u00A0'), raw('\u06271\u00A0'));
});

test('invalid UTF-8 is used as raw bytes', () => {
  const bytes = Buffer.from([0x70, 0xff, 0x77]);
  assert.deepEqual(saslprep(bytes), bytes);
  const latin1 = Buffer.from('caf\u00e9', 'latin1');
  assert.deepEqual(saslprep(latin1), latin1);
  const surrogate = Buffer.from([0xed, 0xa0, 0x80]); // CESU surrogate: not valid UTF-8
  assert.deepEqual(saslprep(surrogate), surrogate);
});

test('Buffer and string inputs agree', () => {
  assert.deepEqual(saslprep(raw('I\u00ADX')), Buffer.from('IX'));
});
