// Where a worker thread's code comes from (`workers` > 1). pgbun runs from files (node or bun
// running dist/src/cli.js), as a Node.js single executable (one CommonJS bundle inside the binary,
// which packaging/build.mjs also stores as the asset `pgbun.cjs` for this), or as a Bun single
// executable. In every form a worker thread runs the entry module again, and cli.ts starts the
// worker side instead of the command line when workerData says so (`pgbunWorker`).
import { isMainThread, workerData } from 'node:worker_threads';

export interface WorkerScript {
  /** a file or URL, or the code itself when `evaluate` */
  script: string | URL;
  evaluate: boolean;
}

interface SeaModule {
  isSea(): boolean;
  getAsset(key: string, encoding: string): string;
}

/** The Node.js single-executable API, where this runtime has one. */
function seaModule(): SeaModule | null {
  try {
    const get = (process as unknown as { getBuiltinModule?: (id: string) => unknown }).getBuiltinModule;
    const sea = get?.('node:sea') as SeaModule | undefined;
    return sea !== undefined && sea.isSea() ? sea : null;
  } catch {
    return null;
  }
}

let cliUrl: string | undefined;

/** cli.ts says where it is (its import.meta.url; empty inside the CommonJS bundle). */
export function setEntryUrl(url: string | undefined): void {
  cliUrl = url;
}

/** How to start a worker thread running pgbun. */
export function workerScript(): WorkerScript {
  const sea = seaModule();
  if (sea !== null) return { script: sea.getAsset('pgbun.cjs', 'utf8'), evaluate: true };
  // a Bun single executable embeds its entry module under /$bunfs/; a worker runs that again
  const entry = process.argv[1] ?? '';
  if (entry.startsWith('/$bunfs/') || entry.startsWith('B:/~BUN/')) return { script: entry, evaluate: false };
  if (cliUrl === undefined || cliUrl === '') throw new Error('cannot tell where pgbun\'s code is to start a worker thread');
  return { script: new URL(cliUrl), evaluate: false };
}

/** This thread is a pgbun worker thread (cli.ts then runs process/worker.ts, not the command line). */
export function isWorkerThread(): boolean {
  return !isMainThread && (workerData as { pgbunWorker?: unknown } | null)?.pgbunWorker === true;
}
