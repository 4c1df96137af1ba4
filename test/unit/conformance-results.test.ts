// The conformance runner's two inputs (test/conformance/results.ts): known-failures.txt and the
// junit XML of PgBouncer's pytest suite, as pytest 7 writes it (attributes escaped).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseJunit, readKnownFailures } from '../conformance/results.js';

describe('readKnownFailures', () => {
  test('id and reason per line; comments and blank lines ignored', () => {
    const known = readKnownFailures('# header\n\ntest_auth.py::test_a  SHOW USERS lacks a column\ntest_x.py::T::test_b[1]\tno "x" log line\n');
    assert.deepEqual([...known], [
      ['test_auth.py::test_a', 'SHOW USERS lacks a column'],
      ['test_x.py::T::test_b[1]', 'no "x" log line'],
    ]);
  });
  test('a line without a reason, or a test listed twice, is an error naming the line', () => {
    assert.throws(() => readKnownFailures('test_auth.py::test_a\n', 'k.txt'), /k\.txt:1: expected/);
    assert.throws(() => readKnownFailures('test_a.py::t  r\ntest_a.py::t  r2\n', 'k.txt'), /k\.txt:2: test_a\.py::t is listed twice/);
  });
});

describe('parseJunit', () => {
  const xml = `<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="1" failures="2" skipped="2" tests="6">
<testcase classname="test.test_admin" name="test_show" time="1.2" />
<testcase classname="test.test_admin" name="test_fail[a&lt;b]" time="0.5"><failure message="AssertionError: assert 1 == 2&#10;second line">trace &lt;/testcase&gt;</failure></testcase>
<testcase classname="test.test_ssl" name="test_err" time="0.1"><error message="failed on setup with &quot;x&quot;">tb</error></testcase>
<testcase classname="test.test_ssl" name="test_skip" time="0"><skipped type="pytest.skip" message="no">x</skipped></testcase>
<testcase classname="" name="test.test_ldap" time="0"><skipped type="pytest.skip" message="no ldap" /></testcase>
<testcase classname="test.test_misc.TestCls" name="test_m" time="1"><system-out>ok</system-out></testcase>
<testcase classname="test.test_misc.TestCls" name="test_m" time="1"><error message="failed on teardown">tb</error></testcase>
</testsuite></testsuites>`;
  test('ids as run.sh takes them, outcome, first line of the message', () => {
    const r = parseJunit(xml);
    const by = new Map(r.map((t) => [t.id, t]));
    assert.equal(by.get('test_admin.py::test_show')?.outcome, 'passed');
    assert.deepEqual(by.get('test_admin.py::test_fail[a<b]'), {
      id: 'test_admin.py::test_fail[a<b]', file: 'test_admin.py', outcome: 'failed', message: 'AssertionError: assert 1 == 2',
    });
    assert.equal(by.get('test_ssl.py::test_err')?.message, 'failed on setup with "x"');
    assert.equal(by.get('test_ssl.py::test_err')?.outcome, 'error');
    assert.equal(by.get('test_ssl.py::test_skip')?.outcome, 'skipped');
    assert.equal(by.get('test_ldap.py')?.outcome, 'skipped');
    // the same test twice (passed, then a teardown error): the worse outcome
    assert.equal(by.get('test_misc.py::TestCls::test_m')?.outcome, 'error');
    assert.equal(r.length, 6);
  });
});
