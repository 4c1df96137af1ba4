// The BackendKeyData pgbun hands to clients, laid out as PgBouncer 1.21+ lays it out, so that
// the processes sharing one port (so_reuseport, [peers]) can tell from a CancelRequest which of
// them issued the key:
//
//   byte 0      random, top bit cleared (the first 4 bytes are the "pid": never negative)
//   bytes 1-2   with peering (peer_id > 0): the issuing process's peer_id, little-endian;
//               peer_id is at most 16383, so the top 2 bits of byte 2 stay 0
//   byte 3      random; with `workers` > 1 its low 6 bits are the index of the event loop that
//               issued the key (MAX_WORKERS is 64), so that a CancelRequest accepted by another
//               loop of the same process reaches it (pool/worker-cancel.ts). pgbun's own: a
//               byte PgBouncer leaves random, so PgBouncer peers read peer_id and TTL as before
//   bytes 4-6   random
//   byte 7      random; with peering its low 2 bits are the hop TTL, 3 when issued, one less
//               on each forward to a peer, never forwarded at 0
//
// Without peering and with one loop all 8 bytes are random but for the top bit of byte 0.

export const CANCEL_KEY_LEN = 8;
const TTL_MASK = 0x03;
/** the TTL a key is issued with: a cancel request is forwarded at most this many times */
export const CANCEL_KEY_TTL = 3;

const WORKER_MASK = 0x3f;
/** how many event loops the key layout can tell apart */
export const CANCEL_KEY_WORKERS = WORKER_MASK + 1;

/**
 * A client's key made from 8 random bytes (not kept: the key is a copy). `worker`: the issuing
 * loop's index when there are several, null with one loop.
 */
export function makeCancelKey(random: Buffer, peerId: number, worker: number | null = null): Buffer {
  const key = Buffer.from(random.subarray(0, CANCEL_KEY_LEN));
  key[0]! &= 0x7f;
  if (peerId > 0) {
    key[1] = peerId & 0xff;
    key[2] = (peerId >> 8) & 0xff;
    key[7]! |= TTL_MASK;
  }
  if (worker !== null) key[3] = (key[3]! & ~WORKER_MASK) | (worker & WORKER_MASK);
  return key;
}

/** The event loop that issued a key (meaningful only for a key issued with `workers` > 1). */
export function cancelKeyWorker(key: Buffer): number {
  return key[3]! & WORKER_MASK;
}

/** The peer_id a key carries (meaningful only for a key issued with peering). */
export function cancelKeyPeerId(key: Buffer): number {
  return key[1]! | (key[2]! << 8);
}

export function cancelKeyTtl(key: Buffer): number {
  return key[7]! & TTL_MASK;
}

/** A copy of the key with another TTL. */
export function withCancelKeyTtl(key: Buffer, ttl: number): Buffer {
  const out = Buffer.from(key);
  out[7] = (out[7]! & ~TTL_MASK) | (ttl & TTL_MASK);
  return out;
}
