// Small random values for every login (SCRAM nonces, md5 salts, cancel keys), cut from a 4 KiB
// block of the CSPRNG instead of one randomBytes() call each: the call's fixed cost was ~4 % of
// a SCRAM login's CPU. A block is never refilled: a new one is made when it is used up, so a
// value handed out (a subarray) is never overwritten by a later one.
import { randomFillSync } from 'node:crypto';

const BLOCK = 4096;
let block = Buffer.alloc(0);
let used = 0;

/** `n` (≤ 4096) fresh random bytes, a view into the current block. */
export function randomSmall(n: number): Buffer {
  if (used + n > block.length) {
    block = randomFillSync(Buffer.allocUnsafeSlow(BLOCK));
    used = 0;
  }
  const out = block.subarray(used, used + n);
  used += n;
  return out;
}
