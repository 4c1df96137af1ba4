// One clock for durations and timestamps: microseconds since the epoch as a double (exact up to
// 2^53 µs, i.e. for the next few centuries). performance.now() is monotonic and allocation-free.
const origin = performance.timeOrigin;

export function nowUs(): number {
  return Math.floor((origin + performance.now()) * 1000);
}
