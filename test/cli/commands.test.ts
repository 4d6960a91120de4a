/**
 * The CLI on its own (no hosts): what it lists as migrations in a state root that holds other
 * things of LazyFS's too, and the one line it gives for input that is not what it asks for.
 */
import assert from "node:assert/strict";
import { mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { cli } from "../security/helpers.js";

describe("the state root holds more than migrations", () => {
  // Under /var/lib like the real root: a state root must not be below a world-writable /tmp.
  const root = `/var/lib/lazyfs-test-cli-${process.pid}`;
  const env = { LAZYFS_STATE_DIR: root };

  before(() => {
    rmSync(root, { recursive: true, force: true });
    // What a real /var/lib/lazyfs holds besides migrations: the CRIU bundle cache (bundles/)
    // and, on a host that was an origin, pushed CRIU bundles (criu/<sha256>/).
    mkdirSync(join(root, "bundles"), { recursive: true, mode: 0o700 });
    writeFileSync(join(root, "bundles", "criu-4.2.1-x86_64.tar.gz"), "bundle");
    mkdirSync(join(root, "criu", "0123abcd"), { recursive: true, mode: 0o700 });
    writeFileSync(join(root, "criu", "0123abcd", "criu"), "criu");
    // A migration whose daemon is gone.
    mkdirSync(join(root, "m0a1b2c"), { mode: 0o700 });
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  test("status lists only the migration", async () => {
    const r = await cli(["status", "--json"], { env });
    assert.equal(r.code, 0, r.stderr);
    const ids = (JSON.parse(r.stdout) as { id: string }[]).map((s) => s.id);
    assert.deepEqual(ids, ["m0a1b2c"]);
    const named = await cli(["status", "bundles"], { env });
    assert.notEqual(named.code, 0);
    assert.equal(named.stderr, "lazyfs: no migration bundles on this host (have: m0a1b2c)\n");
  });

  test("unmount --all --purge removes the migration and keeps the bundle caches", async () => {
    const r = await cli(["unmount", "--all", "--purge"], { env });
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout, /bundles|criu/);
    assert.deepEqual(readdirSync(root).sort(), ["bundles", "criu"]);
    assert.deepEqual(readdirSync(join(root, "bundles")), ["criu-4.2.1-x86_64.tar.gz"]);
    assert.deepEqual(readdirSync(join(root, "criu", "0123abcd")), ["criu"]);
  });
});
