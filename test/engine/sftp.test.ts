import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFile, utimes, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { UserError } from "../../src/common/errors.js";
import { Engine } from "../../src/fetch/index.js";
import { type SshdHandle, startSshd } from "../../src/hosts/sshd.js";
import type { SftpOrigin, SftpOriginOptions } from "../../src/origin/index.js";
import {
  concurrentRandomReads,
  metaOf,
  RecordingOrigin,
  randomFile,
  sftpOriginFor,
  sha256,
  tempDir,
} from "./helpers.js";

describe("SFTP origin against a real OpenSSH server on loopback", () => {
  let sshd: SshdHandle;
  let dir: string;
  let cleanup: () => Promise<void>;
  let src: string;
  let data: Buffer;
  const origins: SftpOrigin[] = [];

  const sftp = (extra: Partial<SftpOriginOptions> = {}) => {
    const o = sftpOriginFor(sshd, { timeoutMs: 10_000, ...extra });
    origins.push(o);
    return o;
  };

  before(async () => {
    ({ dir, cleanup } = await tempDir("sftp"));
    sshd = await startSshd();
    src = join(dir, "origin.bin");
    data = await randomFile(src, 6 * 1024 * 1024 + 777);
  });
  after(async () => {
    for (const o of origins) await o.close();
    await sshd?.stop();
    await cleanup();
  });

  it("serves 32 concurrent random readers, each block fetched once, bytes equal to the origin", async () => {
    const origin = new RecordingOrigin(sftp());
    const engine = await Engine.open({
      cacheDir: join(dir, "cache"),
      origin,
      blockSize: 128 * 1024,
    });
    await engine.addFile(await metaOf("f", src));
    await concurrentRandomReads((o, l) => engine.read("f", o, l), data);
    assert.equal(sha256(await engine.read("f", 0, data.length)), sha256(data));
    origin.assertNoOverlap(src);
    assert.equal(origin.bytesRead(src), data.length);
    const st = engine.status();
    assert.equal(st.origins[`root@${sshd.host}:${sshd.port}`]!.bytesFetched, data.length);
    await engine.close();
  });

  it("refuses an unknown host key unless explicitly accepted, and always a changed one", async () => {
    const empty = join(dir, "known_hosts_empty");
    await writeFile(empty, "");
    await assert.rejects(sftp({ knownHostsFile: empty }).connect(), (err: unknown) => {
      assert.ok(err instanceof UserError);
      assert.match(err.message, /unknown host key ssh-ed25519 SHA256:/);
      assert.ok(err.message.includes(`${sshd.host}:${sshd.port}`));
      return true;
    });
    const accepting = sftp({ knownHostsFile: empty, acceptNewHostKey: true });
    await accepting.connect();
    assert.equal((await accepting.stat(src)).size, data.length);
    assert.match(
      await readFile(empty, "utf8"),
      // Plain, or hashed as ssh writes it with HashKnownHosts yes (Debian's default).
      new RegExp(`^(\\[${sshd.host}\\]:${sshd.port}|\\|1\\|\\S+) ssh-ed25519 `),
    );
    // The accepted key is now known: a strict origin connects.
    await sftp({ knownHostsFile: empty }).connect();

    const other = join(dir, "known_hosts_other");
    const fake = sshd.hostKeyLine.replace(/ \S+$/, ` ${Buffer.alloc(51, 1).toString("base64")}`);
    await writeFile(other, `${fake}\n`);
    await assert.rejects(
      sftp({ knownHostsFile: other, acceptNewHostKey: true }).connect(),
      /HOST KEY CHANGED/,
    );
  });

  it("reconnects after the connection drops", async () => {
    const origin = sftp({ backoffMs: 50 });
    assert.ok((await origin.read(src, 0, 1000)).equals(data.subarray(0, 1000)));
    const pid = (await readFile(join(sshd.dir, "sshd.pid"), "utf8")).trim();
    const children = execFileSync("pgrep", ["-P", pid]).toString().trim().split(/\s+/);
    for (const c of children) process.kill(Number(c), "SIGKILL");
    assert.ok((await origin.read(src, 5000, 300_000)).equals(data.subarray(5000, 305_000)));
  });

  it("runs a command on the origin host over the same connection", async () => {
    const origin = sftp();
    const r = await origin.exec("echo out; echo err >&2; exit 3");
    assert.deepEqual(r, { code: 3, stdout: "out\n", stderr: "err\n" });
    assert.equal((await origin.exec(`wc -c < ${src}`)).stdout.trim(), String(data.length));
  });

  it("times out a host that never answers, naming it", async () => {
    const silent: Server = createServer(() => {});
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", () => r()));
    const port = (silent.address() as { port: number }).port;
    try {
      const origin = sftp({ port, timeoutMs: 400, maxRetries: 1, backoffMs: 10 });
      await assert.rejects(origin.stat("/x"), (err: unknown) => {
        assert.ok(err instanceof UserError);
        assert.ok(err.message.includes(`127.0.0.1:${port}`), err.message);
        return true;
      });
    } finally {
      silent.close();
    }
  });

  it("refuses a file changed since the checkpoint, naming path and host", async () => {
    const path = join(dir, "changed.bin");
    await randomFile(path, 100_000);
    const meta = await metaOf("c", path);
    await utimes(path, new Date(), new Date(meta.mtimeMs + 10_000));
    const engine = await Engine.open({ cacheDir: join(dir, "cache-c"), origin: sftp() });
    await engine.addFile(meta);
    await assert.rejects(engine.read("c", 0, 10), (err: unknown) => {
      assert.ok(err instanceof UserError);
      assert.ok(
        err.message.includes(path) && err.message.includes(`${sshd.host}:${sshd.port}`),
        err.message,
      );
      assert.match(err.message, /changed since the checkpoint/);
      return true;
    });
    await engine.close();
  });
});
