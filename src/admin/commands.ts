// Console command grammar (spec §5.2) and dispatch.
import * as msg from '../protocol/messages.js';
import type { Client } from '../pool/client.js';
import { VERSION_STRING } from '../version.js';

function sendError(client: Client, text: string, sqlstate = '08P01'): void {
  client.send(Buffer.concat([msg.errorResponse('ERROR', sqlstate, text), msg.readyForQuery('I')]));
}

function sendRows(client: Client, cols: msg.Column[], rows: Array<Array<string | null>>, tag = 'SHOW'): void {
  const parts = [msg.rowDescription(cols)];
  for (const r of rows) parts.push(msg.dataRow(r));
  parts.push(msg.commandComplete(tag), msg.readyForQuery('I'));
  client.send(Buffer.concat(parts));
}

export function runAdminCommand(client: Client, sql: string): void {
  const m = /^\s*(?:show|select)\s+version\s*;?\s*$/i.exec(sql);
  if (m) {
    sendRows(client, [{ name: 'version', typeOid: 25, typeLen: -1 }], [[VERSION_STRING]]);
    return;
  }
  sendError(client, `invalid command '${sql}', use SHOW HELP;`);
}
