// Field readers for the few message bodies pgbun has to look inside (startup, auth, errors,
// ParameterStatus, CommandComplete, Parse/Bind/Describe/Close names). All take the message
// buffer and an offset; none copy unless a string is requested.

/** Index of the NUL that ends the C string starting at `off`, or -1 before `end`. */
export function cstrEnd(buf: Buffer, off: number, end: number): number {
  const i = buf.indexOf(0, off);
  return i < 0 || i >= end ? -1 : i;
}

/** A cursor over one message body; `ok` turns false on the first malformed read. */
export class BodyReader {
  ok = true;
  constructor(public buf: Buffer, public pos: number, public end: number) {}

  cstring(): string {
    const e = cstrEnd(this.buf, this.pos, this.end);
    if (e < 0) {
      this.ok = false;
      return '';
    }
    const s = this.buf.toString('utf8', this.pos, e);
    this.pos = e + 1;
    return s;
  }

  int32(): number {
    if (this.pos + 4 > this.end) {
      this.ok = false;
      return 0;
    }
    const v = this.buf.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  int16(): number {
    if (this.pos + 2 > this.end) {
      this.ok = false;
      return 0;
    }
    const v = this.buf.readInt16BE(this.pos);
    this.pos += 2;
    return v;
  }

  byte(): number {
    if (this.pos >= this.end) {
      this.ok = false;
      return 0;
    }
    return this.buf[this.pos++]!;
  }

  bytes(n: number): Buffer {
    if (n < 0 || this.pos + n > this.end) {
      this.ok = false;
      return Buffer.alloc(0);
    }
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }

  rest(): Buffer {
    const b = this.buf.subarray(this.pos, this.end);
    this.pos = this.end;
    return b;
  }

  get remaining(): number {
    return this.end - this.pos;
  }
}

/** Fields of an ErrorResponse / NoticeResponse body: code letter → value. */
export function parseErrorFields(buf: Buffer, off: number, end: number): Map<string, string> {
  const m = new Map<string, string>();
  const r = new BodyReader(buf, off, end);
  while (r.remaining > 0) {
    const code = r.byte();
    if (code === 0 || !r.ok) break;
    const v = r.cstring();
    if (!r.ok) break;
    m.set(String.fromCharCode(code), v);
  }
  return m;
}

/** Hex of up to 8 bytes, as PgBouncer prints an unparseable header (`bad packet header: '…'`). */
export function hdr2hex(buf: Buffer, off: number, end: number): string {
  return buf.toString('hex', off, Math.min(end, off + 8));
}
