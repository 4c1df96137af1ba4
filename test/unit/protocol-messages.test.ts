// The message builders pgbun uses towards servers, byte for byte against the test suite's own
// independent builders (test/lib/wire.ts).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as msg from '../../src/protocol/messages.js';
import { bindMessage, closeMessage, describeMessage, executeMessage, parseMessage, sslRequest, sync } from '../lib/wire.js';

test('extendedQuery: unnamed Parse, Bind with text parameters, Describe portal, Execute, Sync', () => {
  assert.deepEqual(msg.extendedQuery('SELECT $1', ['bob']), Buffer.concat([
    parseMessage('', 'SELECT $1'), bindMessage('', '', ['bob']), describeMessage('P', ''), executeMessage(), sync(),
  ]));
  assert.deepEqual(msg.extendedQuery('SELECT 1', []), Buffer.concat([
    parseMessage('', 'SELECT 1'), bindMessage('', ''), describeMessage('P', ''), executeMessage(), sync(),
  ]));
  const utf8 = 'ünïcödé user';
  assert.deepEqual(msg.extendedQuery('SELECT $1', [utf8]).subarray(parseMessage('', 'SELECT $1').length),
    Buffer.concat([bindMessage('', '', [utf8]), describeMessage('P', ''), executeMessage(), sync()]));
});

test('parseNamed, closeStatement, SSL_REQUEST_MSG', () => {
  const client = parseMessage('client_name', 'SELECT $1::int', [23]);
  const rest = client.subarray(5 + 'client_name'.length + 1);
  assert.deepEqual(msg.parseNamed('PGBOUNCER_7', rest), parseMessage('PGBOUNCER_7', 'SELECT $1::int', [23]));
  assert.deepEqual(msg.closeStatement('PGBOUNCER_7'), closeMessage('S', 'PGBOUNCER_7'));
  assert.deepEqual(msg.SSL_REQUEST_MSG, sslRequest());
});

test('withNameReplaced: a Bind renamed, whole or only its head', () => {
  const bind = bindMessage('', 'short', ['a value']);
  const nameStart = 5 + 1;
  const nameEnd = nameStart + 'short'.length;
  assert.deepEqual(msg.withNameReplaced(bind, 0, bind.length, nameStart, nameEnd, 'PGBOUNCER_12345'),
    bindMessage('', 'PGBOUNCER_12345', ['a value']));
  // only the head, the rest streamed behind it: the length field counts the whole message
  const head = msg.withNameReplaced(bind, 0, nameEnd + 1, nameStart, nameEnd, 'PGBOUNCER_12345', bind.length);
  assert.deepEqual(Buffer.concat([head, bind.subarray(nameEnd + 1)]), bindMessage('', 'PGBOUNCER_12345', ['a value']));
});
