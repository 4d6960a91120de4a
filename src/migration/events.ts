/**
 * A migration's life as events, appended as JSON lines to `events.jsonl` in its state
 * directory: `{"t": <ms since epoch>, "type": "...", ...fields}`. Anything that runs a
 * migration (migrate, the daemon, a supervisor that restarts it, integrity checks, detach)
 * records with `recordEvent(stateDir, type, fields)`; `lazyfs status ID --events` shows them.
 *
 * Recording never fails the caller: an unwritable state directory is logged and skipped.
 * Lines are appended with one write each (O_APPEND), so writers in several processes do not
 * interleave within a line.
 */
import { appendFileSync } from "node:fs";
import { join } from "node:path";
import { errorMessage } from "../common/errors.js";
import { completeLines } from "../common/jsonl.js";
import { logger } from "../common/log.js";

const log = logger("events");

export const EVENTS_FILE = "events.jsonl";

/** Types LazyFS records; other writers may add their own. */
export type EventType =
  | "dump"
  | "image-transfer"
  | "restore"
  | "migrate-failed"
  | "daemon-start"
  | "first-origin-fetch"
  | "independent"
  | "origin-released"
  | "failover-restart"
  | "refused-file"
  | "unmount"
  | "detach"
  | (string & {});

export type EventFields = Record<string, string | number | boolean | null | undefined>;

export interface MigrationEvent {
  /** When it happened, ms since the epoch. */
  t: number;
  type: EventType;
  [field: string]: unknown;
}

/**
 * Appends one event to `<stateDir>/events.jsonl`. `fields.t` (ms since the epoch) sets when it
 * happened if that was earlier than now (e.g. the start of a dump recorded at its end).
 */
export function recordEvent(stateDir: string, type: EventType, fields: EventFields = {}): void {
  const { t, ...rest } = fields;
  const event = { t: typeof t === "number" ? t : Date.now(), type, ...rest };
  try {
    appendFileSync(join(stateDir, EVENTS_FILE), `${JSON.stringify(event)}\n`, { mode: 0o600 });
  } catch (err) {
    log.warn("cannot record event", { stateDir, type, error: errorMessage(err) });
  }
}

/** The events of a state directory in time order (a torn last line is skipped). */
export async function readEvents(stateDir: string): Promise<MigrationEvent[]> {
  const file = join(stateDir, EVENTS_FILE);
  const text = await completeLines(file);
  const events: MigrationEvent[] = [];
  for (const [i, line] of text.split("\n").entries()) {
    if (line.trim() === "") continue;
    try {
      const e = JSON.parse(line) as MigrationEvent;
      if (typeof e.t === "number" && typeof e.type === "string") events.push(e);
    } catch {
      log.warn("skipping a malformed event line", { file, line: i + 1 });
    }
  }
  // Stable: events with equal times keep the order they were written in.
  return events.sort((a, b) => a.t - b.t);
}
