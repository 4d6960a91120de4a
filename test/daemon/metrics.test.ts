/** Metrics from daemon statuses: names, labels, values, and a daemon that is down. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type DaemonStatus, metricsRegistry } from "../../src/daemon/index.js";
import { newFileCounters } from "../../src/fetch/accounting.js";
import { parseOpenMetrics, sampleValue } from "../e2e/openmetrics.js";

function file(path: string, policy: string, fields: Record<string, number>) {
  return {
    id: path,
    path,
    policy,
    size: 100,
    bytesLocal: 100,
    bytesDirty: 0,
    bytesOnOrigin: 0,
    ...newFileCounters(),
    ...fields,
  };
}

describe("metrics", () => {
  test("counters per migration and policy, origin figures, a daemon down", async () => {
    const perFile = [
      file("/a", "lazy", { bytesFromOrigin: 100, bytesFetched: 100, requests: 2 }),
      file("/b", "lazy", { bytesFromOrigin: 50, bytesFetched: 50, requests: 1, bytesOnOrigin: 50 }),
      file("/s.secret", "scrub", { bytesSynthesized: 100 }),
    ];
    const status = {
      id: "m1",
      perFile,
      total: { bytesFromOrigin: 400, bytesSynthesized: 100, bytesOnOrigin: 50 },
      independentAtMs: null,
      origins: [
        {
          name: "root@h:22",
          kind: "origin",
          bytes: 400,
          requests: 5,
          errors: 3,
          reconnects: 1,
          state: "connected",
          lastAccessMs: 1,
          lastError: "x",
        },
      ],
      accessLog: { file: "/l", records: 1, requests: 1, dropped: 7 },
    } as unknown as DaemonStatus;
    const reg = metricsRegistry(
      [
        { id: "m1", status },
        { id: "m2", error: "no daemon" },
      ],
      true,
    );
    const fams = parseOpenMetrics(await reg.metrics());
    assert.equal(
      sampleValue(fams, "lazyfs_origin_bytes", { migration: "m1", policy: "lazy" }),
      150,
    );
    // A removed file's bytes still count (under policy "removed"): the total is the total.
    assert.equal(sampleValue(fams, "lazyfs_origin_bytes", { migration: "m1" }), 400);
    assert.equal(sampleValue(fams, "lazyfs_synthesized_bytes", { policy: "scrub" }), 100);
    assert.equal(sampleValue(fams, "lazyfs_files", { migration: "m1", policy: "lazy" }), 2);
    assert.equal(sampleValue(fams, "lazyfs_files_local", { migration: "m1", policy: "lazy" }), 1);
    assert.equal(sampleValue(fams, "lazyfs_origin_errors", { origin: "root@h:22" }), 3);
    assert.equal(sampleValue(fams, "lazyfs_origin_reconnects", { migration: "m1" }), 1);
    assert.equal(sampleValue(fams, "lazyfs_origin_connected", { migration: "m1" }), 1);
    assert.equal(sampleValue(fams, "lazyfs_access_log_dropped_records", { migration: "m1" }), 7);
    assert.equal(sampleValue(fams, "lazyfs_independent", { migration: "m1" }), 0);
    assert.equal(sampleValue(fams, "lazyfs_daemon_up", { migration: "m1" }), 1);
    assert.equal(sampleValue(fams, "lazyfs_daemon_up", { migration: "m2" }), 0);
    assert.equal(sampleValue(fams, "lazyfs_origin_bytes", { migration: "m2" }), undefined);
  });

  test("the Prometheus text format on request", async () => {
    const text = await metricsRegistry([{ id: "m3", error: "down" }], false).metrics();
    assert.match(text, /^lazyfs_daemon_up\{migration="m3"\} 0$/m);
    assert.doesNotMatch(text, /# EOF/);
  });
});
