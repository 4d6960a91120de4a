/**
 * What a daemon does to be observed: its events (migration/events.ts), its access log (lazy/access-log.ts)
 * and its metrics endpoint (metrics.ts), set up from the manifest's serve options
 * (`--access-log FILE`, `--metrics ADDR`), and the per-origin and access-log figures it adds to
 * its status. server.ts only calls in here.
 */
import type { Server } from "node:http";
import { errorMessage, UserError } from "../common/errors.js";
import type { EngineStatus } from "../fetch/index.js";
import { AccessLog, type LazyFileSystem, withAccessLog } from "../lazy/index.js";
import {
  type EventFields,
  type EventType,
  type Manifest,
  type MigrationPaths,
  recordEvent,
} from "../migration/index.js";
import type { Origin, SftpOrigin } from "../origin/index.js";
import { type MigrationSample, serveMetrics } from "./metrics.js";
import { originFigures } from "./origin-figures.js";
import type { ObservedFigures } from "./status.js";

export class Observer {
  private accessLog?: AccessLog;
  private metricsServer?: Server;
  private metricsAddr: string | null = null;

  constructor(private readonly paths: MigrationPaths) {}

  event(type: EventType, fields: EventFields = {}): void {
    recordEvent(this.paths.dir, type, fields);
  }

  /** Opens the access log the manifest asks for; the file system to mount (logged or not). */
  async serveAs(manifest: Manifest, fs: LazyFileSystem): Promise<LazyFileSystem> {
    const file = manifest.serve.accessLog;
    if (!file) return fs;
    try {
      this.accessLog = await AccessLog.open(file);
    } catch (err) {
      throw new UserError(`--access-log ${file}: ${errorMessage(err)}`);
    }
    return withAccessLog(fs, this.accessLog);
  }

  /** Serves this migration's metrics on the manifest's `--metrics` address, if any. */
  async startMetrics(manifest: Manifest, sample: () => Promise<MigrationSample>): Promise<void> {
    const addr = manifest.serve.metrics;
    if (!addr || this.metricsServer) return;
    this.metricsServer = await serveMetrics(addr, "--metrics", async () => [await sample()]);
    this.metricsAddr = addr;
  }

  figures(st: EngineStatus, sftp: SftpOrigin, originState: string): ObservedFigures {
    return {
      origins: originFigures(st.origins, {
        name: sftp.name,
        health: sftp.health.figures(),
        state: originState,
      }),
      accessLog: this.accessLog?.figures() ?? null,
      metrics: this.metricsAddr,
    };
  }

  /** Writes out the access log's open runs (before an unmount is acknowledged). */
  async flush(): Promise<void> {
    await this.accessLog?.flush();
  }

  /** Stops the metrics endpoint; writes out and closes the access log (after the unmount). */
  async close(): Promise<void> {
    this.metricsServer?.close();
    this.metricsServer?.closeAllConnections();
    await this.accessLog?.close();
  }
}

/** Wraps the origin to learn when it was first read (the timeline's "first origin fetch"). */
export function watchOrigin(origin: Origin, onRead: () => void): Origin {
  return new Proxy(origin, {
    get(target, prop, receiver) {
      if (prop === "read") {
        // Forward every argument: the engine's onPart stores pieces as they arrive.
        return (...args: Parameters<Origin["read"]>) => {
          onRead();
          return target.read(...args);
        };
      }
      const v = Reflect.get(target, prop, receiver);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}
