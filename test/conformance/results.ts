// The two files `npm run conformance` compares (test/conformance/run.ts): the checked-in list of
// known failures and the junit XML that PgBouncer's pytest suite leaves in its results folder.

// --- the known failures --------------------------------------------------------------------

/** known-failures.txt: `test_file.py::test_name  reason`, one a line; `#` comments. */
export function readKnownFailures(text: string, file = 'known-failures.txt'): Map<string, string> {
  const known = new Map<string, string>();
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const m = /^(test_\S+\.py::\S+)\s+(\S.*)$/.exec(line);
    if (!m) throw new Error(`${file}:${i + 1}: expected "test_file.py::test_name  reason", got: ${line}`);
    if (known.has(m[1])) throw new Error(`${file}:${i + 1}: ${m[1]} is listed twice`);
    known.set(m[1], m[2]);
  });
  return known;
}

// --- junit.xml -------------------------------------------------------------------------------

export type Outcome = 'passed' | 'failed' | 'error' | 'skipped';
export interface TestResult {
  id: string;
  file: string;
  outcome: Outcome;
  /** first line of the failure or error message */
  message: string;
}

function unescapeXml(s: string): string {
  return s.replace(/&(lt|gt|quot|apos|amp|#\d+|#x[0-9a-fA-F]+);/g, (_, e: string) => {
    if (e === 'lt') return '<';
    if (e === 'gt') return '>';
    if (e === 'quot') return '"';
    if (e === 'apos') return "'";
    if (e === 'amp') return '&';
    return String.fromCodePoint(e[1] === 'x' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10));
  });
}

function attrs(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of s.matchAll(/([\w:-]+)="([^"]*)"/g)) out[m[1]] = unescapeXml(m[2]);
  return out;
}

/**
 * pytest's junit XML: one <testcase classname="test.test_auth[.Class]" name="test_x[param]">
 * per test, with a <failure>, <error> or <skipped> child when it did not simply pass. Test ids
 * are run.sh's: `test_auth.py::test_x[param]` (classes in between, as pytest writes them).
 * pytest escapes every attribute and text, so a regular expression over the file is enough.
 */
export function parseJunit(xml: string): TestResult[] {
  const byId = new Map<string, TestResult>();
  const rank: Record<Outcome, number> = { passed: 0, skipped: 1, error: 2, failed: 3 };
  for (const m of xml.matchAll(/<testcase\b([^>]*?)(?:\/>|>([\s\S]*?)<\/testcase>)/g)) {
    const a = attrs(m[1]);
    const body = m[2] ?? '';
    const cls = (a.classname ?? '').split('.').filter(Boolean);
    // module-level skips have no classname and the module as name ("test.test_ldap")
    const mod = cls.length >= 2 ? cls[1] : (a.name ?? '?').split('.').pop()!;
    const file = `${mod}.py`;
    const id = cls.length >= 2 ? [file, ...cls.slice(2), a.name].join('::') : file;
    let outcome: Outcome = 'passed';
    let message = '';
    const fe = /<(failure|error)\b([^>]*?)\/?>/.exec(body);
    if (fe) {
      outcome = fe[1] === 'failure' ? 'failed' : 'error';
      message = (attrs(fe[2]).message ?? '').split('\n')[0].trim();
    } else if (/<skipped\b/.test(body)) {
      outcome = 'skipped';
    }
    // a test can appear twice (e.g. a teardown error, a crashed worker): keep the worst
    const prev = byId.get(id);
    if (!prev || rank[outcome] > rank[prev.outcome]) byId.set(id, { id, file, outcome, message });
  }
  return [...byId.values()];
}
