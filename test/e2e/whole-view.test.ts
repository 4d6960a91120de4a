/**
 * The whole-origin view (the default): after the migration the process finds by name what it
 * never had open at the dump, anywhere in the origin's tree, while the paths that belong to
 * the target (its identity files, /proc) are the target's. Real programs: a Python process
 * importing a module from a sibling directory, and nginx (master + 2 workers) serving its
 * document root and reloading its configuration.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { DATA_DIR, type HostPair } from "../../src/hosts/index.js";
import { AWAIT_GO, type LazyfsOnB, linesIn, startHosts, stopHosts, waitFor } from "./helpers.js";

let pair: HostPair;
let lazyfs: LazyfsOnB;

const sha256 = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");

const PROGRAM = `${AWAIT_GO}
import hashlib,os,sys,time
sys.path.insert(0, os.path.join(os.getcwd(), '..', 'wv-lib'))
def report(tag):
  print(tag, 'hostname', open('/etc/hostname').read().strip(), flush=True)
  print(tag, 'proc', open('/proc/self/stat').read().split()[0] == str(os.getpid()), flush=True)
report('A')
await_go()
import sibling_mod
print('B module', sibling_mod.VALUE, flush=True)
print('B conf', open(sys.argv[1]).read().strip(), flush=True)
print('B services', hashlib.sha256(open('/etc/services','rb').read()).hexdigest(), flush=True)
report('B')
print('done', flush=True)
while True: time.sleep(1)
`;

describe("the whole-origin view", { concurrency: false }, () => {
  before(async () => {
    ({ pair, lazyfs } = await startHosts());
  });
  after(() => stopHosts({ pair, lazyfs }));

  test("a Python process imports a module from a sibling directory and reads a config by name from the origin; /etc/hostname and /proc are the target's", async () => {
    const dir = `${DATA_DIR}/wv-app`;
    const conf = `${DATA_DIR}/wv-conf/app.conf`;
    await pair.a.exec("mkdir", ["-p", dir, `${DATA_DIR}/wv-lib`, `${DATA_DIR}/wv-conf`]);
    await pair.a.writeFile(`${DATA_DIR}/wv-lib/sibling_mod.py`, "VALUE = 'from-the-origin'\n");
    await pair.a.writeFile(conf, "origin config\n");
    // The target has a config of its own at the same path: the process must see the origin's.
    await pair.b.exec("mkdir", ["-p", `${DATA_DIR}/wv-conf`]);
    await pair.b.writeFile(conf, "target config\n");
    // Same size and mtime on both hosts: only the content tells them apart.
    for (const h of [pair.a, pair.b]) await h.exec("touch", ["-d", "2024-01-01 00:00:00", conf]);
    const out = `${dir}/out.txt`;
    const wl = await pair.a.startWorkload("python3", ["-c", PROGRAM, conf], {
      stdout: out,
      cwd: dir,
    });
    await waitFor("the report on A", async () =>
      (await linesIn(pair.a, out)).length >= 2 ? true : undefined,
    );
    const m = await lazyfs.migrate(wl.pid);
    try {
      await pair.b.exec("kill", ["-USR1", String(m.pid)]);
      const lines = await waitFor(
        "the report on B",
        async () => {
          const l = await linesIn(pair.b, `${m.mountpoint}${out}`);
          return l.includes("done") ? l : undefined;
        },
        30_000,
      );
      const hostA = (await pair.a.readFile("/etc/hostname")).trim();
      const hostB = (await pair.b.readFile("/etc/hostname")).trim();
      assert.notEqual(hostA, hostB, "the simulated hosts have identities of their own");
      const services = sha256(await pair.b.readFile("/etc/services"));
      assert.deepEqual(lines, [
        `A hostname ${hostA}`,
        "A proc True",
        "B module from-the-origin",
        "B conf origin config",
        `B services ${services}`,
        `B hostname ${hostB}`,
        "B proc True",
        "done",
      ]);
      const st = await lazyfs.status(m.id);
      assert.equal(st.view, "whole");
      // /etc/services was never open at the dump: the target's identical copy served it.
      const services_ = st.perFile.find((f) => f.path === "/etc/services");
      assert.ok(services_, "the process's read of /etc/services went through LazyFS");
      assert.equal(services_.bytesFromOrigin, 0, "nothing of it came from the origin");
      assert.ok(st.identical.identicalFiles >= 1, JSON.stringify(st.identical));
      // The config had the same size and mtime here: its hash said no, it came from the origin.
      assert.equal(st.identical.hashMismatches, 1, JSON.stringify(st.identical));
    } finally {
      await lazyfs.stop(m);
    }
  });
});
