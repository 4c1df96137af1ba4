// PacketStream, the framing layer between a socket and the pooler, driven with fake sockets:
// messages cut at every byte, headers split byte by byte, malformed lengths, each owner action
// (FORWARD, HANDLED, NEED_FULL, WAIT, STOP), partial forwarding and its boundary, rewritten
// heads (skipHead) and back-pressure from a slow target.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { FORWARD, HANDLED, NEED_FULL, PacketStream, STOP, WAIT, type Action, type StreamOwner } from '../../src/protocol/stream.js';

/** Just what PacketStream uses of a socket: pause/resume, write with a verdict, drain. */
class FakeSocket extends EventEmitter {
  paused = false;
  destroyed = false;
  written: Buffer[] = [];
  /** write() answers false (the kernel buffer is full) while true */
  full = false;

  pause(): this {
    this.paused = true;
    return this;
  }

  resume(): this {
    this.paused = false;
    return this;
  }

  write(b: Buffer): boolean {
    this.written.push(Buffer.from(b));
    return !this.full;
  }

  get bytes(): Buffer {
    return Buffer.concat(this.written);
  }

  asSocket(): Socket {
    return this as unknown as Socket;
  }
}

interface Seen {
  type: string;
  len: number;
  complete: boolean;
  body: Buffer | null;
}

/** An owner that records each call and answers with `decide` (default FORWARD). */
class Owner implements StreamOwner {
  seen: Seen[] = [];
  bad: Buffer[] = [];
  boundaries = 0;
  constructor(private readonly decide: (type: string, complete: boolean, len: number) => Action = () => FORWARD) {}

  onMessage(type: number, len: number, buf: Buffer, start: number, complete: boolean): Action {
    const t = String.fromCharCode(type);
    this.seen.push({ type: t, len, complete, body: complete ? Buffer.from(buf.subarray(start + 5, start + len + 1)) : null });
    return this.decide(t, complete, len);
  }

  onBadHeader(buf: Buffer, start: number, end: number): void {
    this.bad.push(Buffer.from(buf.subarray(start, end)));
  }

  onForwardBoundary(): void {
    this.boundaries++;
  }
}

function msg(type: string, body: string | Buffer = ''): Buffer {
  const b = typeof body === 'string' ? Buffer.from(body) : body;
  const h = Buffer.alloc(5);
  h[0] = type.charCodeAt(0);
  h.writeInt32BE(b.length + 4, 1);
  return Buffer.concat([h, b]);
}

function setup(decide?: (type: string, complete: boolean, len: number) => Action): { src: FakeSocket; dst: FakeSocket; owner: Owner; stream: PacketStream } {
  const src = new FakeSocket();
  const dst = new FakeSocket();
  const owner = new Owner(decide);
  const stream = new PacketStream(src.asSocket(), owner);
  stream.setTarget(dst.asSocket());
  return { src, dst, owner, stream };
}

/** Feed `data` cut at the given offsets. */
function feedCut(stream: PacketStream, data: Buffer, cuts: number[]): void {
  let at = 0;
  for (const c of [...cuts, data.length]) {
    if (c > at) stream.feed(data.subarray(at, c));
    at = c;
  }
}

const INPUT = Buffer.concat([msg('Q', 'SELECT 1\0'), msg('S'), msg('P', 'a\0SELECT $1\0\0\0'), msg('H'), msg('d', Buffer.alloc(300, 7))]);

test('FORWARD: every cut point of the input gives the same messages and the same bytes out', () => {
  for (let cut = 0; cut <= INPUT.length; cut++) {
    const { dst, owner, stream } = setup();
    feedCut(stream, INPUT, [cut]);
    stream.flush();
    assert.deepEqual(dst.bytes, INPUT, `cut at ${cut}`);
    assert.deepEqual(owner.seen.map((s) => s.type).join(''), 'QSPHd', `cut at ${cut}`);
  }
});

test('a header split byte by byte, and a whole input fed one byte at a time', () => {
  const { dst, owner, stream } = setup();
  feedCut(stream, INPUT, Array.from({ length: INPUT.length }, (_, i) => i));
  assert.deepEqual(dst.bytes, INPUT);
  assert.deepEqual(owner.seen.map((s) => [s.type, s.len]), [['Q', 13], ['S', 4], ['P', 18], ['H', 4], ['d', 304]]);
  // only empty bodies can be complete when the header itself came in pieces
  assert.deepEqual(owner.seen.map((s) => s.complete), [false, true, false, true, false]);
});

test('consecutive forwarded messages of one read go out as one write', () => {
  const { dst, stream } = setup();
  stream.feed(INPUT);
  assert.equal(dst.written.length, 1);
  assert.deepEqual(dst.written[0], INPUT);
});

test('length fields below 4 or at max_packet_size: onBadHeader, nothing more is read', () => {
  for (const len of [0, 3, -1, -2147483648]) {
    const { owner, stream, dst } = setup();
    const h = Buffer.alloc(5);
    h[0] = 0x51;
    h.writeInt32BE(len, 1);
    stream.feed(Buffer.concat([msg('S'), h, msg('S')]));
    assert.equal(owner.bad.length, 1, `length ${len}`);
    assert.deepEqual(owner.seen.map((s) => s.type), ['S'], 'the message before it still counted');
    stream.feed(msg('S'));
    assert.equal(owner.seen.length, 1, 'stopped');
    assert.deepEqual(dst.bytes, msg('S'), 'what came before went out');
  }
  const { owner, stream } = setup();
  stream.maxPacket = 100;
  stream.feed(msg('Q', Buffer.alloc(95)));
  assert.equal(owner.bad.length, 0, '100 bytes with the type byte: allowed');
  stream.feed(msg('Q', Buffer.alloc(96)));
  assert.equal(owner.bad.length, 1, '101 bytes: refused');
  // a split header is checked too
  const split = setup();
  split.stream.maxPacket = 100;
  const big = msg('Q', Buffer.alloc(200));
  feedCut(split.stream, big, [1, 2, 3, 4]);
  assert.equal(split.owner.bad.length, 1);
  assert.equal(split.owner.seen.length, 0);
});

test('HANDLED: the message is skipped, even when it spans reads', () => {
  const { dst, owner, stream } = setup((t) => (t === 'P' ? HANDLED : FORWARD));
  for (let cut = 0; cut <= INPUT.length; cut++) {
    dst.written = [];
    owner.seen = [];
    feedCut(stream, INPUT, [cut]);
    const expected = Buffer.concat([msg('Q', 'SELECT 1\0'), msg('S'), msg('H'), msg('d', Buffer.alloc(300, 7))]);
    assert.deepEqual(dst.bytes, expected, `cut at ${cut}`);
  }
});

test('NEED_FULL: an incomplete message is collected and offered again whole', () => {
  for (let cut = 6; cut < INPUT.length; cut += 7) {
    const { owner, stream, dst } = setup((t, complete) => (t === 'P' && !complete ? NEED_FULL : FORWARD));
    feedCut(stream, INPUT, [cut, cut + 3]);
    const p = owner.seen.filter((s) => s.type === 'P');
    assert.equal(p[p.length - 1]!.complete, true, `cut at ${cut}`);
    assert.deepEqual(p[p.length - 1]!.body, Buffer.from('a\0SELECT $1\0\0\0'));
    assert.deepEqual(dst.bytes, INPUT, `cut at ${cut}: forwarded in order`);
  }
});

test('WAIT: the message and everything after it are held and the socket paused; resume() goes on in order', () => {
  let wait = true;
  const { src, dst, owner, stream } = setup((t) => (t === 'P' && wait ? WAIT : FORWARD));
  stream.feed(INPUT.subarray(0, 30));
  assert.equal(src.paused, true);
  assert.equal(stream.isWaiting, true);
  stream.feed(INPUT.subarray(30)); // already read when the pause came
  assert.deepEqual(dst.bytes, Buffer.concat([msg('Q', 'SELECT 1\0'), msg('S')]));
  wait = false;
  stream.resume();
  assert.equal(src.paused, false);
  assert.deepEqual(dst.bytes, INPUT);
  assert.deepEqual(owner.seen.map((s) => s.type).join(''), 'QSPPHd', 'P offered again');
});

test('STOP (the owner closed the connection, stopping the stream): nothing more is processed', () => {
  let stream!: PacketStream;
  const { dst, owner, stream: s } = setup((t) => {
    if (t !== 'S') return FORWARD;
    stream.stop(); // what closing a connection does: what was queued still goes
    return STOP;
  });
  stream = s;
  stream.feed(INPUT);
  stream.feed(msg('Q', 'more\0'));
  assert.deepEqual(owner.seen.map((s) => s.type).join(''), 'QS');
  assert.deepEqual(dst.bytes, msg('Q', 'SELECT 1\0'), 'what was queued before still goes');
});

test('forwardingPartial and wantBoundary: the owner hears when a partly forwarded message is whole', () => {
  const { owner, stream, dst } = setup();
  const d = msg('d', Buffer.alloc(1000, 1));
  stream.feed(d.subarray(0, 10));
  assert.equal(stream.forwardingPartial, true);
  assert.equal(stream.midMessage, true);
  stream.wantBoundary = true;
  stream.feed(d.subarray(10, 500));
  assert.equal(owner.boundaries, 0);
  stream.feed(Buffer.concat([d.subarray(500), msg('S')]));
  assert.equal(owner.boundaries, 1);
  assert.equal(stream.forwardingPartial, false);
  assert.equal(stream.wantBoundary, false);
  assert.deepEqual(dst.bytes, Buffer.concat([d, msg('S')]));
  // a header alone is not forwarded yet: not partial
  const s2 = setup();
  s2.stream.feed(d.subarray(0, 3));
  assert.equal(s2.stream.forwardingPartial, false);
  assert.equal(s2.stream.midMessage, true);
  // with no target nothing is being forwarded
  const s3 = setup();
  s3.stream.feed(d.subarray(0, 10));
  s3.stream.setTarget(null);
  assert.equal(s3.stream.forwardingPartial, false);
});

test('skipHead: the owner sends its own head and the rest is streamed behind it', () => {
  const src = new FakeSocket();
  const dst = new FakeSocket();
  const body = Buffer.concat([Buffer.from('portal\0stmt\0'), Buffer.alloc(2000, 9)]);
  const b = msg('B', body);
  let stream!: PacketStream;
  const owner = new Owner((t, complete) => {
    if (t === 'B' && !complete) {
      stream.flush();
      dst.write(Buffer.from('HEAD'));
      stream.skipHead(5 + 12);
    }
    return FORWARD;
  });
  stream = new PacketStream(src.asSocket(), owner);
  stream.setTarget(dst.asSocket());
  stream.feed(Buffer.concat([msg('S'), b.subarray(0, 100)]));
  stream.feed(b.subarray(100));
  stream.feed(msg('S'));
  assert.deepEqual(dst.bytes, Buffer.concat([msg('S'), Buffer.from('HEAD'), b.subarray(17), msg('S')]));
});

test('a slow target: reading stops until it drains', () => {
  const { src, dst, stream } = setup();
  dst.full = true;
  stream.feed(msg('Q', 'x\0'));
  assert.equal(src.paused, true);
  dst.full = false;
  dst.emit('drain');
  assert.equal(src.paused, false);
});

test('fastForward types are forwarded without asking the owner', () => {
  const { owner, stream, dst } = setup();
  const table = new Uint8Array(256);
  table['d'.charCodeAt(0)] = 1;
  stream.fastForward = table;
  stream.feed(INPUT);
  assert.deepEqual(owner.seen.map((s) => s.type).join(''), 'QSPH');
  assert.deepEqual(dst.bytes, INPUT);
});
