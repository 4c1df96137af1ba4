// A node:test reporter that only counts results and writes the running totals synchronously to
// $PGBUN_TEST_COUNTS (JSON). test/run.ts prints them as its closing line. Reporters writing to a
// file destination lose their tail when --test-force-exit ends the runner; a synchronous write
// per event cannot.

import * as fs from 'node:fs';

interface Event {
  type: string;
  data: {
    nesting?: number;
    skip?: string | boolean;
    todo?: string | boolean;
    message?: string;
    details?: { type?: string; error?: { failureType?: string } };
  };
}

export default async function* countReporter(source: AsyncIterable<Event>): AsyncGenerator<string> {
  const file = process.env.PGBUN_TEST_COUNTS;
  const counts = { pass: 0, fail: 0, cancelled: 0, skipped: 0, todo: 0 };
  for await (const ev of source) {
    if (ev.type !== 'test:pass' && ev.type !== 'test:fail') continue;
    if (ev.data.details?.type === 'suite') continue; // count tests, as node's own summary does
    if (ev.data.skip !== undefined && ev.data.skip !== false) counts.skipped++;
    else if (ev.data.todo !== undefined && ev.data.todo !== false) counts.todo++;
    else if (ev.type === 'test:pass') counts.pass++;
    else if (ev.data.details?.error?.failureType === 'cancelledByParent') counts.cancelled++;
    else counts.fail++;
    if (file) fs.writeFileSync(file, JSON.stringify(counts));
  }
  yield '';
}
