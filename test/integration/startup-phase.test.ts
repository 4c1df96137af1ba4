// The startup phase through real sockets. SSLRequest / GSSENCRequest,
// protocol versions, startup parameters (ignore_startup_parameters, options, _pq_.*), malformed
// and truncated packets, client_login_timeout, max_client_conn, max_packet_size. Every case checks
// PgBouncer's exact answer (FATAL, SQLSTATE 08P01, only S/C/M, connection
// closed), the `closing because: <reason> (age=Ns)` log line, and that pgbun keeps serving.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { sleep } from '../lib/procs.js';
import {
  AUTH,
  gssEncRequest,
  message,
  md5ClientResponse,
  parseErrorFields,
  passwordMessage,
  query,
  readCStrings,
  sslRequest,
  startupMessage,
  startupPacket,
  WireClient,
  wireLogin,
  type PgError,
} from '../lib/wire.js';

const pg = await sharedPostgres();

let b: TestPgbun; // md5, client_login_timeout = 2, ignore_startup_parameters
let limits: TestPgbun; // max_client_conn = 3, max_packet_size = 16384
const bouncers: TestPgbun[] = [];

const target = (x: TestPgbun) => ({ host: x.host, port: x.port });
const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

before(async () => {
  const md5 = await pg.secretOf('md5_user');
  const databases = { [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB }) };
  [b, limits] = await Promise.all([
    startPgbun({
      ini: {
        databases,
        pgbouncer: { auth_type: 'md5', client_login_timeout: 2, ignore_startup_parameters: 'extra_float_digits, it_ignored' },
      },
      userlist: [['md5_user', md5]],
    }),
    startPgbun({
      ini: { databases, pgbouncer: { auth_type: 'md5', max_client_conn: 3, max_packet_size: 16384, admin_users: 'md5_user' } },
      userlist: [['md5_user', md5]],
    }),
  ]);
  bouncers.push(b, limits);
});

after(async () => {
  for (const x of bouncers) await x.stop();
});

/** Log in as md5_user with the given extra startup parameters. */
function login(x: TestPgbun, params: Record<string, string> = {}, database = TEST_DB) {
  return wireLogin(target(x), { user: 'md5_user', password: 'md5_pass', database, params });
}

/** pgbun still runs and serves a new client. */
async function assertServing(x: TestPgbun = b): Promise<void> {
  assert.equal(x.proc.exitCode, null, `pgbun exited:\n${x.stderr()}`);
  const { client } = await login(x);
  const r = await client.query('SELECT 40 + 2');
  assert.deepEqual(r.rows, [['42']]);
  await client.terminate();
}

/**
 * Send `bytes` on a new connection and expect pgbun's FATAL `msg` (08P01, only S/C/M, nothing
 * before it), the connection closed, and the log line `C-0x..: <prefix>@127.0.0.1:<port> closing
 * because: <msg> (age=0s)`.
 */
async function expectFatal(bytes: Buffer | Buffer[], msg: string, logPrefix: string | RegExp = '(nodb)/(nouser)', x: TestPgbun = b): Promise<PgError> {
  const off = x.logOffset();
  const c = await WireClient.connect(target(x));
  const port = c.socket.localPort;
  try {
    await c.write(bytes);
    const m = await c.readMessage(3000);
    assert.equal(m.type, 'E', `expected an ErrorResponse first, got '${m.type}'`);
    const err = parseErrorFields(m.body);
    assert.deepEqual(err.fields, { S: 'FATAL', C: '08P01', M: msg });
    await c.waitClose(3000);
    await x.waitForLog(
      new RegExp(`C-0x[0-9a-f]+: ${typeof logPrefix === 'string' ? escapeRe(logPrefix) : logPrefix.source}@127\\.0\\.0\\.1:${port} closing because: ${escapeRe(msg)} \\(age=0s\\)$`),
      3000,
      off,
    );
    return err;
  } finally {
    c.destroy();
  }
}

describe('startup phase', () => {
  test('SSLRequest is answered with a single N, then a normal login on the same connection', async () => {
    const off = b.logOffset();
    const c = await WireClient.connect(target(b));
    await c.write(sslRequest());
    assert.deepEqual(await c.readBytes(1), Buffer.from('N'));
    await sleep(50);
    assert.equal(c.pending.length, 0, 'nothing after the N');
    const res = await c.login({ user: 'md5_user', password: 'md5_pass', database: TEST_DB });
    assert.deepEqual(res.authCodes, [AUTH.MD5, AUTH.OK]);
    assert.deepEqual((await c.query('SELECT 1')).rows, [['1']]);
    const port = c.socket.localPort;
    await c.terminate();
    // the login attempt log line, with the client's address and port
    await b.waitForLog(
      new RegExp(`C-0x[0-9a-f]+: ${TEST_DB}/md5_user@127\\.0\\.0\\.1:${port} login attempt: db=${TEST_DB} user=md5_user tls=no replication=no$`),
      3000,
      off,
    );
    await b.waitForLog(new RegExp(`C-0x[0-9a-f]+: ${TEST_DB}/md5_user@127\\.0\\.0\\.1:${port} closing because: client close request \\(age=\\d+s\\)$`), 3000, off);
  });

  test('GSSENCRequest is answered with N, then a normal login', async () => {
    const c = await WireClient.connect(target(b));
    await c.write(gssEncRequest());
    assert.deepEqual(await c.readBytes(1), Buffer.from('N'));
    await c.login({ user: 'md5_user', password: 'md5_pass', database: TEST_DB });
    assert.deepEqual((await c.query('SELECT 2')).rows, [['2']]);
    await c.terminate();
  });

  test('protocol 2: "old V2 protocol not supported"', async () => {
    await expectFatal(startupMessage({ user: 'md5_user', database: TEST_DB }, 0x00020000), 'old V2 protocol not supported');
    await assertServing();
  });

  test('no user: "no username supplied"', async () => {
    await expectFatal(startupMessage({ database: TEST_DB }), 'no username supplied');
    await assertServing();
  });

  test('unknown startup parameter: "unsupported startup parameter: foo"', async () => {
    await expectFatal(startupMessage({ user: 'md5_user', database: TEST_DB, foo: 'bar' }), 'unsupported startup parameter: foo');
    await assertServing();
  });

  test('ignore_startup_parameters: listed parameters are accepted and not passed on', async () => {
    const { client } = await login(b, { extra_float_digits: '2', it_ignored: 'x' });
    const r = await client.query(`SELECT current_setting('extra_float_digits')`);
    assert.deepEqual(r.rows, [['1']]); // the server default, not the client's 2
    await client.terminate();
  });

  test('options with -c / --key=value of tracked parameters: accepted and applied on the server', async () => {
    const { client, login: res } = await login(b, {
      options: '-c TimeZone=Asia/Tokyo --DateStyle=SQL,DMY -c application_name=from\\ options -c IntervalStyle=iso_8601',
    });
    assert.equal(res.params.TimeZone, 'Asia/Tokyo');
    assert.equal(res.params.application_name, 'from options');
    const r = await client.query(
      `SELECT current_setting('TimeZone'), current_setting('DateStyle'), current_setting('application_name'), current_setting('IntervalStyle')`,
    );
    assert.deepEqual(r.rows, [['Asia/Tokyo', 'SQL, DMY', 'from options', 'iso_8601']]);
    const show = await client.query('SHOW timezone');
    assert.deepEqual(show.rows, [['Asia/Tokyo']]);
    await client.terminate();
  });

  test('options with an untracked parameter or another switch are refused with the exact texts', async () => {
    await expectFatal(
      startupMessage({ user: 'md5_user', database: TEST_DB, options: '-c work_mem=64MB' }),
      'unsupported startup parameter in options: work_mem',
    );
    await expectFatal(
      startupMessage({ user: 'md5_user', database: TEST_DB, options: '-x' }),
      "unsupported options startup parameter: only '-c config=val' and '--config=val' are allowed",
    );
    await assertServing();
  });

  test('_pq_.* parameters: NegotiateProtocolVersion (3.0, the ignored options), then the login goes on', async () => {
    const c = await WireClient.connect(target(b));
    await c.startup({ user: 'md5_user', database: TEST_DB, '_pq_.it_option': 'on' });
    const v = await c.readMessage();
    assert.equal(v.type, 'v');
    assert.equal(v.body.readInt32BE(0), 0); // newest minor version supported: 3.0
    assert.equal(v.body.readInt32BE(4), 1);
    assert.deepEqual(readCStrings(v.body, 8), ['_pq_.it_option']);
    const r = await c.readMessage();
    assert.equal(r.type, 'R');
    assert.equal(r.body.readInt32BE(0), AUTH.MD5);
    await c.write(passwordMessage(md5ClientResponse('md5_pass', 'md5_user', r.body.subarray(4, 8))));
    const rest = await c.readUntil('Z');
    assert.equal(rest[0].type, 'R');
    assert.equal(rest[0].body.readInt32BE(0), AUTH.OK);
    assert.deepEqual((await c.query('SELECT 3')).rows, [['3']]);
    await c.terminate();
  });

  test('protocol 3.2: NegotiateProtocolVersion down to 3.0, then the login goes on', async () => {
    const c = await WireClient.connect(target(b));
    await c.startup({ user: 'md5_user', database: TEST_DB }, 0x00030002);
    const v = await c.readMessage();
    assert.equal(v.type, 'v');
    assert.deepEqual(v.body, Buffer.from('0000000000000000', 'hex'));
    const r = await c.readMessage();
    assert.equal(r.type, 'R');
    assert.equal(r.body.readInt32BE(0), AUTH.MD5);
    c.destroy();
  });
});

describe('malformed and truncated startup packets', () => {
  const hdr = (len: number, code: number) => {
    const h = Buffer.alloc(8);
    h.writeInt32BE(len, 0);
    h.writeInt32BE(code, 4);
    return h;
  };

  test('length below 8: "bad packet header" with the bytes in hex', async () => {
    await expectFatal(hdr(4, 0x00030000), "bad packet header: '0000000400030000'");
    await expectFatal(hdr(7, 0x00030000), "bad packet header: '0000000700030000'");
    await assertServing();
  });

  test('huge length: "bad packet header"', async () => {
    await expectFatal(hdr(0x7fffffff, 0x00030000), "bad packet header: '7fffffff00030000'");
    await assertServing();
  });

  test('unknown request code: "bad packet header"', async () => {
    await expectFatal(hdr(8, 12345678), "bad packet header: '0000000800bc614e'");
    await assertServing();
  });

  test('startup packet without the terminating NUL: "invalid startup packet layout: expected terminator as last byte"', async () => {
    const p = startupMessage({ user: 'md5_user', database: TEST_DB });
    p[p.length - 1] = 0x41;
    await expectFatal(p, 'invalid startup packet layout: expected terminator as last byte');
    await assertServing();
  });

  test('a password packet before the startup packet: "client password pkt before startup packet"', async () => {
    await expectFatal(passwordMessage('secret'), 'client password pkt before startup packet');
    await assertServing();
  });

  test('a second StartupMessage during authentication: "client re-sent startup pkt"', async () => {
    const off = b.logOffset();
    const c = await WireClient.connect(target(b));
    await c.startup({ user: 'md5_user', database: TEST_DB });
    const r = await c.readMessage();
    assert.equal(r.body.readInt32BE(0), AUTH.MD5);
    await c.startup({ user: 'md5_user', database: TEST_DB });
    await c.expectError({ severity: 'FATAL', code: '08P01', message: 'client re-sent startup pkt', onlySCM: true });
    c.destroy();
    await b.waitForLog(/closing because: client re-sent startup pkt \(age=0s\)$/, 3000, off);
    await assertServing();
  });

  test('a Query before the startup packet: closed without an ErrorResponse ("bad packet")', async () => {
    const off = b.logOffset();
    const c = await WireClient.connect(target(b));
    const port = c.socket.localPort;
    await c.write(query('SELECT 1'));
    await c.waitClose(3000);
    assert.equal(c.pending.length, 0, `got ${c.pending.toString('latin1')}`);
    c.destroy();
    await b.waitForLog(new RegExp(`C-0x[0-9a-f]+: \\(nodb\\)/\\(nouser\\)@127\\.0\\.0\\.1:${port} closing because: bad packet \\(age=0s\\)$`), 3000, off);
    await assertServing();
  });

  test('truncated packets followed by EOF: closed, nothing sent, pgbun goes on', async () => {
    const full = startupMessage({ user: 'md5_user', database: TEST_DB });
    for (const part of [full.subarray(0, 3), full.subarray(0, 7)]) {
      const c = await WireClient.connect(target(b));
      await c.write(part);
      c.end();
      await c.waitClose(3000);
      assert.equal(c.pending.length, 0, `answer to ${part.length} bytes: ${c.pending.toString('latin1')}`);
      c.destroy();
    }
    await assertServing();
  });

  test('a startup packet that arrives in several reads is put together (as PgBouncer 1.23+ does)', async () => {
    const full = startupMessage({ user: 'md5_user', database: TEST_DB });
    for (const cuts of [[10], [3, 9], [full.length - 1], [1, 2, 3, 4, 5, 6, 7, 8]]) {
      const c = await WireClient.connect(target(b));
      let at = 0;
      for (const cut of [...cuts, full.length]) {
        await c.write(full.subarray(at, cut));
        at = cut;
        await sleep(30);
      }
      const m = await c.readMessage(3000);
      assert.equal(m.type, 'R', `cut at ${cuts.join(',')}: an authentication request`);
      assert.equal(m.body.readInt32BE(0), AUTH.MD5);
      c.destroy();
    }
    await assertServing();
  });

  test('an SSLRequest with more bytes behind it in the same write: "received unencrypted data after SSL request" (TLS off)', async () => {
    const off = b.logOffset();
    const c = await WireClient.connect(target(b));
    const port = c.socket.localPort;
    await c.write([sslRequest(), startupMessage({ user: 'md5_user', database: TEST_DB })]);
    await c.expectError({ severity: 'FATAL', code: '08P01', message: 'received unencrypted data after SSL request', onlySCM: true, closed: true });
    c.destroy();
    await b.waitForLog(new RegExp(`C-0x[0-9a-f]+: \\(nodb\\)/\\(nouser\\)@127\\.0\\.0\\.1:${port} closing because: received unencrypted data after SSL request \\(age=0s\\)$`), 3000, off);
    await assertServing();
  });

  test('a client stalling mid-header or mid-authentication gets "client_login_timeout"', async () => {
    const off = b.logOffset();
    const stall = async (bytes: Buffer, logPrefix: string) => {
      const c = await WireClient.connect(target(b));
      const port = c.socket.localPort;
      const started = Date.now();
      await c.write(bytes);
      const seen: string[] = [];
      let m = await c.readMessage(6000);
      while (m.type === 'R') {
        seen.push(`R${m.body.readInt32BE(0)}`);
        m = await c.readMessage(6000);
      }
      assert.equal(m.type, 'E');
      const err = parseErrorFields(m.body);
      assert.deepEqual(err.fields, { S: 'FATAL', C: '08P01', M: 'client_login_timeout' });
      const waited = Date.now() - started;
      assert.ok(waited >= 1900 && waited < 4500, `timed out after ${waited} ms (client_login_timeout = 2)`);
      await c.waitClose(3000);
      c.destroy();
      await b.waitForLog(
        new RegExp(`C-0x[0-9a-f]+: ${escapeRe(logPrefix)}@127\\.0\\.0\\.1:${port} closing because: client_login_timeout \\(age=[23]s\\)$`),
        3000,
        off,
      );
      return seen;
    };
    const full = startupMessage({ user: 'md5_user', database: TEST_DB });
    const [partial, partialBody, midAuth] = await Promise.all([
      stall(full.subarray(0, 4), '(nodb)/(nouser)'), // half a packet header
      stall(full.subarray(0, 12), '(nodb)/(nouser)'), // part of the packet's body
      stall(full, `${TEST_DB}/md5_user`), // startup sent, the md5 challenge never answered
    ]);
    assert.deepEqual(partial, []);
    assert.deepEqual(partialBody, []);
    assert.deepEqual(midAuth, [`R${AUTH.MD5}`]);
    await assertServing();
  });
});

describe('limits', () => {
  test('max_client_conn: the 4th client gets "no more connections allowed (max_client_conn)"; the admin db is exempt', async () => {
    const held: WireClient[] = [];
    try {
      for (let i = 0; i < 3; i++) held.push((await login(limits)).client);
      await expectFatal(
        startupMessage({ user: 'md5_user', database: TEST_DB }),
        'no more connections allowed (max_client_conn)',
        // the log prefix: with or without the db/user, depending on when the limit is checked
        /(\(nodb\)\/\(nouser\)|testdb\/md5_user)/,
        limits,
      );
      // the admin console is not counted against the limit
      const admin = await wireLogin(target(limits), { user: 'md5_user', password: 'md5_pass', database: 'pgbouncer' });
      assert.equal(admin.login.status, 'I');
      await admin.client.terminate();
      // the held clients still work
      for (const c of held) assert.deepEqual((await c.query('SELECT 1')).rows, [['1']]);
    } finally {
      for (const c of held) await c.terminate();
    }
    await sleep(100);
    await assertServing(limits);
  });

  test('max_packet_size: a larger packet after login gets "bad packet header"', async () => {
    const { client } = await login(limits);
    const sql = `SELECT '${'x'.repeat(20000)}'`;
    await client.write(query(sql));
    const len = (4 + Buffer.byteLength(sql) + 1).toString(16).padStart(8, '0');
    const hex = `51${len}${Buffer.from('SEL').toString('hex')}`;
    await client.expectError({ severity: 'FATAL', code: '08P01', message: `bad packet header: '${hex}'`, onlySCM: true });
    client.destroy();
    // just below the limit is fine
    const ok = await login(limits);
    const r = await ok.client.query(`SELECT length('${'y'.repeat(16000)}')`);
    assert.deepEqual(r.rows, [['16000']]);
    await ok.client.terminate();
    await assertServing(limits);
  });

  test('a huge length field after login (default max_packet_size): "bad packet header", no server involved', async () => {
    const { client } = await login(b);
    assert.deepEqual((await client.query('SELECT 1')).rows, [['1']]); // linked to a server
    const off = b.logOffset();
    await client.write(Buffer.from('517fffffff', 'hex'));
    await client.expectError({ severity: 'FATAL', code: '08P01', message: "bad packet header: '517fffffff'", onlySCM: true });
    client.destroy();
    await b.waitForLog(/closing because: bad packet header: '517fffffff' \(age=\d+s\)$/, 3000, off);
    await assertServing();
  });

  test('an unknown message type after login: "unknown pkt"', async () => {
    const { client } = await login(b);
    await client.write(message('Y', 'junk'));
    await client.expectError({ severity: 'FATAL', code: '08P01', message: 'unknown pkt', onlySCM: true });
    client.destroy();
    // a StartupMessage after login is an unknown packet too
    const again = await login(b);
    await again.client.write(startupPacket(0x00030000, Buffer.from('user\0md5_user\0\0')));
    await again.client.expectError({ severity: 'FATAL', code: '08P01', message: 'unknown pkt', onlySCM: true });
    again.client.destroy();
    await assertServing();
  });
});
