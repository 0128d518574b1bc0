// A user's mistake (bad scenario field, bad CLI argument): reported as one
// line naming the field and the problem, with a non-zero exit, never a stack.
import { readFileSync } from 'node:fs';

export class UsageError extends Error {
  constructor(
    readonly field: string,
    problem: string,
  ) {
    super(`${field}: ${problem}`);
  }
}

/** Reads a file the user named; a missing or unreadable one is a UsageError naming it. */
export function readUserFile(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new UsageError(path, `cannot read: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
}
