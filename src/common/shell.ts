/** Building POSIX shell command lines (run on remote hosts over SSH). */

/** Quotes one word for a POSIX shell. */
export function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
