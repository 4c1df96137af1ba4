// Startup packet parameters whose values pgbun reads itself: `replication` (PostgreSQL's rules:
// `database`, or a boolean as parse_bool reads it) and `options`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseOptionsParameter, parseReplicationParameter } from '../../src/protocol/startup.js';

test('replication=database is logical replication, exactly that spelling', () => {
  assert.equal(parseReplicationParameter('database'), 'logical');
  // PostgreSQL compares `database` with strcmp: another case is not a boolean either
  assert.equal(parseReplicationParameter('Database'), null);
  assert.equal(parseReplicationParameter('DATABASE'), null);
});

test('replication=<true> is physical replication: every spelling parse_bool takes', () => {
  for (const v of ['true', 'TRUE', 'True', 't', 'tr', 'tru', 'yes', 'YES', 'y', 'ye', 'on', 'ON', 'On', '1']) {
    assert.equal(parseReplicationParameter(v), 'physical', v);
  }
});

test('replication=<false> is an ordinary connection', () => {
  for (const v of ['false', 'FALSE', 'f', 'fa', 'fals', 'no', 'NO', 'n', 'off', 'OFF', 'of', '0']) {
    assert.equal(parseReplicationParameter(v), 'none', v);
  }
});

test('replication: anything else is refused', () => {
  for (const v of ['', 'o', 'truee', 'yess', 'onn', 'offf', '2', '01', '10', ' true', 'true ', 'logical', 'physical', 'database ']) {
    assert.equal(parseReplicationParameter(v), null, JSON.stringify(v));
  }
});

test('options: -c and -- items, backslash escapes; anything else is null', () => {
  assert.deepEqual(parseOptionsParameter('-c enable_seqscan=off'), [['enable_seqscan', 'off']]);
  assert.deepEqual(parseOptionsParameter('-cTimeZone=UTC --application-name=a\\ b'), [['TimeZone', 'UTC'], ['application_name', 'a b']]);
  assert.deepEqual(parseOptionsParameter(''), []);
  assert.equal(parseOptionsParameter('-c'), null);
  assert.equal(parseOptionsParameter('-c novalue'), null);
  assert.equal(parseOptionsParameter('-f'), null);
});
