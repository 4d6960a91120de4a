/**
 * End to end: `lazyfs migrate` reaches the origin the way `ssh` would, from the user's own
 * OpenSSH set-up: a Host alias of ~/.ssh/config, a key held only by ssh-agent, the default
 * ~/.ssh/id_ed25519, and a ProxyJump through host c to an origin address host b cannot reach.
 *
 * The user's home is the test's: ssh (like LazyFS) takes `~` from the password database, so
 * host b's /root is a bind mount of a temporary directory, in b's own mount namespace only.
 * Nothing of the real user's ~/.ssh is read or written.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { appendFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import {
  type ClientHostPair,
  cleanupStaleHosts,
  createHostPair,
  DATA_DIR,
  type SshdHandle,
  startSshd,
} from "../../src/hosts/index.js";
import { CLI, errorLines, gatedLineReader, linesIn, waitFor } from "./helpers.js";

const run = promisify(execFile);
const STATE = `/var/lib/lazyfs-test-openssh-${process.pid}`;
/** The origin sshd's port: not 22, so that the alias's Port matters. */
const PORT = 2222;

let pair: ClientHostPair;
let sshd: SshdHandle;
/** The test user's home directory (b's /root). */
let home: string;
const ssh = () => join(home, ".ssh");
const stopLater: { stop(): Promise<void> }[] = [];

interface Migrated {
  id: string;
  pid: number;
  mountpoint: string;
}

/** The CLI on b with the test's home and nothing of the caller's agent unless given. */
function lazyfs(args: string[], env: Record<string, string> = {}, allowFailure = false) {
  const base = { ...process.env };
  delete base.SSH_AUTH_SOCK;
  return pair.b.exec(process.execPath, [CLI, ...args], {
    allowFailure,
    env: { ...base, HOME: "/root", LAZYFS_STATE_DIR: STATE, ...env },
    timeoutMs: 120_000,
  });
}

async function keygen(file: string, passphrase = ""): Promise<string> {
  await rm(file, { force: true });
  await rm(`${file}.pub`, { force: true });
  await run("ssh-keygen", [
    "-q",
    "-t",
    "ed25519",
    "-N",
    passphrase,
    "-C",
    "openssh-test",
    "-f",
    file,
  ]);
  return (await readFile(`${file}.pub`, "utf8")).trim();
}

/** Lets `pub` log in as root on the sshd (it reads authorized_keys at every login). */
async function authorize(server: SshdHandle, pub: string): Promise<void> {
  await appendFile(join(server.dir, "authorized_keys"), `${pub}\n`);
}

/** Lines the reader's input has. */
const LINES = 1500;

/** A line reader on a whose output must go on exactly after the migration to b. */
async function startReader(tag: string, delaySeconds = "0.002") {
  const dir = `${DATA_DIR}/openssh-${tag}-${randomBytes(3).toString("hex")}`;
  const input = `${dir}/input.txt`;
  const output = `${dir}/output.txt`;
  await pair.a.exec("mkdir", ["-p", dir]);
  await pair.a.exec("python3", [
    "-c",
    "import sys\nwith open(sys.argv[1],'w') as f:\n  for i in range(int(sys.argv[2])): f.write('line %06d\\n' % i)",
    input,
    String(LINES),
  ]);
  const wl = await pair.a.startWorkload(
    "python3",
    ["-u", "-c", gatedLineReader(30), input, delaySeconds],
    {
      stdout: output,
    },
  );
  await waitFor("30 lines on A", async () =>
    (await linesIn(pair.a, output)).length >= 30 ? true : undefined,
  );
  return { pid: wl.pid, output };
}

/** The reader's output on b, once complete: every line once, in order. */
async function assertReaderFinished(m: Migrated, output: string): Promise<void> {
  await pair.b.exec("kill", ["-USR1", String(m.pid)]);
  const lines = await waitFor(
    "the reader to finish on B",
    async () => {
      const l = await linesIn(pair.b, `${m.mountpoint}${output}`);
      return l.length === LINES ? l : undefined;
    },
    60_000,
  );
  assert.deepEqual(
    lines,
    Array.from({ length: LINES }, (_, i) => `line ${String(i).padStart(6, "0")}`),
  );
}

/** Migrates a fresh reader with `args` and checks its output goes on exactly on b. */
async function migrateReader(tag: string, args: string[], env: Record<string, string> = {}) {
  const r = await startReader(tag);
  const res = await lazyfs(["migrate", ...args, "--pid", String(r.pid), "--json"], env, true);
  assert.equal(res.code, 0, `migrate failed: ${errorLines(res.stderr).join("\n")}`);
  const m = JSON.parse(res.stdout) as Migrated;
  try {
    await assertReaderFinished(m, r.output);
    assert.ok((await linesIn(pair.a, r.output)).length < LINES, "the origin's copy stopped");
  } finally {
    await pair.b.kill(m.pid, "SIGKILL");
    await lazyfs(["unmount", m.id, "--force", "--purge"], env, true);
  }
  return res;
}

let agentRunning: { sock: string; env: NodeJS.ProcessEnv; dir: string } | undefined;

/** One ssh-agent for the file (stopped after it), on a socket of a temporary directory. */
async function agent() {
  if (agentRunning) return agentRunning;
  const dir = await mkdtemp(join(tmpdir(), "lazyfs-openssh-agent-"));
  const sock = join(dir, "agent.sock");
  const child: ChildProcess = spawn("ssh-agent", ["-D", "-a", sock], {
    stdio: ["ignore", "ignore", "ignore"],
  });
  stopLater.push({
    stop: async () => {
      child.kill("SIGTERM");
      await rm(dir, { recursive: true, force: true });
    },
  });
  const env = { ...process.env, SSH_AUTH_SOCK: sock };
  // ssh-add -l: 1 = an agent without keys answered, 2 = no agent (yet).
  await waitFor("ssh-agent's socket", () =>
    run("ssh-add", ["-l"], { env }).then(
      () => true,
      (e: { code?: number }) => (e.code === 1 ? true : undefined),
    ),
  );
  agentRunning = { sock, env, dir };
  return agentRunning;
}

describe("the user's OpenSSH set-up, as ssh uses it", { concurrency: false }, () => {
  before(async () => {
    await cleanupStaleHosts();
    pair = await createHostPair({ client: true });
    sshd = await pair.startOriginSshd({ port: PORT });
    home = await mkdtemp(join(tmpdir(), "lazyfs-openssh-home-"));
    await mkdir(ssh(), { mode: 0o700 });
    await writeFile(join(ssh(), "known_hosts"), `${sshd.hostKeyLine}\n`, { mode: 0o600 });
    // Only in b's own mount namespace: the rest of the machine keeps its /root.
    await pair.b.exec("mount", ["--bind", home, "/root"]);
    await pair.b.exec("rm", ["-rf", STATE]);
  });
  after(async () => {
    await pair?.b.exec(process.execPath, [CLI, "unmount", "--all", "--force"], {
      allowFailure: true,
      env: { ...process.env, LAZYFS_STATE_DIR: STATE },
    });
    for (const s of stopLater.splice(0)) await s.stop().catch(() => {});
    await pair?.b.exec("rm", ["-rf", STATE]).catch(() => {});
    await pair?.destroy();
    if (home) await rm(home, { recursive: true, force: true });
  });

  test("a Host alias of ~/.ssh/config (HostName, Port, User, IdentityFile, IdentitiesOnly)", async () => {
    await authorize(sshd, await keygen(join(ssh(), "origin_key")));
    await writeFile(
      join(ssh(), "config"),
      [
        "Host origin-alias",
        `  HostName ${pair.a.address}`,
        `  Port ${PORT}`,
        "  User root",
        "  IdentityFile ~/.ssh/origin_key",
        "  IdentitiesOnly yes",
        "",
      ].join("\n"),
    );
    // An agent with more keys the origin refuses than its MaxAuthTries (6): only IdentitiesOnly
    // keeps them from being offered.
    const { sock, env: agentEnv, dir } = await agent();
    for (let i = 0; i < 7; i++) {
      await keygen(join(dir, `junk${i}`));
      await run("ssh-add", ["-q", join(dir, `junk${i}`)], { env: agentEnv });
    }
    try {
      await migrateReader("alias", ["--from", "origin-alias"], { SSH_AUTH_SOCK: sock });
    } finally {
      await rm(join(ssh(), "config"), { force: true });
    }
  });

  test("a key held only by ssh-agent (its file deleted)", async () => {
    const { sock, env: agentEnv, dir } = await agent();
    const key = join(dir, "agent_only");
    await authorize(sshd, await keygen(key));
    await run("ssh-add", ["-q", "-D"], { env: agentEnv });
    await run("ssh-add", ["-q", key], { env: agentEnv });
    await rm(key);
    await rm(`${key}.pub`);
    // user@host with the port as an ssh -o option.
    await migrateReader("agent", ["--from", `root@${pair.a.address}`, "-o", `Port=${PORT}`], {
      SSH_AUTH_SOCK: sock,
    });
  });

  test("the default ~/.ssh/id_ed25519 with no -i", async () => {
    await authorize(sshd, await keygen(join(ssh(), "id_ed25519")));
    try {
      await migrateReader("default", ["--from", `ssh://root@${pair.a.address}:${PORT}`]);
    } finally {
      await rm(join(ssh(), "id_ed25519"), { force: true });
    }
  });

  test("on a terminal: an unknown host key asked about (StrictHostKeyChecking ask) and recorded hashed; an encrypted key's passphrase asked without echo, and the daemon uses it too", async () => {
    const key = join(ssh(), "encrypted_key");
    const knownHosts = join(ssh(), "known_hosts");
    await writeFile(knownHosts, "");
    const passphrase = `pass ${randomBytes(4).toString("hex")}`;
    await authorize(sshd, await keygen(key, passphrase));
    await rm(`${key}.pub`);
    // Slower: it must still run when the questions have been answered.
    const r = await startReader("passphrase", "0.01");
    const cli = [
      process.execPath,
      CLI,
      "migrate",
      "--from",
      `ssh://root@${pair.a.address}:${PORT}`,
      "-i",
      "/root/.ssh/encrypted_key",
      "--pid",
      String(r.pid),
      "--json",
    ]
      .map((a) => `'${a.replace(/'/g, "'\\''")}'`)
      .join(" ");
    // script(1) gives the CLI a terminal; the passphrase is typed on it.
    const base = { ...process.env };
    delete base.SSH_AUTH_SOCK;
    const child = pair.b.spawn("script", ["-qec", cli, "/dev/null"], {
      stdio: ["pipe", "pipe", "pipe"],
      env: { ...base, HOME: "/root", LAZYFS_STATE_DIR: STATE },
    });
    let out = "";
    let typed = false;
    let answered = false;
    const code = await new Promise<number | null>((resolve, reject) => {
      child.on("error", reject);
      child.stdout!.on("data", (d: Buffer) => {
        out += d.toString();
        // Typed once the question is on the terminal, as a user would.
        if (!answered && out.includes("Are you sure you want to continue connecting")) {
          answered = true;
          child.stdin!.write("yes\r");
        }
        if (!typed && out.includes("Enter passphrase for key")) {
          typed = true;
          child.stdin!.write(`${passphrase}\r`);
        }
      });
      child.stderr!.resume();
      child.on("exit", (c) => resolve(c));
    });
    child.stdin!.destroy();
    out = out.replace(/\r/g, "");
    assert.equal(code, 0, out);
    assert.match(out, /Enter passphrase for key '\/root\/\.ssh\/encrypted_key': /);
    assert.ok(!out.includes(passphrase.slice(5)), `the passphrase is not echoed: ${out}`);
    assert.match(out, /The authenticity of host '\[[\d.]+\]:2222' can't be established/);
    // Recorded as ssh records it (Debian's ssh_config hashes), and ssh-keygen finds it.
    const recorded = await readFile(knownHosts, "utf8");
    assert.match(recorded, /^\|1\|\S+ ssh-ed25519 \S+\n$/);
    const found = await run("ssh-keygen", ["-F", `[${pair.a.address}]:${PORT}`, "-f", knownHosts]);
    assert.ok(found.stdout.includes(sshd.hostKeyLine.split(" ")[2]!), found.stdout);
    const m = JSON.parse(out.slice(out.indexOf("{"), out.lastIndexOf("}") + 1)) as Migrated;
    try {
      // Every line after the checkpoint is read through the daemon's own SSH connection.
      await assertReaderFinished(m, r.output);
    } finally {
      await pair.b.kill(m.pid, "SIGKILL");
      await lazyfs(["unmount", m.id, "--force", "--purge"], {}, true);
      await rm(key, { force: true });
      await writeFile(knownHosts, `${sshd.hostKeyLine}\n`);
    }
  });

  test("ProxyJump through two jump hosts on c to an origin address b cannot reach", async () => {
    // a's and c's ends of their link: b has no route there, c has.
    const net = /^10\.213\.(\d+)\.1$/.exec(pair.a.address)![1];
    const hidden = `10.214.${net}.1`;
    const secondJump = `10.214.${net}.2`;
    const origin = await startSshd({ address: hidden, commandPrefix: pair.a.commandPrefix() });
    stopLater.push(origin);
    const jump1 = await startSshd({
      address: pair.c.address,
      commandPrefix: pair.c.commandPrefix(),
    });
    stopLater.push(jump1);
    const jump2 = await startSshd({ address: secondJump, commandPrefix: pair.c.commandPrefix() });
    stopLater.push(jump2);
    for (const [address, port] of [
      [hidden, origin.port],
      [secondJump, jump2.port],
    ] as const) {
      const direct = await pair.b.exec("bash", ["-c", `exec 3<>/dev/tcp/${address}/${port}`], {
        allowFailure: true,
        timeoutMs: 20_000,
      });
      assert.notEqual(direct.code, 0, `b must not reach ${address} directly`);
    }
    await writeFile(
      join(ssh(), "known_hosts"),
      [sshd, origin, jump1, jump2].map((s) => `${s.hostKeyLine}\n`).join(""),
    );
    await writeFile(
      join(ssh(), "config"),
      [
        "Host jump1",
        `  HostName ${pair.c.address}`,
        `  Port ${jump1.port}`,
        `  IdentityFile ${jump1.identityFile}`,
        "Host jump2",
        `  HostName ${secondJump}`,
        `  IdentityFile ${jump2.identityFile}`,
        "Host hidden-origin",
        `  HostName ${hidden}`,
        `  Port ${origin.port}`,
        "  User root",
        `  IdentityFile ${origin.identityFile}`,
        `  ProxyJump jump1,root@jump2:${jump2.port}`,
        "",
      ].join("\n"),
    );
    try {
      await migrateReader("jump", ["--from", "hidden-origin"]);
    } finally {
      await rm(join(ssh(), "config"), { force: true });
    }
  });
});
