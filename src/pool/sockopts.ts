// TCP options applied to accepted client sockets and to server sockets (the tcp_* settings):
// TCP_NODELAY always (latency matters more than packet count for a pooler), keepalive per
// tcp_keepalive / tcp_keepidle. tcp_keepcnt, tcp_keepintvl and tcp_user_timeout have no node:net
// API; they are accepted in the config and left to the kernel defaults.
import type { Socket } from 'node:net';
import { cf } from '../config/current.js';

export function applySocketOptions(sock: Socket): void {
  sock.setNoDelay(true);
  if (cf.tcp_keepalive) sock.setKeepAlive(true, cf.tcp_keepidle > 0 ? cf.tcp_keepidle * 1000 : 0);
}
