/**
 * Per-origin figures of a migration for `status` and metrics: the origin host (bytes,
 * requests, errors, reconnects, connection state) and the other sources bytes came from
 * (the scrub generator, the target's own copies of `local` files).
 */
import type { SourceCounters } from "../fetch/index.js";
import type { OriginHealthFigures } from "../origin/index.js";

export interface OriginFigures {
  /** `user@host:port`, `scrub:zeros`, `local:/`. */
  name: string;
  kind: SourceCounters["kind"];
  bytes: number;
  requests: number;
  /** Failed requests (each attempt) and connections made after the first: the origin host only. */
  errors: number;
  reconnects: number;
  /** connected, connecting, disconnected, unreachable, released, idle; `local` for the others. */
  state: string;
  lastAccessMs: number | null;
  lastError: string | null;
}

export function originFigures(
  sources: Record<string, SourceCounters>,
  main: { name: string; health: OriginHealthFigures; state: string },
): OriginFigures[] {
  const h = main.health;
  const m = sources[main.name];
  const out: OriginFigures[] = [
    {
      name: main.name,
      kind: "origin",
      bytes: m?.bytes ?? 0,
      requests: m?.requests ?? 0,
      errors: h.errors,
      reconnects: h.reconnects,
      // The daemon's verdict (released, unreachable) outranks the connection's own state.
      state: main.state === "connected" ? h.state : main.state,
      lastAccessMs: m?.lastAccessMs ?? null,
      lastError: h.lastError,
    },
  ];
  for (const s of Object.values(sources)) {
    if (s.name === main.name) continue;
    out.push({
      name: s.name,
      kind: s.kind,
      bytes: s.bytes,
      requests: s.requests,
      errors: 0,
      reconnects: 0,
      state: "local",
      lastAccessMs: s.lastAccessMs,
      lastError: null,
    });
  }
  return out;
}
