/**
 * Structured, levelled logging to stderr: one JSON object per line when LAZYFS_LOG_FORMAT=json,
 * otherwise `level scope: message key=value`. Level from LAZYFS_LOG (error|warn|info|debug),
 * default warn so that command output on stdout stays clean.
 */
import { printable } from "./printable.js";

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
  process.stderr.write(`${line}\n`);
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
