// Intrusive doubly-linked lists: a connection is in exactly one list at a time (the list of its
// state), moving between lists is O(1) and allocation-free, and a list's length is a counter.
// SHOW POOLS and SHOW LISTS are these counters.

export interface ListNode {
  listPrev: ListNode | null;
  listNext: ListNode | null;
  list: StateList<ListNode> | null;
}

export class StateList<T extends ListNode> {
  head: T | null = null;
  tail: T | null = null;
  count = 0;

  constructor(readonly name: string) {}

  append(x: T): void {
    x.list = this as unknown as StateList<ListNode>;
    x.listNext = null;
    x.listPrev = this.tail;
    if (this.tail) this.tail.listNext = x;
    else this.head = x;
    this.tail = x;
    this.count++;
  }

  prepend(x: T): void {
    x.list = this as unknown as StateList<ListNode>;
    x.listPrev = null;
    x.listNext = this.head;
    if (this.head) this.head.listPrev = x;
    else this.tail = x;
    this.head = x;
    this.count++;
  }

  remove(x: T): void {
    if (x.list !== (this as unknown as StateList<ListNode>)) return;
    if (x.listPrev) x.listPrev.listNext = x.listNext;
    else this.head = x.listNext as T | null;
    if (x.listNext) x.listNext.listPrev = x.listPrev;
    else this.tail = x.listPrev as T | null;
    x.list = null;
    x.listPrev = null;
    x.listNext = null;
    this.count--;
  }

  first(): T | null {
    return this.head;
  }

  /** Snapshot for iteration while the loop body may move items between lists. */
  toArray(): T[] {
    const out: T[] = [];
    for (let x = this.head; x; x = x.listNext as T | null) out.push(x);
    return out;
  }

  *[Symbol.iterator](): IterableIterator<T> {
    let x = this.head;
    while (x) {
      const next = x.listNext as T | null;
      yield x;
      x = next;
    }
  }
}
