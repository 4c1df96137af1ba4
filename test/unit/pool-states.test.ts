// The connection state model without sockets: a server's state decides its pool list (one list
// at a time, idle servers LIFO unless server_round_robin), pools iterate their servers by state,
// the SHOW name tables cover every state, and the Server's own request accounting decides when
// it may change hands.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { cf } from '../../src/config/current.js';
import { F_BIND, F_EXECUTE, F_FLUSH, F_PARSE, F_QUERY, F_SYNC, TX_FAILED, TX_IDLE, TX_IN_BLOCK } from '../../src/protocol/constants.js';
import { PgDatabase, registry, type PgPool } from '../../src/pool/objects.js';
import { Internal, Server } from '../../src/pool/server.js';
import {
  CLIENT_STATE_NAMES, ClientState, SERVER_STATE_NAMES, SERVER_STATES_COUNTED, SERVER_STATES_SHOWN, ServerState,
} from '../../src/pool/state.js';

const db = new PgDatabase('statesdb', null);
const pool: PgPool = registry.getPool(db, registry.addUser('statesuser'));
const made: Server[] = [];

function server(st: ServerState): Server {
  const s = new Server(pool);
  s.changeState(st);
  made.push(s);
  return s;
}

after(() => {
  for (const s of made) {
    s.changeState(ServerState.FREE);
    s.socket.destroy();
  }
  registry.removePool(pool);
});

const ALL_SERVER_STATES = [ServerState.LOGIN, ServerState.IDLE, ServerState.ACTIVE, ServerState.USED, ServerState.TESTED,
  ServerState.ACTIVE_CANCEL, ServerState.BEING_CANCELED];

test('a server is in exactly the list of its state, and in none once FREE', () => {
  const s = server(ServerState.LOGIN);
  for (const st of ALL_SERVER_STATES) {
    s.changeState(st);
    for (const other of ALL_SERVER_STATES) {
      const list = pool.serverList(other)!;
      const inList = [...list].includes(s);
      assert.equal(inList, other === st, `state ${SERVER_STATE_NAMES[st].socket}, list ${list.name}`);
    }
    assert.equal(pool.serverList(st)!.name, SERVER_STATE_NAMES[st].socket, 'the list is named after its state');
  }
  s.changeState(ServerState.FREE);
  assert.equal(s.list, null);
  assert.equal(pool.serverList(ServerState.FREE), null);
  assert.equal(pool.serverCount, 0);
});

test('idle servers are reused last-in first-out, or in turn with server_round_robin', () => {
  const a = server(ServerState.ACTIVE);
  const b = server(ServerState.ACTIVE);
  a.changeState(ServerState.IDLE);
  b.changeState(ServerState.IDLE);
  assert.equal(pool.idleServers.first(), b, 'the last one idle is used first');
  const saved = cf.server_round_robin;
  try {
    cf.server_round_robin = 1;
    b.changeState(ServerState.ACTIVE);
    b.changeState(ServerState.IDLE);
    assert.equal(pool.idleServers.first(), a, 'round robin: the longest idle first');
  } finally {
    cf.server_round_robin = saved;
    a.changeState(ServerState.FREE);
    b.changeState(ServerState.FREE);
  }
});

test('forEachServer: state by state in SHOW order, a filter, and safe while states change', () => {
  const byState = new Map(ALL_SERVER_STATES.map((st) => [st, server(st)]));
  const seen: ServerState[] = [];
  pool.forEachServer((s) => seen.push(s.state));
  assert.deepEqual(seen, [...SERVER_STATES_SHOWN]);
  const counted: ServerState[] = [];
  pool.forEachServer((s) => counted.push(s.state), SERVER_STATES_COUNTED);
  assert.deepEqual(counted, [...SERVER_STATES_COUNTED]);
  assert.equal(pool.serverCount, SERVER_STATES_COUNTED.length, 'cancel connections do not count against pool_size');
  // moving servers while iterating visits each once
  let visits = 0;
  pool.forEachServer((s) => {
    visits++;
    s.changeState(ServerState.IDLE);
  }, [ServerState.IDLE, ServerState.USED, ServerState.TESTED]);
  assert.equal(visits, 3);
  assert.equal(pool.idleServers.count, 3);
  for (const s of byState.values()) s.changeState(ServerState.FREE);
  assert.equal(pool.serverCount, 0);
});

test('every state has its SHOW names', () => {
  for (const st of [...ALL_SERVER_STATES, ServerState.FREE]) {
    assert.match(SERVER_STATE_NAMES[st].socket, /^sv_/);
    assert.ok(SERVER_STATE_NAMES[st].show.length > 0);
  }
  for (const st of [ClientState.LOGIN, ClientState.WAITING, ClientState.WAITING_LOGIN, ClientState.ACTIVE,
    ClientState.WAITING_CANCEL, ClientState.ACTIVE_CANCEL, ClientState.FREE]) {
    assert.match(CLIENT_STATE_NAMES[st].socket, /^cl_/);
  }
  assert.equal(SERVER_STATE_NAMES[ServerState.LOGIN].show, 'new', 'PgBouncer shows a connecting server as new');
  assert.equal(pool.clientList(ClientState.WAITING_LOGIN), pool.waitingClients);
  assert.equal(pool.clientList(ClientState.LOGIN), null, 'the login list is global, not the pool\'s');
});

test('request accounting: simple query, extended protocol with Sync, transactions', () => {
  const s = server(ServerState.ACTIVE);
  assert.equal(s.ready, true);
  // simple query
  assert.equal(s.noteClientMessage(F_QUERY, 100, true), true, 'a new request starts the clock');
  assert.equal(s.queryStartUs, 100);
  assert.equal(s.xactStartUs, 100);
  assert.equal(s.ready, false);
  assert.equal(s.noteReadyForQuery(TX_IDLE, 200), true);
  assert.equal(s.ready, true);
  assert.equal(s.queryStartUs, 0);
  assert.equal(s.xactStartUs, 0);
  // extended: Parse/Bind/Execute open, Flush counts nothing, Sync owes a ReadyForQuery
  for (const t of [F_PARSE, F_BIND, F_EXECUTE]) s.noteClientMessage(t, 300, t === F_PARSE);
  assert.equal(s.unsynced, true);
  assert.equal(s.pendingRfq, 0);
  assert.equal(s.ready, false, 'unsynced');
  s.noteClientMessage(F_FLUSH, 300, false);
  assert.equal(s.pendingRfq, 0);
  s.noteClientMessage(F_SYNC, 300, false);
  assert.equal(s.unsynced, false);
  assert.equal(s.pendingRfq, 1);
  // a pipeline of two Syncs: done only at the second ReadyForQuery
  s.noteClientMessage(F_SYNC, 300, false);
  assert.equal(s.noteReadyForQuery(TX_IDLE, 400), false);
  assert.equal(s.ready, false);
  assert.equal(s.noteReadyForQuery(TX_IDLE, 400), true);
  assert.equal(s.ready, true);
  // inside a transaction block: done, but not ready to change hands
  s.noteClientMessage(F_QUERY, 500, true);
  assert.equal(s.noteReadyForQuery(TX_IN_BLOCK, 600), true);
  assert.equal(s.ready, false);
  assert.notEqual(s.xactStartUs, 0, 'the transaction clock runs on');
  s.noteClientMessage(F_QUERY, 700, true);
  s.noteReadyForQuery(TX_FAILED, 800);
  assert.equal(s.ready, false);
  s.noteClientMessage(F_QUERY, 900, true);
  s.noteReadyForQuery(TX_IDLE, 1000);
  assert.equal(s.ready, true);
  assert.equal(s.xactStartUs, 0);
  s.changeState(ServerState.FREE);
});

test('internal queries: not ready while one runs; a server cut mid-message is never ready again', () => {
  const s = server(ServerState.TESTED);
  s.beginInternal(Internal.CHECK);
  assert.equal(s.ready, false);
  assert.equal(s.endInternal(TX_IDLE), Internal.CHECK);
  assert.equal(s.ready, true);
  s.cutMessage = true;
  assert.equal(s.ready, false);
  s.changeState(ServerState.FREE);
});
