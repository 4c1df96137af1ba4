// systemd as PgBouncer supports it: socket activation (LISTEN_FDS/LISTEN_PID, fds from 3 on),
// tried with systemd-socket-activate passing a TCP and a Unix socket exactly as pgbun.socket
// does; and Type=notify readiness (READY=1, RELOADING=1 ... READY=1, STOPPING=1) read from a
// Unix datagram socket standing in for systemd's $NOTIFY_SOCKET (a small perl receiver: node
// has no datagram Unix sockets). Both need the Debian package systemd.

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { psql } from '../lib/clients.js';
import { pgbunCommand, pgConnstr, startPgbun, type TestPgbun } from '../lib/pgbun.js';
import { sharedPostgres, TEST_DB } from '../lib/postgres.js';
import { chownTo, freePort, isRoot, makeTempDir, removeTempDir, serverOsUser, trackChild } from '../lib/procs.js';
import { eventually } from './admin-lib.js';

const pg = await sharedPostgres();
const have = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const runAs = isRoot() ? serverOsUser() : null;
const dirs: string[] = [];
const started: TestPgbun[] = [];

before(() => {
  // .ci/run installs them; without them these tests cannot say anything, so they fail
  for (const cmd of ['systemd-socket-activate', 'systemd-notify']) {
    assert.ok(have(cmd), `${cmd} is missing: apt-get install systemd`);
  }
});

after(async () => {
  await Promise.all(started.map((b) => b.stop()));
  for (const d of dirs) removeTempDir(d);
});

describe('socket activation', () => {
  test('pgbun listens on the TCP and Unix sockets systemd passes, and opens none of its own for them', async () => {
    const port = await freePort();
    const sockDir = makeTempDir('pgbun-sd-', runAs);
    dirs.push(sockDir);
    const sockPath = path.join(sockDir, `.s.PGSQL.${port}`);
    const b = await startPgbun({
      ini: {
        pgbouncer: { auth_type: 'trust', listen_port: port, unix_socket_dir: sockDir },
        databases: { [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB }) },
      },
      userlist: [['trust_user', '']],
      command: ['systemd-socket-activate', '-l', `127.0.0.1:${port}`, '-l', sockPath, ...pgbunCommand()],
    });
    started.push(b);
    fs.chmodSync(sockPath, 0o777);
    const tcp = await psql({ host: '127.0.0.1', port, user: 'trust_user', database: TEST_DB }, 'SELECT 41 + 1');
    assert.equal(tcp.code, 0, tcp.stderr);
    assert.equal(tcp.stdout.trim(), '42');
    const unix = await psql({ host: sockDir, port, user: 'trust_user', database: TEST_DB }, 'SELECT 40 + 2');
    assert.equal(unix.code, 0, unix.stderr);
    assert.equal(unix.stdout.trim(), '42');
    const log = b.log();
    assert.match(log, new RegExp(`LOG listening on 127\\.0\\.0\\.1:${port} \\(systemd socket\\)`));
    assert.match(log, /LOG listening on unix:.* \(systemd socket\)/);
    assert.doesNotMatch(log, new RegExp(`listening on 127\\.0\\.0\\.1:${port}\\n`));
    assert.doesNotMatch(log, /unix socket is in use/);
  });
});

describe('Type=notify', () => {
  test('READY=1 once listening, RELOADING=1 then READY=1 around a reload, STOPPING=1 on shutdown', async () => {
    const dir = makeTempDir('pgbun-notify-', runAs);
    dirs.push(dir);
    const sock = path.join(dir, 'notify');
    // systemd-notify waits for the receiver to close the BARRIER=1 fd: recv() without room for
    // ancillary data closes it
    const recv = spawn('perl', ['-MIO::Socket::UNIX', '-MSocket', '-e',
      '$s = IO::Socket::UNIX->new(Type => SOCK_DGRAM, Local => $ARGV[0]) or die "$!"; chmod 0777, $ARGV[0]; ' +
      '$| = 1; print "ready\\n"; while (1) { $s->recv($m, 4096); print "$m\\n--\\n"; }', sock], { stdio: ['ignore', 'pipe', 'inherit'] });
    trackChild(recv, 'notify receiver');
    let got = '';
    recv.stdout.setEncoding('utf8').on('data', (d: string) => (got += d));
    await eventually('notify receiver', () => got.startsWith('ready'));
    chownTo(dir, runAs);
    try {
      const b = await startPgbun({
        ini: { pgbouncer: { auth_type: 'trust' }, databases: { [TEST_DB]: pgConnstr(pg, { dbname: TEST_DB }) } },
        env: { NOTIFY_SOCKET: sock },
      });
      started.push(b);
      const messages = (): string[] => got.split('\n--\n').map((m) => m.replace(/^ready\n/, '')).filter((m) => m !== '' && m !== 'BARRIER=1');
      await eventually('READY=1', () => messages().some((m) => m.includes('READY=1')), 10_000);
      assert.match(messages()[0]!, new RegExp(`^MAINPID=${b.proc.pid}\\nREADY=1\\nSTATUS=PgBouncer 1\\.25\\.2`));
      b.signal('SIGHUP');
      await eventually('RELOADING=1, READY=1', () => messages().length >= 3, 10_000);
      assert.deepEqual(messages().slice(1, 3).map((m) => m.split('\n').slice(1).join(',')), ['RELOADING=1', 'READY=1']);
      b.signal('SIGTERM');
      await eventually('STOPPING=1', () => messages().length >= 4, 10_000);
      assert.equal(messages()[3], `MAINPID=${b.proc.pid}\nSTOPPING=1`);
      await b.waitExit(10_000);
    } finally {
      recv.kill('SIGKILL');
    }
  });
});
