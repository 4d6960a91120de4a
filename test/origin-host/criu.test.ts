/**
 * ensureOriginCriu against a real sshd on loopback whose mount namespace hides this host's
 * CRIU: /opt/lazyfs and /var/lib are empty tmpfs there (and, for the second origin,
 * /usr/local/sbin holds a fake `criu` 3.17, first on sshd's PATH).
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { UserError } from "../../src/common/errors.js";
import { compareVersions, PRIVATE_CRIU, packCriuBundle } from "../../src/criu/index.js";
import { type SshdHandle, startSshd } from "../../src/hosts/sshd.js";
import type { SftpOrigin } from "../../src/origin/index.js";
import { ensureOriginCriu, ORIGIN_BUNDLES } from "../../src/origin-host/criu.js";
import { sftpOriginFor } from "../engine/helpers.js";

/** sshd in a private mount namespace where `setup` has run first. */
function hiddenCriuPrefix(setup: string): string[] {
  const mounts = [
    "mount -t tmpfs -o mode=0755 lazyfs-test /opt/lazyfs",
    "mount -t tmpfs -o mode=0755 lazyfs-test /var/lib",
    setup,
  ]
    .filter(Boolean)
    .join(" && ");
  return ["unshare", "-m", "--propagation", "private", "sh", "-c", `${mounts} && exec "$@"`, "sh"];
}

const FAKE_OLD_CRIU =
  "mount -t tmpfs -o mode=0755 lazyfs-test /usr/local/sbin && " +
  "printf '#!/bin/sh\\necho Version: 3.17\\n' >/usr/local/sbin/criu && chmod 755 /usr/local/sbin/criu";

async function sh(origin: SftpOrigin, command: string): Promise<string> {
  const r = await origin.exec(command);
  assert.equal(r.code, 0, `${command}: ${r.stderr}`);
  return r.stdout.trim();
}

/** Asserts that `p` rejects with a one-line UserError matching `re`. */
async function rejectsOneLine(p: Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof UserError, String(err));
    assert.doesNotMatch(err.message, /\n/);
    assert.match(err.message, re);
    return true;
  });
}

describe("origin CRIU: found, pushed, cached, refused", () => {
  let dir: string;
  let cacheDir: string;
  let bare: SshdHandle;
  let oldOnPath: SshdHandle;
  let a: SftpOrigin;
  let b: SftpOrigin;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "lazyfs-origin-criu-"));
    cacheDir = join(dir, "bundles");
    bare = await startSshd({ commandPrefix: hiddenCriuPrefix("") });
    oldOnPath = await startSshd({ commandPrefix: hiddenCriuPrefix(FAKE_OLD_CRIU) });
    a = sftpOriginFor(bare, { timeoutMs: 20_000 });
    b = sftpOriginFor(oldOnPath, { timeoutMs: 20_000 });
  });

  after(async () => {
    await a?.close();
    await b?.close();
    await bare?.stop();
    await oldOnPath?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test("an origin without CRIU gets this host's, which runs there; the next call uses it", async (t) => {
    assert.equal(
      await sh(a, "command -v criu || echo none; ls -A /opt/lazyfs; ls -A /var/lib"),
      "none",
    );

    let started = Date.now();
    const pushed = await ensureOriginCriu(a, { localCacheDir: cacheDir });
    const pushMs = Date.now() - started;
    assert.equal(pushed.source, "pushed");
    assert.ok(pushed.pushedBytes > 1_000_000, `pushed ${pushed.pushedBytes} bytes`);
    assert.match(pushed.path, new RegExp(`^${ORIGIN_BUNDLES}/[0-9a-f]{64}/bin/criu$`));
    assert.ok(compareVersions(pushed.version, "4.2") >= 0, pushed.version);
    assert.equal(pushed.nftPath, pushed.path.replace(/criu$/, "nft"));

    // It runs on the origin, in the namespace that has no other CRIU.
    assert.match(await sh(a, `${pushed.path} --version`), /^Version: 4\.\d+/);
    assert.match(await sh(a, `${pushed.path} check 2>&1`), /Looks good/);
    assert.match(await sh(a, `${pushed.nftPath} --version`), /^nftables v/);
    // Root-only directories, nothing half-done left beside the bundle.
    assert.equal(
      await sh(a, "stat -c '%a %u' /var/lib/lazyfs /var/lib/lazyfs/criu"),
      "700 0\n700 0",
    );
    assert.equal(await sh(a, `ls -A ${ORIGIN_BUNDLES} | wc -l`), "1");

    started = Date.now();
    const cached = await ensureOriginCriu(a, { localCacheDir: cacheDir });
    const cachedMs = Date.now() - started;
    assert.deepEqual(cached, { ...pushed, source: "cached", pushedBytes: 0 });
    t.diagnostic(
      `bundle ${pushed.pushedBytes} bytes; first push ${pushMs} ms; cached call ${cachedMs} ms`,
    );
  });

  test("an old criu on PATH is passed over; an explicit one is used or refused in one line", async () => {
    assert.equal(await sh(b, "criu --version"), "Version: 3.17");
    const pushed = await ensureOriginCriu(b, { localCacheDir: cacheDir });
    assert.equal(pushed.source, "pushed");
    assert.ok(pushed.pushedBytes > 0);

    const host = b.name.replace(/[[\]]/g, "\\$&");
    await rejectsOneLine(
      ensureOriginCriu(b, { explicit: "/usr/local/sbin/criu", localCacheDir: cacheDir }),
      new RegExp(
        `^${host}: --origin-criu /usr/local/sbin/criu: version 3\\.17 is older than 4\\.2 \\(cannot dump TCP sockets on Linux >= 6\\.16\\)$`,
      ),
    );
    await rejectsOneLine(
      ensureOriginCriu(b, { explicit: "/nowhere/criu" }),
      new RegExp(`^${host}: --origin-criu /nowhere/criu: not found or not executable$`),
    );
    const explicit = await ensureOriginCriu(b, { explicit: pushed.path });
    assert.equal(explicit.source, "explicit");
    assert.equal(explicit.pushedBytes, 0);
  });

  test("a bundle directory that is not root-only is refused, not used", async () => {
    const refused = (why: string) =>
      rejectsOneLine(
        ensureOriginCriu(a, { localCacheDir: cacheDir }),
        new RegExp(`refusing ${ORIGIN_BUNDLES}: it ${why}; it must be a root-only directory`),
      );
    await sh(a, `chmod 0777 ${ORIGIN_BUNDLES}`);
    await refused("is group- or world-writable \\(mode 777\\)");
    await sh(a, `chmod 0700 ${ORIGIN_BUNDLES} && chown 1000 ${ORIGIN_BUNDLES}`);
    await refused("is owned by uid 1000, not root");
    await sh(
      a,
      `chown 0 ${ORIGIN_BUNDLES} && mv ${ORIGIN_BUNDLES} /var/lib/real && ln -s /var/lib/real ${ORIGIN_BUNDLES}`,
    );
    await refused("is a symlink");
    await sh(a, `rm ${ORIGIN_BUNDLES} && mv /var/lib/real ${ORIGIN_BUNDLES}`);
    assert.equal((await ensureOriginCriu(a, { localCacheDir: cacheDir })).source, "cached");
  });

  test("the private prefix and a system ELF CRIU both pack into relocatable bundles", async () => {
    const fromPrefix = await packCriuBundle(PRIVATE_CRIU, { cacheDir });
    assert.equal(fromPrefix.from, "/opt/lazyfs/criu");
    assert.equal(fromPrefix.hasNft, true);

    // A stand-in system CRIU: a dynamically linked ELF program, bundled with its ldd closure.
    const src = join(dir, "fake.c");
    writeFileSync(src, '#include <stdio.h>\nint main(){puts("Version: 4.2.0");return 0;}\n');
    const elf = join(dir, "sbin", "criu");
    mkdirSync(join(dir, "sbin"));
    execFileSync("cc", ["-o", elf, src]);
    const fromSystem = await packCriuBundle(elf, { cacheDir });
    assert.equal(fromSystem.from, elf);
    assert.equal(fromSystem.version, "4.2.0");
    assert.notEqual(fromSystem.hash, fromPrefix.hash);
    const where = join(dir, "somewhere", "else");
    mkdirSync(where, { recursive: true });
    execFileSync("tar", ["-xzf", fromSystem.tarball, "-C", where]);
    const listing = execFileSync("tar", ["-tzf", fromSystem.tarball], { encoding: "utf8" });
    assert.match(listing, /usr\/lib\/x86_64-linux-gnu\/libc\.so\.6/);
    assert.match(listing, /usr\/lib\/x86_64-linux-gnu\/ld-linux-x86-64\.so\.2/);
    assert.equal(
      execFileSync(join(where, "bin/criu"), ["--version"], { encoding: "utf8" }),
      "Version: 4.2.0\n",
    );
  });
});
