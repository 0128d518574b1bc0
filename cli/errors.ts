// A user's mistake (bad scenario field, bad CLI argument): reported as one
// line naming the field and the problem, with a non-zero exit, never a stack.
export class UsageError extends Error {
  constructor(
    readonly field: string,
    problem: string,
  ) {
    super(`${field}: ${problem}`);
  }
}
