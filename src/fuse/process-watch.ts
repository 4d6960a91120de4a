/**
 * Watching a server process from /proc (supervisor.ts): how it ended, and whether its main
 * thread has exited while another thread of it still waits (a zombie main thread).
 */
import fs from "node:fs";
import { signalName } from "../common/signals.js";

export function exitText(code: number | null, signal: NodeJS.Signals | null): string {
  if (signal) return `killed by ${signal}`;
  // A server that is not our child and was reaped by another: how it ended is not known.
  return code === null ? "exited" : `exit code ${code}`;
}

/** How often a server's main thread is checked for having exited alone (see `track`). */
export const ZOMBIE_CHECK_MS = 250;

/**
 * Process `pid`'s main thread, from /proc: its state letter and, once it has exited, how
 * (stat's exit_code field, as waitpid reports it). Undefined when the process is gone.
 */
export function mainThread(
  pid: number,
): { state: string; code: number | null; signal: NodeJS.Signals | null } | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // Fields after the command name (which may hold spaces and parentheses): state is field 3.
  const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const status = Number(f[52 - 3] ?? 0);
  const sig = status & 0x7f;
  const signal = sig ? (signalName(sig) ?? null) : null;
  return { state: f[0] ?? "", code: sig ? null : (status >> 8) & 0xff, signal };
}
