/**
 * Security item 1: image names from the origin are single path components. A malicious origin
 * (an SSH server written here, with an SFTP subsystem that lies in its listing of the dump
 * directory) offers `../../x`, `/etc/evil`, `a/b`, a NUL and a terminal escape: the pull is
 * refused with one line naming the origin and the entry, and nothing is written or read.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { UserError } from "../../src/common/errors.js";
import { pullImages } from "../../src/migrate/pull.js";
import { SftpOrigin } from "../../src/origin/index.js";
import { makeKey, tempDir } from "./helpers.js";
import { startSshServer, type TestSshServer } from "./ssh-server.js";

describe("a malicious origin listing image names that are paths", () => {
  let dir: string;
  let dump: string;
  let server: TestSshServer;
  let key: string;
  // (`.` and `..` never get here: ssh2's readdir drops them itself.)
  const evil = ["../../x", "/etc/evil", "a/b", "bad\x1b[2Jname", "nul\0x"];

  before(async () => {
    dir = tempDir("evil-origin");
    dump = join(dir, "origin", "dump");
    mkdirSync(dump, { recursive: true });
    writeFileSync(join(dump, "inventory.img"), "not read");
    key = makeKey(dir);
    server = await startSshServer({
      fakeEntries: Object.fromEntries(
        evil.map((name, i) => [join(dump, String(i)), [{ name, size: 5 }]]),
      ),
    });
    for (let i = 0; i < evil.length; i++) {
      mkdirSync(join(dump, String(i)));
      writeFileSync(join(dump, String(i), "inventory.img"), "not read");
    }
  });

  after(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const [i, name] of evil.entries()) {
    test(`an entry named ${JSON.stringify(name)} is refused, nothing written`, async () => {
      const origin = new SftpOrigin({
        host: "127.0.0.1",
        port: server.port,
        username: "root",
        identityFile: key,
        knownHostsFile: join(dir, "known_hosts"),
        acceptNewHostKey: true,
        maxRetries: 0,
      });
      const target = join(dir, `target-${i}`, "images");
      const opened = server.opened.length;
      try {
        await assert.rejects(pullImages(origin, join(dump, String(i)), target), (err: unknown) => {
          assert.ok(err instanceof UserError, String(err));
          assert.match(err.message, /not a file name; refusing the dump, nothing was written/);
          assert.ok(err.message.includes(`127.0.0.1:${server.port}`), err.message);
          assert.ok(err.message.includes(JSON.stringify(name)), err.message);
          assert.doesNotMatch(err.message, /\n|\x1b/);
          return true;
        });
      } finally {
        await origin.close();
      }
      assert.equal(existsSync(join(dir, `target-${i}`)), false, "target directory created");
      assert.equal(existsSync(join(dir, "x")), false);
      assert.deepEqual(server.opened.slice(opened), [], "an image was read from the origin");
    });
  }
});
