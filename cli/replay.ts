// `ivory replay <file> [--profile NAME] [--json]`: sends the raw virtio-iommu
// requests of a JSON file, or of a QEMU `-trace 'virtio_iommu_*'` log, to a
// device model and prints each request's status, then the final domains.
import { ReplayInputError, parseQemuTrace, parseReplayJson, replay, type ReplayInput, type ReplayResult } from '../platform/iommu/replay.ts';
import { PROFILE_NAMES, isProfileName, type ProfileName } from '../platform/iommu/profiles.ts';
import { UsageError, readUserFile } from './errors.ts';

interface ReplayArgs {
  file: string;
  profile: ProfileName | undefined;
  json: boolean;
}

export function parseReplayArgs(args: readonly string[]): ReplayArgs {
  let file: string | undefined;
  let profile: ProfileName | undefined;
  let json = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--json') json = true;
    else if (a === '--profile') {
      const p = args[++i];
      if (!p || !isProfileName(p)) throw new UsageError('--profile', `expected one of ${PROFILE_NAMES.join(', ')}, got ${JSON.stringify(p ?? '')}`);
      profile = p;
    } else if (a.startsWith('-')) throw new UsageError(a, 'unknown option (see ivory help)');
    else if (file === undefined) file = a;
    else throw new UsageError(a, 'unexpected argument: replay takes one file');
  }
  if (file === undefined) throw new UsageError('replay', 'needs a file: a JSON request list or a QEMU trace log');
  return { file, profile, json };
}

/** JSON when the file is a JSON object, a QEMU trace log otherwise. */
export function loadReplayInput(file: string): ReplayInput {
  const text = readUserFile(file);
  try {
    return text.trimStart().startsWith('{') ? parseReplayJson(text) : parseQemuTrace(text);
  } catch (e) {
    if (e instanceof ReplayInputError) throw new UsageError(`${file}: ${e.field}`, e.problem);
    throw e;
  }
}

export function formatReplay(r: ReplayResult): string {
  const out = [`virtio-iommu replay, profile ${r.profile}: ${r.results.length} requests`];
  for (const x of r.results) {
    const fields = Object.entries(x.fields)
      .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join('|') || '-' : v}`)
      .join(' ');
    out.push(`  ${String(x.index).padStart(4)}  ${x.type.padEnd(6)} ${fields}  -> ${x.status}${x.line !== undefined ? `  (line ${x.line})` : ''}`);
  }
  const byStatus = new Map<string, number>();
  for (const x of r.results) byStatus.set(x.status, (byStatus.get(x.status) ?? 0) + 1);
  out.push(`summary: ${[...byStatus].map(([s, n]) => `${n} ${s}`).join(', ') || 'no requests'}`);
  for (const d of r.final.domains) {
    out.push(`domain ${d.id}${d.bypass ? ' (bypass)' : ''}: endpoints ${d.endpoints.join(', ') || '-'}; ${d.mappings.length} mapping(s)`);
    for (const m of d.mappings) out.push(`  ${m.virt_start}-${m.virt_end} -> ${m.phys_start} [${m.flags.join('|')}]`);
  }
  return out.join('\n');
}

export function runReplay(args: readonly string[]): number {
  const a = parseReplayArgs(args);
  const input = loadReplayInput(a.file);
  const result = replay(input, a.profile ? { profile: a.profile } : {});
  console.log(
    a.json
      ? JSON.stringify({ profile: result.profile, results: result.results.map((x) => ({ index: x.index, type: x.type, status: x.status })), final: result.final }, null, 2)
      : formatReplay(result),
  );
  return 0;
}
