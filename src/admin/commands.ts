// Console commands (https://www.pgbouncer.org/usage.html#admin-console): dispatch after the grammar
// (grammar.ts), permissions (admin_users: everything; stats_users: SHOW except FDS), the control
// commands with their tags, errors and `... command issued` log lines, SET, and the replies of
// commands that wait (PAUSE, SUSPEND, WAIT_CLOSE answer only when done; meanwhile the admin's
// further queries are held). With `workers` > 1 a command acts on every event loop and SHOW
// answers for all of them (merged.ts): the reply then comes when the other loops have answered,
// and the admin's further queries are held the same way.
import { cf } from '../config/current.js';
import { SettingError, setSetting } from '../config/settings.js';
import { log } from '../log/logger.js';
import * as msg from '../protocol/messages.js';
import type { Client } from '../pool/client.js';
import { findDatabase } from '../pool/databases.js';
import { registry, type PgDatabase } from '../pool/objects.js';
import { disconnectClient, poolerState } from '../pool/pooler.js';
import {
  anyDbPaused, applyElsewhere, cancelWaiter, control, dropWaitElsewhere, findClientById, killAll, killDb, pauseAll,
  pauseDb, reconnect, resumeAll, resumeDb, shutdownNow, shutdownWaitForClients, shutdownWaitForServers, suspendAll,
  waitCondition, waitElsewhere, waitUntil, type ControlOp, type WaitFor, type Waiter,
} from '../pool/control.js';
import { reloadConfig, reloadElsewhere } from '../reload.js';
import { reloadTls } from '../tls/context.js';
import { onRequest, request, requestAll } from '../workers/bus.js';
import { multiWorker, workerSelf } from '../workers/identity.js';
import { parseAdminQuery } from './grammar.js';
import { show } from './merged.js';
import { FAKE_PARAMS, HELP_DETAIL, SHOW_MAP, type ResultSet } from './show.js';

interface Ctx {
  client: Client;
  /** the query text as received (for `invalid command '...'`) */
  sql: string;
}

// ---------------------------------------------------------------------------------------------
// replies

function send(client: Client, parts: Buffer[]): void {
  client.send(parts.length === 1 ? parts[0]! : Buffer.concat(parts));
}

/** ERROR + ReadyForQuery; logged like PgBouncer's admin_error(): ERROR line, then `pooler error`. */
export function adminError(client: Client, text: string, sqlstate = '08P01'): void {
  log.error(text);
  if (cf.log_pooler_errors) log.conn('warning', client, `pooler error: ${text}`);
  send(client, [msg.errorResponse('ERROR', sqlstate, text), msg.readyForQuery('I')]);
}

function sendError(ctx: Ctx, text: string, sqlstate = '08P01'): void {
  adminError(ctx.client, text, sqlstate);
}

function syntaxError(ctx: Ctx): void {
  sendError(ctx, `invalid command '${ctx.sql}', use SHOW HELP;`);
}

function sendTag(client: Client, tag: string, notices: Buffer[] = []): void {
  send(client, [...notices, msg.commandComplete(tag), msg.readyForQuery('I')]);
}

function cell(v: string | number | null): string | null {
  return v === null ? null : typeof v === 'number' ? String(v) : v;
}

function sendResult(client: Client, rs: ResultSet): void {
  const parts = [msg.rowDescription(rs.cols)];
  for (const r of rs.rows) parts.push(msg.dataRow(r.map(cell)));
  parts.push(msg.commandComplete('SHOW'), msg.readyForQuery('I'));
  send(client, parts);
}

function requireAdmin(ctx: Ctx): boolean {
  if (ctx.client.adminLevel === 'admin') return true;
  sendError(ctx, 'admin access needed');
  return false;
}

// ---------------------------------------------------------------------------------------------
// commands that answer later

/** admin clients waiting for their reply, with what they wait for */
const waiting = new Map<Client, { waiter: Waiter; tag: string; elsewhere: string | null }>();
/** `workers` > 1: admin clients whose reply waits for the other loops' answers */
const busy = new Set<Client>();

/** While an admin waits for its reply, its next messages are held (console.ts asks). */
export function adminIsWaiting(client: Client): boolean {
  return waiting.has(client) || busy.has(client);
}

function finishWaiting(client: Client, tag: string): void {
  waiting.delete(client);
  if (client.closed) return;
  sendTag(client, tag);
  client.stream.resume();
}

/**
 * Reply `tag` now if `done()` holds (and the other loops' condition, when there are others),
 * else when it does. `what` is what every other loop waits for.
 */
function replyWhen(ctx: Ctx, tag: string, what: WaitFor, db: PgDatabase | null): void {
  const here = waitCondition(what, db);
  const others = waitElsewhere(what);
  let othersDone = others === null;
  void others?.done.then(() => { othersDone = true; });
  const done = (): boolean => othersDone && here();
  if (done()) {
    sendTag(ctx.client, tag);
    return;
  }
  const client = ctx.client;
  const elsewhere = others?.token ?? null;
  const waiter: Waiter = {
    done,
    alive: () => {
      if (!client.closed) return true;
      waiting.delete(client);
      if (elsewhere !== null) dropWaitElsewhere(elsewhere);
      return false;
    },
    finish: () => finishWaiting(client, tag),
  };
  waiting.set(client, { waiter, tag, elsewhere });
  waitUntil(waiter);
}

/**
 * `workers` > 1: answer once `later` is settled (the other loops have answered); the admin's next
 * queries wait meanwhile.
 */
function answerLater<T>(client: Client, later: Promise<T>, answer: (v: T) => void): void {
  busy.add(client);
  later.then((v) => {
    busy.delete(client);
    if (client.closed) return;
    answer(v);
    client.stream.resume();
  }).catch((e: unknown) => {
    busy.delete(client);
    log.error(`admin command failed: ${(e as Error).message}`);
    if (!client.closed) client.fail('admin command failed');
  });
}

/** Answer now (one loop: null), or once the other loops have done what `others` stands for. */
function answerAfter(client: Client, others: Promise<unknown> | null, answer: () => void): void {
  if (others === null) answer();
  else answerLater(client, others, answer);
}

function replyAfter(ctx: Ctx, others: Promise<unknown> | null, tag: string, notices: Buffer[] = []): void {
  answerAfter(ctx.client, others, () => sendTag(ctx.client, tag, notices));
}

/** A command applied here: the other loops apply it too, and the reply waits for them. */
function replyEverywhere(ctx: Ctx, op: ControlOp, tag: string): void {
  replyAfter(ctx, applyElsewhere(op), tag);
}

/**
 * A CancelRequest with the key of an admin client: an admin waiting for PAUSE or
 * SUSPEND gives up, and the pooler resumes as with RESUME.
 */
export function adminCancelRequest(target: Client): void {
  const w = waiting.get(target);
  if (w === undefined) {
    log.conn('warning', target, 'admin cancel request for non-waiting client?');
    return;
  }
  cancelWaiter(w.waiter);
  if (w.elsewhere !== null) dropWaitElsewhere(w.elsewhere);
  if (poolerState.paused || poolerState.suspended) {
    resumeAll();
    void applyElsewhere({ op: 'resume' });
  }
  finishWaiting(target, 'RESUME');
}

// ---------------------------------------------------------------------------------------------
// database arguments

/** A database argument; may create an auto-database from `*`, as PgBouncer's find_or_register. */
function lookupDb(name: string): PgDatabase | null {
  const db = registry.databases.get(name);
  if (db !== undefined) return db;
  return findDatabase(name);
}

/** The database for PAUSE/KILL/...: null after an error was sent. */
function dbArg(ctx: Ctx, arg: string, verb: string): PgDatabase | null {
  const db = lookupDb(arg);
  if (db === null) {
    sendError(ctx, `no such database: ${arg}`);
    return null;
  }
  if (db.admin) {
    sendError(ctx, `cannot ${verb} admin db: ${arg}`);
    return null;
  }
  return db;
}

// ---------------------------------------------------------------------------------------------
// process control commands (https://www.pgbouncer.org/usage.html#process-controlling-commands)

function cmdPause(ctx: Ctx, arg: string): void {
  if (!requireAdmin(ctx)) return;
  if (poolerState.paused || poolerState.suspended) return sendError(ctx, 'already suspended/paused');
  if (arg === '') {
    log.log('PAUSE command issued');
    pauseAll();
    void applyElsewhere({ op: 'pause' });
    // a RESUME from elsewhere also ends the wait
    replyWhen(ctx, 'PAUSE', { what: 'pause' }, null);
    return;
  }
  log.log(`PAUSE '${arg}' command issued`);
  const db = dbArg(ctx, arg, 'pause');
  if (db === null) return;
  pauseDb(db);
  void applyElsewhere({ op: 'pause_db', db: db.name });
  replyWhen(ctx, 'PAUSE', { what: 'pause', db: db.name }, db);
}

function cmdResume(ctx: Ctx, arg: string): void {
  if (!requireAdmin(ctx)) return;
  if (control.shutdown !== 'none') return sendError(ctx, 'pooler is shutting down');
  if (arg === '') {
    log.log('RESUME command issued');
    if (!poolerState.paused && !poolerState.suspended) return sendError(ctx, 'pooler is not paused/suspended');
    resumeAll();
    replyEverywhere(ctx, { op: 'resume' }, 'RESUME');
  } else {
    log.log(`RESUME '${arg}' command issued`);
    const db = registry.databases.get(arg);
    if (db === undefined) return sendError(ctx, `no such database: ${arg}`);
    if (!db.paused) return sendError(ctx, `database ${arg} is not paused`);
    resumeDb(db);
    replyEverywhere(ctx, { op: 'resume_db', db: db.name }, 'RESUME');
  }
}

function cmdSuspend(ctx: Ctx, arg: string): void {
  if (arg !== '') return syntaxError(ctx);
  if (!requireAdmin(ctx)) return;
  if (poolerState.paused || poolerState.suspended) return sendError(ctx, 'already suspended/paused');
  if (anyDbPaused()) return sendError(ctx, 'cannot suspend with paused databases');
  log.log('SUSPEND command issued');
  suspendAll();
  void applyElsewhere({ op: 'suspend' });
  replyWhen(ctx, 'SUSPEND', { what: 'suspend' }, null);
}

function cmdDisableEnable(ctx: Ctx, arg: string, disable: boolean): void {
  if (!requireAdmin(ctx)) return;
  if (arg === '') return sendError(ctx, 'a database is required');
  const verb = disable ? 'DISABLE' : 'ENABLE';
  log.log(`${verb} '${arg}' command issued`);
  const db = dbArg(ctx, arg, disable ? 'disable' : 'enable');
  if (db === null) return;
  db.disabled = disable;
  replyEverywhere(ctx, { op: disable ? 'disable' : 'enable', db: db.name }, verb);
}

function cmdReconnect(ctx: Ctx, arg: string): void {
  if (!requireAdmin(ctx)) return;
  if (arg === '') {
    log.log('RECONNECT command issued');
    reconnect(null);
    replyEverywhere(ctx, { op: 'reconnect' }, 'RECONNECT');
  } else {
    log.log(`RECONNECT '${arg}' command issued`);
    const db = dbArg(ctx, arg, 'reconnect');
    if (db === null) return;
    reconnect(db);
    replyEverywhere(ctx, { op: 'reconnect_db', db: db.name }, 'RECONNECT');
  }
}

function cmdKill(ctx: Ctx, arg: string): void {
  if (!requireAdmin(ctx)) return;
  if (poolerState.paused || poolerState.suspended) return sendError(ctx, 'already suspended/paused');
  if (arg === '') {
    log.log('KILL command issued');
    killAll();
    replyEverywhere(ctx, { op: 'kill' }, 'KILL');
  } else {
    log.log(`KILL '${arg}' command issued`);
    const db = dbArg(ctx, arg, 'kill');
    if (db === null) return;
    killDb(db);
    replyEverywhere(ctx, { op: 'kill_db', db: db.name }, 'KILL');
  }
}

function cmdKillClient(ctx: Ctx, arg: string): void {
  if (!requireAdmin(ctx)) return;
  if (!/^[0-9]+$/.test(arg)) return sendError(ctx, 'invalid client pointer supplied');
  log.log(`KILL_CLIENT '${arg}' command issued`);
  const id = Number(arg);
  // with `workers` > 1 the id tells which loop has the client
  const owner = id % workerSelf.count;
  if (owner !== workerSelf.index) {
    answerLater(ctx.client, request<boolean>(owner, 'console.kill_client', id), (found) => {
      if (found === true) sendTag(ctx.client, 'KILL_CLIENT');
      else sendError(ctx, 'client not found');
    });
    return;
  }
  if (!killClient(id)) return sendError(ctx, 'client not found');
  sendTag(ctx.client, 'KILL_CLIENT');
}

function killClient(id: number): boolean {
  const target = findClientById(id);
  if (target === null) return false;
  disconnectClient(target, true, 'admin forced disconnect');
  return true;
}

function cmdWaitClose(ctx: Ctx, arg: string): void {
  if (!requireAdmin(ctx)) return;
  if (arg === '') {
    log.log('WAIT_CLOSE command issued');
    replyWhen(ctx, 'WAIT_CLOSE', { what: 'wait_close' }, null);
    return;
  }
  log.log(`WAIT_CLOSE '${arg}' command issued`);
  const db = lookupDb(arg);
  if (db === null) return sendError(ctx, `no such database: ${arg}`);
  if (db.admin) return sendError(ctx, `cannot wait in admin db: ${arg}`);
  replyWhen(ctx, 'WAIT_CLOSE', { what: 'wait_close', db: db.name }, db);
}

function cmdShutdown(ctx: Ctx, arg: string): void {
  if (!requireAdmin(ctx)) return;
  const mode = arg.toLowerCase();
  if (mode === '') {
    // no reply: the connection closes with the process
    log.log('SHUTDOWN command issued');
    shutdownNow(0);
  } else if (mode === 'wait_for_servers') {
    log.log('SHUTDOWN WAIT_FOR_SERVERS command issued');
    sendTag(ctx.client, 'SHUTDOWN');
    shutdownWaitForServers();
    void applyElsewhere({ op: 'shutdown_servers' });
  } else if (mode === 'wait_for_clients') {
    log.log('SHUTDOWN WAIT_FOR_CLIENTS command issued');
    sendTag(ctx.client, 'SHUTDOWN');
    shutdownWaitForClients();
    void applyElsewhere({ op: 'shutdown_clients' });
  } else {
    syntaxError(ctx);
  }
}

function cmdReload(ctx: Ctx, arg: string): void {
  if (arg !== '') return syntaxError(ctx);
  if (!requireAdmin(ctx)) return;
  log.log('RELOAD command issued');
  const ok = reloadConfig();
  answerAfter(ctx.client, reloadElsewhere(), () => {
    if (ok) sendTag(ctx.client, 'RELOAD');
    else sendError(ctx, 'RELOAD failed, see logs for additional details', 'F0000');
  });
}

function cmdShow(ctx: Ctx, arg: string): void {
  const fake = FAKE_PARAMS.find(([name]) => name === arg.toLowerCase());
  if (fake !== undefined) {
    sendResult(ctx.client, { cols: [{ name: fake[0], typeOid: 25, typeLen: -1 }], rows: [[fake[1]]] });
    return;
  }
  const what = arg.toLowerCase();
  if (what === 'help') {
    sendTag(ctx.client, 'SHOW', [msg.notice('Console usage', '00000', HELP_DETAIL)]);
    return;
  }
  if (!Object.prototype.hasOwnProperty.call(SHOW_MAP, what)) return syntaxError(ctx);
  if (what === 'fds' && !requireAdmin(ctx)) return;
  const rs = show(what);
  if (rs instanceof Promise) answerLater(ctx.client, rs, (r) => sendResult(ctx.client, r));
  else sendResult(ctx.client, rs);
}

const COMMANDS: Record<string, (ctx: Ctx, arg: string) => void> = {
  disable: (ctx, arg) => cmdDisableEnable(ctx, arg, true),
  enable: (ctx, arg) => cmdDisableEnable(ctx, arg, false),
  kill: cmdKill,
  kill_client: cmdKillClient,
  pause: cmdPause,
  reconnect: cmdReconnect,
  reload: cmdReload,
  resume: cmdResume,
  select: cmdShow,
  show: cmdShow,
  shutdown: cmdShutdown,
  suspend: cmdSuspend,
  wait_close: cmdWaitClose,
};

// ---------------------------------------------------------------------------------------------
// SET

/** What a changed setting must do at once (most are read where they are used). */
function applySet(key: string): Buffer[] {
  if (key === 'verbose') log.setVerbose(cf.verbose);
  if (key === 'log_format') log.setJson(cf.log_format === 'json');
  // every TLS key (client_tls_*, server_tls_*, client_tls13_ciphers, ...) takes effect at once
  if (/^(client|server)_tls/.test(key) && reloadTls() !== null) {
    return [msg.notice('TLS settings could not be applied, still using old configuration')];
  }
  return [];
}

function cmdSet(ctx: Ctx, key: string, value: string): void {
  // the settings drivers poke at are accepted from anyone and ignored
  if (FAKE_PARAMS.some(([name]) => name === key.toLowerCase())) {
    sendTag(ctx.client, 'SET', [msg.notice('SET ignored')]);
    return;
  }
  if (!requireAdmin(ctx)) return;
  try {
    // a key that cannot change after startup is accepted and ignored, as PgBouncer does
    setSetting(cf, key, value, { startup: false });
  } catch (e) {
    if (!(e instanceof SettingError)) throw e;
    if (e.reason !== null) log.error(e.reason);
    log.error(e.message);
    sendError(ctx, 'SET failed');
    return;
  }
  replyAfter(ctx, setElsewhere(key, value), `SET ${key}=${value}`, applySet(key));
}

/** `workers` > 1: the other loops take the value too (it was checked here; their lines are this loop's). */
function setElsewhere(key: string, value: string): Promise<unknown> | null {
  return multiWorker() ? requestAll('console.set', { key, value }) : null;
}

onRequest('console.set', (d) => {
  const { key, value } = d as { key: string; value: string };
  log.quietly(() => {
    try {
      setSetting(cf, key, value, { startup: false });
      applySet(key);
    } catch (e) {
      if (!(e instanceof SettingError)) throw e;
    }
  });
  return true;
});

onRequest('console.kill_client', (id) => killClient(id as number));

// ---------------------------------------------------------------------------------------------

export function runAdminCommand(client: Client, sql: string): void {
  log.debug(`got admin query: ${sql}`);
  // the console's own pool counts every query as a transaction, as PgBouncer's does
  if (client.pool !== null) {
    client.pool.stats.queryCount++;
    client.pool.stats.xactCount++;
  }
  const ctx: Ctx = { client, sql };
  const q = parseAdminQuery(sql);
  switch (q.kind) {
    case 'command': {
      const cmd = q.cmd.toLowerCase();
      const f = Object.prototype.hasOwnProperty.call(COMMANDS, cmd) ? COMMANDS[cmd] : undefined;
      if (f === undefined) syntaxError(ctx);
      else f(ctx, q.arg);
      return;
    }
    case 'set':
      cmdSet(ctx, q.key, q.value);
      return;
    case 'bad-arguments':
      sendError(ctx, 'bad arguments');
      return;
    case 'syntax-error':
      syntaxError(ctx);
      return;
  }
}
