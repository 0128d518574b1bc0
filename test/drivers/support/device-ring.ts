// The device side of a split virtqueue, written for the tests from the spec's
// numbers (virtio 1.4 §2.7) and not from abi/ring.ts, so that a layout mistake
// on the driver side cannot be mirrored here. Strict: protocol violations throw.

/** A byte range of RAM as the device sees it: an offset into the RAM buffer. */
export interface Piece {
  readonly off: number;
  readonly len: number;
}

export interface Chain {
  readonly head: number;
  readonly readable: Piece[];
  readonly writable: Piece[];
  indirect: boolean;
  /** Bus addresses of the data descriptors, as the driver wrote them. */
  readonly addrs: bigint[];
}

/** Bus address → RAM buffer offset, faulting on anything the device may not reach. */
export type Translate = (addr: bigint, len: number) => number;

const DESC_F_NEXT = 1;
const DESC_F_WRITE = 2;
const DESC_F_INDIRECT = 4;

export class DeviceRing {
  lastAvail = 0;
  usedIdx = 0;
  private readonly desc: number;
  private readonly avail: number;
  private readonly used: number;

  constructor(
    private readonly dv: DataView,
    private readonly translate: Translate,
    readonly num: number,
    addrs: { desc: bigint; driver: bigint; device: bigint },
    private readonly eventIdx: boolean,
    private readonly indirectOk: boolean,
  ) {
    this.desc = translate(addrs.desc, 16 * num);
    this.avail = translate(addrs.driver, 6 + 2 * num);
    this.used = translate(addrs.device, 6 + 8 * num);
    if (this.desc % 16 || this.avail % 2 || this.used % 4) throw new Error('misaligned ring areas');
  }

  get availIdx(): number {
    return this.dv.getUint16(this.avail + 2, true);
  }

  get availFlags(): number {
    return this.dv.getUint16(this.avail, true);
  }

  get usedEvent(): number {
    return this.dv.getUint16(this.avail + 4 + 2 * this.num, true);
  }

  /** The next available chain, or undefined. */
  pop(): Chain | undefined {
    const idx = this.availIdx;
    if (idx === this.lastAvail) return undefined;
    if (((idx - this.lastAvail) & 0xffff) > this.num) throw new Error(`avail idx ${idx} runs ${(idx - this.lastAvail) & 0xffff} ahead of ${this.lastAvail}`);
    const head = this.dv.getUint16(this.avail + 4 + 2 * (this.lastAvail % this.num), true);
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    return this.walk(head);
  }

  push(head: number, len: number): void {
    const e = this.used + 4 + 8 * (this.usedIdx % this.num);
    this.dv.setUint32(e, head, true);
    this.dv.setUint32(e + 4, len, true);
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    this.dv.setUint16(this.used + 2, this.usedIdx, true);
  }

  /** After the used idx moved from `old`: does the driver want an interrupt? */
  wantsInterrupt(old: number): boolean {
    if (!this.eventIdx) return (this.availFlags & 1) === 0;
    return ((this.usedIdx - this.usedEvent - 1) & 0xffff) < ((this.usedIdx - old) & 0xffff);
  }

  setNoNotify(on: boolean): void {
    this.dv.setUint16(this.used, on ? 1 : 0, true);
  }

  setAvailEvent(idx: number): void {
    this.dv.setUint16(this.used + 4 + 8 * this.num, idx, true);
  }

  private walk(head: number): Chain {
    if (head >= this.num) throw new Error(`head ${head} out of range`);
    const chain: Chain = { head, readable: [], writable: [], indirect: false, addrs: [] };
    let table = this.desc;
    let size = this.num;
    let i = head;
    for (let seen = 0; ; ) {
      if (i >= size || ++seen > size) throw new Error(`bad chain at ${i} (seen ${seen} of ${size})`);
      const d = table + 16 * i;
      const addr = this.dv.getBigUint64(d, true);
      const len = this.dv.getUint32(d + 8, true);
      const flags = this.dv.getUint16(d + 12, true);
      if (flags & DESC_F_INDIRECT) {
        if (!this.indirectOk || chain.indirect || flags & DESC_F_NEXT || len === 0 || len % 16) throw new Error(`bad indirect descriptor flags ${flags} len ${len}`);
        chain.indirect = true;
        table = this.translate(addr, len);
        size = len / 16;
        i = 0;
        seen = 0;
        continue;
      }
      const piece = { off: this.translate(addr, len), len };
      chain.addrs.push(addr);
      if (flags & DESC_F_WRITE) chain.writable.push(piece);
      else if (chain.writable.length > 0) throw new Error('readable descriptor after a writable one');
      else chain.readable.push(piece);
      if (!(flags & DESC_F_NEXT)) return chain;
      i = this.dv.getUint16(d + 14, true);
    }
  }
}
