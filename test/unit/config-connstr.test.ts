// [databases], [users] and [peers] value syntax of PgBouncer's loader.c (checked
// against 1.18 where it has the key).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ConnstrError, PEER_ID_MESSAGE, parseDatabase, parsePeer, parseUser, splitConnstr,
} from '../../src/config/connstr.js';

const SYNTAX = 'syntax error in connection string';
const pairs = (s: string): Array<[string, string]> => splitConnstr(s, SYNTAX).map((p) => [p.key, p.value]);
const db = (s: string) => parseDatabase('foo', s, 'p.ini', 3);
const user = (s: string) => parseUser('u', s, 'p.ini', 4);
const peer = (id: string, s: string) => parsePeer(id, s, 'p.ini', 5);
function fails(fn: () => unknown, message: string): void {
  assert.throws(fn, (err: unknown) => err instanceof ConnstrError && err.message === message, message);
}

test('key=value pairs separated by spaces, spaces allowed around `=`', () => {
  assert.deepEqual(pairs('host=x port=5433'), [['host', 'x'], ['port', '5433']]);
  assert.deepEqual(pairs('  dbname = x   port= 5433  user =bob  '), [['dbname', 'x'], ['port', '5433'], ['user', 'bob']]);
  assert.deepEqual(pairs(''), []);
  assert.deepEqual(pairs('   '), []);
});

test('only spaces separate: a tab is part of a key or value (1.18)', () => {
  assert.deepEqual(pairs('host=y\tport=5'), [['host', 'y\tport=5']]);
  assert.deepEqual(pairs('host=\ty'), [['host', '\ty']]);
  assert.deepEqual(pairs('host=y\t port=5'), [['host', 'y\t'], ['port', '5']]);
  fails(() => db('host=y \tport=5'), 'unrecognized connection parameter: \tport');
  fails(() => db('host\tport=1'), 'unrecognized connection parameter: host\tport');
  fails(() => db('host \t=y'), SYNTAX);
});

test('an unquoted value is a run of non-space chars: `dbname=a=b` is fine', () => {
  assert.deepEqual(pairs('dbname=a=b host=h;x#y'), [['dbname', 'a=b'], ['host', 'h;x#y']]);
});

test("single-quoted values may hold blanks and `=`, '' is a quote", () => {
  assert.deepEqual(pairs("dbname='a b''c' host = x"), [['dbname', "a b'c"], ['host', 'x']]);
  assert.deepEqual(pairs("auth_query='SELECT usename, passwd FROM pg_shadow WHERE usename=$1'"),
    [['auth_query', 'SELECT usename, passwd FROM pg_shadow WHERE usename=$1']]);
  assert.deepEqual(pairs("a=''''"), [['a', "'"]]);
});

test('the character right after a closing quote is swallowed, as in C (1.18)', () => {
  assert.deepEqual(pairs("dbname='ab'c"), [['dbname', 'ab']]);
  // observed: `unrecognized connection parameter: ort`
  assert.deepEqual(pairs("dbname='ab'port=5"), [['dbname', 'ab'], ['ort', '5']]);
  fails(() => db("dbname='ab'port=5"), 'unrecognized connection parameter: ort');
});

test('syntax errors: empty value, quoted empty value, unterminated quote, missing `=`, empty key', () => {
  for (const s of ['dbname=', 'dbname= ', "dbname=''", "dbname='ab", 'dbname', 'host=x dbname', '=x', 'host=x =y',
    'host=x dbname=p0 ; c']) {
    fails(() => pairs(s), SYNTAX);
    fails(() => db(s), SYNTAX);
  }
});

test('[databases]: an empty string is valid (Unix socket, port 5432, dbname = entry name)', () => {
  const d = parseDatabase('foodb', '', 'p.ini', 7);
  assert.equal(d.name, 'foodb');
  assert.equal(d.connstr, '');
  assert.equal(d.dbname, null);
  assert.equal(d.host, null);
  assert.equal(d.port, 5432);
  assert.equal(d.file, 'p.ini');
  assert.equal(d.line, 7);
  for (const k of ['user', 'password', 'auth_user', 'auth_query', 'auth_dbname', 'pool_size', 'min_pool_size',
    'reserve_pool_size', 'connect_query', 'pool_mode', 'max_db_connections', 'max_db_client_connections',
    'server_lifetime', 'load_balance_hosts', 'query_wait_timeout', 'client_encoding', 'datestyle',
    'timezone', 'application_name'] as const) assert.equal(d[k], null, k);
});

test('[databases]: every key PgBouncer knows', () => {
  const s = "dbname=real host=h1,h2 port=5433 user=fu password='p w' auth_user=au " +
    "auth_query='SELECT 1' auth_dbname=adb pool_size=7 min_pool_size=2 reserve_pool_size=3 " +
    "connect_query='SET x=1' pool_mode=transaction max_db_connections=9 max_db_client_connections=11 " +
    'server_lifetime=60 load_balance_hosts=disable query_wait_timeout=30 client_encoding=UTF8 ' +
    "datestyle='ISO, MDY' timezone=UTC application_name=app";
  const d = db(s);
  assert.deepEqual({ ...d }, {
    name: 'foo', connstr: s, dbname: 'real', host: 'h1,h2', port: 5433, user: 'fu', password: 'p w',
    auth_user: 'au', auth_query: 'SELECT 1', auth_dbname: 'adb', pool_size: 7, min_pool_size: 2,
    reserve_pool_size: 3, connect_query: 'SET x=1', pool_mode: 'transaction', max_db_connections: 9,
    max_db_client_connections: 11, server_lifetime: 60, load_balance_hosts: 'disable',
    query_wait_timeout: 30, client_encoding: 'UTF8', datestyle: 'ISO, MDY', timezone: 'UTC',
    application_name: 'app', file: 'p.ini', line: 3,
  });
});

test('[databases]: `reserve_pool` is the old name of reserve_pool_size', () => {
  assert.equal(db('reserve_pool=4').reserve_pool_size, 4);
});

test('[databases]: a repeated key: the last one wins', () => {
  assert.equal(db('dbname=a dbname=b').dbname, 'b');
});

test('[databases]: unknown key → `unrecognized connection parameter: K`', () => {
  fails(() => db('host=x bogus=1'), 'unrecognized connection parameter: bogus');
  fails(() => db('Host=x'), 'unrecognized connection parameter: Host');
  fails(() => db('server_reset_query=x'), 'unrecognized connection parameter: server_reset_query');
});

test('[databases]: integers are atoi: `12x` = 12, negative = not set', () => {
  assert.equal(db('pool_size=12x').pool_size, 12);
  assert.equal(db('pool_size=0').pool_size, 0);
  assert.equal(db('pool_size=abc').pool_size, 0);
  assert.equal(db('min_pool_size=-1').min_pool_size, null);
  assert.equal(db('port=12abc').port, 12);
  assert.equal(db('port=99999').port, 99999); // 1.18 takes it
});

test('[databases]: port must be non-zero → `invalid port: X`', () => {
  fails(() => db('port=0'), 'invalid port: 0');
  fails(() => db('port=abc'), 'invalid port: abc');
  assert.equal(db('port=-5').port, -5); // only zero is checked (1.18)
});

test('[databases]: pool_mode and load_balance_hosts are checked (case-insensitively)', () => {
  fails(() => db('pool_mode=x'), 'invalid pool mode: x');
  assert.equal(db('pool_mode=Transaction').pool_mode, 'transaction');
  assert.equal(db('pool_mode=statement').pool_mode, 'statement');
  assert.equal(db('load_balance_hosts=round-robin').load_balance_hosts, 'round-robin');
  fails(() => db('load_balance_hosts=random'), 'invalid load_balance_hosts: random');
});

test('[databases]: auth_dbname=pgbouncer is accepted (PgBouncer refuses it at login)', () => {
  assert.equal(db('auth_dbname=pgbouncer').auth_dbname, 'pgbouncer');
});

test('[users]: every key PgBouncer knows; an empty value is allowed', () => {
  assert.deepEqual({ ...user('') }, {
    name: 'u', pool_mode: null, pool_size: null, reserve_pool_size: null, max_user_connections: null,
    max_user_client_connections: null, query_timeout: null, idle_transaction_timeout: null,
    client_idle_timeout: null, transaction_timeout: null, query_wait_timeout: null, file: 'p.ini', line: 4,
  });
  const u = user('pool_mode=statement pool_size=3 reserve_pool_size=1 max_user_connections=5 ' +
    'max_user_client_connections=6 query_timeout=7 idle_transaction_timeout=8 client_idle_timeout=9 ' +
    'transaction_timeout=10 query_wait_timeout=11');
  assert.deepEqual([u.pool_mode, u.pool_size, u.reserve_pool_size, u.max_user_connections,
    u.max_user_client_connections, u.query_timeout, u.idle_transaction_timeout, u.client_idle_timeout,
    u.transaction_timeout, u.query_wait_timeout], ['statement', 3, 1, 5, 6, 7, 8, 9, 10, 11]);
});

test('[users]: errors use the user wording', () => {
  fails(() => user('bogus=1'), 'unrecognized user parameter: bogus');
  fails(() => user('dbname=x'), 'unrecognized user parameter: dbname');
  fails(() => user('x'), 'syntax error in user settings');
  fails(() => user('pool_mode='), 'syntax error in user settings');
  fails(() => user('pool_mode=bad'), 'invalid pool mode: bad');
});

test('[peers]: host required, port defaults to 6432, pool_size optional', () => {
  assert.deepEqual(peer('1', 'host=/tmp'), { peer_id: 1, host: '/tmp', port: 6432, pool_size: null, file: 'p.ini', line: 5 });
  assert.deepEqual(peer('65535', 'host=10.0.0.2 port=6433 pool_size=4'),
    { peer_id: 65535, host: '10.0.0.2', port: 6433, pool_size: 4, file: 'p.ini', line: 5 });
  fails(() => peer('2', 'port=6433'), 'host is required for peer 2');
  fails(() => peer('2', 'host=x port=0'), 'invalid port: 0');
  fails(() => peer('2', 'host=x dbname=y'), 'unrecognized peering parameter: dbname');
  fails(() => peer('2', 'host='), SYNTAX);
});

test('[peers]: the key must be an integer 1..65535', () => {
  for (const id of ['0', '65536', '-1', 'abc', '1x', '']) fails(() => peer(id, 'host=x'), PEER_ID_MESSAGE);
  assert.match(PEER_ID_MESSAGE, /^ids of peers must be a number larger than 0/);
});
