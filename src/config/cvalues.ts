// C library semantics that PgBouncer's config behaviour is built on: which strings its settings
// accept and how SHOW CONFIG prints them follow strtol/strtoul/strtod/atoi and printf("%g")
// exactly, so configs that load on PgBouncer load identically here (checked against 1.18).

const INT64_MAX = (1n << 63n) - 1n;
const UINT64_MAX = (1n << 64n) - 1n;

/** C isspace() in the C locale */
export function isCSpace(c: string | undefined): boolean {
  return c === ' ' || c === '\t' || c === '\n' || c === '\v' || c === '\f' || c === '\r';
}

function digitValue(c: string | undefined): number {
  if (c === undefined) return 99;
  const code = c.charCodeAt(0);
  if (code >= 48 && code <= 57) return code - 48;
  if (code >= 97 && code <= 122) return code - 87;
  if (code >= 65 && code <= 90) return code - 55;
  return 99;
}

/**
 * The digits strtol/strtoul(base 0) would consume. null = the whole string does not parse
 * (PgBouncer's CF_INT rejects partial parses such as `1.5`, `on`, `08` or `0x`).
 */
function scanBase0(s: string): { neg: boolean; magnitude: bigint } | null {
  let i = 0;
  while (isCSpace(s[i])) i++;
  let neg = false;
  if (s[i] === '+' || s[i] === '-') {
    neg = s[i] === '-';
    i++;
  }
  let base = 10n;
  if (s[i] === '0' && (s[i + 1] === 'x' || s[i + 1] === 'X') && digitValue(s[i + 2]) < 16) {
    base = 16n;
    i += 2;
  } else if (s[i] === '0') {
    base = 8n;
  }
  const start = i;
  let magnitude = 0n;
  while (i < s.length && digitValue(s[i]) < Number(base)) {
    magnitude = magnitude * base + BigInt(digitValue(s[i]));
    i++;
  }
  if (i === start || i !== s.length) return null;
  return { neg, magnitude };
}

/** CF_INT: `(int) strtol(s, &end, 0)`, whole string required; out-of-range wraps like C. */
export function parseCInt(s: string): number | null {
  const r = scanBase0(s);
  if (!r) return null;
  // strtol clamps to LONG_MIN/LONG_MAX, then the store into an int keeps the low 32 bits
  let v = r.neg ? -r.magnitude : r.magnitude;
  if (v > INT64_MAX) v = INT64_MAX;
  if (v < -INT64_MAX - 1n) v = -INT64_MAX - 1n;
  return Number(BigInt.asIntN(32, v));
}

/** CF_UINT: `(unsigned) strtoul(s, &end, 0)`: `-1` becomes 4294967295 as in PgBouncer. */
export function parseCUint(s: string): number | null {
  const r = scanBase0(s);
  if (!r) return null;
  let v = r.magnitude > UINT64_MAX ? UINT64_MAX : r.magnitude;
  if (r.neg && r.magnitude <= UINT64_MAX) v = BigInt.asUintN(64, -v);
  return Number(BigInt.asUintN(32, v));
}

/** atoi(): leading blanks, sign, decimal digits, stop at the first other char; none = 0. */
export function cAtoi(s: string): number {
  let i = 0;
  while (isCSpace(s[i])) i++;
  let neg = false;
  if (s[i] === '+' || s[i] === '-') {
    neg = s[i] === '-';
    i++;
  }
  let v = 0n;
  while (i < s.length && digitValue(s[i]) < 10) {
    v = v * 10n + BigInt(digitValue(s[i]));
    i++;
  }
  if (neg) v = -v;
  if (v > INT64_MAX) v = INT64_MAX;
  if (v < -INT64_MAX - 1n) v = -INT64_MAX - 1n;
  return Number(BigInt.asIntN(32, v));
}

const DBL_MIN = 2.2250738585072014e-308;

/**
 * strtod() with errno checking, whole string required: decimal (`0.5`, `.5`, `5.`, `1e3`),
 * hex floats (`0x10`, `0x1p4`), `inf`/`infinity`/`nan`/`nan(...)`. Overflow and underflow
 * (ERANGE) are rejected, as PgBouncer's CF_TIME_USEC does. Returns null when rejected.
 */
export function parseCDouble(s: string): number | null {
  let i = 0;
  while (isCSpace(s[i])) i++;
  let sign = 1;
  if (s[i] === '+' || s[i] === '-') {
    if (s[i] === '-') sign = -1;
    i++;
  }
  const rest = s.slice(i);
  const lower = rest.toLowerCase();
  if (lower === 'inf' || lower === 'infinity') return sign * Infinity;
  if (/^nan(\([0-9a-z_]*\))?$/.test(lower)) return NaN;

  let m: RegExpExecArray | null;
  if ((m = /^0[xX]([0-9a-fA-F]*)(?:\.([0-9a-fA-F]*))?(?:[pP]([+-]?[0-9]+))?$/.exec(rest))) {
    const intPart = m[1] ?? '';
    const frac = m[2] ?? '';
    if (intPart === '' && frac === '') return null;
    let v = 0;
    for (const c of intPart + frac) v = v * 16 + digitValue(c);
    const exp = (m[3] ? parseInt(m[3], 10) : 0) - 4 * frac.length;
    return checkRange(sign * v * Math.pow(2, exp), /[1-9a-fA-F]/.test(intPart + frac));
  }
  if ((m = /^([0-9]*)(?:\.([0-9]*))?(?:[eE][+-]?[0-9]+)?$/.exec(rest))) {
    if ((m[1] ?? '') === '' && (m[2] ?? '') === '') return null;
    return checkRange(sign * Number(rest), /[1-9]/.test((m[1] ?? '') + (m[2] ?? '')));
  }
  return null;
}

function checkRange(v: number, nonZeroDigits: boolean): number | null {
  if (!Number.isFinite(v)) return null; // ERANGE overflow
  const a = Math.abs(v);
  if (nonZeroDigits && a < DBL_MIN) return null; // ERANGE underflow (zero or subnormal)
  return v;
}

/**
 * `(usec_t)(seconds * 1000000)` as gcc compiles it on x86-64 for an unsigned 64-bit target:
 * truncation to whole microseconds; NaN gives 2^63, values past 2^64 give 0 (this is why
 * PgBouncer shows `inf` as 0 and `nan` as 9.22337e+12). Returns microseconds as a double.
 */
export function secondsToUsec(seconds: number): number {
  const TWO63 = 9223372036854775808;
  const v = seconds * 1000000;
  if (Number.isNaN(v)) return TWO63;
  if (v >= TWO63 * 2) return 0;
  return Math.trunc(v) + 0; // + 0: an unsigned -0.0 is 0
}

/** printf("%g", x) */
export function formatG(x: number): string {
  if (Number.isNaN(x)) return x < 0 ? '-nan' : 'nan';
  if (!Number.isFinite(x)) return x < 0 ? '-inf' : 'inf';
  if (x === 0) return Object.is(x, -0) ? '-0' : '0';
  const P = 6;
  const e = x.toExponential(P - 1);
  const ePos = e.indexOf('e');
  const exp = parseInt(e.slice(ePos + 1), 10);
  if (exp < -4 || exp >= P) {
    const mant = stripZeros(e.slice(0, ePos));
    const ae = Math.abs(exp);
    return `${mant}e${exp < 0 ? '-' : '+'}${ae < 10 ? '0' : ''}${ae}`;
  }
  return stripZeros(x.toFixed(P - 1 - exp));
}

function stripZeros(s: string): string {
  if (!s.includes('.')) return s;
  return s.replace(/0+$/, '').replace(/\.$/, '');
}

const STRERROR: Record<string, string> = {
  ENOENT: 'No such file or directory',
  EACCES: 'Permission denied',
  EPERM: 'Operation not permitted',
  EISDIR: 'Is a directory',
  ENOTDIR: 'Not a directory',
  ELOOP: 'Too many levels of symbolic links',
  ENAMETOOLONG: 'File name too long',
  EMFILE: 'Too many open files',
  ENFILE: 'Too many open files in system',
  EIO: 'Input/output error',
  ENOMEM: 'Cannot allocate memory',
};

/** strerror(errno) text for a Node fs error, as PgBouncer prints it in its messages */
export function strerror(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && STRERROR[code]) return STRERROR[code];
  return err instanceof Error ? err.message : String(err);
}
