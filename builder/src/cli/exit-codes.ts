/** Exit codes of the `geminik8s` CLI; scripts and CI branch on these. */
export const EXIT = {
  ok: 0,
  /** A build or operation step failed (tool error, download failed, disk full). */
  failed: 1,
  /** Bad input: usage, profile/hardware/site file invalid or missing. Nothing was written. */
  invalidInput: 2,
  /** A prerequisite is missing on this host (a Debian package, root). */
  missingPrerequisite: 3,
  /** Interrupted by a signal; the next run resumes from the cache. */
  interrupted: 130,
} as const;

/** An error the CLI reports as one clear message with a specific exit code (no stack trace). */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
    this.name = 'CliError';
  }
}
