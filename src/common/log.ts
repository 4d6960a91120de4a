/**
 * Structured, levelled logging to stderr: one JSON object per line when LAZYFS_LOG_FORMAT=json,
 * otherwise `level scope: message key=value`. Level from LAZYFS_LOG (error|warn|info|debug),
 * default warn so that command output on stdout stays clean.
 *
 * Logging never kills the process: a daemon's stderr is a file on the disk its cache may
 * fill, and Node ends a process whose stderr stream fails (ENOSPC). Lines that cannot be
 * written to such a file are held (up to HELD_MAX, then counted) and written before the next
 * line that can be.
 */
import { fstatSync, writeSync } from "node:fs";
import { printable } from "./printable.js";

const HELD_MAX = 1000;

let stderrIsFile: boolean | undefined;
/** Lines (bytes) not written yet, oldest first; the first may be the rest of a short write. */
const held: Buffer[] = [];
let dropped = 0;

function writeLine(line: string): void {
  stderrIsFile ??= (() => {
    try {
      return fstatSync(2).isFile();
    } catch {
      return false;
    }
  })();
  if (!stderrIsFile) {
    // A pipe or terminal: the stream (asynchronous on pipes); a reader gone is no reason to die.
    if (process.stderr.listenerCount("error") === 0) process.stderr.on("error", () => {});
    process.stderr.write(line);
    return;
  }
  held.push(Buffer.from(line));
  try {
    if (dropped > 0) {
      // After the first held line, which may be partly written already.
      const notice = `warn log: ${dropped} lines dropped while the log could not be written\n`;
      held.splice(1, 0, Buffer.from(notice));
      dropped = 0;
    }
    while (held.length > 0) {
      const b = held[0]!;
      const n = writeSync(2, b);
      if (n < b.length) held[0] = b.subarray(n);
      else held.shift();
    }
  } catch {
    while (held.length > HELD_MAX) {
      held.splice(1, 1); // the first may be a partly written line: keep it
      dropped++;
    }
  }
}

export type LogLevel = "error" | "warn" | "info" | "debug";
const ORDER: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

function configuredLevel(): LogLevel {
  const v = process.env.LAZYFS_LOG;
  return v === "error" || v === "warn" || v === "info" || v === "debug" ? v : "warn";
}

let threshold: LogLevel = configuredLevel();

export function setLogLevel(level: LogLevel): void {
  threshold = level;
}

export interface Logger {
  error(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  debug(msg: string, fields?: Record<string, unknown>): void;
  enabled(level: LogLevel): boolean;
}

function emit(level: LogLevel, scope: string, msg: string, fields?: Record<string, unknown>) {
  if (ORDER[level] > ORDER[threshold]) return;
  let line: string;
  if (process.env.LAZYFS_LOG_FORMAT === "json") {
    const safe = Object.fromEntries(
      Object.entries(fields ?? {}).map(([k, v]) => [k, typeof v === "string" ? printable(v) : v]),
    );
    line = JSON.stringify({ t: Date.now(), level, scope, msg: printable(msg), ...safe });
  } else {
    const kv = fields
      ? Object.entries(fields)
          .map(
            ([k, v]) => `${k}=${printable(typeof v === "string" ? v : String(JSON.stringify(v)))}`,
          )
          .join(" ")
      : "";
    line = `${level} ${scope}: ${printable(msg)}${kv ? ` ${kv}` : ""}`;
  }
  writeLine(`${line}\n`);
}

export function logger(scope: string): Logger {
  return {
    error: (m, f) => emit("error", scope, m, f),
    warn: (m, f) => emit("warn", scope, m, f),
    info: (m, f) => emit("info", scope, m, f),
    debug: (m, f) => emit("debug", scope, m, f),
    enabled: (level) => ORDER[level] <= ORDER[threshold],
  };
}
