// Command line (https://www.pgbouncer.org/usage.html), parsed with commander but answering like
// PgBouncer's getopt:
//   pgbun [-d] [-R] [-q] [-v]... [-u USER] CONFIG      pgbun -V | -h      pgbun --check CONFIG
import { Command, CommanderError } from 'commander';
import { VERSION_STRING } from './version.js';
import { runtimeTitle, tlsLibrary } from './runtime/name.js';
import { isWorkerThread, setEntryUrl } from './runtime/entry.js';

// `pgbun ...` in ps and top, not `node .../bin/pgbun.js ...`, when started from source: operators
// look for the process by name, as they do for pgbouncer (the single executable is named pgbun)
if (!isWorkerThread()) process.title = ['pgbun', ...process.argv.slice(2)].join(' ');
// worker threads (`workers` > 1) run this module again
setEntryUrl(import.meta.url);

const PROG = 'pgbun';

const USAGE = `${PROG} is a connection pooler for PostgreSQL (a drop-in replacement for PgBouncer).

Usage:
  ${PROG} [OPTION]... CONFIG_FILE

Options:
  -d, --daemon         run in background (as a daemon)
  -q, --quiet          run quietly
  -R, --reboot         do an online reboot (not supported: use so_reuseport)
  -u, --user=USERNAME  switch to USERNAME (as root)
  -v, --verbose        increase verbosity
  -V, --version        show version, then exit
  -h, --help           show this help, then exit
      --check          check CONFIG_FILE, its auth_file and auth_hba_file, then exit
      --make-cert DIR [HOSTNAME]...
                       write a self-signed DIR/pgbun.key and DIR/pgbun.crt, then exit

Report bugs to <https://github.com/pgbun/pgbun/issues>.
`;

function tryHelp(msg?: string): never {
  if (msg) process.stderr.write(`${PROG}: ${msg}\n`);
  process.stderr.write(`Try "${PROG} --help" for more information.\n`);
  process.exit(1);
}

function versionText(): string {
  return `${VERSION_STRING}\nruntime: ${runtimeTitle()}\nadns: node:dns\ntls: ${tlsLibrary()}\n`;
}

interface Parsed {
  daemon: boolean;
  quiet: boolean;
  reboot: boolean;
  verbose: number;
  user: string | null;
  version: boolean;
  help: boolean;
  check: boolean;
  config: string | null;
}

function parseArgs(argv: string[]): Parsed {
  const program = new Command(PROG)
    .exitOverride()
    .configureOutput({ writeOut: () => {}, writeErr: () => {} })
    .helpOption(false)
    .allowExcessArguments(true)
    .argument('[config...]')
    .option('-d, --daemon')
    .option('-q, --quiet')
    .option('-R, --reboot')
    .option('-v, --verbose', '', (_v: string, prev: number) => prev + 1, 0)
    .option('-u, --user <user>')
    .option('-V, --version')
    .option('-h, --help')
    .option('--check');
  try {
    program.parse(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) {
      const m = /'([^']+)'/.exec(e.message);
      if (e.code === 'commander.unknownOption') {
        const opt = m?.[1] ?? '';
        tryHelp(opt.startsWith('--') ? `unrecognized option '${opt}'` : `invalid option -- '${opt.replace(/^-/, '')}'`);
      }
      if (e.code === 'commander.optionMissingArgument') tryHelp(`option requires an argument -- '${(m?.[1] ?? '').replace(/^-(\w).*/, '$1')}'`);
      tryHelp(e.message.replace(/^error: /, ''));
    }
    throw e;
  }
  const o = program.opts<{ daemon?: boolean; quiet?: boolean; reboot?: boolean; verbose: number; user?: string; version?: boolean; help?: boolean; check?: boolean }>();
  const args = program.processedArgs[0] as string[];
  return {
    daemon: !!o.daemon,
    quiet: !!o.quiet,
    reboot: !!o.reboot,
    verbose: o.verbose,
    user: o.user ?? null,
    version: !!o.version,
    help: !!o.help,
    check: !!o.check,
    config: args.length === 1 ? args[0]! : args.length === 0 ? null : '\0many',
  };
}

export async function main(argv: string[]): Promise<void> {
  // `pgbun --make-cert DIR [HOSTNAME...]`: a separate tool, not a pooler option
  if (argv[0] === '--make-cert') {
    const [dir, ...names] = argv.slice(1);
    if (!dir) tryHelp('option requires an argument -- \'make-cert\'');
    const { makeSelfSignedCert } = await import('./tls/make-cert.js');
    const made = makeSelfSignedCert(dir, names);
    process.stdout.write(`client_tls_key_file = ${made.keyFile}\nclient_tls_cert_file = ${made.certFile}\n`);
    process.exit(0);
  }
  const p = parseArgs(argv);
  if (p.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  if (p.version) {
    process.stdout.write(versionText());
    process.exit(0);
  }
  if (p.config === null || p.config === '\0many') {
    process.stderr.write(`${PROG}: no configuration file specified\n`);
    tryHelp();
  }
  if (p.check) {
    const { checkConfig } = await import('./check.js');
    process.exit(checkConfig(p.config));
  }
  const childArgs = argv.filter((a) => a !== '-d' && a !== '--daemon');
  const { start } = await import('./pgbun.js');
  await start({
    configFile: p.config,
    daemon: p.daemon,
    quiet: p.quiet,
    verbose: p.verbose,
    user: p.user,
    reboot: p.reboot,
    childArgs,
  });
}

// run when executed directly (node dist/src/cli.js, bin/pgbun.js, the packaged binary); a worker
// thread runs the pooler side only
const invoked = process.argv[1] ?? '';
if (isWorkerThread()) {
  void import('./process/worker.js');
} else if (invoked.endsWith('/cli.js') || invoked.endsWith('/pgbun') || invoked.endsWith('/pgbun.js') || process.env.PGBUN_MAIN === '1') {
  main(process.argv.slice(2)).catch((e: unknown) => {
    process.stderr.write(`${PROG}: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  });
}
