// The I/O layer between a socket and the pooler logic (PgBouncer's sbuf). It frames typed
// protocol messages from the incoming byte stream reading only the 5-byte headers, and lets the
// owner decide per message:
//   FORWARD   send the bytes as they are to `target` (the linked peer). Consecutive forwarded
//             messages of one chunk are written as ONE subarray of the received buffer: no copy,
//             one write. A message larger than the chunk is streamed as its bytes arrive.
//   HANDLED   the owner dealt with the message (bytes are skipped here).
//   NEED_FULL the owner wants to look inside a message that is not complete in this chunk; it is
//             collected into one buffer and offered again with complete = true.
//   WAIT      stop reading: the message and everything after it are held (e.g. a client waiting
//             for a server) until resume().
//   STOP      the connection was closed by the owner; drop everything.
// Message types in `fastForward` are forwarded without asking the owner at all: that is the
// per-message hot path (DataRow, RowDescription, ...).
// Forwarded bytes are queued and written once per received chunk; an owner that writes to the
// target itself must call flush() first (Client.send/Server.send do) so that order is kept.
import type { Socket } from 'node:net';

export const FORWARD = 0;
export const HANDLED = 1;
export const NEED_FULL = 2;
export const WAIT = 3;
export const STOP = 4;
export type Action = 0 | 1 | 2 | 3 | 4;

const MODE_FORWARD = 0;
const MODE_SKIP = 1;
const MODE_COLLECT = 2;

export interface StreamOwner {
  /**
   * One message: type byte, length field (body length + 4). If `complete`, the whole message
   * is buf[start, start + len + 1); otherwise buf holds at least its 5-byte header at `start`.
   */
  onMessage(type: number, len: number, buf: Buffer, start: number, complete: boolean): Action;
  /** A length field below 4 or above max_packet_size. */
  onBadHeader(buf: Buffer, start: number, end: number): void;
  /** The partly forwarded message asked for with `wantBoundary` has gone out whole. */
  onForwardBoundary?(): void;
}

export class PacketStream {
  /** where FORWARD goes; change it only through setTarget() */
  target: Socket | null = null;
  /** types forwarded without consulting the owner (null = always consult) */
  fastForward: Uint8Array | null = null;
  maxPacket = 2147483647;
  /**
   * Set by the owner while `forwardingPartial`: call owner.onForwardBoundary() as soon as the rest
   * of that message has been forwarded (e.g. to release a server only at a message boundary).
   */
  wantBoundary = false;

  private remain = 0; // bytes of the current message still to come
  private mode = MODE_FORWARD;
  private readonly hdr = Buffer.allocUnsafe(5);
  private hdrLen = 0;
  private headSkip = 0;
  private coll: Buffer | null = null;
  private collPos = 0;
  // coalesced forward range, written on flush()
  private fwdBuf: Buffer | null = null;
  private fwdStart = 0;
  private fwdEnd = 0;
  private fwdTarget: Socket | null = null;
  private pending: Buffer[] | null = null;
  private waiting = false;
  private throttled = false;
  private stopped = false;
  private readonly onDrain = (): void => {
    this.throttled = false;
    if (!this.waiting && !this.stopped) this.socket.resume();
  };

  constructor(readonly socket: Socket, private readonly owner: StreamOwner) {}

  /** Feed bytes read from the socket. */
  feed(chunk: Buffer): void {
    if (this.stopped) return;
    if (this.waiting) {
      (this.pending ??= []).push(chunk);
      return;
    }
    this.process(chunk);
  }

  /** Point forwarding somewhere else; what was queued for the old target goes there first. */
  setTarget(t: Socket | null): void {
    this.flush();
    this.target = t;
    this.wantBoundary = false;
  }

  get isWaiting(): boolean {
    return this.waiting;
  }

  /** true while a message body is being streamed through (not at a message boundary) */
  get midMessage(): boolean {
    return this.remain > 0 || this.hdrLen > 0;
  }

  /**
   * Part of a message has been forwarded to the target and the rest has not arrived yet: the
   * target's reader is in the middle of that message, so the target must not be handed to anyone
   * else until the rest follows (whoever sent next would be read as the rest of this message).
   */
  get forwardingPartial(): boolean {
    return this.remain > 0 && this.mode === MODE_FORWARD && this.target !== null;
  }

  /**
   * From onMessage, before returning FORWARD for a message whose header is not split across
   * reads: the owner has sent its own version of the message's first `n` bytes (e.g. a Bind with
   * another statement name); only the rest is forwarded, streamed as it arrives. This is how a
   * large message is rewritten without holding all of it.
   */
  skipHead(n: number): void {
    this.headSkip = n;
  }

  /** Stop for good (connection closing); what was already queued for the peer still goes. */
  stop(): void {
    if (this.stopped) return;
    this.flush();
    this.stopped = true;
    this.pending = null;
    this.coll = null;
    this.fwdBuf = null;
  }

  /** Continue after WAIT: re-offer the held bytes, then read the socket again. */
  resume(): void {
    if (!this.waiting || this.stopped) return;
    this.waiting = false;
    while (this.pending !== null && !this.waiting && !this.stopped) {
      const b = this.pending.shift()!;
      if (this.pending.length === 0) this.pending = null;
      this.process(b);
    }
    if (!this.waiting && !this.throttled && !this.stopped) this.socket.resume();
  }

  /** Hold incoming data and stop reading (also usable outside onMessage, e.g. SUSPEND). */
  pause(): void {
    if (this.waiting) return;
    this.waiting = true;
    this.socket.pause();
  }

  /** Write out the coalesced forward range. Call before writing anything else to the target. */
  flush(): void {
    const b = this.fwdBuf;
    if (b === null) return;
    this.fwdBuf = null;
    const t = this.fwdTarget!;
    if (t.destroyed) return;
    const ok = t.write(this.fwdStart === 0 && this.fwdEnd === b.length ? b : b.subarray(this.fwdStart, this.fwdEnd));
    if (!ok && !this.throttled) {
      // the peer reads slower than we receive: stop reading until it drains
      this.throttled = true;
      this.socket.pause();
      t.once('drain', this.onDrain);
    }
  }

  /** Forget the coalesced forward range instead of writing it (its connection is being closed). */
  discardForwarded(): void {
    this.fwdBuf = null;
  }

  /**
   * Queue bytes for the target as if they had been forwarded (e.g. a ReadyForQuery the owner
   * looked at before releasing the server): they join the coalesced write.
   */
  forwardRange(buf: Buffer, start: number, end: number): void {
    if (this.target !== null) this.fwdAdd(this.target, buf, start, end);
  }

  private fwdAdd(target: Socket, buf: Buffer, start: number, end: number): void {
    if (this.fwdBuf === buf && this.fwdEnd === start && this.fwdTarget === target) {
      this.fwdEnd = end;
      return;
    }
    this.flush();
    this.fwdBuf = buf;
    this.fwdStart = start;
    this.fwdEnd = end;
    this.fwdTarget = target;
  }

  private hold(bufs: Buffer[]): void {
    this.flush();
    this.waiting = true;
    this.pending = this.pending === null ? bufs : bufs.concat(this.pending);
    this.socket.pause();
  }

  private process(chunk: Buffer): void {
    const n = chunk.length;
    let pos = 0;
    while (pos < n && !this.stopped) {
      if (this.remain > 0) {
        const take = this.remain < n - pos ? this.remain : n - pos;
        if (this.mode === MODE_FORWARD) {
          if (this.target !== null) this.fwdAdd(this.target, chunk, pos, pos + take);
        } else if (this.mode === MODE_COLLECT) {
          chunk.copy(this.coll!, this.collPos, pos, pos + take);
          this.collPos += take;
        }
        pos += take;
        this.remain -= take;
        if (this.remain === 0 && this.wantBoundary && this.mode === MODE_FORWARD) {
          this.wantBoundary = false;
          this.flush();
          this.owner.onForwardBoundary?.();
          if (this.stopped) return;
          continue;
        }
        if (this.remain === 0 && this.mode === MODE_COLLECT) {
          const full = this.coll!;
          this.coll = null;
          const act = this.owner.onMessage(full[0]!, full.length - 1, full, 0, true);
          if (act === WAIT) {
            this.hold(pos < n ? [full, chunk.subarray(pos)] : [full]);
            return;
          }
          if (act === STOP) return;
          const from = this.headSkip;
          this.headSkip = 0;
          if (act === FORWARD && this.target !== null) this.fwdAdd(this.target, full, from, full.length);
        }
        continue;
      }

      let type: number;
      let len: number;
      let buf: Buffer;
      let start: number;
      let straddled = false;
      if (this.hdrLen === 0 && n - pos >= 5) {
        buf = chunk;
        start = pos;
        type = chunk[pos]!;
        len = chunk.readInt32BE(pos + 1);
      } else {
        // the header is split across reads: assemble it in hdr
        const take = 5 - this.hdrLen < n - pos ? 5 - this.hdrLen : n - pos;
        chunk.copy(this.hdr, this.hdrLen, pos, pos + take);
        this.hdrLen += take;
        pos += take;
        if (this.hdrLen < 5) return;
        this.hdrLen = 0;
        straddled = true;
        buf = this.hdr;
        start = 0;
        type = this.hdr[0]!;
        len = this.hdr.readInt32BE(1);
      }
      // the limit counts the type byte too, as PgBouncer's packet length does
      if (len < 4 || len >= this.maxPacket) {
        this.flush();
        this.owner.onBadHeader(buf, start, straddled ? 5 : n);
        this.stopped = true;
        return;
      }
      const total = len + 1;
      const complete = straddled ? len === 4 : n - start >= total;

      let act: Action;
      if (this.fastForward !== null && this.fastForward[type] === 1 && this.target !== null) {
        act = FORWARD;
      } else {
        act = this.owner.onMessage(type, len, buf, start, complete);
        if (this.stopped) return;
      }

      if (straddled) {
        // header bytes came from hdr; body (if any) starts at pos in this chunk
        this.headSkip = 0;
        if (act === FORWARD) {
          if (this.target !== null) this.fwdAdd(this.target, Buffer.from(this.hdr), 0, 5);
          this.remain = len - 4;
          this.mode = MODE_FORWARD;
        } else if (act === HANDLED) {
          this.remain = len - 4;
          this.mode = MODE_SKIP;
        } else if (act === NEED_FULL) {
          if (!complete) this.startCollect(this.hdr, 0, 5, total);
        } else if (act === WAIT) {
          this.hold(pos < n ? [Buffer.from(this.hdr), chunk.subarray(pos)] : [Buffer.from(this.hdr)]);
          return;
        } else {
          return;
        }
        continue;
      }

      if (act === FORWARD) {
        // the owner may have sent a rewritten head of the message itself (skipHead)
        const from = start + this.headSkip;
        this.headSkip = 0;
        if (complete) {
          if (this.target !== null) this.fwdAdd(this.target, chunk, from, start + total);
          pos = start + total;
        } else {
          if (this.target !== null) this.fwdAdd(this.target, chunk, from, n);
          this.remain = total - (n - start);
          this.mode = MODE_FORWARD;
          pos = n;
        }
      } else if (act === HANDLED) {
        if (complete) {
          pos = start + total;
        } else {
          this.remain = total - (n - start);
          this.mode = MODE_SKIP;
          pos = n;
        }
      } else if (act === NEED_FULL) {
        if (complete) {
          // owner asked for what it already had: treat as handled to avoid a loop
          pos = start + total;
        } else {
          this.startCollect(chunk, start, n, total);
          pos = n;
        }
      } else if (act === WAIT) {
        this.hold([chunk.subarray(start)]);
        return;
      } else {
        return;
      }
    }
    this.flush();
  }

  private startCollect(src: Buffer, start: number, end: number, total: number): void {
    const c = Buffer.allocUnsafe(total);
    src.copy(c, 0, start, end);
    this.coll = c;
    this.collPos = end - start;
    this.remain = total - this.collPos;
    this.mode = MODE_COLLECT;
  }
}
