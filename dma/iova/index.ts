// The IOVA allocation strategies a guest can pick with `iova=<name>`, each in
// its own file behind the IovaDomain interface (dma/iova.ts).
import type { IovaDomain, IovaDomainParams } from '../iova.ts';
import { AugmentedIovaDomain } from './augmented.ts';
import { BitmapIovaDomain } from './bitmap.ts';
import { BuddyIovaDomain } from './buddy.ts';
import { EiovarIovaDomain } from './eiovar.ts';
import { IdentityIovaDomain } from './identity.ts';
import { LinuxIovaDomain } from './linux.ts';
import { VmemIovaDomain } from './vmem.ts';

export type IovaStrategy = (params: IovaDomainParams) => IovaDomain;

/** What dma-iommu uses unless told otherwise: Linux's tree with its rcache, as Linux has it. */
export const DEFAULT_IOVA_STRATEGY = 'linux-rcache';

export const IOVA_STRATEGIES: Readonly<Record<string, IovaStrategy>> = {
  linux: (p) => new LinuxIovaDomain(p, false),
  'linux-rcache': (p) => new LinuxIovaDomain(p, true),
  augmented: (p) => new AugmentedIovaDomain(p),
  bitmap: (p) => new BitmapIovaDomain(p),
  buddy: (p) => new BuddyIovaDomain(p),
  vmem: (p) => new VmemIovaDomain(p),
  eiovar: (p) => new EiovarIovaDomain(p),
  identity: (p) => new IdentityIovaDomain(p),
};
