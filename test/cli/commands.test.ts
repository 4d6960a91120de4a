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

describe("a --pid that is not a process id", () => {
  for (const [given, shown] of [
    ["12; touch x", "'12; touch x'"],
    ["0x10", "'0x10'"],
    ["1e3", "'1e3'"],
    ["", "''"],
    ["-5", "'-5'"],
    ["99999999", "'99999999'"],
  ] as const) {
    test(`migrate --pid ${shown}: one line naming it, nothing run`, async () => {
      const dir = `/var/lib/lazyfs-test-cli-pid-${process.pid}`;
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir, { mode: 0o700 });
      try {
        // The origin is never asked: the address is unreachable and the test ends at once.
        const r = await cli(["migrate", "--from", "root@192.0.2.1", "--pid", given], {
          env: { LAZYFS_STATE_DIR: dir },
          cwd: dir,
        });
        assert.equal(r.code, 1);
        assert.equal(r.stderr, `lazyfs: --pid ${shown}: not a process id\n`);
        assert.deepEqual(readdirSync(dir), [], "nothing created (no state, no `x`)");
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});
