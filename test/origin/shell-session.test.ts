import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { after, before, describe, it } from "node:test";
import { Client } from "ssh2";
import { type SshdHandle, startSshd } from "../../src/hosts/sshd.js";
import { ShellSession } from "../../src/origin/sftp/shell-session.js";

describe("ShellSession: one shell on the origin for many short scripts", () => {
  let sshd: SshdHandle;
  let client: Client;

  before(async () => {
    sshd = await startSshd();
    const privateKey = await readFile(sshd.identityFile);
    client = new Client();
    await new Promise<void>((resolve, reject) => {
      client.once("ready", () => resolve());
      client.once("error", reject);
      client.connect({ host: sshd.host, port: sshd.port, username: sshd.user, privateKey });
    });
  });
  after(async () => {
    client.end();
    await sshd.stop();
  });

  /** The pid of the shell that runs the scripts (`$$` in a subshell is its shell's). */
  const shellPid = (s: ShellSession) => s.run("echo $$", 10_000).then((o) => o.trim());

  it("runs scripts one after another in the same shell, each output exact", async () => {
    const s = new ShellSession(client, "test-origin");
    s.warm(10_000);
    const pid = await shellPid(s);
    assert.match(pid, /^\d+$/);
    // Started together, answered in order, none mixed with another's output.
    const outs = await Promise.all(
      Array.from({ length: 20 }, (_v, i) => s.run(`printf 'line %s\\n' ${i}; echo second`, 10_000)),
    );
    for (const [i, o] of outs.entries()) assert.equal(o, `line ${i}\nsecond\n`);
    // Output without a final newline, empty output, and output that looks like a marker.
    assert.equal(await s.run("printf abc", 10_000), "abc");
    assert.equal(await s.run("true", 10_000), "");
    assert.equal(await s.run("echo __lazyfs_0123__", 10_000), "__lazyfs_0123__\n");
    // A script's `exit` and `cd` end only its own subshell.
    assert.equal(await s.run("cd /tmp; exit 3", 10_000), "");
    assert.equal(await s.run("pwd", 10_000), "/root\n");
    assert.equal(await shellPid(s), pid);
    s.close();
    await assert.rejects(s.run("true", 10_000), /shell session closed/);
  });

  it("a script that does not answer in time fails alone; the next one gets a new shell", async () => {
    const s = new ShellSession(client, "test-origin");
    const pid = await shellPid(s);
    const slow = s.run("sleep 5; echo late", 300);
    const queued = s.run("echo queued", 10_000);
    await assert.rejects(slow, /test-origin: shell script: no answer within 300 ms/);
    assert.equal(await queued, "queued\n");
    const next = await shellPid(s);
    assert.notEqual(next, pid);
    s.close();
  });

  it("a shell that ends fails the script it runs; the next run starts another", async () => {
    const s = new ShellSession(client, "test-origin");
    const pid = await shellPid(s);
    await assert.rejects(s.run(`kill -KILL ${pid}`, 10_000), /the shell ended/);
    const next = await shellPid(s);
    assert.match(next, /^\d+$/);
    assert.notEqual(next, pid);
    s.close();
  });
});
