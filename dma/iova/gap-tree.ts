// A B-tree of disjoint pfn ranges that also indexes the free space between
// them: each range owns the gap just below it, and each internal node keeps,
// per child, the largest gap and the largest size-aligned fit in the child's
// subtree, so the highest gap that fits a request under any limit is found
// touching O(log_B n) nodes (strategy `augmented`, dma/iova/augmented.ts).
//
// Invariants:
//   - ranges [lo, hi] are disjoint and in order, leaves left to right; the
//     last is the anchor, above every pfn handed out, so every free pfn lies
//     in some range's gap;
//   - a range's gap is [gapLo, lo - 1], gapLo = max(floor, predecessor's
//     hi + 1) (floor for the first range); a leaf slot keeps its length
//     (0 if empty) and fit = alignedFit(gapLo, lo - 1);
//   - an internal slot keeps its child's key (the highest hi below it) and
//     the largest gap length and fit among the child's slots;
//   - every leaf is at the same depth; every node but the root holds
//     B/2 .. B slots, an internal root at least 2, so the tree is at most
//     1 + log_{B/2}(n / 2) high.
//
// Why one number describes a gap exactly for size-aligned requests: if `s`
// pfns fit at a multiple x of roundupPow2(s), any smaller s' fits at x too
// (roundupPow2(s') divides roundupPow2(s), and [x, x + s' - 1] lies inside).
// The sizes a gap takes aligned are therefore 1 .. fit, and a subtree holds a
// gap for `s` if and only if its maximum fit >= s. No gap is ever missed
// because it fits only at a lucky alignment, and the search never has to
// look twice.
//
// Layout: why a wide node. The cost of a search is its dependent far reads
// (up to ~330 ns each on the VMs we measure on). A binary tree of 300,000
// ranges makes some 50 of them an operation; this tree, B = 16 slots a node,
// is 5 levels high there, the top three of which stay in cache, and the
// lines of one node do not depend on each other, so they are fetched
// together. Leaves and internal nodes have one shape, four columns of B
// doubles (512 bytes, eight cache lines) in one Float64Array:
//
//            KEY          GAP              FIT              VAL
//   leaf:    hi           gap length       alignedFit(gap)  lo
//   inner:   child's hi   child's max gap  child's max fit  child's offset
//
// so a descent scans KEY alone, a search for a fit scans GAP or FIT alone,
// and one summary (last KEY, max GAP, max FIT) serves both kinds. A node is
// its offset in the array; its slot count lives in a small Int32Array
// beside it. Offsets are small integers kept as doubles, read back with
// `| 0` so the compiler indexes with int32 arithmetic. Erased nodes are
// reused: a steady state allocates nothing and the garbage collector never
// sees the tree.
//
// A full node first spills into a sibling with room and splits only when
// both are full, so leaves filled in address order (top-down allocation
// always inserts at a leaf's low end) end nearly full, not half: about 37
// bytes a range at 300,000, against 64 for a binary node.
//
// There are no parent links: every operation walks down from the root and
// keeps its path (the cursor), and splits, spills, merges and summary
// updates work up that path. Costs, h the height: a lookup reads h nodes;
// findFit at most 2h. An insert or erase shifts at most B slots in its leaf,
// and splits, spills or merges at most one node a level, each with one
// sibling; then it updates the summaries above it, stopping at the first
// that does not change. An erase that leaves its leaf half full only raises
// them: the successor's gap swallows the range, so no maximum can fall. An
// insert only splits a gap, so a maximum can only fall, and a node is
// rescanned only if the parent's summary shows the gap was its maximum.
// A range that goes in just below the first of a leaf goes at the end of
// the leaf before, if that holds fewer: where a range freed as the last of
// its leaf came from, so a freed range allocated again does not wander to
// the next leaf, shifting a full leaf and spilling it as it goes.

/** Slots a node holds (B): a power of two, so that a node's offset / STRIDE is a shift. */
export const NODE_SLOTS = 16;
const B = NODE_SLOTS;
const MIN_SLOTS = B / 2;
const KEY = 0;
const GAP = KEY + B;
const FIT = GAP + B;
const VAL = FIT + B;
const STRIDE = VAL + B;
const STRIDE_LOG2 = Math.log2(STRIDE);
/** Bytes a node takes, its count included: the footprint of the tree is nodes in use times this. */
export const NODE_BYTES = STRIDE * 8 + 4;
/** Deeper than any tree of 2^53 ranges can be: 1 + log8(2^53 / 2) < 20. */
const MAX_DEPTH = 20;
const NONE = -1;

/** 2^k and 2^-k for k = 0 .. 63: exact, and no Math.pow in the hot paths. */
const POW2 = new Float64Array(64);
const INV_POW2 = new Float64Array(64);
for (let k = 0; k < 64; k++) {
  POW2[k] = 2 ** k;
  INV_POW2[k] = 2 ** -k;
}
const TWO_32 = 4294967296;
const INV_TWO_32 = 1 / TWO_32;

/** floor(log2(n)) for an integer 1 <= n < 2^54, by clz32 on its two 32-bit halves. */
function log2Floor(n: number): number {
  // clz32 truncates its argument to 32 bits: n / 2^32 (exact) truncates to n's high half.
  return n < TWO_32 ? 31 - Math.clz32(n) : 63 - Math.clz32(n * INV_TWO_32);
}

/** alignedFit: the largest `s` that fits in [lo, hi] at a multiple of roundupPow2(s); 0 if the gap is empty. */
export function alignedFit(lo: number, hi: number): number {
  const len = hi - lo + 1;
  if (len <= 0) return 0;
  // An interval of len >= 2m - 1 pfns holds an aligned block of m, so the
  // largest aligned block is floorPow2(len) or half of it. Scaling by a power
  // of two is exact, so ceil(lo * 2^-k) * 2^k is alignUp(lo, 2^k) exactly.
  let k = log2Floor(len);
  if (Math.ceil(lo * INV_POW2[k]!) * POW2[k]! + POW2[k]! - 1 > hi) k--; // never below 0: a block of 1 always fits
  const block = POW2[k]!;
  // Sizes between block and 2 * block need 2 * block alignment: they fit
  // from the first such boundary in the gap up to its end (less than 2 * block).
  const tail = hi - Math.ceil(lo * INV_POW2[k + 1]!) * POW2[k + 1]! + 1;
  return tail > block ? tail : block;
}

/** Exact for powers of two and pfns below 2^53: division by a power of two loses nothing. */
export const alignDown = (pfn: number, align: number): number => (align === 1 ? pfn : Math.floor(pfn / align) * align);

export class GapTree {
  private f: Float64Array;
  /** Slots in use, by node offset / STRIDE: apart, so that a node is its four columns and no more. */
  private counts: Int32Array;
  /** Node offsets ever handed out end here. */
  private end = 0;
  /** Erased nodes, each linking the next by its first word. */
  private spare = NONE;
  private nodes = 0;
  private root: number;
  /** Levels, leaves included: leaves are level 0, the root is level height - 1. */
  private height = 1;
  /** Ranges, the anchor included. */
  size = 1;
  /** Nodes the last findFit looked at: at most twice the height, counted for tests. */
  lastVisited = 0;
  /** The cursor: the node and slot at each level on the path from the root to one range. */
  private readonly path = new Int32Array(MAX_DEPTH);
  private readonly slot = new Int32Array(MAX_DEPTH);

  /** `floor` is the lowest free pfn (start_pfn); the anchor is the one-pfn range `anchorPfn`. */
  constructor(
    readonly floor: number,
    private readonly anchorPfn: number,
    capacity = 16,
  ) {
    this.f = new Float64Array(capacity * STRIDE);
    this.counts = new Int32Array(capacity);
    const n = (this.root = this.newNode());
    this.setUsed(n, 1);
    this.f[n + KEY] = this.f[n + VAL] = anchorPfn;
    this.setGap(n, 0, floor);
  }

  /** Bytes of the nodes in use. */
  bytes(): number {
    return this.nodes * NODE_BYTES;
  }

  /** First pfn of the range at the cursor. */
  lo(): number {
    return this.f[this.path[0] + VAL + this.slot[0]];
  }

  /** Last pfn of the range at the cursor. */
  hi(): number {
    return this.f[this.path[0] + KEY + this.slot[0]];
  }

  /** Puts the cursor on the lowest range that ends at or above `pfn`: the anchor at worst. */
  seek(pfn: number): void {
    const key = Math.min(pfn, this.anchorPfn);
    let n = this.root;
    for (let level = this.height - 1; ; level--) {
      const i = this.slotFor(n, key);
      this.path[level] = n;
      this.slot[level] = i;
      if (level === 0) return;
      n = this.f[n + VAL + i] | 0;
    }
  }

  /** Whether a range other than the anchor holds `pfn`; if so the cursor is on it. */
  find(pfn: number): boolean {
    this.seek(pfn);
    return this.lo() <= pfn && pfn <= this.hi() && this.hi() !== this.anchorPfn;
  }

  /**
   * The highest multiple of `align` at or below `limit` where `size` pfns are
   * free, or -1; the cursor is left on the range above it. The walk to the
   * limit ends at the lowest range reaching above it, whose gap alone the
   * limit can cut: that one is checked by hand. Everything left of the path
   * lies below the limit, so the search goes back up the path, scanning the
   * slots left of it, nearest first, and descends into the first that fits
   * along the highest fitting slot of each node.
   */
  findFit(size: number, align: number, limit: number): number {
    this.seek(limit + 1);
    const f = this.f;
    const path = this.path;
    const slot = this.slot;
    let visited = this.height;
    let n = path[0];
    let i = slot[0];
    const pfn = alignDown(Math.min(f[n + VAL + i] - 1, limit) - size + 1, align);
    if (pfn >= this.gapLo(n, i)) {
      this.lastVisited = visited;
      return pfn;
    }
    const col = align > 1 ? FIT : GAP; // align 1: any pfn will do, so the gap's length decides
    for (let level = 0; level < this.height; level++) {
      n = path[level];
      for (i = slot[level] - 1; i >= 0 && f[n + col + i] < size; i--);
      if (i < 0) continue;
      slot[level] = i;
      while (level > 0) {
        n = f[n + VAL + i] | 0;
        i = this.highestFit(n, col, size);
        path[--level] = n;
        slot[level] = i;
        visited++;
      }
      this.lastVisited = visited;
      return alignDown(f[n + VAL + i] - size, align);
    }
    this.lastVisited = visited;
    return -1;
  }

  /** Inserts [lo, hi] just below the range at the cursor, carving it out of that range's gap. */
  insert(lo: number, hi: number): void {
    if (this.slot[0] === 0 && this.appendLeft(lo, hi)) return;
    this.makeRoom(0);
    const f = this.f; // after makeRoom: it may move the array
    const n = this.path[0];
    const i = this.slot[0];
    const gap = f[n + GAP + i];
    const fit = f[n + FIT + i];
    this.move(n, i, n, i + 1, this.used(n) - i);
    this.setUsed(n, this.used(n) + 1);
    f[n + KEY + i] = hi;
    f[n + VAL + i] = lo;
    this.setGap(n, i, this.gapLo(n, i + 1));
    this.setGap(n, i + 1, Math.max(this.floor, hi + 1));
    this.size++;
    this.lower(0, gap, fit);
  }

  /** Removes the range at the cursor (never the anchor) and gives its range and gap to its successor's gap. */
  erase(): void {
    const f = this.f;
    const n = this.path[0];
    const i = this.slot[0];
    const lo = f[n + VAL + i];
    const gapLo = this.gapLo(n, i);
    const count = this.used(n) - 1;
    this.move(n, i + 1, n, i, count - i);
    this.setUsed(n, count);
    this.size--;
    if (i < count) {
      this.setGap(n, i, gapLo);
      if (count >= MIN_SLOTS || this.height === 1) this.raise(f[n + GAP + i], f[n + FIT + i]);
      else this.rebalance(0);
    } else if (count >= MIN_SLOTS && this.slot[1] + 1 < this.used(this.path[1])) {
      // The successor opens the next leaf (so the tree has two levels at least: the anchor follows the
      // range), here a sibling. This leaf's key fell, so its summary is redone; above it, the successor's
      // gap swallowed the range's, so the maxima can only have grown.
      const p = this.path[1];
      const j = this.slot[1] + 1;
      const r = f[p + VAL + j] | 0;
      this.summarize(n, p, j - 1);
      this.path[0] = r;
      this.slot[0] = 0;
      this.slot[1] = j;
      this.setGap(r, 0, gapLo);
      this.raise(f[r + GAP], f[r + FIT]);
    } else {
      // The successor is further away: find it again, after any merge.
      this.rebalance(0);
      this.seek(lo);
      this.setGap(this.path[0], this.slot[0], gapLo);
      this.refresh(0);
    }
  }

  /** Checks every invariant above; for tests. */
  validate(): void {
    const f = this.f;
    let ranges = 0;
    let nodes = 0;
    let lastHi = -1;
    /** Checks the subtree at `n`, returns its summary: key, max gap, max fit. */
    const walk = (n: number, level: number): [number, number, number] => {
      const count = this.used(n);
      const min = n !== this.root ? MIN_SLOTS : level > 0 ? 2 : 1;
      if (!Number.isInteger(count) || count < min || count > B) throw new Error(`gap tree: ${count} slots at level ${level}`);
      nodes++;
      let [gap, fit] = [0, 0];
      for (let i = 0; i < count; i++) {
        const [key, g, ft] = [f[n + KEY + i], f[n + GAP + i], f[n + FIT + i]];
        if (level === 0) {
          const lo = f[n + VAL + i];
          if (lo > key || lo <= lastHi) throw new Error(`gap tree: range [${lo}, ${key}] out of order`);
          const gapLo = Math.max(this.floor, lastHi + 1);
          if (g !== Math.max(0, lo - gapLo) || ft !== alignedFit(gapLo, lo - 1)) throw new Error(`gap tree: gap below [${lo}, ${key}] is stale`);
          lastHi = key;
          ranges++;
        } else {
          const [k, cg, cf] = walk(f[n + VAL + i], level - 1);
          if (key !== k || g !== cg || ft !== cf) throw new Error(`gap tree: summary of child ${i} stale at level ${level}`);
        }
        gap = Math.max(gap, g);
        fit = Math.max(fit, ft);
      }
      return [f[n + KEY + count - 1], gap, fit];
    };
    walk(this.root, this.height - 1);
    if (lastHi !== this.anchorPfn) throw new Error('gap tree: the anchor is not last');
    if (ranges !== this.size) throw new Error(`gap tree: size ${this.size} but ${ranges} ranges`);
    if (nodes !== this.nodes) throw new Error(`gap tree: ${this.nodes} nodes in use but ${nodes} in the tree`);
  }

  /**
   * The first slot of `n` whose key is >= `key`. There is one, and the scan
   * needs no bound: the root's last key is the anchor's, and a child's last
   * key is the one its parent's slot holds, which the walk chose for being >= key.
   */
  private slotFor(n: number, key: number): number {
    const f = this.f;
    let k = n + KEY;
    while (f[k] < key) k++;
    return k - n - KEY;
  }

  /** The last slot of `n` whose column `col` is >= size; the parent's summary said there is one. */
  private highestFit(n: number, col: number, size: number): number {
    const f = this.f;
    let i = this.used(n) - 1;
    while (f[n + col + i] < size) {
      if (--i < 0) throw new Error('gap tree: summaries are stale'); // BUG_ON, not a walk into the next node
    }
    return i;
  }

  private used(n: number): number {
    return this.counts[n >> STRIDE_LOG2];
  }

  private setUsed(n: number, count: number): void {
    this.counts[n >> STRIDE_LOG2] = count;
  }

  private gapLo(n: number, i: number): number {
    // The length is kept clamped at 0: a range reserved below floor has an empty gap, and floor is its true start.
    return Math.max(this.floor, this.f[n + VAL + i] - this.f[n + GAP + i]);
  }

  private setGap(n: number, i: number, gapLo: number): void {
    const lo = this.f[n + VAL + i];
    this.f[n + GAP + i] = Math.max(0, lo - gapLo);
    this.f[n + FIT + i] = alignedFit(gapLo, lo - 1);
  }

  /** Writes the summary of `child` into slot `i` of `parent`; false if it was already there. */
  private summarize(child: number, parent: number, i: number): boolean {
    const f = this.f;
    const count = this.used(child);
    let gap = 0;
    let fit = 0;
    for (let k = 0; k < count; k++) {
      const g = f[child + GAP + k];
      const ft = f[child + FIT + k];
      if (g > gap) gap = g;
      if (ft > fit) fit = ft;
    }
    const key = f[child + KEY + count - 1];
    if (f[parent + KEY + i] === key && f[parent + GAP + i] === gap && f[parent + FIT + i] === fit) return false;
    f[parent + KEY + i] = key;
    f[parent + GAP + i] = gap;
    f[parent + FIT + i] = fit;
    return true;
  }

  /** Brings the summaries on the cursor's path up to date from `level`, up to the first that is. */
  private refresh(level: number): void {
    for (; level < this.height - 1; level++) {
      if (!this.summarize(this.path[level], this.path[level + 1], this.slot[level + 1])) return;
    }
  }

  /**
   * A gap of (gap, fit) below the node on the path at `level` was split in
   * two: its maxima can only have fallen, and only if that gap held one of
   * them, which the parent's summary tells without a scan. Rescans only
   * then, and goes on up while the summary changes; the key is unchanged.
   */
  private lower(level: number, gap: number, fit: number): void {
    const f = this.f;
    for (; level < this.height - 1; level++) {
      const p = this.path[level + 1];
      const j = this.slot[level + 1];
      const maxGap = f[p + GAP + j];
      const maxFit = f[p + FIT + j];
      if (gap < maxGap && fit < maxFit) return;
      if (!this.summarize(this.path[level], p, j)) return;
      gap = maxGap;
      fit = maxFit;
    }
  }

  /**
   * The leaf on the path holds a gap that swallowed an erased range and its
   * gap: its maxima can only have grown, to (gap, fit), and its key is
   * unchanged. Raises the summaries above to
   * them, without rescanning a node, up to the first that is already as high.
   */
  private raise(gap: number, fit: number): void {
    const f = this.f;
    for (let level = 1; level < this.height; level++) {
      const p = this.path[level];
      const j = this.slot[level];
      if (f[p + GAP + j] >= gap && f[p + FIT + j] >= fit) return;
      if (gap > f[p + GAP + j]) f[p + GAP + j] = gap;
      if (fit > f[p + FIT + j]) f[p + FIT + j] = fit;
    }
  }

  /**
   * The range at the cursor opens its leaf: [lo, hi] goes at the end of the
   * leaf before instead, if that holds fewer ranges; false if not, or if
   * there is none. That is where a range freed as the last of its leaf came
   * from: without this, a range freed and allocated again would move to the
   * next leaf, and a ring sweeping down the space would carry whole leaves
   * over one range at a time, each insert shifting a full leaf and every few
   * spilling it. Taking the emptier leaf keeps ranges from drifting the
   * other way. The cursor stays on the range above.
   */
  private appendLeft(lo: number, hi: number): boolean {
    const f = this.f;
    // The leaf before is the last one under the slot left of the path at the lowest level that has one.
    let m = 1;
    while (m < this.height && this.slot[m] === 0) m++;
    if (m === this.height) return false;
    let a = f[this.path[m] + VAL + this.slot[m] - 1] | 0;
    for (let level = m - 1; level > 0; level--) a = f[a + VAL + this.used(a) - 1] | 0;
    const r = this.path[0];
    const k = this.used(a);
    if (k >= this.used(r)) return false;
    const gap = f[r + GAP];
    const fit = f[r + FIT];
    f[a + KEY + k] = hi;
    f[a + VAL + k] = lo;
    this.setUsed(a, k + 1);
    this.setGap(a, k, this.gapLo(r, 0));
    this.setGap(r, 0, Math.max(this.floor, hi + 1));
    this.size++;
    // Down from level m, a is the last leaf under each slot on its way: each takes a's new key, and
    // maxima that can only have grown. Above level m, the gap was only split, as in an insert into one leaf.
    const newGap = f[a + GAP + k];
    const newFit = f[a + FIT + k];
    let n = this.path[m];
    let i = this.slot[m] - 1;
    for (let level = m; level > 0; level--) {
      f[n + KEY + i] = hi;
      if (newGap > f[n + GAP + i]) f[n + GAP + i] = newGap;
      if (newFit > f[n + FIT + i]) f[n + FIT + i] = newFit;
      n = f[n + VAL + i] | 0;
      i = this.used(n) - 1;
    }
    this.lower(0, gap, fit);
    return true;
  }

  /**
   * Makes the node on the path at `level` non-full: spills slots into a
   * sibling with room, or else splits it (and, first, full nodes above it).
   */
  private makeRoom(level: number): void {
    if (this.used(this.path[level]) < B) return;
    if (level === this.height - 1) this.newRoot();
    else if (this.spill(level)) return;
    else this.makeRoom(level + 1);
    this.split(level);
  }

  /**
   * Moves half the room of the emptier sibling of the full node at `level`
   * into it; false if neither has two free slots. Without this, ranges
   * allocated top down, always inserted at the low end of a leaf, would leave
   * every leaf half full; with it they end nearly full. The cursor follows
   * its slot.
   */
  private spill(level: number): boolean {
    const f = this.f;
    const n = this.path[level];
    const p = this.path[level + 1];
    const j = this.slot[level + 1];
    const cl = j > 0 ? this.used(f[p + VAL + j - 1] | 0) : B;
    const cr = j + 1 < this.used(p) ? this.used(f[p + VAL + j + 1] | 0) : B;
    if (Math.min(cl, cr) > B - 2) return false;
    if (cl <= cr) {
      const a = f[p + VAL + j - 1] | 0;
      const k = (B - cl) >> 1;
      this.move(n, 0, a, cl, k);
      this.move(n, k, n, 0, B - k);
      this.setUsed(a, cl + k);
      this.setUsed(n, B - k);
      this.summarize(a, p, j - 1);
      this.summarize(n, p, j);
      if (this.slot[level] < k) {
        this.path[level] = a;
        this.slot[level] += cl;
        this.slot[level + 1] = j - 1;
      } else {
        this.slot[level] -= k;
      }
    } else {
      const b = f[p + VAL + j + 1] | 0;
      const k = (B - cr) >> 1;
      this.move(b, 0, b, k, cr);
      this.move(n, B - k, b, 0, k);
      this.setUsed(b, cr + k);
      this.setUsed(n, B - k);
      this.summarize(n, p, j);
      this.summarize(b, p, j + 1);
      if (this.slot[level] >= B - k) {
        this.path[level] = b;
        this.slot[level] -= B - k;
        this.slot[level + 1] = j + 1;
      }
    }
    return true;
  }

  /** A root above the old one, with it as its only child: the tree grows by a level. */
  private newRoot(): void {
    const r = this.newNode();
    this.setUsed(r, 1);
    this.f[r + VAL] = this.root;
    this.summarize(this.root, r, 0);
    this.path[this.height] = this.root = r;
    this.slot[this.height] = 0;
    this.height++;
  }

  /** Moves the upper half of the full node at `level` to a new right sibling; the cursor follows its slot. */
  private split(level: number): void {
    const m = this.newNode();
    const f = this.f;
    const n = this.path[level];
    const p = this.path[level + 1];
    const j = this.slot[level + 1];
    const half = B / 2;
    this.move(n, half, m, 0, B - half);
    this.setUsed(n, half);
    this.setUsed(m, B - half);
    this.move(p, j + 1, p, j + 2, this.used(p) - j - 1);
    this.setUsed(p, this.used(p) + 1);
    f[p + VAL + j + 1] = m;
    this.summarize(n, p, j);
    this.summarize(m, p, j + 1);
    if (this.slot[level] >= half) {
      this.path[level] = m;
      this.slot[level] -= half;
      this.slot[level + 1] = j + 1;
    }
  }

  /**
   * After a slot left the node on the path at `level`: if it is below half
   * full, merges it with a sibling or evens the two out, and goes on up; an
   * internal root left with one child gives way to it.
   */
  private rebalance(level: number): void {
    const f = this.f;
    const n = this.path[level];
    if (level === this.height - 1) {
      if (level > 0 && this.used(n) === 1) {
        this.root = f[n + VAL] | 0;
        this.height--;
        this.freeNode(n);
      }
      return;
    }
    if (this.used(n) >= MIN_SLOTS) return this.refresh(level);
    const p = this.path[level + 1];
    const j = this.slot[level + 1] > 0 ? this.slot[level + 1] - 1 : 0; // n and its sibling are slots j and j + 1
    const a = f[p + VAL + j] | 0;
    const b = f[p + VAL + j + 1] | 0;
    const ca = this.used(a);
    const cb = this.used(b);
    if (ca + cb <= B) {
      this.move(b, 0, a, ca, cb);
      this.setUsed(a, ca + cb);
      this.freeNode(b);
      this.move(p, j + 2, p, j + 1, this.used(p) - j - 2);
      this.setUsed(p, this.used(p) - 1);
      this.summarize(a, p, j);
      this.rebalance(level + 1);
    } else {
      const keep = (ca + cb) >> 1; // both end with at least B/2: ca + cb > B
      if (ca > keep) {
        this.move(b, 0, b, ca - keep, cb);
        this.move(a, keep, b, 0, ca - keep);
      } else {
        this.move(b, 0, a, ca, keep - ca);
        this.move(b, keep - ca, b, 0, cb - (keep - ca));
      }
      this.setUsed(a, keep);
      this.setUsed(b, ca + cb - keep);
      this.summarize(a, p, j);
      this.summarize(b, p, j + 1);
      this.refresh(level + 1);
    }
  }

  /**
   * Copies `k` slots, all four columns, from slot `si` of `src` to slot `di`
   * of `dst`; overlaps are fine. One pass over the slots rather than one a
   * column: each pass ends in a mispredicted branch, for k of half a node.
   */
  private move(src: number, si: number, dst: number, di: number, k: number): void {
    const f = this.f;
    const s = src + si;
    const d = dst + di;
    if (d > s) {
      for (let x = k - 1; x >= 0; x--) {
        f[d + KEY + x] = f[s + KEY + x];
        f[d + GAP + x] = f[s + GAP + x];
        f[d + FIT + x] = f[s + FIT + x];
        f[d + VAL + x] = f[s + VAL + x];
      }
    } else {
      for (let x = 0; x < k; x++) {
        f[d + KEY + x] = f[s + KEY + x];
        f[d + GAP + x] = f[s + GAP + x];
        f[d + FIT + x] = f[s + FIT + x];
        f[d + VAL + x] = f[s + VAL + x];
      }
    }
  }

  private newNode(): number {
    this.nodes++;
    let n = this.spare;
    if (n !== NONE) {
      this.spare = this.f[n] | 0;
      return n;
    }
    if (this.end === this.f.length) this.grow();
    n = this.end;
    this.end += STRIDE;
    return n;
  }

  private freeNode(n: number): void {
    this.nodes--;
    this.f[n] = this.spare; // an erased node's first word links the next
    this.spare = n;
  }

  /** Doubles the node array; amortised O(1) a node, never once the tree stops growing. */
  private grow(): void {
    const f = new Float64Array(this.f.length * 2);
    f.set(this.f);
    this.f = f;
    const counts = new Int32Array(this.counts.length * 2);
    counts.set(this.counts);
    this.counts = counts;
  }
}
