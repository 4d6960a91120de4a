/**
 * known_hosts as OpenSSH reads and writes it, checked against OpenSSH's own tools:
 * `ssh-keygen -H` hashes a file LazyFS must still read, `ssh-keygen -F` must find what
 * LazyFS records with StrictHostKeyChecking accept-new.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import type { SshConfig } from "../../src/ssh/config.js";
import { hostKeyCheck, knownHostsNameOf } from "../../src/ssh/host-key.js";
import { hashHostName, judgeHostKey } from "../../src/ssh/knownhosts.js";

const run = promisify(execFile);

let dir: string;
/** Public key blobs of two ed25519 keys and one ecdsa key made by ssh-keygen. */
let ed1: Buffer;
let ed2: Buffer;
let ec: Buffer;
let line1: string;

async function pubKey(name: string, type: string): Promise<{ blob: Buffer; text: string }> {
  const f = join(dir, name);
  await run("ssh-keygen", ["-q", "-t", type, "-N", "", "-f", f]);
  const text = (await readFile(`${f}.pub`, "utf8")).trim().split(/\s+/).slice(0, 2).join(" ");
  return { blob: Buffer.from(text.split(" ")[1]!, "base64"), text };
}

const kh = (text: string, file = "kh") => [{ file, text }];

function config(over: Partial<SshConfig>): SshConfig {
  return {
    destination: "h",
    hostname: "10.1.2.3",
    user: "root",
    port: 22,
    identityFiles: [],
    identitiesOnly: false,
    identityAgent: undefined,
    userKnownHostsFiles: [],
    globalKnownHostsFiles: [],
    strictHostKeyChecking: "yes",
    hostKeyAlias: undefined,
    hashKnownHosts: false,
    proxyJump: [],
    connectTimeoutMs: undefined,
    serverAliveIntervalMs: 0,
    serverAliveCountMax: 3,
    batchMode: false,
    numberOfPasswordPrompts: 3,
    fromSsh: true,
    ...over,
  };
}

const verify = (c: SshConfig, key: Buffer) =>
  new Promise<boolean>((resolve) => hostKeyCheck(c, "test").verify(key, resolve));

describe("known_hosts as OpenSSH reads it", () => {
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "lazyfs-knownhosts-"));
    const a = await pubKey("ed1", "ed25519");
    ed1 = a.blob;
    line1 = a.text;
    ed2 = (await pubKey("ed2", "ed25519")).blob;
    ec = (await pubKey("ec", "ecdsa")).blob;
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("reads entries hashed by ssh-keygen -H, and its own hashes", async () => {
    const file = join(dir, "hashed");
    await writeFile(file, `10.1.2.3 ${line1}\n[10.1.2.3]:2222 ${line1}\n`);
    await run("ssh-keygen", ["-q", "-H", "-f", file]);
    const text = await readFile(file, "utf8");
    assert.ok(text.startsWith("|1|"), "ssh-keygen hashed the file");
    assert.ok(!text.includes("10.1.2.3"));
    assert.equal(judgeHostKey(kh(text), "10.1.2.3", ed1).verdict, "known");
    assert.equal(judgeHostKey(kh(text), "[10.1.2.3]:2222", ed1).verdict, "known");
    assert.equal(judgeHostKey(kh(text), "10.1.2.4", ed1).verdict, "unknown");
    assert.equal(judgeHostKey(kh(`${hashHostName("h1")} ${line1}`), "h1", ed1).verdict, "known");
  });

  it("tells [host]:port apart from the host on port 22", () => {
    const text = `[10.1.2.3]:2222 ${line1}\n`;
    assert.equal(judgeHostKey(kh(text), "[10.1.2.3]:2222", ed1).verdict, "known");
    assert.equal(judgeHostKey(kh(text), "10.1.2.3", ed1).verdict, "unknown");
    assert.equal(judgeHostKey(kh(text), "[10.1.2.3]:2223", ed1).verdict, "unknown");
  });

  it("refuses @revoked keys even when also listed, and does not trust @cert-authority", () => {
    const revoked = `10.1.2.3 ${line1}\n@revoked * ${line1}\n`;
    const j = judgeHostKey(kh(revoked, "/k"), "10.1.2.3", ed1);
    assert.equal(j.verdict, "revoked");
    assert.equal(j.file, "/k");
    assert.equal(j.line, 2);
    assert.equal(
      judgeHostKey(kh(`@cert-authority * ${line1}\n`), "10.1.2.3", ed1).verdict,
      "unknown",
    );
  });

  it("changed only for another key of the same type; patterns and negation", () => {
    const text = `10.1.2.*,!10.1.2.9 ${line1}\n`;
    assert.equal(judgeHostKey(kh(text), "10.1.2.3", ed2).verdict, "changed");
    assert.equal(judgeHostKey(kh(text), "10.1.2.3", ec).verdict, "unknown");
    assert.equal(judgeHostKey(kh(text), "10.1.2.9", ed1).verdict, "unknown");
  });

  it("reads several files: known in any one, revoked in any one", () => {
    const files = [
      { file: "user", text: "" },
      { file: "global", text: `10.1.2.3 ${line1}\n` },
    ];
    assert.equal(judgeHostKey(files, "10.1.2.3", ed1).verdict, "known");
    files.push({ file: "other", text: `@revoked 10.1.2.3 ${line1}\n` });
    assert.equal(judgeHostKey(files, "10.1.2.3", ed1).verdict, "revoked");
  });

  it("HostKeyAlias replaces host and port in the lookup", () => {
    assert.equal(knownHostsNameOf(config({ port: 2222 })), "[10.1.2.3]:2222");
    assert.equal(knownHostsNameOf(config({ port: 2222, hostKeyAlias: "origin" })), "origin");
  });

  it("accept-new records a new key (hashed with HashKnownHosts) in the first user file, where ssh-keygen -F finds it", async () => {
    const first = join(dir, "sub", "known_hosts");
    const second = join(dir, "known_hosts2");
    await writeFile(second, "");
    const c = config({
      port: 2222,
      userKnownHostsFiles: [first, second],
      strictHostKeyChecking: "accept-new",
      hashKnownHosts: true,
    });
    assert.equal(await verify(c, ed1), true);
    const text = await readFile(first, "utf8");
    assert.match(text, /^\|1\|\S+ ssh-ed25519 \S+\n$/);
    assert.equal(await readFile(second, "utf8"), "");
    const found = await run("ssh-keygen", ["-F", "[10.1.2.3]:2222", "-f", first]);
    assert.ok(found.stdout.includes(ed1.toString("base64")), found.stdout);
    // Now known to a strict check; a changed key is refused even with accept-new.
    assert.equal(await verify({ ...c, strictHostKeyChecking: "yes" }, ed1), true);
    assert.equal(await verify(c, ed2), false);
    // Plain names without HashKnownHosts.
    const plain = join(dir, "plain");
    assert.equal(
      await verify({ ...c, userKnownHostsFiles: [plain], hashKnownHosts: false }, ed1),
      true,
    );
    assert.equal(await readFile(plain, "utf8"), `[10.1.2.3]:2222 ${line1}\n`);
  });

  it("yes and ask (without a terminal) refuse an unknown key with a reason; no takes a changed one", async () => {
    assert.notEqual(process.stdin.isTTY, true, "this test needs stdin not to be a terminal");
    const file = join(dir, "strict");
    await writeFile(file, `10.1.2.3 ${line1}\n`);
    for (const strict of ["yes", "ask"] as const) {
      const check = hostKeyCheck(
        config({
          hostname: "10.9.9.9",
          userKnownHostsFiles: [file],
          strictHostKeyChecking: strict,
        }),
        "t",
      );
      assert.equal(await new Promise((r) => check.verify(ed1, r)), false);
      assert.match(check.refusal()!, /unknown host key ssh-ed25519 SHA256:\S+ for 10\.9\.9\.9/);
    }
    const changed = hostKeyCheck(config({ userKnownHostsFiles: [file] }), "t");
    assert.equal(await new Promise((r) => changed.verify(ed2, r)), false);
    assert.match(changed.refusal()!, /HOST KEY CHANGED/);
    assert.equal(
      await verify(config({ userKnownHostsFiles: [file], strictHostKeyChecking: "no" }), ed2),
      true,
    );
    assert.equal(
      await readFile(file, "utf8"),
      `10.1.2.3 ${line1}\n`,
      "no: a changed key is not recorded",
    );
  });
});
