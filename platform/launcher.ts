// The launcher boots a guest image the way QEMU boots -kernel: it loads the
// image by path (never a static import across the seam) and enters it with
// the machine's boot protocol. The guest runs to power-off on this thread.
import { pathToFileURL } from 'node:url';
import type { GuestEntry, GuestExit } from '../abi/boot.ts';
import type { Workload } from '../abi/workload.ts';
import type { Machine } from './machine.ts';

export async function loadGuestImage(path: string): Promise<GuestEntry> {
  const mod = (await import(pathToFileURL(path).href)) as { boot?: unknown };
  if (typeof mod.boot !== 'function') throw new Error(`${path}: not a guest image (it exports no boot entry)`);
  return mod.boot as GuestEntry;
}

export function bootGuest(machine: Machine, entry: GuestEntry, cmdline: string, workload: Workload): GuestExit {
  machine.trace.emit('machine_boot', { preset: machine.preset.name, cmdline });
  const exit = entry(machine.bootProtocol(cmdline, workload));
  machine.trace.emit('machine_poweroff', { status: exit.status });
  return exit;
}
