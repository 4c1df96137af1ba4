// Choosing and starting the client authentication method (spec §4.2): auth_type, or the
// matching auth_hba_file rule. Called once the startup packet is accepted and the connection
// limits are checked; ends in client.afterAuth(), client.startPassword() or client.fail().
import { cf } from '../config/current.js';
import { log } from '../log/logger.js';
import type { Client } from '../pool/client.js';
import { registry, type PgUser } from '../pool/objects.js';

export function beginAuth(client: Client, userName: string, user: PgUser | null, isAdminDb: boolean): void {
  const method = cf.auth_type;
  switch (method) {
    case 'trust':
      if (user === null || !user.inAuthFile) {
        client.fail('"trust" authentication failed');
        return;
      }
      client.afterAuth();
      return;
    case 'any': {
      const db = client.db;
      if (!isAdminDb && db !== null && db.forcedUser === null) {
        log.conn('warning', client, 'auth_type=any requires forced user');
        client.fail('bouncer config error');
        return;
      }
      if (user === null) client.loginUser = registry.addUser(userName);
      client.afterAuth();
      return;
    }
    case 'plain':
    case 'md5':
    case 'scram-sha-256':
      client.startPassword(method, userName, user);
      return;
    default:
      log.conn('warning', client, `auth_type=${method} is not supported yet`);
      client.fail('bouncer config error');
  }
}
