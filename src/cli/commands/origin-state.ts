import type { LinkStatus } from "../../origin/index.js";
import { formatMs } from "../units.js";

/** `connected`, `reconnecting (attempt 3, next in 1.6 s)`, `unreachable since 10:02:03 (...)`. */
export function originStateText(state: string, link: LinkStatus | null | undefined): string {
  if (state === "released") return "not needed";
  if (!link || (state !== "reconnecting" && state !== "unreachable")) return state;
  const next =
    link.nextAttemptInMs === null ? "trying" : `next in ${formatMs(link.nextAttemptInMs)}`;
  const tries = `attempt ${link.attempt + 1}, ${next}`;
  if (state === "reconnecting") return `reconnecting (${tries})`;
  const since =
    link.sinceMs === null ? "" : ` since ${new Date(link.sinceMs).toISOString().slice(11, 19)}`;
  return `unreachable${since} (${tries})`;
}
