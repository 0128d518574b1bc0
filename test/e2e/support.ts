// Boots scenarios in-process from the guest's source entry, loaded by path as
// the launcher loads a built image.
import { fileURLToPath } from 'node:url';
import { runScenario, type RunResult } from '../../cli/run.ts';
import { parseScenario } from '../../cli/scenario.ts';

export const GUEST_SOURCE = fileURLToPath(new URL('../../kernel/main.ts', import.meta.url));
export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export function run(doc: unknown): Promise<RunResult> {
  return runScenario(parseScenario(doc), GUEST_SOURCE);
}

export const blkAndRng = (blk: object = {}, rng: object = {}, extra: object = {}) => ({
  devices: [
    { type: 'virtio-blk', transport: 'pci', ...blk },
    { type: 'virtio-rng', transport: 'mmio', ...rng },
  ],
  workload: { seed: 7, disk: { bytes: '256K', request_bytes: '16K', queue_depth: 4 }, entropy: { bytes: 1024, request_bytes: 256 } },
  ...extra,
});
