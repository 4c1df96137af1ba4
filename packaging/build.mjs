#!/usr/bin/env node
// `npm run package` (after `npm run build`): the self-contained executable, then the .deb and
// the .rpm, into packaging/out/. See packaging/README.md for the choices.
//
//   node packaging/build.mjs            build what is out of date
//   node packaging/build.mjs --force    rebuild even when packaging/out is up to date
//   node packaging/build.mjs --fast     quick compression (gzip -1) instead of xz -6: for tests;
//                                       reuses an up-to-date build of either kind
//   node packaging/build.mjs --json     last stdout line: JSON {deb, rpm, bin, version, cached, fast}
//   node packaging/build.mjs --bun      only a Bun single executable, packaging/out/pgbun-bun
//                                       (`bun build --compile`; with --json: {bunBin, version})
//
// Steps: bundle dist/src/cli.js with esbuild into one CommonJS file; turn it into a Node.js
// single executable application (SEA) with the very node binary running this script (the one
// the tests ran on); stage the file tree; dpkg-deb and rpmbuild it. The result is cached: a
// key over everything that goes into the packages (bundle, node binary, packaging files, man
// pages, samples, docs) is kept in packaging/out/.build-key, and a build with the same key
// only reports the existing packages. One build runs at a time per checkout (packaging/out/.lock:
// concurrent test runs wait, then reuse). Missing tools are installed with apt-get when root.
//
// Environment: SOURCE_DATE_EPOCH (timestamps; default: the last commit's time),
// PGBUN_MAINTAINER (Debian Maintainer field; default: package.json "author"),
// PGBUN_NODE_LICENSE (path of Node.js's LICENSE file when it is not found next to node).

import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..');
const OUT = path.join(HERE, 'out');
const BUILD = path.join(OUT, 'build');
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
const PGBOUNCER_COMPAT = '1.25.2';

const args = new Set(process.argv.slice(2));
const FORCE = args.has('--force');
const JSON_OUT = args.has('--json');
// Compression is most of the build time (xz -6 of an 83 MiB executable: about a minute of CPU
// per package); the packages are otherwise identical.
const FAST = args.has('--fast') || process.env.PGBUN_PKG_FAST === '1';
const started = Date.now();

function say(msg) {
  const t = ((Date.now() - started) / 1000).toFixed(1).padStart(5);
  process.stderr.write(`[package ${t}s] ${msg}\n`);
}

function fail(msg) {
  process.stderr.write(`packaging: ${msg}\n`);
  process.exit(1);
}

/** Run a command; throws with its output on failure. */
function run(cmd, argv, opts = {}) {
  const r = spawnSync(cmd, argv, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) {
    throw new Error(`${cmd} ${argv.join(' ')} exited with ${r.status ?? r.signal}\n${r.stdout ?? ''}${r.stderr ?? ''}`);
  }
  return r.stdout;
}

/** The same, asynchronously (dpkg-deb and rpmbuild run side by side: 2 cores, 2 compressors). */
function runAsync(cmd, argv, opts = {}) {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    p.on('error', reject);
    p.on('close', (code, sig) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${argv.join(' ')} exited with ${code ?? sig}\n${out}`))));
  });
}

const have = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;

/** Make sure the commands exist, installing their Debian packages when we can (root + apt). */
function ensureTools(tools) {
  const missing = Object.entries(tools).filter(([cmd]) => !have(cmd));
  if (missing.length === 0) return;
  const pkgs = [...new Set(missing.map(([, pkg]) => pkg))];
  if (process.getuid?.() !== 0 || !have('apt-get')) {
    fail(`missing ${missing.map(([c]) => c).join(', ')}: install the Debian packages ${pkgs.join(' ')}`);
  }
  say(`installing ${pkgs.join(' ')} with apt-get`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = () => spawnSync('apt-get', ['-o', 'DPkg::Lock::Timeout=300', 'install', '-y', '-qq', '--no-install-recommends', ...pkgs], { env, encoding: 'utf8' });
  let r = install();
  if (r.status !== 0) {
    run('apt-get', ['update', '-qq'], { env });
    r = install();
  }
  if (r.status !== 0) fail(`apt-get install ${pkgs.join(' ')} failed:\n${r.stdout}${r.stderr}`);
}

function sha256(data) {
  return crypto.createHash('sha256').update(data).digest('hex');
}

/** Every file under dir (sorted, relative paths), skipping `skip` (relative to dir). */
function listFiles(dir, skip = []) {
  const out = [];
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const p = path.join(d, e.name);
      const rel = path.relative(dir, p);
      if (skip.some((s) => rel === s || rel.startsWith(s + path.sep))) continue;
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) out.push(rel);
    }
  };
  if (fs.existsSync(dir)) walk(dir);
  return out;
}

function gzip(data) {
  // gzip -9n: no name, no timestamp (reproducible)
  return zlib.gzipSync(data, { level: 9 });
}

function write(file, data, mode = 0o644) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, data);
  fs.chmodSync(file, mode);
}

function copy(from, to, mode = 0o644) {
  write(to, fs.readFileSync(from), mode);
}

function fill(template, vars) {
  return template.replace(/@([A-Z_]+)@/g, (m, k) => {
    if (!(k in vars)) throw new Error(`no value for ${m}`);
    return vars[k];
  });
}

// ---------------------------------------------------------------------------------------------

const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
const VERSION = pkg.version;
if (!/^\d+\.\d+\.\d+([.~+][0-9A-Za-z.~+]*)?$/.test(VERSION)) fail(`package.json version "${VERSION}" is not usable as a package version`);
const HOMEPAGE = (typeof pkg.homepage === 'string' && pkg.homepage) || 'https://github.com/pgbun/pgbun';

const NODE_ARCH = { x64: { deb: 'amd64', rpm: 'x86_64' }, arm64: { deb: 'arm64', rpm: 'aarch64' } }[process.arch];
if (!NODE_ARCH) fail(`unsupported architecture ${process.arch}`);

function maintainer() {
  if (process.env.PGBUN_MAINTAINER) return process.env.PGBUN_MAINTAINER;
  const a = pkg.author;
  if (typeof a === 'string' && /<[^>]+@[^>]+>/.test(a)) return a;
  if (a && typeof a === 'object' && a.name && a.email) return `${a.name} <${a.email}>`;
  return 'pgbun developers <pgbun@users.noreply.github.com>';
}

function sourceDateEpoch() {
  if (process.env.SOURCE_DATE_EPOCH) return Number(process.env.SOURCE_DATE_EPOCH);
  const r = spawnSync('git', ['-C', ROOT, 'log', '-1', '--format=%ct'], { encoding: 'utf8' });
  const t = Number((r.stdout ?? '').trim());
  return r.status === 0 && t > 0 ? t : Math.floor(Date.now() / 1000);
}

/** Node.js's LICENSE (it covers V8, OpenSSL, ICU, libuv ... all inside the executable). */
function nodeLicense() {
  const bindir = path.dirname(process.execPath);
  const candidates = [
    process.env.PGBUN_NODE_LICENSE,
    path.join(bindir, '..', 'share', 'doc', 'node', 'LICENSE'), // official tarballs
    path.join(bindir, '..', 'share', 'doc', 'nodejs', 'LICENSE'), // nodesource .deb
    '/usr/share/doc/nodejs/LICENSE',
    path.join(bindir, '..', 'LICENSE'),
  ].filter(Boolean);
  for (const c of candidates) if (fs.existsSync(c)) return fs.readFileSync(c, 'utf8');
  fail(`cannot find the LICENSE of the Node.js runtime (looked at ${candidates.join(', ')}); set PGBUN_NODE_LICENSE`);
}

async function bundle(outfile) {
  const cli = path.join(ROOT, 'dist', 'src', 'cli.js');
  if (!fs.existsSync(cli)) fail(`${path.relative(ROOT, cli)} is missing: run \`npm run build\` first`);
  let esbuild;
  try {
    esbuild = await import('esbuild');
  } catch {
    fail('esbuild is not installed: run `npm ci`');
  }
  const result = await esbuild.build({
    entryPoints: [cli],
    bundle: true,
    platform: 'node',
    target: 'node24',
    // a single executable application runs one CommonJS script
    format: 'cjs',
    outfile,
    metafile: true,
    logLevel: 'warning',
    legalComments: 'none', // the licenses are shipped whole (copyright, THIRD-PARTY-NOTICES)
    // cli.js tells worker threads where it is with import.meta.url; inside the executable they
    // get the bundle from the SEA asset instead (src/runtime/entry.ts)
    define: { 'import.meta.url': '""' },
    banner: {
      js: [
        '// pgbun single executable (packaging/build.mjs).',
        '// Node (20 and 24) puts the invoked name into argv[1] of a single executable; pgbun takes',
        '// argv[1] === execPath to mean "no script path" (the -d re-exec relies on it).',
        "if (require('node:sea').isSea()) process.argv[1] = process.execPath;",
        "process.env.PGBUN_MAIN = '1';",
      ].join('\n'),
    },
  });
  // the npm packages inside the bundle, for the license notices
  const pkgs = new Set();
  for (const input of Object.keys(result.metafile.inputs)) {
    const m = /(?:^|\/)node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input);
    if (m) pkgs.add(m[1]);
  }
  return [...pkgs].sort();
}

function bundledLicenses(pkgNames) {
  return pkgNames.map((name) => {
    const dir = path.join(ROOT, 'node_modules', name);
    const meta = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
    const file = fs.readdirSync(dir).find((f) => /^(licen[cs]e|copying)(\.(md|txt))?$/i.test(f));
    if (!file) fail(`bundled package ${name} has no LICENSE file`);
    return { name, version: meta.version, license: meta.license, text: fs.readFileSync(path.join(dir, file), 'utf8').trim() };
  });
}

function thirdPartyNotices(licenses, nodeText) {
  const parts = [
    'pgbun: third-party software inside /usr/bin/pgbun',
    '',
    `/usr/bin/pgbun is the Node.js ${process.version} runtime with pgbun's JavaScript code and the`,
    'npm packages below embedded in it. Their licenses follow.',
    '',
  ];
  for (const l of licenses) {
    parts.push('='.repeat(79), `${l.name} ${l.version} (${l.license})`, '='.repeat(79), '', l.text, '');
  }
  parts.push('='.repeat(79), `Node.js ${process.version}`, '='.repeat(79), '', nodeText.trim(), '');
  return parts.join('\n');
}

/** Text as a DEP-5 license body: indented one space, empty lines as " ." */
function dep5Text(text) {
  return text.trim().split('\n').map((l) => (l.trim() === '' ? ' .' : ` ${l.replace(/\s+$/, '')}`)).join('\n');
}

const licenseName = (l) => `npm-${l.name.replace(/^@/, '').replace(/\//g, '-')}`;

/** A bundled package's license text for the copyright file; GPL and Apache texts by reference. */
function licenseBody(l) {
  const refs = [];
  if (/GNU GENERAL PUBLIC LICENSE/.test(l.text)) refs.push(/Version 3/.test(l.text) ? 'GPL-3' : 'GPL-2');
  if (/Apache License[\s\S]*Version 2\.0/.test(l.text)) refs.push('Apache-2.0');
  if (refs.length === 0) return l.text;
  return `The license of ${l.name} is ${l.license}. On Debian systems the full text of ${refs.join(' and ')} is in\n` +
    refs.map((r) => `/usr/share/common-licenses/${r}`).join(' and ') + '; the license file of the package, in full, is in\n' +
    '/usr/share/doc/pgbun/THIRD-PARTY-NOTICES.gz.';
}

function debianCopyright(licenses, nodeText, isc) {
  const npm = licenses.map((l) => `${l.name} ${l.version}`).join(', ');
  // Node.js's own (MIT) part; the licenses of the libraries it includes (V8, OpenSSL, ICU,
  // zlib ...; Apache-2.0 and GPL texts among them) are in THIRD-PARTY-NOTICES.gz, so that this
  // file does not carry full texts that Debian keeps in /usr/share/common-licenses.
  const cut = nodeText.indexOf('The externally maintained libraries used by Node.js are:');
  const nodeOwn = (cut > 0 ? nodeText.slice(0, cut) : nodeText).trim() +
    '\n\nThe externally maintained libraries used by Node.js, with their licenses, are listed' +
    '\nin /usr/share/doc/pgbun/THIRD-PARTY-NOTICES.gz.';
  const paras = [
    [
      'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/',
      'Upstream-Name: pgbun',
      `Source: ${HOMEPAGE}`,
      'Comment: /usr/bin/pgbun is a Node.js single executable application: the Node.js',
      ` runtime (${process.version}) with pgbun's bundled JavaScript code and these npm packages`,
      ` embedded in it: ${npm}.`,
      ' The full license texts of all of them are in /usr/share/doc/pgbun/THIRD-PARTY-NOTICES.gz.',
    ].join('\n'),
    ['Files: *', 'Copyright: 2026 the pgbun authors', 'License: ISC'].join('\n'),
    ...licenses.map((l) =>
      ['Files: usr/bin/pgbun', `Copyright: the authors of the npm package ${l.name}, see below`,
        `License: ${licenseName(l)}`, `Comment: ${l.name} ${l.version}, license ${l.license}`].join('\n')),
    ['Files: usr/bin/pgbun', 'Copyright: Node.js contributors and the authors of the libraries it includes', 'License: Node.js'].join('\n'),
    `License: ISC\n${dep5Text(isc.replace(/^ISC License\s*\n/, ''))}`,
    ...licenses.map((l) => `License: ${licenseName(l)}\n${dep5Text(licenseBody(l))}`),
    `License: Node.js\n${dep5Text(nodeOwn)}`,
  ];
  return paras.join('\n\n') + '\n';
}

function rfc2822(epoch) {
  const d = new Date(epoch * 1000);
  const days = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const p = (n) => String(n).padStart(2, '0');
  return `${days[d.getUTCDay()]}, ${p(d.getUTCDate())} ${months[d.getUTCMonth()]} ${d.getUTCFullYear()} ` +
    `${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
}

/** The executable: this node binary, stripped, with the bundle injected as its SEA blob. */
async function buildExecutable(bundleFile, exe) {
  if (!process.config.variables.single_executable_application) fail(`node ${process.version} at ${process.execPath} has no single executable application support`);
  const [major] = process.versions.node.split('.').map(Number);
  // the executable is this node: it must be one pgbun supports (package.json engines: >= 24)
  if (major < 24) fail(`node ${process.version}: pgbun's executable is built from the node that runs this, and pgbun needs Node.js 24 or newer`);
  const nodeBin = fs.readFileSync(process.execPath);
  if (!nodeBin.includes(SEA_FUSE)) fail(`${process.execPath} lacks the single executable fuse`);

  const blob = path.join(BUILD, 'pgbun.blob');
  const seaConfig = path.join(BUILD, 'sea-config.json');
  write(seaConfig, JSON.stringify({
    main: bundleFile,
    output: blob,
    // the bundle again, as code a worker thread can run (workers > 1)
    assets: { 'pgbun.cjs': bundleFile },
    disableExperimentalSEAWarning: true,
    useSnapshot: false,
    useCodeCache: false, // same blob bytes for the same bundle: the cache key stays meaningful
  }, null, 2));
  run(process.execPath, ['--experimental-sea-config', seaConfig]);

  const tmp = `${exe}.tmp`;
  fs.rmSync(tmp, { force: true });
  // strip first: the blob goes into a note segment that strip would not keep track of. binutils
  // warns about node's 256 notes ("Can't find string offset"); that is harmless.
  run('strip', ['--strip-all', '--remove-section=.comment', '-o', tmp, process.execPath]);
  fs.chmodSync(tmp, 0o755);
  let inject;
  try {
    ({ inject } = await import('postject'));
  } catch {
    fail('postject is not installed: run `npm ci`');
  }
  const log = console.log;
  console.log = () => {}; // postject talks on stdout; our stdout is for --json
  try {
    await inject(tmp, 'NODE_SEA_BLOB', fs.readFileSync(blob), { sentinelFuse: SEA_FUSE });
  } finally {
    console.log = log;
  }
  const first = run(tmp, ['--version']).split('\n')[0];
  const want = `PgBouncer ${PGBOUNCER_COMPAT} (pgbun ${VERSION})`;
  if (first !== want) fail(`the built executable says "${first}", expected "${want}"`);
  fs.renameSync(tmp, exe);
}

/** Files both packages install, under `root`; `unitDir` differs (Debian 12: /lib). */
function stageCommon(root, { unitDir, exe, readme, compressReadme }) {
  copy(exe, path.join(root, 'usr/bin/pgbun'), 0o755);
  copy(path.join(ROOT, 'etc/pgbun.ini'), path.join(root, 'etc/pgbun/pgbun.ini'), 0o640);
  copy(path.join(ROOT, 'etc/userlist.txt'), path.join(root, 'etc/pgbun/userlist.txt'), 0o640);
  copy(path.join(HERE, 'logrotate/pgbun'), path.join(root, 'etc/logrotate.d/pgbun'));
  copy(path.join(HERE, 'systemd/pgbun.service'), path.join(root, unitDir, 'pgbun.service'));
  copy(path.join(HERE, 'systemd/pgbun.socket'), path.join(root, unitDir, 'pgbun.socket'));
  copy(path.join(HERE, 'systemd/pgbun.tmpfiles'), path.join(root, 'usr/lib/tmpfiles.d/pgbun.conf'));
  copy(path.join(HERE, 'systemd/pgbun.sysusers'), path.join(root, 'usr/lib/sysusers.d/pgbun.conf'));
  fs.mkdirSync(path.join(root, 'var/log/pgbun'), { recursive: true });
  for (const s of ['1', '5']) write(path.join(root, `usr/share/man/man${s}/pgbun.${s}.gz`), gzip(fs.readFileSync(path.join(ROOT, `man/pgbun.${s}`))));
  const doc = path.join(root, 'usr/share/doc/pgbun');
  // README.md: the project's; README.packaging.md: this directory's (install, unit, hardening)
  const packagingReadme = fs.readFileSync(path.join(HERE, 'README.md'));
  for (const [name, data] of [['README.md', readme], ['README.packaging.md', packagingReadme]]) {
    if (compressReadme && data.length > 4096) write(path.join(doc, `${name}.gz`), gzip(data));
    else write(path.join(doc, name), data);
  }
  for (const f of ['pgbun.ini', 'userlist.txt', 'pgbun_hba.conf']) copy(path.join(ROOT, 'etc', f), path.join(doc, 'examples', f));
}

function setTimes(root, epoch) {
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      fs.lutimesSync(p, epoch, epoch);
    }
  };
  walk(root);
  fs.utimesSync(root, epoch, epoch);
}

function duKiB(root, skip) {
  let bytes = 0;
  let entries = 0;
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (path.relative(root, p) === skip) continue;
      entries++;
      if (e.isDirectory()) walk(p);
      else bytes += fs.statSync(p).size;
    }
  };
  walk(root);
  // dpkg-gencontrol's measure: 1 KiB per entry plus the file sizes
  return Math.ceil(bytes / 1024) + entries;
}

async function buildDeb(ctx) {
  const root = path.join(BUILD, 'deb-root');
  fs.rmSync(root, { recursive: true, force: true });
  // Debian policy 12.3: documentation over 4 kB is gzipped
  stageCommon(root, { ...ctx, unitDir: 'lib/systemd/system', compressReadme: true });
  const doc = path.join(root, 'usr/share/doc/pgbun');
  write(path.join(doc, 'copyright'), ctx.debCopyright);
  write(path.join(doc, 'THIRD-PARTY-NOTICES.gz'), gzip(ctx.notices));
  write(path.join(doc, 'changelog.gz'), gzip(
    `pgbun (${VERSION}) unstable; urgency=medium\n\n` +
    `  * pgbun ${VERSION}: see the project's history for the changes.\n\n` +
    ` -- ${ctx.maintainer}  ${rfc2822(ctx.epoch)}\n`));
  copy(path.join(HERE, 'deb/lintian-overrides'), path.join(root, 'usr/share/lintian/overrides/pgbun'));

  const debian = path.join(root, 'DEBIAN');
  fs.mkdirSync(debian, { recursive: true });
  for (const s of ['postinst', 'prerm', 'postrm']) copy(path.join(HERE, 'deb', s), path.join(debian, s), 0o755);
  copy(path.join(HERE, 'deb/conffiles'), path.join(debian, 'conffiles'));
  const conffiles = new Set(fs.readFileSync(path.join(HERE, 'deb/conffiles'), 'utf8').split('\n').filter(Boolean).map((f) => f.slice(1)));
  const md5 = listFiles(root, ['DEBIAN'])
    .filter((f) => !conffiles.has(f))
    .map((f) => `${crypto.createHash('md5').update(fs.readFileSync(path.join(root, f))).digest('hex')}  ${f}`);
  write(path.join(debian, 'md5sums'), md5.join('\n') + '\n');
  write(path.join(debian, 'control'), fill(fs.readFileSync(path.join(HERE, 'deb/control.in'), 'utf8'), {
    VERSION,
    ARCH: NODE_ARCH.deb,
    MAINTAINER: ctx.maintainer,
    INSTALLED_SIZE: String(duKiB(root, 'DEBIAN')),
    SHLIBS: ctx.shlibs,
    HOMEPAGE,
    NODE_VERSION: process.versions.node,
  }));
  setTimes(root, ctx.epoch);
  const deb = path.join(BUILD, `pgbun_${VERSION}_${NODE_ARCH.deb}.deb`);
  await runAsync('dpkg-deb', ['--root-owner-group', ...(FAST ? ['-Zgzip', '-z1'] : ['-Zxz', '-z6']), '--build', root, deb], {
    env: { ...process.env, SOURCE_DATE_EPOCH: String(ctx.epoch) },
  });
  return deb;
}

async function buildRpm(ctx) {
  const stage = path.join(BUILD, 'rpm-root');
  const top = path.join(BUILD, 'rpmbuild');
  fs.rmSync(stage, { recursive: true, force: true });
  fs.rmSync(top, { recursive: true, force: true });
  stageCommon(stage, { ...ctx, unitDir: 'usr/lib/systemd/system', compressReadme: false });
  write(path.join(stage, 'usr/share/licenses/pgbun/LICENSE'), ctx.license);
  write(path.join(stage, 'usr/share/licenses/pgbun/THIRD-PARTY-NOTICES'), ctx.notices);
  setTimes(stage, ctx.epoch);
  await runAsync('rpmbuild', [
    '-bb', '--quiet',
    '--target', `${NODE_ARCH.rpm}-linux`,
    '--define', `_topdir ${top}`,
    '--define', `_tmppath ${path.join(top, 'tmp')}`,
    '--define', `pgbun_version ${VERSION.replace(/-/g, '~')}`,
    '--define', `pgbun_node ${process.versions.node}`,
    '--define', `pgbun_stage ${stage}`,
    '--define', `pgbun_payload ${FAST ? 'w1.gzdio' : 'w6T.xzdio'}`,
    '--define', 'use_source_date_epoch_as_buildtime 1',
    '--define', 'clamp_mtime_to_source_date_epoch 1',
    '--define', '_buildhost pgbun-build',
    path.join(HERE, 'rpm/pgbun.spec'),
  ], { env: { ...process.env, SOURCE_DATE_EPOCH: String(ctx.epoch) } });
  const dir = path.join(top, 'RPMS', NODE_ARCH.rpm);
  const files = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith('.rpm')) : [];
  if (files.length !== 1) throw new Error(`rpmbuild produced ${files.join(', ') || 'nothing'} in ${dir}`);
  return path.join(dir, files[0]);
}

function shlibsDepends(exe) {
  // dpkg-shlibdeps (dpkg-dev) knows the minimal versions; without it, the values it gave for
  // Node.js 24 (the official build) on Debian 12 x86-64
  const fallback = 'libc6 (>= 2.34), libgcc-s1 (>= 3.4), libstdc++6 (>= 10.2)';
  if (!have('dpkg-shlibdeps')) return fallback;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgbun-shlibs-'));
  try {
    write(path.join(dir, 'debian/control'), 'Source: pgbun\n\nPackage: pgbun\nArchitecture: any\n');
    const out = run('dpkg-shlibdeps', ['-O', '--warnings=0', exe], { cwd: dir });
    const m = /shlibs:Depends=(.*)/.exec(out);
    return m ? m[1].trim() : fallback;
  } catch {
    return fallback;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * One build at a time per checkout: concurrent `npm test` runs (or a test and `npm run
 * package`) would write the same files. The lock is a directory holding the owner's pid; a lock
 * whose owner is gone is taken over. The second build then usually finds the packages fresh.
 */
async function lock() {
  const dir = path.join(OUT, '.lock');
  const deadline = Date.now() + 15 * 60_000;
  let told = false;
  for (;;) {
    try {
      fs.mkdirSync(dir);
      fs.writeFileSync(path.join(dir, 'pid'), String(process.pid));
      const release = () => fs.rmSync(dir, { recursive: true, force: true });
      process.on('exit', release);
      return;
    } catch (e) {
      if (e.code !== 'EEXIST') throw e;
    }
    let owner = 0;
    try {
      owner = Number(fs.readFileSync(path.join(dir, 'pid'), 'utf8'));
    } catch { /* being created or removed */ }
    let alive = false;
    if (owner > 0) {
      try {
        process.kill(owner, 0);
        alive = true;
      } catch (e) {
        alive = e.code === 'EPERM';
      }
    }
    if (owner > 0 && !alive) {
      fs.rmSync(dir, { recursive: true, force: true });
      continue;
    }
    if (Date.now() > deadline) fail(`${dir} is held by pid ${owner} for more than 15 minutes`);
    if (!told) {
      say(`waiting for another build (pid ${owner || '?'}) to finish`);
      told = true;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

async function main() {
  ensureTools({ 'dpkg-deb': 'dpkg', rpmbuild: 'rpm', strip: 'binutils' });
  fs.mkdirSync(BUILD, { recursive: true });
  await lock();

  say(`bundling dist/src/cli.js (pgbun ${VERSION}) with esbuild`);
  const bundleFile = path.join(BUILD, 'pgbun.cjs');
  const npmPackages = await bundle(bundleFile);

  // everything that ends up in a package
  const readmeFile = fs.existsSync(path.join(ROOT, 'README.md')) ? path.join(ROOT, 'README.md') : path.join(HERE, 'README.md');
  if (readmeFile !== path.join(ROOT, 'README.md')) say('warning: no README.md at the top of the repository; shipping packaging/README.md');
  const licenseFile = fs.existsSync(path.join(ROOT, 'LICENSE')) ? path.join(ROOT, 'LICENSE') : path.join(HERE, 'LICENSE');
  const epoch = sourceDateEpoch();
  const nodeStat = fs.statSync(process.execPath);
  const keyParts = [
    `version ${VERSION}`, `node ${process.execPath} ${process.version} ${nodeStat.size} ${nodeStat.mtimeMs}`,
    `epoch ${epoch}`, `maintainer ${maintainer()}`, `bundle ${sha256(fs.readFileSync(bundleFile))}`,
    ...npmPackages.map((p) => `npm ${p}`),
  ];
  const inputs = [
    ...listFiles(HERE, ['out']).map((f) => path.join(HERE, f)),
    ...['man/pgbun.1', 'man/pgbun.5', 'etc/pgbun.ini', 'etc/userlist.txt', 'etc/pgbun_hba.conf'].map((f) => path.join(ROOT, f)),
    readmeFile, licenseFile,
  ];
  for (const f of inputs) keyParts.push(`${path.relative(ROOT, f)} ${sha256(fs.readFileSync(f))}`);
  const key = sha256(keyParts.join('\n'));

  const final = {
    deb: path.join(OUT, `pgbun_${VERSION}_${NODE_ARCH.deb}.deb`),
    rpm: path.join(OUT, `pgbun-${VERSION.replace(/-/g, '~')}-1.${NODE_ARCH.rpm}.rpm`),
    bin: path.join(OUT, 'pgbun'),
  };
  // .build-key: the key, then "fast" or "release"; a fast build never replaces a release build
  const keyFile = path.join(OUT, '.build-key');
  const [lastKey, lastMode] = fs.existsSync(keyFile) ? fs.readFileSync(keyFile, 'utf8').split('\n') : [];
  const cached = !FORCE && lastKey === key && (lastMode === 'release' || FAST) &&
    Object.values(final).every((f) => fs.existsSync(f));
  const fastBuild = cached ? lastMode === 'fast' : FAST;
  if (cached) {
    say(`packages are up to date (same inputs as the last ${lastMode} build)`);
  } else {
    fs.rmSync(keyFile, { force: true });
    for (const f of fs.readdirSync(OUT)) if (/\.(deb|rpm)$/.test(f) || f === 'pgbun') fs.rmSync(path.join(OUT, f), { force: true });

    say(`building the single executable from node ${process.version} (${process.execPath})`);
    const exe = path.join(BUILD, 'pgbun');
    await buildExecutable(bundleFile, exe);

    const nodeText = nodeLicense();
    const licenses = bundledLicenses(npmPackages);
    const license = fs.readFileSync(licenseFile, 'utf8');
    const ctx = {
      exe,
      epoch,
      maintainer: maintainer(),
      shlibs: shlibsDepends(exe),
      license,
      notices: thirdPartyNotices(licenses, nodeText),
      debCopyright: debianCopyright(licenses, nodeText, license),
      readme: fs.readFileSync(readmeFile),
    };
    say(`building the .deb (dpkg-deb) and the .rpm (rpmbuild), ${FAST ? 'gzip -1 (--fast)' : 'xz -6'}`);
    const [deb, rpm] = await Promise.all([buildDeb(ctx), buildRpm(ctx)]);
    fs.renameSync(exe, final.bin);
    fs.renameSync(deb, final.deb);
    fs.renameSync(rpm, final.rpm);
    fs.writeFileSync(keyFile, `${key}\n${FAST ? 'fast' : 'release'}\n`);
    // the staged trees are 250 MiB of copies: keep only the bundle (the next key needs it anyway)
    for (const f of ['deb-root', 'rpm-root', 'rpmbuild', 'pgbun.blob', 'sea-config.json']) {
      fs.rmSync(path.join(BUILD, f), { recursive: true, force: true });
    }
  }
  for (const f of [final.bin, final.deb, final.rpm]) {
    say(`${path.relative(ROOT, f)} (${(fs.statSync(f).size / 1048576).toFixed(1)} MiB)`);
  }
  if (JSON_OUT) process.stdout.write(JSON.stringify({ ...final, version: VERSION, cached, fast: fastBuild }) + '\n');
}

/**
 * --bun: pgbun compiled into one executable with the Bun runtime (`bun build --compile` of
 * bin/pgbun.js, the npm entry point, so that the program answers under any name). Not put into
 * the .deb/.rpm: they carry the Node.js one, the runtime with every TLS guarantee (see README).
 */
async function buildBun() {
  const bun = process.env.PGBUN_BUN || path.join(ROOT, 'node_modules', '.bin', 'bun');
  if (!fs.existsSync(bun)) fail('bun is not installed: run `npm ci` (it is a dev dependency) or set PGBUN_BUN');
  fs.mkdirSync(OUT, { recursive: true });
  await lock();
  const out = path.join(OUT, 'pgbun-bun');
  say(`compiling bin/pgbun.js with ${bun} build --compile`);
  run(bun, ['build', '--compile', '--outfile', out, path.join(ROOT, 'bin', 'pgbun.js')], { cwd: ROOT });
  say(`${path.relative(ROOT, out)} (${(fs.statSync(out).size / 1048576).toFixed(1)} MiB)`);
  if (JSON_OUT) process.stdout.write(JSON.stringify({ bunBin: out, version: VERSION }) + '\n');
}

(args.has('--bun') ? buildBun() : main()).catch((e) => fail(e instanceof Error ? (e.stack ?? e.message) : String(e)));
