/** Signal numbers to names, as Node names them. */
import { constants } from "node:os";

/** The name of signal number `n` (undefined for a number Node does not know). */
export function signalName(n: number): NodeJS.Signals | undefined {
  return Object.entries(constants.signals).find(([, v]) => v === n)?.[0] as
    | NodeJS.Signals
    | undefined;
}
