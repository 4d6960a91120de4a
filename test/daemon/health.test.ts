/**
 * `status` health without a daemon: a directory in the state root without a manifest serves
 * nothing and gets no command (never `unmount --purge`, which would delete what it holds).
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { checkHealth } from "../../src/daemon/index.js";

const root = fs.mkdtempSync(path.join(os.tmpdir(), "lazyfs-health-"));
const saved = process.env.LAZYFS_STATE_DIR;
process.env.LAZYFS_STATE_DIR = root;
after(() => {
  if (saved === undefined) delete process.env.LAZYFS_STATE_DIR;
  else process.env.LAZYFS_STATE_DIR = saved;
  fs.rmSync(root, { recursive: true, force: true });
});

describe("health without a daemon", () => {
  test("a directory without a manifest: stopped, no command offered", async () => {
    fs.mkdirSync(path.join(root, "bundles"));
    const h = await checkHealth("bundles");
    assert.equal(h.state, "stopped");
    assert.equal(h.run, undefined);
    assert.equal(h.text, "stopped: no readable manifest");
  });
});
