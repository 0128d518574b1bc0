// Model-based test of the virtio-iommu under the `spec` profile: random ATTACH,
// DETACH, MAP, UNMAP and DMA sequences sent through the real request queue,
// checked step by step against a plain reference model of §5.13.6, statuses,
// domains, mappings and what every endpoint can reach (DMA isolation).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { VIRTIO_IOMMU_ATTACH_F_BYPASS, VIRTIO_IOMMU_MAP_F, VIRTIO_IOMMU_S as S } from '../../abi/virtio-iommu.ts';
import { DMA_READ, DMA_WRITE } from '../../platform/address-space.ts';
import { IommuBench } from './iommu-harness.ts';

const PAGE = 0x1000;
const ENDPOINTS = [8, 16, 24];
const GPA = 0x10_0000;

interface ModelMapping {
  start: number;
  end: number;
  phys: number;
  flags: number;
}
interface ModelDomain {
  bypass: boolean;
  eps: Set<number>;
  maps: ModelMapping[];
}

/** §5.13.6 as plainly as it can be written. */
class Model {
  readonly domains = new Map<number, ModelDomain>();
  readonly attachedTo = new Map<number, number>();

  attach(d: number, ep: number, bypass: boolean): number {
    if (!ENDPOINTS.includes(ep)) return S.NOENT;
    const dom = this.domains.get(d);
    if (dom && dom.bypass !== bypass) return S.INVAL;
    if (this.attachedTo.get(ep) === d) return S.OK;
    if (this.attachedTo.has(ep)) this.leave(ep);
    const to = this.domains.get(d) ?? { bypass, eps: new Set<number>(), maps: [] };
    this.domains.set(d, to);
    to.eps.add(ep);
    this.attachedTo.set(ep, d);
    return S.OK;
  }

  detach(d: number, ep: number): number {
    if (!ENDPOINTS.includes(ep)) return S.NOENT;
    if (this.attachedTo.get(ep) !== d) return S.INVAL;
    this.leave(ep);
    return S.OK;
  }

  map(d: number, start: number, end: number, phys: number, flags: number): number {
    const dom = this.domains.get(d);
    if (!dom) return S.NOENT;
    if (dom.bypass || end <= start) return S.INVAL;
    if (start % PAGE || phys % PAGE || (end + 1) % PAGE) return S.RANGE;
    if (dom.maps.some((m) => m.start <= end && m.end >= start)) return S.INVAL;
    dom.maps.push({ start, end, phys, flags });
    return S.OK;
  }

  unmap(d: number, start: number, end: number): number {
    const dom = this.domains.get(d);
    if (!dom) return S.NOENT;
    if (dom.bypass || end < start) return S.INVAL;
    const hit = dom.maps.filter((m) => m.start <= end && m.end >= start);
    if (hit.some((m) => m.start < start || m.end > end)) return S.RANGE;
    dom.maps = dom.maps.filter((m) => !hit.includes(m));
    return S.OK;
  }

  /** Where an endpoint's access lands, or -1. */
  reach(ep: number, addr: number, write: boolean): number {
    const d = this.attachedTo.get(ep);
    if (d === undefined) return -1;
    const dom = this.domains.get(d)!;
    if (dom.bypass) return addr;
    const m = dom.maps.find((x) => x.start <= addr && addr <= x.end);
    if (!m || !(m.flags & (write ? VIRTIO_IOMMU_MAP_F.WRITE : VIRTIO_IOMMU_MAP_F.READ))) return -1;
    return m.phys + addr - m.start;
  }

  private leave(ep: number): void {
    const d = this.attachedTo.get(ep)!;
    const dom = this.domains.get(d)!;
    dom.eps.delete(ep);
    this.attachedTo.delete(ep);
    if (dom.eps.size === 0) this.domains.delete(d);
  }
}

// A small world, so that commands meet: two domains, eight pages, the odd unknown endpoint.
const endpoint = fc.constantFrom(...ENDPOINTS, ...ENDPOINTS, 99);
const domain = fc.integer({ min: 1, max: 2 });
/** Page-aligned most of the time, half a page off now and then. */
const addr = fc.tuple(fc.integer({ min: 0, max: 7 }), fc.constantFrom(0, 0, 0, 0, 0x800)).map(([p, off]) => p * PAGE + off);
const command = fc.oneof(
  { arbitrary: fc.record({ op: fc.constant('attach' as const), domain, endpoint, bypass: fc.constantFrom(false, false, false, true) }), weight: 2 },
  { arbitrary: fc.record({ op: fc.constant('detach' as const), domain, endpoint }), weight: 1 },
  { arbitrary: fc.record({ op: fc.constant('map' as const), domain, start: addr, pages: fc.integer({ min: 0, max: 3 }), flags: fc.integer({ min: 1, max: 3 }) }), weight: 4 },
  { arbitrary: fc.record({ op: fc.constant('unmap' as const), domain, start: addr, pages: fc.integer({ min: 0, max: 6 }) }), weight: 2 },
  { arbitrary: fc.record({ op: fc.constant('dma' as const), endpoint: fc.constantFrom(...ENDPOINTS), at: addr, write: fc.boolean() }), weight: 4 },
);

describe('virtio-iommu against a reference model of §5.13.6', () => {
  it('agrees on every status, every domain and mapping, and every DMA', () => {
    fc.assert(
      fc.property(fc.array(command, { minLength: 1, maxLength: 60 }), (cmds) => {
        const b = new IommuBench({ bootBypass: false }, { endpoints: ENDPOINTS, eventBuffers: 0 });
        const m = new Model();
        for (const c of cmds) {
          switch (c.op) {
            case 'attach':
              expect(b.attach(c.domain, c.endpoint, c.bypass ? VIRTIO_IOMMU_ATTACH_F_BYPASS : 0).status).toBe(m.attach(c.domain, c.endpoint, c.bypass));
              break;
            case 'detach':
              expect(b.detach(c.domain, c.endpoint).status).toBe(m.detach(c.domain, c.endpoint));
              break;
            case 'map': {
              // pages 0 with the half-page offsets gives virt_end <= virt_start and unaligned ends too.
              const end = Math.max(0, c.start + c.pages * PAGE - 1);
              const phys = GPA + (c.start & ~(PAGE - 1)) * 2;
              expect(b.map(c.domain, c.start, end, phys, c.flags).status).toBe(m.map(c.domain, c.start, end, phys, c.flags));
              break;
            }
            case 'unmap': {
              const end = Math.max(0, c.start + c.pages * PAGE - 1);
              expect(b.unmap(c.domain, c.start, end).status).toBe(m.unmap(c.domain, c.start, end));
              break;
            }
            case 'dma': {
              const gpa = b.dev.state.translate(b.dev.state.endpoints.get(c.endpoint)!, c.at, 1, c.write ? DMA_WRITE : DMA_READ);
              expect(gpa).toBe(m.reach(c.endpoint, c.at, c.write));
            }
          }
        }
        const device = [...b.dev.state.domains.values()].map((d) => ({ id: d.id, bypass: d.bypass, eps: d.endpoints.map((e) => e.id).sort(), maps: [...d.mappings].map((i) => [i.value.virtStart, i.value.virtEnd, i.value.physStart, i.value.flags]) }));
        const model = [...m.domains.entries()].map(([id, d]) => ({ id, bypass: d.bypass, eps: [...d.eps].sort(), maps: [...d.maps].sort((x, y) => x.start - y.start).map((x) => [x.start, x.end, x.phys, x.flags]) }));
        expect(device.sort((x, y) => x.id - y.id)).toEqual(model.sort((x, y) => x.id - y.id));
      }),
      { numRuns: 300 },
    );
  });
});
