/**
 * Serving one migration on the target: the supervisor that owns /dev/fuse and restarts the
 * server (supervisor.ts), the server itself (server.ts: engine + FUSE + control socket), how
 * it is started (start.ts), asked (control.ts, status.ts), observed (observe.ts, metrics.ts,
 * access-log.ts) and moved to another origin address (origin-move.ts).
 * May import: chain/, origin-host/, migration/, lazy/ and below. Never migrate/ or detach/.
 */
export { accessLogOf, followAccessLog, type LogFilter, readAccessLog } from "./access-log.js";
export { callControl, callDaemon, stopDaemon } from "./control.js";
export { checkHealth, type Health } from "./health.js";
export { metricsRegistry, parseListen, sampleMigrations, serveMetrics } from "./metrics.js";
export type { OriginMoved } from "./origin-move.js";
export { runDaemon } from "./server.js";
export { type DaemonHandle, startDaemon } from "./start.js";
export type { DaemonStatus } from "./status.js";
