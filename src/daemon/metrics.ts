/**
 * Metrics of migrations in the OpenMetrics (or Prometheus text) exposition format, built with
 * prom-client from daemon statuses: `lazyfs metrics --listen ADDR` serves every migration on
 * the host (asking each daemon over its control socket), a daemon started with `--metrics
 * ADDR` serves its own. Byte and request counters are labelled by migration id and policy,
 * connection figures by migration id and origin; a daemon that does not answer is reported
 * with `lazyfs_daemon_up 0`.
 */
import { createServer, type Server } from "node:http";
import { Counter, Gauge, Registry, type RegistryContentType } from "prom-client";
import { errnoCode, errorMessage, UserError } from "../common/errors.js";
import { logger } from "../common/log.js";
import type { FileStatus, SummedField } from "../fetch/index.js";
import { listMigrations, migrationPaths } from "../migration/index.js";
import { callControl } from "./control.js";
import type { DaemonStatus } from "./status.js";

const log = logger("metrics");

/** One migration as a scrape sees it: its status, or why there is none. */
export interface MigrationSample {
  id: string;
  status?: DaemonStatus;
  error?: string;
}

/** Per-policy counters: metric name -> (file field, help). */
const BYTE_COUNTERS: [string, SummedField, string][] = [
  ["lazyfs_origin_bytes", "bytesFromOrigin", "Bytes read from the origin host"],
  ["lazyfs_synthesized_bytes", "bytesSynthesized", "Bytes synthesized by the scrub policy"],
  ["lazyfs_local_copy_bytes", "bytesFromLocalCopy", "Bytes copied from the target's own files"],
  ["lazyfs_written_bytes", "bytesWritten", "Bytes written by the migrated process"],
  ["lazyfs_store_served_bytes", "bytesServedFromStore", "Bytes read from the local store"],
  ["lazyfs_origin_requests", "requests", "Requests made to the origin host"],
];

/** Adds up the figures of `files` per policy. */
function byPolicy(files: readonly FileStatus[]): Map<string, FileStatus[]> {
  const m = new Map<string, FileStatus[]>();
  for (const f of files) {
    const list = m.get(f.policy);
    if (list) list.push(f);
    else m.set(f.policy, [f]);
  }
  return m;
}

/** A registry holding the figures of `samples` (made anew for each scrape). */
export function metricsRegistry(
  samples: readonly MigrationSample[],
  openMetrics: boolean,
): Registry<RegistryContentType> {
  const reg = new Registry<RegistryContentType>();
  reg.setContentType(
    openMetrics ? Registry.OPENMETRICS_CONTENT_TYPE : Registry.PROMETHEUS_CONTENT_TYPE,
  );
  const m = ["migration"];
  const mp = ["migration", "policy"];
  const mo = ["migration", "origin"];
  const gauge = (name: string, labelNames: string[], help: string) =>
    new Gauge({ name, help, labelNames, registers: [reg] });
  const counter = (name: string, labelNames: string[], help: string) =>
    new Counter({ name, help, labelNames, registers: [reg] });
  const up = gauge("lazyfs_daemon_up", m, "Whether the migration's daemon answered (1) or not (0)");
  const independent = gauge(
    "lazyfs_independent",
    m,
    "1 once nothing the process may need is left only on the origin",
  );
  const counters = BYTE_COUNTERS.map(
    ([name, field, help]) => [field, counter(name, mp, help)] as const,
  );
  const files = gauge("lazyfs_files", mp, "Files served");
  const filesLocal = gauge("lazyfs_files_local", mp, "Files with nothing left only on the origin");
  const size = gauge("lazyfs_size_bytes", mp, "Size of the files served");
  const local = gauge("lazyfs_local_bytes", mp, "Bytes of the files held locally");
  const onOrigin = gauge("lazyfs_only_on_origin_bytes", mp, "Bytes still only on the origin");
  const errors = counter(
    "lazyfs_origin_errors",
    mo,
    "Failed requests to the origin (each attempt)",
  );
  const reconnects = counter(
    "lazyfs_origin_reconnects",
    mo,
    "Connections to the origin made after the first",
  );
  const connected = gauge(
    "lazyfs_origin_connected",
    mo,
    "1 while the connection to the origin is up, 0 otherwise (also once released)",
  );
  const diskFull = gauge(
    "lazyfs_cache_disk_full",
    m,
    "1 while the cache's disk is full (reads of data not yet local fail with ENOSPC)",
  );
  const noSpace = counter(
    "lazyfs_cache_enospc_requests",
    m,
    "Requests of the process that failed with ENOSPC (the cache's disk was full)",
  );
  const dropped = counter(
    "lazyfs_access_log_dropped_records",
    m,
    "Access log records dropped because the writer fell behind",
  );
  const identicalFiles = gauge(
    "lazyfs_identical_files",
    m,
    "Files served from the target's identical copy without a fetch",
  );
  const identicalBytes = gauge(
    "lazyfs_identical_bytes",
    m,
    "Size of the files served from the target's identical copy",
  );
  for (const s of samples) {
    const st = s.status;
    up.set({ migration: s.id }, st ? 1 : 0);
    if (!st) continue;
    if (st.identical) {
      identicalFiles.set({ migration: s.id }, st.identical.identicalFiles);
      identicalBytes.set({ migration: s.id }, st.identical.identicalBytes);
    }
    independent.set(
      { migration: s.id },
      st.independentAtMs !== null || st.total.bytesOnOrigin === 0 ? 1 : 0,
    );
    const groups = byPolicy(st.perFile);
    for (const [policy, list] of groups) {
      const l = { migration: s.id, policy };
      for (const [field, c] of counters)
        c.inc(
          l,
          list.reduce((n, f) => n + f[field], 0),
        );
      files.set(l, list.length);
      filesLocal.set(l, list.filter((f) => f.bytesOnOrigin === 0 && f.policy !== "remote").length);
      size.set(
        l,
        list.reduce((n, f) => n + f.size, 0),
      );
      local.set(
        l,
        list.reduce((n, f) => n + f.bytesLocal, 0),
      );
      onOrigin.set(
        l,
        list.reduce((n, f) => n + f.bytesOnOrigin, 0),
      );
    }
    // Files removed since the daemon started keep counting in the totals.
    for (const [field, c] of counters) {
      const rest = st.total[field] - st.perFile.reduce((n, f) => n + f[field], 0);
      if (rest > 0) c.inc({ migration: s.id, policy: "removed" }, rest);
    }
    for (const o of st.origins ?? []) {
      if (o.kind !== "origin") continue;
      const l = { migration: s.id, origin: o.name };
      errors.inc(l, o.errors);
      reconnects.inc(l, o.reconnects);
      connected.set(l, o.state === "connected" ? 1 : 0);
    }
    if (st.accessLog) dropped.inc({ migration: s.id }, st.accessLog.dropped);
    if (st.cacheDisk) {
      diskFull.set({ migration: s.id }, st.cacheDisk.full ? 1 : 0);
      noSpace.inc({ migration: s.id }, st.cacheDisk.failedRequestsTotal);
    }
  }
  return reg;
}

/**
 * Every migration on this host, each daemon asked over its control socket (without probing
 * its origin) and given `timeoutMs` to answer; one that does not is a sample without status.
 */
export async function sampleMigrations(timeoutMs = 1500): Promise<MigrationSample[]> {
  const ids = await listMigrations();
  return Promise.all(
    ids.map(async (id): Promise<MigrationSample> => {
      try {
        const req = { op: "status", probe: false } as const;
        const status = (await callControl(
          migrationPaths(id).socket,
          req,
          timeoutMs,
        )) as DaemonStatus;
        return { id, status };
      } catch (err) {
        return { id, error: errorMessage(err) };
      }
    }),
  );
}

/** `host:port` (IPv6 as `[::1]:port`) to listen on. */
export function parseListen(text: string, what: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text.trim());
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || port > 65535) {
    throw new UserError(`${what} ${JSON.stringify(text)}: expected HOST:PORT, e.g. 127.0.0.1:9464`);
  }
  return { host: m[1] ?? (m[2] || "0.0.0.0"), port };
}

/** Whether the scraper asked for the Prometheus text format rather than OpenMetrics. */
function wantsPrometheusText(accept: string | undefined): boolean {
  return !!accept && accept.includes("text/plain") && !accept.includes("openmetrics");
}

/**
 * Serves `GET /metrics` (and `/`) on `addr` with the figures `collect` returns at each scrape.
 * Resolves once listening; a UserError names the address when it cannot.
 */
export async function serveMetrics(
  addr: string,
  what: string,
  collect: () => Promise<MigrationSample[]>,
): Promise<Server> {
  const { host, port } = parseListen(addr, what);
  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" || (path !== "/metrics" && path !== "/")) {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found: try /metrics\n");
      return;
    }
    collect()
      .then(async (samples) => {
        const reg = metricsRegistry(samples, !wantsPrometheusText(req.headers.accept));
        const body = await reg.metrics();
        res.writeHead(200, { "content-type": reg.contentType }).end(body);
      })
      .catch((err) => {
        log.warn("scrape failed", { error: errorMessage(err) });
        res.writeHead(500, { "content-type": "text/plain" }).end(`${errorMessage(err)}\n`);
      });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err) => {
      const code = errnoCode(err);
      reject(
        new UserError(
          `${what} ${addr}: cannot listen: ${code === "EADDRINUSE" ? "address in use" : errorMessage(err)}`,
        ),
      );
    });
    server.listen(port, host, () => resolve());
  });
  return server;
}
