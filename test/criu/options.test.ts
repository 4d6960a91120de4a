/** CRIU's options: which half of each goes to dump and which to restore. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { UserError } from "../../src/common/errors.js";
import {
  addCriuOpt,
  criuDumpArgs,
  criuRestoreArgs,
  parseCgroupMode,
  parseNetworkLock,
} from "../../src/criu/index.js";

describe("CRIU options", () => {
  test("each flag reaches the sides that need it", () => {
    const o = {
      tcpEstablished: true,
      fileLocks: true,
      extUnixSk: true,
      linkRemap: true,
      ghostLimit: 64 * 1024 * 1024,
      manageCgroups: "soft",
      shellJob: true,
      networkLock: "nftables" as const,
    };
    assert.deepEqual(criuDumpArgs(o), [
      "--tcp-established",
      "--file-locks",
      "--ext-unix-sk",
      "--link-remap",
      "--ghost-limit",
      "67108864",
      "--manage-cgroups=soft",
      "--shell-job",
      "--network-lock",
      "nftables",
    ]);
    assert.deepEqual(criuRestoreArgs(o), [
      "--tcp-established",
      "--file-locks",
      "--ext-unix-sk",
      "--manage-cgroups=soft",
      "--shell-job",
    ]);
    assert.deepEqual(criuDumpArgs({ tcpClose: true }), ["--tcp-close"]);
    assert.deepEqual(criuRestoreArgs({ tcpClose: true }), ["--tcp-close"]);
    assert.deepEqual(criuDumpArgs({ manageCgroups: true }), ["--manage-cgroups"]);
    assert.deepEqual(criuDumpArgs({}), []);
  });

  test("--criu-opt: both sides, one side, several words", () => {
    const extra = { dump: [] as string[], restore: [] as string[] };
    addCriuOpt(extra, "--skip-in-flight");
    addCriuOpt(extra, "dump:--track-mem");
    addCriuOpt(extra, "restore:--auto-dedup --lsm-profile=apparmor:x");
    assert.deepEqual(extra.dump, ["--skip-in-flight", "--track-mem"]);
    assert.deepEqual(extra.restore, [
      "--skip-in-flight",
      "--auto-dedup",
      "--lsm-profile=apparmor:x",
    ]);
    assert.deepEqual(criuDumpArgs({ fileLocks: true, extra }), [
      "--file-locks",
      "--skip-in-flight",
      "--track-mem",
    ]);
  });

  test("--criu-opt refuses what LazyFS sets or has a flag for, and non-options", () => {
    const extra = { dump: [] as string[], restore: [] as string[] };
    assert.throws(() => addCriuOpt(extra, "-D /tmp/x"), /LazyFS sets -D itself/);
    assert.throws(() => addCriuOpt(extra, "dump:--leave-running"), /sets --leave-running/);
    assert.throws(() => addCriuOpt(extra, "--tcp-established"), /own --tcp-established option/);
    assert.throws(() => addCriuOpt(extra, "skip-in-flight"), UserError);
    assert.throws(() => addCriuOpt(extra, "dump:"), UserError);
    assert.deepEqual(extra, { dump: [], restore: [] });
  });

  test("network lock and cgroup modes", () => {
    assert.equal(parseNetworkLock("iptables"), "iptables");
    assert.throws(() => parseNetworkLock("pf"), /expected iptables, nftables, skip/);
    assert.equal(parseCgroupMode(true), true);
    assert.equal(parseCgroupMode("full"), "full");
    assert.throws(() => parseCgroupMode("everything"), /--manage-cgroups "everything"/);
  });
});
