// Switching to an unprivileged Unix user (`user` setting / -u), as PgBouncer does when started
// by root; running as root without one is refused.
import fs from 'node:fs';

export class UserSwitchError extends Error {}

interface PasswdEntry {
  uid: number;
  gid: number;
}

function lookupUser(name: string): PasswdEntry | null {
  let text: string;
  try {
    text = fs.readFileSync('/etc/passwd', 'utf8');
  } catch {
    return null;
  }
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f[0] === name && f.length >= 4) return { uid: Number(f[2]), gid: Number(f[3]) };
  }
  if (/^\d+$/.test(name)) return { uid: Number(name), gid: Number(name) };
  return null;
}

/**
 * Switch to `user` if given; then refuse to go on as root. `handOver`: files root created for
 * the process (the log file) that the new user must be able to reopen.
 */
export function switchUser(user: string | null, handOver: string[] = []): void {
  if (user) {
    const e = lookupUser(user);
    if (e === null) throw new UserSwitchError(`could not find user '${user}' to switch to`);
    if (process.getuid?.() !== e.uid) {
      for (const f of handOver) {
        try {
          if (fs.statSync(f).uid === 0) fs.chownSync(f, e.uid, e.gid);
        } catch { /* not ours to fix */ }
      }
      try {
        process.setgid!(e.gid);
        (process as unknown as { initgroups?: (u: string, g: number) => void }).initgroups?.(user, e.gid);
        process.setuid!(e.uid);
      } catch (err) {
        throw new UserSwitchError(`setuid() failed: ${(err as Error).message}`);
      }
    }
  }
  if (process.getuid?.() === 0) throw new UserSwitchError('PgBouncer should not run as root');
}
