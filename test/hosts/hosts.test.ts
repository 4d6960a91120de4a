/**
 * Two simulated hosts: isolation of their files, the veth link and its counters, a real sshd
 * on the origin, tbf shaping, and complete teardown (after a throw and after a crash).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { stat } from "node:fs/promises";
import { before, test } from "node:test";
import { cleanupStaleHosts, createHostPair, DATA_DIR, sendFiles } from "../../src/hosts/index.js";
import { assertNothingLeft, type PairTrace, tracePair } from "./leftovers.js";

const MiB = 1024 * 1024;

before(async () => {
  await cleanupStaleHosts();
});

test("each host sees only its own data dir; B reaches A over the veth; sshd runs on A", async () => {
  const pair = await createHostPair();
  try {
    const { a, b } = pair;
    assert.notEqual(a.address, b.address);
    await a.writeFile(`${DATA_DIR}/only-a`, "from-a\n");
    await b.writeFile(`${DATA_DIR}/only-b`, "from-b\n");
    assert.equal((await a.exec("ls", [DATA_DIR])).stdout, "only-a\n");
    assert.equal((await b.exec("ls", [DATA_DIR])).stdout, "only-b\n");
    assert.equal(existsSync(`${DATA_DIR}/only-a`), false, "the root namespace sees A's file");
    const fsA = await a.exec("findmnt", ["-n", "-o", "FSTYPE,SOURCE", DATA_DIR]);
    assert.equal(fsA.stdout.trim().split(/\s+/).join(" "), `tmpfs ${a.name}`);
    // A mount made later by one process in B (as a FUSE daemon would) is seen by every other
    // process in B, and not in A.
    await b.exec("mkdir", [`${DATA_DIR}/later`]);
    await b.exec("mount", ["-t", "tmpfs", "lazyfs-later", `${DATA_DIR}/later`]);
    const seen = await b.exec("findmnt", ["-n", "-o", "SOURCE", `${DATA_DIR}/later`]);
    assert.equal(seen.stdout.trim(), "lazyfs-later");
    assert.equal((await a.exec("findmnt", [`${DATA_DIR}/later`], { allowFailure: true })).code, 1);
    await b.exec("umount", [`${DATA_DIR}/later`]);
    await b.exec("rmdir", [`${DATA_DIR}/later`]);

    // An idle link counts nothing: no ARP (permanent neighbours), no IPv6 chatter.
    const idleBefore = await pair.link.counters();
    await new Promise((r) => setTimeout(r, 1500));
    assert.deepEqual(await pair.link.counters(), idleBefore);
    assert.match((await b.exec("ip", ["neigh", "show", a.address])).stdout, /PERMANENT/);

    // 1 MiB of random bytes from B to A's address, through the link.
    const payload = randomBytes(MiB);
    await b.writeFile(`${DATA_DIR}/blob`, payload);
    const before = await pair.link.counters();
    const sent = await sendFiles(b, a, [`${DATA_DIR}/blob`]);
    const after = await pair.link.counters();
    assert.ok(sent.bytes >= MiB, `tar stream of ${sent.bytes} bytes`);
    assert.ok(after.bToA - before.bToA >= sent.bytes, `counters moved ${after.bToA - before.bToA}`);
    const sha = createHash("sha256").update(payload).digest("hex");
    assert.equal((await a.exec("sha256sum", [`${DATA_DIR}/blob`])).stdout.split(" ")[0], sha);

    // A real sshd on A; B logs in over the link and reads A's file.
    const sshd = await pair.startOriginSshd();
    const ssh = await b.exec("ssh", [
      "-F",
      "/dev/null",
      "-i",
      sshd.identityFile,
      "-o",
      `UserKnownHostsFile=${sshd.knownHostsFile}`,
      "-o",
      "StrictHostKeyChecking=yes",
      "-o",
      "BatchMode=yes",
      "-o",
      "IdentitiesOnly=yes",
      "-p",
      String(sshd.port),
      `root@${a.address}`,
      `cat ${DATA_DIR}/only-a; ls ${DATA_DIR}`,
    ]);
    assert.equal(ssh.stdout, "from-a\nblob\nonly-a\n");
  } finally {
    await pair.destroy();
  }
});

test("tbf shapes both ends to the configured rate and the traffic goes through it", async () => {
  const pair = await createHostPair({ rateBitsPerSec: 100_000_000 });
  try {
    const { a, b, link } = pair;
    for (const h of [a, b]) {
      const q = await link.qdisc(h);
      assert.equal(q.kind, "tbf");
      assert.equal(q.rateBitsPerSec, 100_000_000);
    }
    await a.exec("sh", ["-c", `head -c ${2 * MiB} /dev/urandom > ${DATA_DIR}/x`]);
    const q0 = await link.qdisc(a);
    const sampler = link.sample(100);
    await sampler.start();
    const sent = await sendFiles(a, b, [`${DATA_DIR}/x`]);
    const timeline = await sampler.stop();
    const q1 = await link.qdisc(a);
    assert.ok(q1.bytes - q0.bytes >= sent.bytes, `tbf passed ${q1.bytes - q0.bytes} bytes`);
    assert.ok(timeline.length >= 2);
    assert.deepEqual(timeline[0], { tMs: 0, aToB: 0, bToA: 0 });
    for (let i = 1; i < timeline.length; i++) {
      assert.ok(timeline[i]!.tMs >= timeline[i - 1]!.tMs);
      assert.ok(timeline[i]!.aToB >= timeline[i - 1]!.aToB);
    }
    assert.ok(timeline.at(-1)!.aToB >= sent.bytes);

    await link.shape(10_000_000);
    assert.equal((await link.qdisc(b)).rateBitsPerSec, 10_000_000);
    await link.shape(null);
    assert.notEqual((await link.qdisc(a)).kind, "tbf");
    assert.notEqual((await link.qdisc(b)).kind, "tbf");
    assert.equal(link.rateBitsPerSec, null);
  } finally {
    await pair.destroy();
  }
});

test("teardown is complete after a test that threw midway", async () => {
  let trace: PairTrace | undefined;
  let exited: Promise<number | null> | undefined;
  await assert.rejects(async () => {
    const pair = await createHostPair({ rateBitsPerSec: 1_000_000, client: true });
    try {
      trace = await tracePair(pair);
      const w = await pair.b.startWorkload("sleep", ["1000"], { stdout: `${DATA_DIR}/out` });
      exited = w.exited;
      pair.a.spawn("sleep", ["1000"]);
      await pair.c.exec("sh", ["-c", "sleep 1000 >/dev/null 2>&1 & sleep 1000 >/dev/null 2>&1 &"]);
      await pair.startOriginSshd();
      await pair.link.sample().start();
      throw new Error("midway");
    } finally {
      await pair.destroy();
    }
  }, /midway/);
  assert.ok(trace);
  await assertNothingLeft(trace);

  // A pair whose setup fails halfway (namespaces made, then a bad rate) removes itself.
  await assert.rejects(createHostPair({ name: "badrate", rateBitsPerSec: 1 }), /at least 8000/);
  await assertNothingLeft({ name: "lazyfs-badrate", inodes: new Set() });
  assert.equal(await exited, null, "the workload ends with its host");
});

test("cleanupStaleHosts removes a pair whose owner crashed", async () => {
  const index = new URL("../../src/hosts/index.js", import.meta.url).href;
  const script = `
    import { createHostPair } from ${JSON.stringify(index)};
    const p = await createHostPair({ rateBitsPerSec: 5000000 });
    const w = await p.b.startWorkload("sleep", ["1000"], { stdout: "${DATA_DIR}/out" });
    const s = await import("node:fs/promises").then((fs) => Promise.all(
      [p.a, p.b].flatMap((h) => [h.netnsPath, h.mountNsPath, h.pidnsPath]).map((f) => fs.stat(f))));
    console.log(JSON.stringify({ name: p.name, pid: w.pid, inodes: s.map((x) => x.ino) }));
    setInterval(() => {}, 1000);
  `;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const line = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout.on("data", (c: Buffer) => {
      out += c.toString();
      if (out.includes("\n")) resolve(out.split("\n")[0]!);
    });
    child.once("exit", (code) => reject(new Error(`crash child exited early (${code})`)));
  });
  const info = JSON.parse(line) as { name: string; pid: number; inodes: number[] };
  child.kill("SIGKILL");
  await new Promise((r) => child.once("exit", r));
  assert.ok((await stat(`/run/netns/${info.name}-a`)).isFile(), "crashed pair should still exist");

  const removed = await cleanupStaleHosts();
  assert.ok(removed.includes(info.name), `removed ${removed.join(", ")}`);
  // The workload ran in b's PID namespace: nothing is left in it.
  await assertNothingLeft({ name: info.name, inodes: new Set(info.inodes) });
});
