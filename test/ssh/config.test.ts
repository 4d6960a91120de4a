/**
 * Destinations resolved as OpenSSH resolves them: `ssh -G` output parsed (tokens, lists,
 * none/yes/no values), real `ssh -G` runs with -F/-o/-i, Include and Match, ProxyJump chains,
 * the fallback without ssh, and an encrypted key without a terminal against a real sshd.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { UserError } from "../../src/common/errors.js";
import { setLogLevel } from "../../src/common/log.js";
import { type SshdHandle, startSshd } from "../../src/hosts/sshd.js";
import { SftpOrigin } from "../../src/origin/index.js";
import {
  parseSshGOutput,
  resolveSshChain,
  resolveSshConfig,
  sshConfigFrom,
} from "../../src/ssh/config.js";
import { parseDestination } from "../../src/ssh/destination.js";

const run = promisify(execFile);
const HOME = userInfo().homedir;
let dir: string;

describe("SSH destinations as OpenSSH resolves them", () => {
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "lazyfs-ssh-config-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("parses destinations the way ssh takes them", () => {
    assert.deepEqual(parseDestination("myhost"), { host: "myhost" });
    assert.deepEqual(parseDestination("bob@myhost"), { host: "myhost", user: "bob" });
    assert.deepEqual(parseDestination("ssh://root@10.0.0.1:2222"), {
      host: "10.0.0.1",
      user: "root",
      port: 2222,
    });
    assert.deepEqual(parseDestination("ssh://[fd00::1]"), { host: "fd00::1" });
    assert.deepEqual(parseDestination("j@jump:23", { hop: true }), {
      host: "jump",
      user: "j",
      port: 23,
    });
    for (const bad of ["", "-oProxyCommand=x", "a b", "ssh://h:99999", "ssh://h/path", "@h"]) {
      assert.throws(() => parseDestination(bad), UserError, bad);
    }
  });

  it("parses ssh -G output: tokens, lists, none and yes/no values", () => {
    const out = [
      "host alias",
      "user bob",
      "hostname 10.0.0.7",
      "port 2200",
      "identityfile ~/.ssh/%h_%r_%p",
      "identityfile /keys/k2",
      "identitiesonly yes",
      "identityagent none",
      "userknownhostsfile /a/kh1 /a/kh2",
      "globalknownhostsfile /etc/ssh/ssh_known_hosts",
      "stricthostkeychecking false",
      "hostkeyalias origin-key",
      "hashknownhosts yes",
      "proxyjump j1,u@j2:23",
      "connecttimeout 7",
      "serveraliveinterval 15",
      "serveralivecountmax 4",
      "batchmode yes",
      "",
    ].join("\n");
    const c = sshConfigFrom("alias", parseSshGOutput(out), true, "/home/x");
    assert.equal(c.hostname, "10.0.0.7");
    assert.equal(c.user, "bob");
    assert.equal(c.port, 2200);
    assert.deepEqual(c.identityFiles, ["/home/x/.ssh/10.0.0.7_bob_2200", "/keys/k2"]);
    assert.equal(c.identitiesOnly, true);
    assert.equal(c.identityAgent, undefined);
    assert.deepEqual(c.userKnownHostsFiles, ["/a/kh1", "/a/kh2"]);
    assert.deepEqual(c.globalKnownHostsFiles, ["/etc/ssh/ssh_known_hosts"]);
    assert.equal(c.strictHostKeyChecking, "no");
    assert.equal(c.hostKeyAlias, "origin-key");
    assert.equal(c.hashKnownHosts, true);
    assert.deepEqual(c.proxyJump, ["j1", "u@j2:23"]);
    assert.equal(c.connectTimeoutMs, 7000);
    assert.equal(c.serverAliveIntervalMs, 15_000);
    assert.equal(c.serverAliveCountMax, 4);
    assert.equal(c.batchMode, true);
    const d = sshConfigFrom(
      "h",
      parseSshGOutput(
        "identityagent $LAZYFS_TEST_AGENT\nstricthostkeychecking accept-new\nconnecttimeout none\nproxyjump none",
      ),
      true,
      "/home/x",
    );
    process.env.LAZYFS_TEST_AGENT = "/run/agent.sock";
    const e = sshConfigFrom("h", parseSshGOutput("identityagent $LAZYFS_TEST_AGENT"), true, "/h");
    delete process.env.LAZYFS_TEST_AGENT;
    assert.equal(e.identityAgent, "/run/agent.sock");
    assert.equal(d.strictHostKeyChecking, "accept-new");
    assert.equal(d.connectTimeoutMs, undefined);
    assert.deepEqual(d.proxyJump, []);
  });

  it("asks ssh -G: -F with Include and Match, -o (first value wins), -i first", async () => {
    const included = join(dir, "included.conf");
    const main = join(dir, "config");
    const key = join(dir, "explicit_key");
    await writeFile(key, "");
    await writeFile(
      included,
      [
        "Host origin",
        "  HostName 10.9.8.7",
        "  Port 2201",
        "  IdentityFile ~/.ssh/origin_key",
        "",
      ].join("\n"),
    );
    await writeFile(
      main,
      [
        `Include ${included}`,
        "Match host 10.9.8.7",
        "  User matched",
        "  ServerAliveInterval 9",
        "Host *",
        "  ConnectTimeout 5",
        "  IdentitiesOnly yes",
        "",
      ].join("\n"),
    );
    const c = await resolveSshConfig("origin", {
      configFile: main,
      options: ["Port=2300", "Port=2400", "UserKnownHostsFile=/x/kh"],
      identityFiles: [key],
    });
    assert.equal(c.fromSsh, true);
    assert.equal(c.hostname, "10.9.8.7");
    assert.equal(c.user, "matched");
    assert.equal(c.port, 2300);
    assert.deepEqual(c.identityFiles, [key, `${HOME}/.ssh/origin_key`]);
    assert.equal(c.identitiesOnly, true);
    assert.equal(c.connectTimeoutMs, 5000);
    assert.equal(c.serverAliveIntervalMs, 9000);
    assert.deepEqual(c.userKnownHostsFiles, ["/x/kh"]);
    // Defaults included when nothing is configured; user@ and ssh:// forms.
    const d = await resolveSshConfig("ssh://alice@10.1.1.1:2022", { configFile: "/dev/null" });
    assert.equal(d.user, "alice");
    assert.equal(d.port, 2022);
    assert.ok(d.identityFiles.includes(`${HOME}/.ssh/id_ed25519`));
    assert.ok(d.identityFiles.includes(`${HOME}/.ssh/id_rsa`));
    await assert.rejects(
      resolveSshConfig("origin", { configFile: main, options: ["NoSuchOption=1"] }),
      /ssh -G origin: .*nosuchoption/i,
    );
    await assert.rejects(resolveSshConfig("origin", { options: ["Port"] }), /KEY=VALUE/);
    await assert.rejects(
      resolveSshConfig("origin", { identityFiles: [join(dir, "missing")] }),
      /identity file .*missing/,
    );
  });

  it("resolves ProxyJump chains hop by hop, later hops through the earlier ones", async () => {
    const cfg = join(dir, "jumps");
    await writeFile(
      cfg,
      [
        "Host inner",
        "  HostName 10.0.0.3",
        "  ProxyJump j1,bob@j2:2202",
        "Host j1",
        "  HostName 10.0.0.1",
        "  ProxyJump j0",
        "Host j0",
        "  HostName 10.0.0.0",
        "Host j2",
        "  HostName 10.0.0.2",
        "  ProxyJump elsewhere",
        "Host direct",
        "  ProxyJump none",
        "",
      ].join("\n"),
    );
    const chain = await resolveSshChain("inner", { configFile: cfg });
    assert.deepEqual(
      chain.map((c) => `${c.user}@${c.hostname}:${c.port}`),
      [
        `${userInfo().username}@10.0.0.0:22`,
        `${userInfo().username}@10.0.0.1:22`,
        "bob@10.0.0.2:2202",
        `${userInfo().username}@10.0.0.3:22`,
      ],
    );
    assert.equal((await resolveSshChain("direct", { configFile: cfg })).length, 1);
    assert.equal(
      (await resolveSshChain("inner", { configFile: cfg, options: ["ProxyJump=none"] })).length,
      1,
    );
  });

  it("falls back to OpenSSH's defaults when ssh is not installed", async () => {
    const c = await resolveSshConfig("bob@h", {
      sshCommand: join(dir, "no-such-ssh"),
      options: ["Port=2201", "StrictHostKeyChecking=accept-new"],
    });
    assert.equal(c.fromSsh, false);
    assert.equal(c.user, "bob");
    assert.equal(c.hostname, "h");
    assert.equal(c.port, 2201);
    assert.equal(c.strictHostKeyChecking, "accept-new");
    assert.ok(c.identityFiles.includes(`${HOME}/.ssh/id_ed25519`));
    assert.deepEqual(c.userKnownHostsFiles, [
      `${HOME}/.ssh/known_hosts`,
      `${HOME}/.ssh/known_hosts2`,
    ]);
  });
});

describe("an encrypted key without a terminal", () => {
  let sshd: SshdHandle;
  before(async () => {
    sshd = await startSshd();
  });
  after(async () => {
    await sshd?.stop();
  });

  it("is skipped with one line, and the next identity is used; alone, authentication fails at once", async () => {
    assert.notEqual(process.stdin.isTTY, true, "this test needs stdin not to be a terminal");
    const keyDir = await mkdtemp(join(tmpdir(), "lazyfs-encrypted-key-"));
    const enc = join(keyDir, "id_ed25519");
    await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "secret words", "-f", enc]);
    const lines: string[] = [];
    setLogLevel("info");
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      lines.push(...String(chunk).split("\n").filter(Boolean));
      return (write as (c: string | Uint8Array, ...r: unknown[]) => boolean)(chunk, ...rest);
    }) as typeof process.stderr.write;
    const origin = (over: object) =>
      new SftpOrigin({
        host: sshd.host,
        port: sshd.port,
        username: "root",
        knownHostsFile: sshd.knownHostsFile,
        agent: undefined,
        sshConfigFile: "/dev/null",
        maxRetries: 3,
        ...over,
      });
    try {
      const ok = origin({ identityFile: enc, sshOptions: [`IdentityFile=${sshd.identityFile}`] });
      await ok.connect();
      assert.equal((await ok.stat("/")).isDirectory, true);
      await ok.close();
      const again = origin({
        identityFile: enc,
        sshOptions: [`IdentityFile=${sshd.identityFile}`],
      });
      await again.connect();
      await again.close();
      const alone = origin({ identityFile: enc, sshOptions: ["IdentitiesOnly=yes"] });
      await assert.rejects(alone.stat("/"), (err: unknown) => {
        assert.ok(err instanceof UserError);
        assert.match(err.message, /authentication failed \(tried no usable identity/);
        return true;
      });
      await alone.close();
    } finally {
      process.stderr.write = write;
      setLogLevel("warn");
      await rm(keyDir, { recursive: true, force: true });
    }
    const about = lines.filter((l) => l.includes(enc));
    assert.equal(about.length, 1, about.join("\n"));
    assert.match(about[0]!, /encrypted and there is no terminal to ask its passphrase.*skipped/);
    // A refused authentication is final: no reconnect attempts.
    assert.deepEqual(
      lines.filter((l) => l.includes("reconnecting")),
      [],
    );
  });
});
