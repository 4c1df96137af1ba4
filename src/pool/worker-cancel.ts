// `workers = N`: a CancelRequest is a new connection, which the kernel may hand to any event loop,
// while the client whose query it cancels lives in one loop (the one whose index its key carries,
// cancel-key.ts). The loop that accepted the request asks the owner over the bus
// ('cancel.forward'); the owner runs it as one of its own, through a stand-in for the requester
// (Client.cancelForLoop: in its pool's cancel lists, limited by 2 x pool_size, timed by
// cancel_wait_timeout, shown by SHOW CLIENTS/POOLS), and answers when that stand-in is closed,
// i.e. when the cancel is done. The requester is then closed with the owner's reason, so the log
// reads as for a local cancel. A loop that is gone, or goes meanwhile, answers nothing: the
// request is a failed one, as for a key nobody issued.
import { cf } from '../config/current.js';
import { onRequest, request } from '../workers/bus.js';
import { multiWorker, workerSelf } from '../workers/identity.js';
import { cancelKeyPeerId, cancelKeyWorker } from './cancel-key.js';
import { disconnectClient } from './pooler.js';
import { ClientState } from './state.js';
import type { Client } from './client.js';

/** The requester's addresses, as SHOW CLIENTS and the log print them. */
type Addresses = Pick<Client, 'addr' | 'port' | 'localAddr' | 'localPort' | 'remotePid' | 'tlsInfo'>;

/** What the owner needs of the requester's connection: its key and its addresses. */
export interface LoopCancel {
  key: Uint8Array;
  isUnix: boolean;
  listenerPort: number;
  addresses: Addresses;
}

/** How the owner closed its stand-in: the requester is closed the same way. */
export interface LoopCancelDone {
  notify: boolean;
  reason: string;
  sqlstate: string;
  dbName: string;
  userName: string;
}

const KIND = 'cancel.forward';

/**
 * A CancelRequest whose key no client of this loop has: pass it to the loop that issued the key.
 * False: the key is not another loop's (one loop, another peer's key, our own index, or an index
 * beyond the loops), and the caller treats it as unknown.
 */
export function forwardToLoop(req: Client, key: Buffer): boolean {
  if (!multiWorker()) return false;
  // another peer's key that peering did not forward: its loop index means nothing here
  if (cf.peer_id !== 0 && cancelKeyPeerId(key) !== cf.peer_id) return false;
  const owner = cancelKeyWorker(key);
  if (owner === workerSelf.index || owner >= workerSelf.count) return false;
  // waits in no list of this loop: the owner's stand-in is the one SHOW and the limits see
  req.changeState(ClientState.WAITING_CANCEL);
  const { addr, port, localAddr, localPort, remotePid, tlsInfo } = req;
  const data: LoopCancel = {
    key: Uint8Array.from(key), isUnix: req.isUnix, listenerPort: req.listenerPort,
    addresses: { addr, port, localAddr, localPort, remotePid, tlsInfo },
  };
  void request<LoopCancelDone>(owner, KIND, data).then((done) => {
    if (done === undefined) {
      disconnectClient(req, false, 'failed cancel request');
      return;
    }
    req.dbName = done.dbName;
    req.userName = done.userName;
    disconnectClient(req, done.notify, done.reason, done.sqlstate);
  });
  return true;
}

/** Owner side: `run` cancels for a request another loop accepted; resolves when it is done. */
export function serveLoopCancels(run: (req: LoopCancel) => Promise<LoopCancelDone>): void {
  onRequest(KIND, (data) => run(data as LoopCancel));
}
